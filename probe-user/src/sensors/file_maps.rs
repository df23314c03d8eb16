//! What the files sensor needs beyond path strings: kernel struct offsets from BTF,
//! the policy files by inode, and the policy basenames (see `probe-ebpf/src/resolve.rs`).

use aya::maps::{Array, HashMap};
use probe_common::{
    BasenameKey, InodeKey, KOFF_DENTRY_INODE, KOFF_FDT_FD, KOFF_FDT_MAX_FDS, KOFF_FILE_INODE,
    KOFF_FILES_FDT, KOFF_FS_PWD, KOFF_INODE_INO, KOFF_INODE_SB, KOFF_PATH_DENTRY, KOFF_SB_DEV,
    KOFF_TASK_FILES, KOFF_TASK_FS, MAP_BASENAMES, MAP_INODES, MAP_KERNEL_OFFSETS, MAP_SETTINGS,
    PATH_MATCH_EXACT, PolicyRef, SETTING_BASENAMES, SETTING_INODES,
};
use serde::Serialize;

use super::{SensorError, Sensors, btf::KernelBtf, map_err};
use crate::policy::FileIndex;

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
    /// Fills `KERNEL_OFFSETS`, `INODES` and `BASENAMES` and turns each on. Missing
    /// BTF turns matching by inode off (said in `doctor`); it is not fatal.
    pub(super) fn write_file_maps(
        &mut self,
        index: &FileIndex,
    ) -> Result<FileResolution, SensorError> {
        let offsets = KernelBtf::from_sys_fs().and_then(|btf| {
            OFFSETS
                .iter()
                .map(|(slot, strukt, member)| Ok((*slot, btf.member_offset(strukt, member)?)))
                .collect::<Result<Vec<_>, _>>()
        });
        let mut resolution = FileResolution {
            by_inode: false,
            by_inode_off: None,
            indexed_files: index.files.len(),
            not_indexed: index.not_indexed,
            basenames: index.basenames.len(),
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
                let mut inodes: HashMap<_, InodeKey, PolicyRef> =
                    HashMap::try_from(self.map(MAP_INODES)?).map_err(map_err(MAP_INODES))?;
                for (key, id) in &index.inodes {
                    let value = PolicyRef {
                        entry_id: *id,
                        match_kind: PATH_MATCH_EXACT,
                    };
                    inodes.insert(key, value, 0).map_err(map_err(MAP_INODES))?;
                }
                resolution.by_inode = true;
            }
            Err(err) => {
                tracing::warn!("files are matched by path string only: {err}");
                resolution.by_inode_off = Some(format!("kernel BTF: {err}"));
            }
        }
        let mut basenames: HashMap<_, BasenameKey, PolicyRef> =
            HashMap::try_from(self.map(MAP_BASENAMES)?).map_err(map_err(MAP_BASENAMES))?;
        for key in &index.basenames {
            basenames
                .insert(key, PolicyRef::default(), 0)
                .map_err(map_err(MAP_BASENAMES))?;
        }
        let mut settings: Array<_, u32> =
            Array::try_from(self.map(MAP_SETTINGS)?).map_err(map_err(MAP_SETTINGS))?;
        settings
            .set(SETTING_INODES, u32::from(resolution.by_inode), 0)
            .map_err(map_err(MAP_SETTINGS))?;
        settings
            .set(SETTING_BASENAMES, u32::from(!index.basenames.is_empty()), 0)
            .map_err(map_err(MAP_SETTINGS))?;
        Ok(resolution)
    }
}
