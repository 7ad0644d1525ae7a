//! The invitation's QR code as inline SVG: one path of dark modules, a light quiet zone, the
//! same error-correction level as the terminal and PNG forms (M; see `fybrk_pair::qr`).

use qrcode::{Color, EcLevel, QrCode};

/// Light modules around the code, as the QR standard asks.
const QUIET: usize = 4;
/// Pixels per module on the page.
const MODULE_PX: usize = 5;

/// `text` as an SVG QR code, or `None` if it does not fit one.
pub fn svg(text: &str) -> Option<String> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).ok()?;
    let width = code.width();
    let size = width + 2 * QUIET;
    let mut path = String::new();
    for (i, color) in code.to_colors().into_iter().enumerate() {
        if color == Color::Dark {
            let (x, y) = (i % width + QUIET, i / width + QUIET);
            path.push_str(&format!("M{x} {y}h1v1h-1z"));
        }
    }
    let px = size * MODULE_PX;
    Some(format!(
        "<svg id=\"qr\" width=\"{px}\" height=\"{px}\" viewBox=\"0 0 {size} {size}\" \
         xmlns=\"http://www.w3.org/2000/svg\" shape-rendering=\"crispEdges\">\
         <rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/>\
         <path d=\"{path}\" fill=\"#000\"/></svg>"
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_a_square_code() {
        let s = super::svg("FYBRK1:HELLO").unwrap();
        assert!(s.starts_with("<svg id=\"qr\""));
        assert!(
            s.contains("M4 4h1v1h-1z"),
            "the finder pattern's corner is dark"
        );
    }
}
