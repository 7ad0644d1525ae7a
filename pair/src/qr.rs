//! QR codes for invitations: in the terminal, as a PNG file, and read back from a picture.
//!
//! Both use error-correction level M (about 15% of the code can be damaged or glare-covered and
//! still read), the usual choice for screens: level H would need a larger, denser code for the
//! same text. Pass [`crate::Invitation::encode_qr`] for the smallest code.

use std::path::{Path, PathBuf};

use image::{GrayImage, ImageFormat, Luma};
use qrcode::{Color, EcLevel, QrCode};

/// Light modules around the code in the terminal. The QR standard asks for 4; 2 is what scanners
/// need in practice, and it keeps a version-10 code (57 modules) within an 80-column terminal
/// with room to spare.
pub const TERMINAL_QUIET_ZONE: usize = 2;

/// Light modules around the code in the PNG, as the QR standard asks.
pub const PNG_QUIET_ZONE: u32 = 4;

/// Pixels per module in the PNG: sharp at any zoom level a phone camera uses on a screen, and
/// still small (a version-10 code is 520 x 520 pixels).
pub const PNG_MODULE_PX: u32 = 8;

/// Why a QR code could not be made or saved.
#[derive(Debug, thiserror::Error)]
pub enum QrError {
    /// The text does not fit any QR code (it is far longer than an invitation).
    #[error("the text is too long for a QR code ({0}); use the text form instead")]
    TooLong(#[source] qrcode::types::QrError),
    /// The PNG could not be written.
    #[error(
        "could not save the QR code as {path}: {source}; check that the directory is writable"
    )]
    Save {
        /// The file that was being written.
        path: PathBuf,
        /// What the image library reported.
        #[source]
        source: image::ImageError,
    },
}

/// The terminal's background, which decides which modules the glyphs draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Background {
    /// Light text on a dark background (most terminals' default). The glyphs draw the *light*
    /// modules and the quiet zone; the background shows through as the dark modules. The code
    /// appears dark-on-light, as scanners expect.
    #[default]
    Dark,
    /// Dark text on a light background. The glyphs draw the dark modules.
    Light,
}

/// A QR code with its quiet zone, as a square grid of modules (true = dark).
struct Grid {
    size: usize,
    dark: Vec<bool>,
}

impl Grid {
    fn new(text: &str, quiet: usize) -> Result<Self, QrError> {
        let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
            .map_err(QrError::TooLong)?;
        let width = code.width();
        let size = width + 2 * quiet;
        let mut dark = vec![false; size * size];
        for (i, color) in code.to_colors().into_iter().enumerate() {
            let (x, y) = (i % width, i / width);
            dark[(y + quiet) * size + x + quiet] = color == Color::Dark;
        }
        Ok(Self { size, dark })
    }

    fn is_dark(&self, x: usize, y: usize) -> bool {
        self.dark[y * self.size + x]
    }
}

/// Renders `text` as a QR code for a terminal with a dark background ([`Background::Dark`]).
///
/// Each line holds two rows of modules drawn with `▀`, `▄`, `█` and space, with a quiet zone of
/// [`TERMINAL_QUIET_ZONE`] modules; all lines have the same width, lines are joined with `\n` and
/// there is no trailing newline. A code of width `w` modules gives `(w + 4 + 1) / 2` lines.
pub fn render_terminal(text: &str) -> Result<String, QrError> {
    render_terminal_for(text, Background::Dark)
}

/// Renders `text` as a QR code for a terminal with the given background.
pub fn render_terminal_for(text: &str, background: Background) -> Result<String, QrError> {
    let grid = Grid::new(text, TERMINAL_QUIET_ZONE)?;
    // Which modules get ink (the terminal's text colour); the rest show the background.
    let ink = |x: usize, y: usize| -> bool {
        if y >= grid.size {
            // The half row below an odd-sized grid: leave it to the background, outside the code.
            return false;
        }
        match background {
            Background::Dark => !grid.is_dark(x, y),
            Background::Light => grid.is_dark(x, y),
        }
    };
    let mut lines = Vec::with_capacity(grid.size.div_ceil(2));
    for top in (0..grid.size).step_by(2) {
        let line: String = (0..grid.size)
            .map(|x| match (ink(x, top), ink(x, top + 1)) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            })
            .collect();
        lines.push(line);
    }
    Ok(lines.join("\n"))
}

