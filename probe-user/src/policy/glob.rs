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

/// One step of a pattern.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Token {
    Byte(u8),
    /// `*`: a run of bytes other than `/`.
    Star,
    /// `**`: any run of bytes, `/` included.
    DoubleStar,
}

fn tokens(pattern: &[u8]) -> Vec<Token> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'*' if pattern.get(i + 1) == Some(&b'*') => {
                out.push(Token::DoubleStar);
                i += 2;
            }
            b'*' => {
                out.push(Token::Star);
                i += 1;
            }
            c => {
                out.push(Token::Byte(c));
                i += 1;
            }
        }
    }
    out
}

/// Whether `path` matches `pattern`: `*` within one component, `**` across any number
/// of them; a `/` right after `**` is skipped when `**` matches nothing, so `/a/**/c`
/// matches `/a/c` and `/a/x/y/c` (not `/a/xc`). Bytes compare exactly: paths are
/// case-sensitive.
///
/// Dynamic programming over (pattern step, path position), from the end: O(pattern ×
/// path) time and O(path) memory whatever the stars. (A backtracking matcher is
/// exponential in the number of `**`: a policy load hung on one such pattern.)
pub fn matches(pattern: &str, path: &str) -> bool {
    let steps = tokens(pattern.as_bytes());
    let t = path.as_bytes();
    let n = t.len();
    // `ahead1[j]`: steps[k+1..] match t[j..]; `ahead2[j]`: steps[k+2..] match t[j..].
    let mut ahead1 = vec![false; n + 1];
    let mut ahead2 = vec![false; n + 1];
    let mut row = vec![false; n + 1];
    // No steps left: only the end of the path matches.
    ahead1[n] = true;
    for k in (0..steps.len()).rev() {
        match steps[k] {
            Token::Byte(c) => {
                row[n] = false;
                for j in 0..n {
                    row[j] = t[j] == c && ahead1[j + 1];
                }
            }
            Token::Star => {
                row[n] = ahead1[n];
                for j in (0..n).rev() {
                    row[j] = ahead1[j] || (t[j] != b'/' && row[j + 1]);
                }
            }
            Token::DoubleStar => {
                let skip_slash = steps.get(k + 1) == Some(&Token::Byte(b'/'));
                let mut any_after = false;
                for j in (0..=n).rev() {
                    any_after |= ahead1[j];
                    row[j] = any_after || (skip_slash && ahead2[j]);
                }
            }
        }
        // Shift: this row is one step ahead of the next (earlier) step.
        std::mem::swap(&mut ahead2, &mut ahead1);
        std::mem::swap(&mut ahead1, &mut row);
    }
    ahead1[0]
}

/// The paths on this host that `pattern` matches (following symlinked directories,
/// as path resolution does), at most `MAX_EXPANSION`, reading at most `budget`
/// directory entries (decremented).
pub fn expand(pattern: &str, budget: &mut usize) -> Vec<PathBuf> {
    let mut found = Vec::new();
    walk(
        Path::new(literal_prefix(pattern)),
        pattern,
        0,
        &mut found,
        budget,
    );
    found
}

fn walk(dir: &Path, pattern: &str, depth: usize, found: &mut Vec<PathBuf>, budget: &mut usize) {
    if depth > MAX_DEPTH || found.len() >= MAX_EXPANSION {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
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
            walk(&path, pattern, depth + 1, found, budget);
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
        let found = expand(&pattern, &mut 1_000);
        assert_eq!(found, [root.join("net/eth9/address")]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
