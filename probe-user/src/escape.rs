//! Escaping of process-controlled bytes (argv, paths, env names) before they reach a
//! terminal, a log line or a JSON string: a hostile process name must not be able to
//! inject terminal escapes, fake log lines or invalid UTF-8.

/// Printable ASCII and valid non-control UTF-8 pass through; a backslash becomes `\\`;
/// everything else (control bytes, invalid UTF-8) becomes `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() || is_invisible_format(c) => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Characters that are not control characters but still let a string lie about how it
/// looks: bidirectional overrides and isolates (U+202A-202E, U+2066-2069), zero-width
/// and other format characters, line and paragraph separators, the BOM.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

#[cfg(test)]
mod tests {
    use super::escape_bytes;

    #[test]
    fn control_bytes_and_invalid_utf8_are_escaped() {
        assert_eq!(escape_bytes(b"/etc/localtime"), "/etc/localtime");
        assert_eq!(escape_bytes(b"evil\x1b[31mred\n"), "evil\\x1b[31mred\\x0a");
        assert_eq!(escape_bytes(b"a\\b"), "a\\\\b");
        assert_eq!(escape_bytes(b"\xff\xfe"), "\\xff\\xfe");
        assert_eq!(escape_bytes("zoneinfo/Améri".as_bytes()), "zoneinfo/Améri");
        // U+202E RIGHT-TO-LEFT OVERRIDE would make "evil\u{202e}txt.sh" display as "evilhs.txt".
        assert_eq!(
            escape_bytes("evil\u{202e}txt.sh".as_bytes()),
            "evil\\xe2\\x80\\xaetxt.sh"
        );
        assert_eq!(
            escape_bytes("a\u{200b}b\u{2028}c".as_bytes()),
            "a\\xe2\\x80\\x8bb\\xe2\\x80\\xa8c"
        );
    }
}