/// Renders `text` as a grey-scale image: black modules on white, [`PNG_MODULE_PX`] pixels a
/// module, a quiet zone of [`PNG_QUIET_ZONE`] modules.
pub fn png_image(text: &str) -> Result<GrayImage, QrError> {
    let grid = Grid::new(text, PNG_QUIET_ZONE as usize)?;
    // A QR code is at most 177 modules wide, so this cannot overflow.
    let side = grid.size as u32 * PNG_MODULE_PX;
    Ok(GrayImage::from_fn(side, side, |px, py| {
        let (x, y) = ((px / PNG_MODULE_PX) as usize, (py / PNG_MODULE_PX) as usize);
        if grid.is_dark(x, y) {
            Luma([0])
        } else {
            Luma([255])
        }
    }))
}

/// Saves `text` as a PNG QR code at `path` (see [`png_image`]), replacing any file there.
/// The file is readable by its owner only: it holds the invitation's secret.
pub fn save_png(text: &str, path: &Path) -> Result<(), QrError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    let save = |source| QrError::Save {
        path: path.to_owned(),
        source,
    };
    let mut png = std::io::Cursor::new(Vec::new());
    png_image(text)?
        .write_to(&mut png, ImageFormat::Png)
        .map_err(save)?;
    let io = |e: std::io::Error| save(image::ImageError::IoError(e));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    // `mode` applies only to a new file: an existing one keeps its permissions otherwise.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    file.write_all(png.get_ref()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Largest side, in pixels, a picture is scanned at: a phone photo (4000 x 3000) is scaled
/// down first, which keeps the scan fast and still resolves a code that fills a fair part of
/// the picture.
const SCAN_MAX_SIDE: u32 = 2000;

/// Reads the text of the QR code in the picture at `path` (PNG or JPEG: a saved invitation, or
/// a phone photo of a screen showing one).
pub fn read_image(path: &Path) -> Result<String, ReadQrError> {
    let open = |source| ReadQrError::Open {
        path: path.to_owned(),
        source,
    };
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| open(image::ImageError::IoError(e)))?
        .with_guessed_format()
        .map_err(|e| open(image::ImageError::IoError(e)))?;
    // A hostile or broken file must not make us allocate gigabytes.
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(16_384);
    limits.max_image_height = Some(16_384);
    limits.max_alloc = Some(256 << 20);
    reader.limits(limits);
    let img = reader.decode().map_err(open)?;
    let img = if img.width().max(img.height()) > SCAN_MAX_SIDE {
        img.resize(
            SCAN_MAX_SIDE,
            SCAN_MAX_SIDE,
            image::imageops::FilterType::Triangle,
        )
    } else {
        img
    };
    let luma = img.to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(luma);
    let grids = prepared.detect_grids();
    grids
        .iter()
        .find_map(|g| g.decode().ok().map(|(_, text)| text))
        .ok_or(ReadQrError::NoCode {
            path: path.to_owned(),
            found: grids.len(),
        })
}

