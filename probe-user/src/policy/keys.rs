//! Kernel map keys made from policy strings (a leaf module: every other policy module
//! may use it).

use probe_common::{BASENAME_LEN, BasenameKey, ENV_NAME_LEN, EnvNameKey, PATH_LEN};

/// `ENV_NAMES` / `ENV_PREFIXES` key: upper-cased, zero padded.
pub fn env_key(name: &str) -> EnvNameKey {
    let mut key = [0u8; ENV_NAME_LEN];
    for (dst, src) in key.iter_mut().zip(name.bytes()) {
        *dst = src.to_ascii_uppercase();
    }
    key
}

/// `PATHS` key data: the path, zero padded (validated shorter than `PATH_LEN`).
pub fn path_key(path: &str) -> [u8; PATH_LEN] {
    let mut key = [0u8; PATH_LEN];
    key[..path.len()].copy_from_slice(path.as_bytes());
    key
}

/// `BASENAMES` key: a path's last component, cut to fit, zero padded.
pub fn basename_key(name: &[u8]) -> BasenameKey {
    let mut key = [0u8; BASENAME_LEN];
    let n = name.len().min(BASENAME_LEN - 1);
    key[..n].copy_from_slice(&name[..n]);
    key
}
