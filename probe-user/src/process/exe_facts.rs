//! What an executable's ELF headers say about what probectl can see of it:
//!
//! * **linkage**: without `PT_INTERP` no dynamic loader runs and no libc is mapped
//!   from a file, so the getenv uprobes (placed on mapped libcs) never fire: its
//!   environment lookups cannot be seen. A static-pie (`ET_DYN` without `PT_INTERP`,
//!   as Codex's musl build is) is static too.
//! * **runtime**: Python, Go and Bun copy the environment into their own structures
//!   at start and look names up there, never through libc's getenv per lookup.
//!   (Rust's `std::env::var` calls libc's getenv on Linux, and Node's `process.env.X`
//!   does too: their lookups are seen, so they are not listed.)
//!
//! The file is the running process's own executable (`/proc/<pid>/exe`, the inode it
//! runs, whatever its path now names; the exec'd path when the process is already
//! gone), checked to be a regular file before it is opened for reading, and read with a few bounded positioned reads on the lookup thread, never on
//! the event loop: a file on a stalled file system can delay only the answer.

use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};

use object::LittleEndian as LE;
use object::elf::{FileHeader64, ProgramHeader64, SectionHeader64};
use object::pod;
use serde::Serialize;

/// Most program headers read (glibc-built programs have about 13).
const MAX_PROGRAM_HEADERS: u64 = 256;
/// Most section headers read (Go programs have about 40).
const MAX_SECTION_HEADERS: u64 = 1_024;
/// Largest section name table read.
const MAX_SECTION_NAMES: u64 = 64 << 10;
/// Bun's standalone executables end with this trailer after the embedded bundle.
const BUN_TRAILER: &[u8] = b"\n---- Bun! ----\n";

/// How an executable is linked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Linkage {
    /// It has a dynamic loader (`PT_INTERP`): its libc is a mapped file.
    Dynamic,
    /// No `PT_INTERP` (static, or static-pie): its environment lookups cannot be
    /// seen, only the environment at exec.
    Static,
    /// Not known: the process was gone before its executable was read, or it is not a
    /// native ELF file.
    #[default]
    Unknown,
}

impl Linkage {
    pub fn is_unknown(&self) -> bool {
        *self == Linkage::Unknown
    }

    /// The blind spot it makes, for the CLI's summary (its report is partial).
    pub fn note(self) -> Option<&'static str> {
        (self == Linkage::Static).then_some(
            "statically linked: environment lookups cannot be seen; the environment at exec is shown",
        )
    }
}

/// A runtime that copies the environment at start, so lookups are not seen one by
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    Python,
    Go,
    Bun,
}

impl Runtime {
    /// What it means for the CLI's summary (not partial: the exposure is the signal).
    pub fn note(self) -> String {
        format!(
            "runtime copies the environment at start ({}): lookups are not seen one by one; names present at exec are listed as exposed",
            self.name()
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Runtime::Python => "Python",
            Runtime::Go => "Go",
            Runtime::Bun => "Bun",
        }
    }
}

/// What the headers said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExeFacts {
    pub linkage: Linkage,
    pub runtime: Option<Runtime>,
}

/// The facts of `pid`'s executable, `exe_name` being its basename (Python is known by
/// its name: its binary has no mark of its own). A short-lived process is often gone
/// before the lookup runs: then the path it exec'd is read instead (see `open_path`).
pub fn of_process(pid: u32, exe_path: &str, exe_name: &str) -> ExeFacts {
    let by_name = runtime_by_name(exe_name);
    let opened = open_regular(&format!("/proc/{pid}/exe")).or_else(|| {
        // Only a path given whole: an escaped one is not the file's name.
        (exe_path.starts_with('/') && !exe_path.contains('\\'))
            .then(|| open_regular(exe_path))
            .flatten()
    });
    let mut facts = opened.and_then(|file| of_file(&file)).unwrap_or_default();
    facts.runtime = by_name.or(facts.runtime);
    facts
}

/// Opens `path` for reading only if it is a regular file: first as an `O_PATH`
/// descriptor (which opens nothing: no FIFO waits, no device driver runs), checked,
/// then reopened through that descriptor, so the file checked is the file read. The
/// path of a gone process may have been replaced since its exec; what is read is
/// then another program's headers, and the worst outcome is a wrong linkage for a
/// process that no longer runs.
fn open_regular(path: &str) -> Option<std::fs::File> {
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    if !handle.metadata().ok()?.is_file() {
        return None;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&handle)
        ))
        .ok()
}