/// Why [`read_image`] found no invitation in a picture.
#[derive(Debug, thiserror::Error)]
pub enum ReadQrError {
    /// The file could not be read or is not a PNG or JPEG picture.
    #[error("cannot read {path} as a PNG or JPEG picture: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What the image library reported.
        #[source]
        source: image::ImageError,
    },
    /// No readable QR code in the picture.
    #[error(
        "found no readable QR code in {path} ({found} code-like patterns); take the picture \
         again closer and sharper, or copy the invitation's text instead"
    )]
    NoCode {
        /// The file.
        path: PathBuf,
        /// How many code-like patterns were seen but could not be read.
        found: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "FYBRK1:MZXW6YTBOI2345ABCDEFGHIJKLMNOPQRSTUVWXYZ";

    fn code_width(text: &str) -> usize {
        QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
            .unwrap()
            .width()
    }

    #[test]
    fn terminal_rendering_has_the_expected_shape() {
        let width = code_width(TEXT);
        for background in [Background::Dark, Background::Light] {
            let shown = render_terminal_for(TEXT, background).unwrap();
            let lines: Vec<&str> = shown.lines().collect();
            assert_eq!(lines.len(), (width + 2 * TERMINAL_QUIET_ZONE).div_ceil(2));
            for line in &lines {
                assert_eq!(line.chars().count(), width + 2 * TERMINAL_QUIET_ZONE);
                assert!(
                    line.chars().all(|c| matches!(c, '▀' | '▄' | '█' | ' ')),
                    "{line}"
                );
            }
        }
        // On a dark terminal the quiet zone is drawn (light): the first line is all full blocks.
        let dark = render_terminal(TEXT).unwrap();
        assert!(dark.lines().next().unwrap().chars().all(|c| c == '█'));
        // On a light terminal the quiet zone is left blank.
        let light = render_terminal_for(TEXT, Background::Light).unwrap();
        assert!(light.lines().next().unwrap().chars().all(|c| c == ' '));
    }

    #[test]
    fn terminal_modules_match_the_code() {
        // Read the modules back out of the half blocks and compare with the code itself.
        let code = QrCode::with_error_correction_level(TEXT.as_bytes(), EcLevel::M).unwrap();
        let width = code.width();
        let colors = code.to_colors();
        let shown = render_terminal_for(TEXT, Background::Light).unwrap();
        let q = TERMINAL_QUIET_ZONE;
        for (row, line) in shown.lines().enumerate() {
            for (x, c) in line.chars().enumerate() {
                let (top, bottom) = match c {
                    '█' => (true, true),
                    '▀' => (true, false),
                    '▄' => (false, true),
                    _ => (false, false),
                };
                for (y, ink) in [(2 * row, top), (2 * row + 1, bottom)] {
                    let inside = (q..q + width).contains(&x) && (q..q + width).contains(&y);
                    let expected = inside && colors[(y - q) * width + (x - q)] == Color::Dark;
                    assert_eq!(ink, expected, "module ({x}, {y})");
                }
            }
        }
    }

    #[test]
    fn png_decodes_to_the_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fybrk-pair-1.png");
        save_png(TEXT, &path).unwrap();
        let img = image::open(&path).unwrap().into_luma8();
        let side = (code_width(TEXT) as u32 + 2 * PNG_QUIET_ZONE) * PNG_MODULE_PX;
        assert_eq!(img.dimensions(), (side, side));
        assert!(img.pixels().any(|p| p.0[0] == 0));
        assert!(img.pixels().any(|p| p.0[0] == 255));
        assert!(img.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
        // The quiet zone is white; the finder pattern's corner, just inside it, is black.
        let q = PNG_QUIET_ZONE * PNG_MODULE_PX;
        assert_eq!(img.get_pixel(q - 1, q - 1).0[0], 255);
        assert_eq!(img.get_pixel(q, q).0[0], 0);
    }

    #[test]
    fn saved_png_is_private_and_reads_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("invite.png");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        save_png(TEXT, &path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read_image(&path).unwrap(), TEXT);

        // As a JPEG "photo": larger than the scan size, grey background, blurred edges.
        let code = png_image(TEXT).unwrap();
        let side = 2600;
        let mut photo = image::GrayImage::from_pixel(side, side, image::Luma([180]));
        image::imageops::overlay(
            &mut photo,
            &image::imageops::resize(&code, 1200, 1200, image::imageops::FilterType::Triangle),
            700,
            600,
        );
        let jpg = dir.path().join("photo.jpg");
        photo.save(&jpg).unwrap();
        assert_eq!(read_image(&jpg).unwrap(), TEXT);

        let blank = dir.path().join("blank.png");
        image::GrayImage::from_pixel(50, 50, image::Luma([255]))
            .save(&blank)
            .unwrap();
        assert!(matches!(
            read_image(&blank),
            Err(ReadQrError::NoCode { .. })
        ));
        std::fs::write(&blank, b"not a picture").unwrap();
        assert!(matches!(read_image(&blank), Err(ReadQrError::Open { .. })));
    }

    /// Reads the single QR code in a grey-scale picture, as a phone would.
    fn scan(w: usize, h: usize, luma: impl FnMut(usize, usize) -> u8) -> String {
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, luma);
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "expected one QR code");
        grids[0].decode().unwrap().1
    }

    /// A realistic invitation text: what `fybrk pair` shows.
    fn invitation_text() -> String {
        let addrs = [
            "192.168.1.23:41641".parse().unwrap(),
            "[2001:db8::7]:41641".parse().unwrap(),
        ];
        let rv = Some("rv.fybrk.example:7000".parse().unwrap());
        crate::Invitation::new(
            [7; 32],
            "Alice's laptop",
            &addrs,
            rv,
            [8; 16],
            1_750_000_000,
        )
        .unwrap()
        .encode_qr()
    }

    #[test]
    fn png_scans_back_to_the_invitation() {
        let text = invitation_text();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fybrk-pair.png");
        save_png(&text, &path).unwrap();
        let img = image::open(&path).unwrap().into_luma8();
        let (w, h) = img.dimensions();
        let scanned = scan(w as usize, h as usize, |x, y| {
            img.get_pixel(x as u32, y as u32).0[0]
        });
        assert_eq!(scanned, text);
        let inv = crate::Invitation::parse(&scanned, 1_750_000_000).unwrap();
        assert_eq!(inv.inviter_name, "Alice's laptop");
    }

    #[test]
    fn terminal_rendering_scans_back_on_both_backgrounds() {
        let text = invitation_text();
        // Paint the terminal: each character cell is 4 x 8 pixels, its two halves 4 x 4; ink is
        // the text colour, the rest is the background. Around it, more background.
        const PX: usize = 4;
        const MARGIN: usize = 8 * PX;
        for (background, ink, paper) in [
            (Background::Dark, 230u8, 20u8),
            (Background::Light, 20, 230),
        ] {
            let shown = render_terminal_for(&text, background).unwrap();
            let rows: Vec<Vec<char>> = shown.lines().map(|l| l.chars().collect()).collect();
            let (cols, lines) = (rows[0].len(), rows.len());
            let (w, h) = (cols * PX + 2 * MARGIN, lines * 2 * PX + 2 * MARGIN);
            let scanned = scan(w, h, |x, y| {
                if x < MARGIN || y < MARGIN || x >= w - MARGIN || y >= h - MARGIN {
                    return paper;
                }
                let (col, half) = ((x - MARGIN) / PX, (y - MARGIN) / PX);
                let top = half % 2 == 0;
                let inked = match rows[half / 2][col] {
                    '█' => true,
                    '▀' => top,
                    '▄' => !top,
                    _ => false,
                };
                if inked {
                    ink
                } else {
                    paper
                }
            });
            assert_eq!(scanned, text, "{background:?}");
        }
    }

    #[test]
    fn errors_are_typed() {
        let too_long = "A".repeat(5000);
        assert!(matches!(
            render_terminal(&too_long),
            Err(QrError::TooLong(_))
        ));
        let err = save_png(TEXT, Path::new("/nonexistent-dir/x.png")).unwrap_err();
        assert!(matches!(err, QrError::Save { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent-dir/x.png"));
    }
}
