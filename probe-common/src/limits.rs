//! Size limits shared by both sides. Changing one changes the ABI.

/// Bytes captured of a path (open/readlink targets, exec filename), NUL included.
/// Also the LPM-trie key width, which the kernel caps at 256 bytes.
pub const PATH_LEN: usize = 256;
/// Bytes captured of one environment variable name, NUL included.
pub const ENV_NAME_LEN: usize = 64;
/// Bytes of an environment value captured at exec (for policy categories that ask).
pub const ENV_VALUE_PREFIX_LEN: usize = 64;
/// argv is captured into fixed slots so the verifier sees constant offsets.
pub const ARGV_SLOTS: usize = 8;
/// Bytes per argv slot, NUL included.
pub const ARGV_SLOT_LEN: usize = 128;
/// Capacity of the kernel's watched-process map.
pub const MAX_WATCHED: u32 = 16_384;
/// Bytes of a path's last component kept as a `BASENAMES` key, NUL included.
pub const BASENAME_LEN: usize = 32;
/// Capacity of `INODES`: the files named by policy paths and everything under
/// policy prefixes (the zoneinfo tree alone is about 1,300 entries).
pub const MAX_POLICY_INODES: u32 = 16_384;
/// Capacity of the policy's env-name and path maps (also of the selected program
/// names and user ids, and of the basenames).
pub const MAX_POLICY_ENTRIES: u32 = 1_024;
/// Capacity of the policy's env-glob map (`LC_*`).
pub const MAX_ENV_PREFIXES: u32 = 256;
/// Ring buffer size in bytes (power of two, multiple of the page size).
pub const RING_BYTES: u32 = 4 * 1024 * 1024;