/// Python and Bun by the executable's name: `python`, `python3`, `python3.12`,
/// `bun`.
pub fn runtime_by_name(name: &str) -> Option<Runtime> {
    let versioned = |stem: &str| {
        name.strip_prefix(stem)
            .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
    };
    if versioned("python") {
        Some(Runtime::Python)
    } else if name == "bun" {
        Some(Runtime::Bun)
    } else {
        None
    }
}

/// Reads the ELF headers of an opened file: `None` when it is not a 64-bit
/// little-endian ELF executable or its headers are malformed.
pub fn of_file(file: &std::fs::File) -> Option<ExeFacts> {
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let size = meta.len();
    let header_bytes = read_at(file, 0, size_of::<FileHeader64<LE>>() as u64, size)?;
    let (header, _) = pod::from_bytes::<FileHeader64<LE>>(&header_bytes).ok()?;
    if header.e_ident.magic != object::elf::ELFMAG
        || header.e_ident.class != object::elf::ELFCLASS64
        || header.e_ident.data != object::elf::ELFDATA2LSB
        || !matches!(
            header.e_type.get(LE),
            object::elf::ET_DYN | object::elf::ET_EXEC
        )
    {
        return None;
    }
    let ph_size = u64::from(header.e_phentsize.get(LE));
    let ph_count = u64::from(header.e_phnum.get(LE));
    if ph_size != size_of::<ProgramHeader64<LE>>() as u64 || ph_count > MAX_PROGRAM_HEADERS {
        return None;
    }
    let table = read_at(file, header.e_phoff.get(LE), ph_size * ph_count, size)?;
    let (phdrs, _) =
        pod::slice_from_bytes::<ProgramHeader64<LE>>(&table, ph_count as usize).ok()?;
    let linkage = if phdrs
        .iter()
        .any(|p| p.p_type.get(LE) == object::elf::PT_INTERP)
    {
        Linkage::Dynamic
    } else {
        Linkage::Static
    };
    let runtime = runtime_by_sections(file, header, size).or_else(|| {
        let tail = BUN_TRAILER.len() as u64;
        let at = size.checked_sub(tail)?;
        (read_at(file, at, tail, size)? == BUN_TRAILER).then_some(Runtime::Bun)
    });
    Some(ExeFacts { linkage, runtime })
}

/// Go by its `.go.buildinfo` section (kept by `strip`) or build-id note; Bun by its
/// `.bun` section.
fn runtime_by_sections(
    file: &std::fs::File,
    header: &FileHeader64<LE>,
    size: u64,
) -> Option<Runtime> {
    let sh_size = u64::from(header.e_shentsize.get(LE));
    let sh_count = u64::from(header.e_shnum.get(LE));
    if sh_size != size_of::<SectionHeader64<LE>>() as u64
        || sh_count == 0
        || sh_count > MAX_SECTION_HEADERS
    {
        return None;
    }
    let table = read_at(file, header.e_shoff.get(LE), sh_size * sh_count, size)?;
    let (sections, _) =
        pod::slice_from_bytes::<SectionHeader64<LE>>(&table, sh_count as usize).ok()?;
    let names_at = sections.get(usize::from(header.e_shstrndx.get(LE)))?;
    let names_len = names_at.sh_size.get(LE);
    if names_len > MAX_SECTION_NAMES {
        return None;
    }
    let names = read_at(file, names_at.sh_offset.get(LE), names_len, size)?;
    sections.iter().find_map(|s| {
        let tail = names.get(s.sh_name.get(LE) as usize..)?;
        let name = &tail[..tail.iter().position(|&b| b == 0)?];
        match name {
            b".go.buildinfo" | b".note.go.buildid" => Some(Runtime::Go),
            b".bun" => Some(Runtime::Bun),
            _ => None,
        }
    })
}

