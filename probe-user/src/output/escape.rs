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
                c if c.is_control() => {
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
    }
}
