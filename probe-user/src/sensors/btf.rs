//! Struct member offsets from the kernel's own BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The files sensor follows a few kernel pointers (task -> open files -> inode) to
//! learn which file a syscall really reached, whatever path string named it. aya 0.14
//! cannot emit CO-RE relocations from Rust, so the offsets are looked up here and
//! written into a map (`KERNEL_OFFSETS`) before attaching. Only the BTF subset needed
//! to walk struct members is parsed.

use std::collections::HashMap;

const BTF_MAGIC: u16 = 0xeb9f;
const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// The kernel's BTF, read once per `Sensors::load` and parsed from the same bytes by
/// aya (the programs that attach by BTF id: tp_btf, fentry, LSM) and here (member
/// offsets), instead of once per tier that needs it (seven reads and parses, about
/// 15 ms each for aya's, per start). Dropped when the load is done: a parse holds
/// tens of megabytes the daemon has no use for afterwards.
pub struct KernelTypes {
    /// aya's parse, or why there is none.
    pub aya: Result<aya::Btf, String>,
    /// Member offsets, or why there are none.
    pub offsets: Result<KernelBtf, String>,
}

impl KernelTypes {
    pub fn read() -> Self {
        match std::fs::read(VMLINUX) {
            Ok(data) => Self {
                aya: aya::Btf::parse(&data, aya::Endianness::default()).map_err(|e| e.to_string()),
                offsets: KernelBtf::parse(&data).map_err(|e| e.to_string()),
            },
            Err(e) => {
                let why = format!("cannot read {VMLINUX}: {e}");
                Self {
                    aya: Err(why.clone()),
                    offsets: Err(why),
                }
            }
        }
    }
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("BTF has no struct {0}")]
    NoStruct(String),
    #[error("BTF struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
}

struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

struct Composite {
    members: Vec<Member>,
}

/// The structs and unions of one BTF blob, by type id.
pub struct KernelBtf {
    strings: Vec<u8>,
    composites: HashMap<u32, Composite>,
    by_name: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl KernelBtf {
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != BTF_MAGIC {
            return Err(BtfError::Malformed(
                "bad magic (only little-endian BTF is read)",
            ));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let types = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();
        let mut btf = KernelBtf {
            strings,
            composites: HashMap::new(),
            by_name: HashMap::new(),
        };
        let (mut at, mut id) = (0usize, 1u32);
        while at < types.len() {
            let name_off = u32_at(types, at)?;
            let info = u32_at(types, at + 4)?;
            let (kind, vlen, kind_flag) =
                ((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31);
            at += 12;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for m in 0..vlen {
                        let base = at + m * 12;
                        let raw = u32_at(types, base + 8)?;
                        members.push(Member {
                            name_off: u32_at(types, base)?,
                            type_id: u32_at(types, base + 4)?,
                            // With kind_flag the low 24 bits are the offset and the
                            // high 8 a bitfield size.
                            bit_offset: if kind_flag == 1 { raw & 0xff_ffff } else { raw },
                        });
                    }
                    if kind == KIND_STRUCT && name_off != 0 {
                        let name = btf.string(name_off).to_owned();
                        // The first definition wins; later ones are duplicates.
                        btf.by_name.entry(name).or_insert(id);
                    }
                    btf.composites.insert(id, Composite { members });
                    vlen * 12
                }
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                _ => 0,
            };
            at += extra;
            id += 1;
        }
        Ok(btf)
    }

    fn string(&self, off: u32) -> &str {
        let tail = self.strings.get(off as usize..).unwrap_or_default();
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).unwrap_or("")
    }

    /// Byte offset of `member` in `struct strukt`, looking through anonymous struct
    /// and union members (the kernel nests many fields in them).
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        self.find(id, member, 0)
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoMember {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
            })
    }

    fn find(&self, id: u32, member: &str, depth: u32) -> Option<u32> {
        let composite = self.composites.get(&id)?;
        if depth > 8 {
            return None;
        }
        for m in &composite.members {
            if m.name_off != 0 {
                if self.string(m.name_off) == member {
                    return Some(m.bit_offset);
                }
            } else if let Some(inner) = self.find(m.type_id, member, depth + 1) {
                return Some(m.bit_offset + inner);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_offsets_in_the_running_kernels_btf() {
        let Ok(btf) = KernelTypes::read().offsets else {
            // Unit tests run on build machines too; the root tests cover the real use.
            return;
        };
        // `struct path` is { struct vfsmount *mnt; struct dentry *dentry; } everywhere.
        assert_eq!(btf.member_offset("path", "mnt").unwrap(), 0);
        assert_eq!(btf.member_offset("path", "dentry").unwrap(), 8);
        assert!(btf.member_offset("task_struct", "files").unwrap() > 0);
        assert!(matches!(
            btf.member_offset("path", "nope"),
            Err(BtfError::NoMember { .. })
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert!(KernelBtf::parse(b"not btf at all, clearly not").is_err());
    }
}