/// `len` bytes at `offset`, within a file of `size` bytes.
fn read_at(file: &std::fs::File, offset: u64, len: u64, size: u64) -> Option<Vec<u8>> {
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return None;
    }
    let mut buf = vec![0; usize::try_from(len).ok()?];
    file.read_exact_at(&mut buf, offset).ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_dynamic_and_no_copying_runtime() {
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        assert_eq!(
            of_file(&file),
            Some(ExeFacts {
                linkage: Linkage::Dynamic,
                runtime: None
            })
        );
    }

    #[test]
    fn a_file_that_is_not_elf_has_no_facts() {
        let file = std::fs::File::open("/etc/passwd").unwrap();
        assert_eq!(of_file(&file), None);
        let file = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(of_file(&file), None);
    }

    /// A 64-bit ELF header with `e_type` `ET_EXEC` and the given program and section
    /// header tables (offset, entry size, count) and section-name index.
    fn elf_header(ph: (u64, u16, u16), sh: (u64, u16, u16), shstrndx: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        (h[4], h[5], h[6]) = (2, 1, 1);
        h[16..18].copy_from_slice(&2u16.to_le_bytes());
        h[32..40].copy_from_slice(&ph.0.to_le_bytes());
        h[40..48].copy_from_slice(&sh.0.to_le_bytes());
        h[54..56].copy_from_slice(&ph.1.to_le_bytes());
        h[56..58].copy_from_slice(&ph.2.to_le_bytes());
        h[58..60].copy_from_slice(&sh.1.to_le_bytes());
        h[60..62].copy_from_slice(&sh.2.to_le_bytes());
        h[62..64].copy_from_slice(&shstrndx.to_le_bytes());
        h
    }

    fn facts_of_bytes(name: &str, bytes: &[u8]) -> Option<ExeFacts> {
        let path = std::env::temp_dir().join(format!("exe-facts-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let facts = of_file(&std::fs::File::open(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        facts
    }

    /// Headers a hostile executable controls: offsets past the end or overflowing,
    /// huge counts, a section-name index out of range. Each is refused or ignored
    /// with bounded reads, never a panic or a huge allocation.
    #[test]
    fn hostile_elf_headers_are_refused_with_bounded_reads() {
        // Program headers at an offset that overflows, or too many of them.
        assert_eq!(
            facts_of_bytes(
                "ph-overflow",
                &elf_header((u64::MAX - 8, 56, 3), (0, 0, 0), 0)
            ),
            None
        );
        assert_eq!(
            facts_of_bytes("ph-count", &elf_header((64, 56, u16::MAX), (0, 0, 0), 0)),
            None
        );
        // One real (empty, so no PT_INTERP) program header; section headers past the
        // end of the file, then a section-name index out of range: the linkage is
        // still read, the runtime is not.
        let mut one = elf_header((64, 56, 1), (u64::MAX / 2, 64, 1_000), 0);
        one.extend_from_slice(&[0u8; 56]);
        assert_eq!(
            facts_of_bytes("sh-past-end", &one),
            Some(ExeFacts {
                linkage: Linkage::Static,
                runtime: None
            })
        );
        let mut bad_index = elf_header((64, 56, 1), (120, 64, 1), 7);
        bad_index.extend_from_slice(&[0u8; 56 + 64]);
        assert_eq!(
            facts_of_bytes("shstrndx", &bad_index).map(|f| f.runtime),
            Some(None)
        );
        // A file cut inside its own header.
        assert_eq!(facts_of_bytes("cut", &bad_index[..40]), None);
    }

    /// The path of a process that is gone is the user's to replace: a FIFO there is
    /// never opened for reading (which would block the lookup thread until a writer
    /// came).
    #[test]
    fn a_fifo_at_a_gone_processs_path_is_not_opened() {
        let fifo = std::env::temp_dir().join(format!("exe-facts-fifo-{}", std::process::id()));
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let path = fifo.to_str().unwrap().to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        // A pid that cannot exist (above pid_max's largest value), so its path is read.
        std::thread::spawn(move || {
            let _ = tx.send(of_process(u32::MAX, &path, "x"));
        });
        let facts = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the lookup returned instead of blocking on the FIFO");
        assert_eq!(facts, ExeFacts::default());
        std::fs::remove_file(&fifo).unwrap();
    }

    #[test]
    fn python_and_bun_are_known_by_name() {
        for name in ["python", "python3", "python3.12"] {
            assert_eq!(runtime_by_name(name), Some(Runtime::Python), "{name}");
        }
        assert_eq!(runtime_by_name("bun"), Some(Runtime::Bun));
        for name in ["pythonista", "node", "bunx-helper", "curl"] {
            assert_eq!(runtime_by_name(name), None, "{name}");
        }
    }
}
