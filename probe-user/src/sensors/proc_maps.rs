//! `/proc/<pid>/maps`, read with a bound and parsed the way the kernel writes it: five
//! fields separated by single spaces, padding, then the path, which may hold spaces
//! (and newlines, which the kernel writes as `\012`) and ends in ` (deleted)` once
//! the file is unlinked. Splitting the line on whitespace, as probectl once did,
//! loses every path with a space.

use std::io::Read as _;

/// The most of a maps listing that is read: about 40,000 mappings. A process with
/// more (the kernel allows 65,530 by default) is scanned in part; the libc is
/// among the first libraries the dynamic loader maps, but addresses, not load
/// order, sort the listing, so a truncated read is reported.
pub const MAX_MAPS_BYTES: u64 = 4 << 20;

/// One line of a maps listing that names a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// Device (major, minor) and inode of the mapped file, as the kernel names them.
    pub dev: (u32, u32),
    pub inode: u64,
    /// The path, with `\012` turned back into newlines and without ` (deleted)`.
    pub path: Vec<u8>,
    pub deleted: bool,
    /// Mapped executable (`x` in the permissions): code, not data.
    pub executable: bool,
}

/// The mapped file as the kernel identifies it: (device, inode).
pub type FileKey = (u64, u64);

impl Mapping {
    pub fn key(&self) -> FileKey {
        (libc::makedev(self.dev.0, self.dev.1), self.inode)
    }

    /// The last path component.
    pub fn file_name(&self) -> &[u8] {
        self.path
            .rsplit(|&b| b == b'/')
            .next()
            .unwrap_or(&self.path)
    }

    /// The entry of `/proc/<pid>/map_files/` that opens exactly this mapping's file.
    pub fn map_files_name(&self) -> String {
        format!("{:x}-{:x}", self.start, self.end)
    }
}

/// What a bounded read of a maps listing found.
#[derive(Debug, Default)]
pub struct Listing {
    pub mappings: Vec<Mapping>,
    /// The listing was longer than `MAX_MAPS_BYTES`.
    pub truncated: bool,
}

/// Reads `/proc/<pid>/maps` (or the caller's own, for `None`), at most
/// `MAX_MAPS_BYTES`. Files in /proc never block.
pub fn read(pid: Option<u32>) -> std::io::Result<Listing> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/maps"),
        None => "/proc/self/maps".to_owned(),
    };
    let mut text = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_MAPS_BYTES + 1)
        .read_to_end(&mut text)?;
    let truncated = text.len() as u64 > MAX_MAPS_BYTES;
    if truncated {
        // Only whole lines.
        let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        text.truncate(end);
    }
    Ok(Listing {
        mappings: parse(&text),
        truncated,
    })
}

/// Every line that maps a file (an absolute path).
pub fn parse(text: &[u8]) -> Vec<Mapping> {
    text.split(|&b| b == b'\n').filter_map(parse_line).collect()
}

fn parse_line(line: &[u8]) -> Option<Mapping> {
    let mut fields = line.splitn(6, |&b| b == b' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    let _offset = fields.next()?;
    let dev = fields.next()?;
    let inode = fields.next()?;
    let rest = fields.next()?;
    let (start, end) = split_once(range, b'-')?;
    let (major, minor) = split_once(dev, b':')?;
    let path = rest.trim_ascii_start();
    if !path.starts_with(b"/") {
        return None;
    }
    let (path, deleted) = match path.strip_suffix(b" (deleted)") {
        Some(p) => (p, true),
        None => (path, false),
    };
    Some(Mapping {
        start: hex(start)?,
        end: hex(end)?,
        dev: (
            u32::try_from(hex(major)?).ok()?,
            u32::try_from(hex(minor)?).ok()?,
        ),
        inode: std::str::from_utf8(inode).ok()?.parse().ok()?,
        path: unescape_newlines(path),
        deleted,
        executable: perms.get(2) == Some(&b'x'),
    })
}

fn split_once(bytes: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = bytes.iter().position(|&b| b == sep)?;
    Some((&bytes[..i], &bytes[i + 1..]))
}

fn hex(bytes: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(bytes).ok()?, 16).ok()
}

/// The kernel writes a newline in a path as `\012` and nothing else escaped, so only
/// that sequence is turned back.
fn unescape_newlines(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i..].starts_with(b"\\012") {
            out.push(b'\n');
            i += 4;
        } else {
            out.push(path[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_spaces_newlines_and_deleted_files_are_whole() {
        let maps = b"7f00-7f01 r--p 00000000 08:01 123                        /usr/lib/x86_64-linux-gnu/libc.so.6\n\
7f02-7f03 r-xp 00001000 fd:02 77                         /tmp/x y/libc.so.6\n\
7f04-7f05 r-xp 00001000 00:1f 78                         /tmp/a\\012b/libc.so.6 (deleted)\n\
7f06-7f07 rw-p 00000000 00:00 0                          [heap]\n\
7f08-7f09 rw-p 00000000 00:00 0 \n\
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n";
        let m = parse(maps);
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(m[0].path, b"/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(
            (m[0].start, m[0].end, m[0].dev, m[0].inode),
            (0x7f00, 0x7f01, (8, 1), 123)
        );
        assert_eq!(m[1].path, b"/tmp/x y/libc.so.6");
        assert_eq!(m[1].file_name(), b"libc.so.6");
        assert_eq!(m[1].dev, (0xfd, 2));
        assert_eq!(m[2].path, b"/tmp/a\nb/libc.so.6");
        assert!(m[2].deleted && !m[1].deleted);
        assert_eq!(m[1].map_files_name(), "7f02-7f03");
        assert_eq!(m[0].key(), (libc::makedev(8, 1), 123));
    }

    #[test]
    fn this_process_maps_its_own_executable() {
        let listing = read(None).unwrap();
        assert!(!listing.truncated);
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert!(
            listing
                .mappings
                .iter()
                .any(|m| m.path == exe.as_os_str().as_encoded_bytes()),
            "{exe:?} not in {:?}",
            listing.mappings
        );
    }
}
