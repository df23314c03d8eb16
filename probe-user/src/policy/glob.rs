//! Path globs in policy paths: `*` matches within one path component, `**` across any
//! number of them (`/sys/class/net/*/address`, `~/.config/**/credentials`). The kernel
//! filters on the literal directory before the first wildcard; userspace matches the
//! whole pattern, and expands it on this host to index the files it names.

use std::path::{Path, PathBuf};

/// Most files one glob expands to when indexing.
const MAX_EXPANSION: usize = 4_096;
/// Deepest `**` descent when expanding.
const MAX_DEPTH: usize = 8;

pub fn is_glob(path: &str) -> bool {
    path.contains('*')
}

/// The literal directory part before the first wildcard, with its trailing `/`:
/// `/sys/class/net/*/address` -> `/sys/class/net/`.
pub fn literal_prefix(pattern: &str) -> &str {
    let star = pattern.find('*').unwrap_or(pattern.len());
    match pattern[..star].rfind('/') {
        Some(slash) => &pattern[..=slash],
        None => "",
    }
}

/// Whether `path` matches `pattern` (`*` within a component, `**` across them).
pub fn matches(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => {
                let rest = &p[2..];
                // `**/` may also match nothing.
                let rest_after_slash = rest.strip_prefix(b"/").unwrap_or(rest);
                (0..=t.len()).any(|i| go(rest, &t[i..]) || go(rest_after_slash, &t[i..]))
            }
            Some(b'*') => {
                let rest = &p[1..];
                for i in 0..=t.len() {
                    if go(rest, &t[i..]) {
                        return true;
                    }
                    if t.get(i) == Some(&b'/') {
                        break;
                    }
                }
                false
            }
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

/// The paths on this host that `pattern` matches (following symlinked directories,
/// as path resolution does), at most `MAX_EXPANSION`.
pub fn expand(pattern: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    walk(Path::new(literal_prefix(pattern)), pattern, 0, &mut found);
    found
}

fn walk(dir: &Path, pattern: &str, depth: usize, found: &mut Vec<PathBuf>) {
    if depth > MAX_DEPTH || found.len() >= MAX_EXPANSION {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let text = path.to_string_lossy();
        if matches(pattern, &text) {
            found.push(path.clone());
            if found.len() >= MAX_EXPANSION {
                return;
            }
        }
        // Descend only where the pattern can still match below.
        if path.is_dir() && could_match_below(pattern, &format!("{text}/")) {
            walk(&path, pattern, depth + 1, found);
        }
    }
}

/// Whether some path starting with `dir/` can match: its components so far match the
/// pattern's, or a `**` has been reached.
fn could_match_below(pattern: &str, dir: &str) -> bool {
    let dir_parts: Vec<&str> = dir.trim_end_matches('/').split('/').collect();
    let pat_parts: Vec<&str> = pattern.split('/').collect();
    for (i, d) in dir_parts.iter().enumerate() {
        match pat_parts.get(i) {
            Some(&"**") => return true,
            Some(p) if matches(p, d) => {}
            _ => return false,
        }
    }
    pat_parts.len() > dir_parts.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_stay_in_their_component() {
        assert!(matches(
            "/sys/class/net/*/address",
            "/sys/class/net/eth0/address"
        ));
        assert!(!matches(
            "/sys/class/net/*/address",
            "/sys/class/net/eth0/x/address"
        ));
        assert!(!matches(
            "/sys/class/net/*/address",
            "/sys/class/net/eth0/addresses"
        ));
        assert!(matches("/a/**/c", "/a/c"));
        assert!(matches("/a/**/c", "/a/b/x/c"));
        assert!(!matches("/a/**/c", "/a/b/x/d"));
        assert!(matches("/etc/*.conf", "/etc/x.conf"));
        assert!(!matches("/etc/*.conf", "/etc/d/x.conf"));
        assert_eq!(
            literal_prefix("/sys/class/net/*/address"),
            "/sys/class/net/"
        );
        assert_eq!(literal_prefix("/etc/*.conf"), "/etc/");
    }

    #[test]
    fn expands_through_symlinked_directories() {
        let root = std::env::temp_dir().join(format!("probectl-glob-{}", std::process::id()));
        let real = root.join("devices/eth9");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(real.join("address"), "00:11:22:33:44:55\n").unwrap();
        std::fs::write(real.join("mtu"), "1500\n").unwrap();
        std::fs::create_dir_all(root.join("net")).unwrap();
        std::os::unix::fs::symlink(&real, root.join("net/eth9")).unwrap();
        let pattern = format!("{}/net/*/address", root.display());
        let found = expand(&pattern);
        assert_eq!(found, [root.join("net/eth9/address")]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
