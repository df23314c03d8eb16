//! What the files sensor needs beyond path strings: kernel struct offsets from BTF (the
//! policy files by inode and the policy basenames are policy maps: `reload.rs`; see
//! `probe-ebpf/src/resolve.rs`).

use aya::maps::Array;
use probe_common::{
    KOFF_DENTRY_INODE, KOFF_FDT_FD, KOFF_FDT_MAX_FDS, KOFF_FILE_INODE, KOFF_FILES_FDT, KOFF_FS_PWD,
    KOFF_INODE_INO, KOFF_INODE_SB, KOFF_PATH_DENTRY, KOFF_SB_DEV, KOFF_TASK_FILES, KOFF_TASK_FS,
    MAP_KERNEL_OFFSETS,
};
use serde::Serialize;

use super::{SensorError, Sensors, map_err};

/// How the files sensor ties syscalls to policy files beyond the path string; shown
/// by `doctor` and in reports.
#[derive(Debug, Clone, Serialize)]
pub struct FileResolution {
    /// Matching by the file a syscall reached is on.
    pub by_inode: bool,
    /// Why it is off, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_inode_off: Option<String>,
    /// Files the policy names that are indexed by inode.
    pub indexed_files: usize,
    /// Files under policy prefixes left out (the map was full).
    pub not_indexed: u64,
    /// Basenames sent to userspace for resolution when nothing else matched.
    pub basenames: usize,
}

/// (slot, struct, member) of every offset `resolve.rs` follows.
const OFFSETS: [(u32, &str, &str); 12] = [
    (KOFF_TASK_FILES, "task_struct", "files"),
    (KOFF_TASK_FS, "task_struct", "fs"),
    (KOFF_FILES_FDT, "files_struct", "fdt"),
    (KOFF_FDT_MAX_FDS, "fdtable", "max_fds"),
    (KOFF_FDT_FD, "fdtable", "fd"),
    (KOFF_FILE_INODE, "file", "f_inode"),
    (KOFF_INODE_INO, "inode", "i_ino"),
    (KOFF_INODE_SB, "inode", "i_sb"),
    (KOFF_SB_DEV, "super_block", "s_dev"),
    (KOFF_FS_PWD, "fs_struct", "pwd"),
    (KOFF_PATH_DENTRY, "path", "dentry"),
    (KOFF_DENTRY_INODE, "dentry", "d_inode"),
];

impl Sensors {
    /// Fills `KERNEL_OFFSETS` from the kernel's BTF, once at start. Without BTF,
    /// matching by inode stays off (said in `doctor`); it is not fatal. `INODES` and
    /// `BASENAMES` are policy maps, written with the rest of the policy
    /// (`apply_policy`).
    pub(super) fn write_kernel_offsets(
        &mut self,
        types: &super::btf::KernelTypes,
    ) -> Result<FileResolution, SensorError> {
        let offsets = types
            .offsets
            .as_ref()
            .map_err(String::clone)
            .and_then(|btf| {
                OFFSETS
                    .iter()
                    .map(|(slot, strukt, member)| {
                        btf.member_offset(strukt, member)
                            .map(|offset| (*slot, offset))
                            .map_err(|e| e.to_string())
                    })
                    .collect::<Result<Vec<_>, _>>()
            });
        let mut resolution = FileResolution {
            by_inode: false,
            by_inode_off: None,
            indexed_files: 0,
            not_indexed: 0,
            basenames: 0,
        };
        match offsets {
            Ok(offsets) => {
                let mut array: Array<_, u32> = Array::try_from(self.map(MAP_KERNEL_OFFSETS)?)
                    .map_err(map_err(MAP_KERNEL_OFFSETS))?;
                for (slot, offset) in offsets {
                    array
                        .set(slot, offset, 0)
                        .map_err(map_err(MAP_KERNEL_OFFSETS))?;
                }
                resolution.by_inode = true;
            }
            Err(err) => {
                tracing::warn!("files are matched by path string only: {err}");
                resolution.by_inode_off = Some(format!("kernel BTF: {err}"));
            }
        }
        Ok(resolution)
    }
}
