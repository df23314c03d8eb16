//! Just enough ELF to place a uprobe: is this file a shared object or executable for
//! this machine, and where in the file are the functions it defines (from the
//! dynamic symbol table)? The files are whatever a watched process mapped, often
//! made by an unprivileged user, so every read is bounded and positioned (`pread`),
//! nothing is mapped, and a claim the file cannot back (a table past its end, an
//! offset overflow) is an error, never a large allocation.
//!
//! aya can resolve a symbol itself, but it maps the whole file by path, follows
//! `.gnu_debuglink` to other paths, and opens the target again by name: each of
//! those would let the owner of the file swap it, plant a FIFO or a symlink, or make
//! probectl read an unbounded file. Here the caller opens the file once (a
//! descriptor it has checked) and attaches through that same descriptor.

use std::os::unix::fs::FileExt as _;

use object::LittleEndian as LE;
use object::elf::{FileHeader64, SectionHeader64, Sym64};
use object::pod;

/// Largest section header table read (1,024 entries; glibc has about 70).
const MAX_SECTION_HEADERS: u64 = 64 << 10;
/// Largest dynamic symbol table, and its string table, read: node's are about 2 and
/// 5 MiB, glibc's 70 and 33 KiB.
const MAX_DYNAMIC_TABLE: u64 = 16 << 20;

