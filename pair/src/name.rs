//! Device names as shown to the other side of a pairing.
//!
//! A name crosses from one device to another (in the invitation, the join request and the
//! welcome) and is then printed in a terminal. A peer that is not yet trusted must not be able to
//! send terminal escape sequences or right-to-left overrides that make the prompt lie about who is
//! joining, so names are cleaned on the way out and on the way in.

/// The longest device name carried, in bytes of UTF-8. Enough for "Alice's work laptop"; short
/// enough to keep the invitation (and its QR code) small.
pub const MAX_NAME_LEN: usize = 32;

/// Characters that change how the text around them is displayed: C0/C1 controls (escape
/// sequences, carriage returns) and the bidirectional overrides and isolates.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Returns `name` with every control or bidi-override character replaced by `?`, cut to at most
/// [`MAX_NAME_LEN`] bytes on a character boundary (never in the middle of a UTF-8 sequence).
pub fn sanitize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len().min(MAX_NAME_LEN));
    for c in name.chars() {
        let c = if is_unsafe(c) { '?' } else { c };
        if out.len() + c.len_utf8() > MAX_NAME_LEN {
            break;
        }
        out.push(c);
    }
    out
}

/// Whether `name` is already what [`sanitize_name`] would make of it.
pub(crate) fn is_clean(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN && !name.chars().any(is_unsafe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundary() {
        // 'é' is two bytes: 31 ASCII bytes + 'é' would be 33, so the 'é' is dropped whole.
        let name = format!("{}é", "a".repeat(31));
        let clean = sanitize_name(&name);
        assert_eq!(clean, "a".repeat(31));
        assert!(is_clean(&clean));
        assert_eq!(sanitize_name("ünïcødé ok"), "ünïcødé ok");
    }

    #[test]
    fn replaces_escapes_and_overrides() {
        assert_eq!(sanitize_name("evil\x1b[2Jname\n"), "evil?[2Jname?");
        assert_eq!(sanitize_name("abc\u{202E}fed"), "abc?fed");
        assert!(!is_clean("a\u{7}"));
    }
}