#[cfg(target_arch = "x86_64")]
const NATIVE_MACHINE: u16 = object::elf::EM_X86_64;
#[cfg(target_arch = "aarch64")]
const NATIVE_MACHINE: u16 = object::elf::EM_AARCH64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    #[error("not an ELF file")]
    NotElf,
    #[error("not a 64-bit little-endian shared object or executable for this machine")]
    NotNative,
    #[error("{0} is larger than probectl reads ({1} bytes)")]
    TooLarge(&'static str, u64),
    #[error("malformed: {0}")]
    Malformed(&'static str),
    #[error("no dynamic symbol table")]
    NoDynamicSymbols,
    #[error("read error: {0}")]
    Read(String),
}

/// For each of `names`, the file offset of the function of that name the file
/// defines and exports (`.dynsym`, `STT_FUNC`, not undefined), or `None`.
pub fn exported_functions(
    file: &std::fs::File,
    names: &[&str],
) -> Result<Vec<Option<u64>>, ElfError> {
    let size = file
        .metadata()
        .map_err(|e| ElfError::Read(e.to_string()))?
        .len();
    let header_bytes = read_at(file, 0, size_of::<FileHeader64<LE>>() as u64, size)
        .map_err(|_| ElfError::NotElf)?;
    let (header, _) =
        pod::from_bytes::<FileHeader64<LE>>(&header_bytes).map_err(|()| ElfError::NotElf)?;
    if header.e_ident.magic != object::elf::ELFMAG {
        return Err(ElfError::NotElf);
    }
    if header.e_ident.class != object::elf::ELFCLASS64
        || header.e_ident.data != object::elf::ELFDATA2LSB
        || !matches!(
            header.e_type.get(LE),
            object::elf::ET_DYN | object::elf::ET_EXEC
        )
        || header.e_machine.get(LE) != NATIVE_MACHINE
    {
        return Err(ElfError::NotNative);
    }
    let entry_size = u64::from(header.e_shentsize.get(LE));
    let count = u64::from(header.e_shnum.get(LE));
    if entry_size != size_of::<SectionHeader64<LE>>() as u64 || count == 0 {
        // Extended numbering (e_shnum 0) is for objects with 65,280+ sections: not
        // a libc.
        return Err(ElfError::Malformed("section header table"));
    }
    let table = read_bounded(
        file,
        header.e_shoff.get(LE),
        entry_size * count,
        MAX_SECTION_HEADERS,
        "the section header table",
        size,
    )?;
    let (sections, _) = pod::slice_from_bytes::<SectionHeader64<LE>>(&table, count as usize)
        .map_err(|()| ElfError::Malformed("section header table"))?;
    let dynsym = sections
        .iter()
        .find(|s| s.sh_type.get(LE) == object::elf::SHT_DYNSYM)
        .ok_or(ElfError::NoDynamicSymbols)?;
    let strtab = sections
        .get(dynsym.sh_link.get(LE) as usize)
        .ok_or(ElfError::Malformed("dynamic string table index"))?;
    let symbols = read_bounded(
        file,
        dynsym.sh_offset.get(LE),
        dynsym.sh_size.get(LE),
        MAX_DYNAMIC_TABLE,
        "the dynamic symbol table",
        size,
    )?;
    let strings = read_bounded(
        file,
        strtab.sh_offset.get(LE),
        strtab.sh_size.get(LE),
        MAX_DYNAMIC_TABLE,
        "the dynamic string table",
        size,
    )?;
    let symbols = pod::slice_from_all_bytes::<Sym64<LE>>(
        &symbols[..symbols.len() - symbols.len() % size_of::<Sym64<LE>>()],
    )
    .map_err(|()| ElfError::Malformed("dynamic symbol table"))?;
    let mut found = vec![None; names.len()];
    for sym in symbols {
        let index = sym.st_shndx.get(LE);
        if sym.st_type() != object::elf::STT_FUNC
            || index == object::elf::SHN_UNDEF
            || index >= object::elf::SHN_LORESERVE
        {
            continue;
        }
        let Some(name) = name_at(&strings, sym.st_name.get(LE) as usize) else {
            continue;
        };
        let Some(slot) = names.iter().position(|n| n.as_bytes() == name) else {
            continue;
        };
        if found[slot].is_some() {
            continue;
        }
        // The kernel wants a file offset: the symbol's address within its section,
        // plus the section's place in the file (as aya computes it).
        let section = sections
            .get(usize::from(index))
            .ok_or(ElfError::Malformed("symbol section index"))?;
        let offset = sym
            .st_value
            .get(LE)
            .checked_sub(section.sh_addr.get(LE))
            .and_then(|within| within.checked_add(section.sh_offset.get(LE)))
            .filter(|&o| o < size)
            .ok_or(ElfError::Malformed("symbol address outside its section"))?;
        found[slot] = Some(offset);
    }
    Ok(found)
}

fn name_at(strings: &[u8], at: usize) -> Option<&[u8]> {
    let tail = strings.get(at..)?;
    let end = tail.iter().position(|&b| b == 0)?;
    Some(&tail[..end])
}

fn read_bounded(
    file: &std::fs::File,
    offset: u64,
    len: u64,
    max: u64,
    what: &'static str,
    size: u64,
) -> Result<Vec<u8>, ElfError> {
    if len > max {
        return Err(ElfError::TooLarge(what, len));
    }
    read_at(file, offset, len, size).map_err(|_| ElfError::Malformed(what))
}

/// `len` bytes at `offset`, which must lie within a file of `size` bytes.
fn read_at(file: &std::fs::File, offset: u64, len: u64, size: u64) -> Result<Vec<u8>, ()> {
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(());
    }
    let mut buf = vec![0; usize::try_from(len).map_err(|_| ())?];
    file.read_exact_at(&mut buf, offset).map_err(|_| ())?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_libc() -> std::fs::File {
        let listing = super::super::proc_maps::read(None).unwrap();
        let libc = listing
            .mappings
            .iter()
            .find(|m| m.file_name().starts_with(b"libc.so"))
            .expect("the tests run against glibc");
        std::fs::File::open(
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&libc.path),
        )
        .unwrap()
    }

    #[test]
    fn the_system_libc_exports_getenv_where_its_symbol_table_says() {
        let libc = own_libc();
        let found = exported_functions(&libc, &["getenv", "secure_getenv", "no_such_fn"]).unwrap();
        assert!(found[0].is_some() && found[1].is_some(), "{found:?}");
        assert_eq!(found[2], None);
        // The bytes there are code: an x86-64 function starts with endbr64 (CET) or
        // a push/sub on this distribution's glibc; at least they are not zero.
        let mut code = [0u8; 4];
        libc.read_exact_at(&mut code, found[0].unwrap()).unwrap();
        assert_ne!(code, [0; 4]);
    }

    #[test]
    fn files_that_are_not_elf_or_lie_about_their_tables_are_refused() {
        let dir = std::env::temp_dir().join(format!("probectl-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            std::fs::File::open(path).unwrap()
        };
        assert_eq!(
            exported_functions(&write("text", b"#!/bin/sh\necho hi\n"), &["getenv"]),
            Err(ElfError::NotElf)
        );
        assert_eq!(
            exported_functions(&write("empty", b""), &["getenv"]),
            Err(ElfError::NotElf)
        );
        // A real header whose section table claims to lie far past the end.
        let mut header = vec![0u8; 64];
        std::fs::File::open("/proc/self/exe")
            .unwrap()
            .read_exact_at(&mut header, 0)
            .unwrap();
        header[0x28..0x30].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert_eq!(
            exported_functions(&write("liar", &header), &["getenv"]),
            Err(ElfError::Malformed("the section header table"))
        );
        // And one that claims a huge table.
        header[0x3c..0x3e].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(matches!(
            exported_functions(&write("huge", &header), &["getenv"]),
            Err(ElfError::TooLarge(..))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
