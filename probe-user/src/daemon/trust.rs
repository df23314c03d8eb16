//! Whether a control socket is really the daemon's, checked by its clients before
//! they send anything or believe an answer. A socket at the path a client uses
//! (`PROBECTL_SOCKET`, or the default) could have been put there by another user;
//! root's `policy reload` or `run` answered by such a fake would report success
//! while nothing happened. Two checks, both required:
//!
//! - the socket file itself (`lstat`, so a symbolic link is refused rather than
//!   followed) is a socket owned by a trusted uid: a clear error for the usual case;
//! - the process listening on the connected socket (`SO_PEERCRED`, which the kernel
//!   fills in and no process can forge) runs as a trusted uid: this closes the race
//!   between the `lstat` and the `connect`.
//!
//! Trusted: root, and the uid named by `PROBECTL_SOCKET_OWNER` (a user name or a
//! number) for a daemon run under a dedicated account. Whoever can set that variable
//! can set `PROBECTL_SOCKET` too, so it trusts no one new.

use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

/// The environment variable naming a trusted owner besides root.
pub const OWNER_ENV: &str = "PROBECTL_SOCKET_OWNER";

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot connect to {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "refusing the control socket {}: it is a symbolic link (owned by uid {owner}); point PROBECTL_SOCKET at the socket itself",
        path.display()
    )]
    Symlink { path: PathBuf, owner: u32 },
    #[error("refusing the control socket {}: it is not a socket", path.display())]
    NotSocket { path: PathBuf },
    #[error(
        "refusing the control socket {}: it belongs to uid {owner}, not to {trusted}; another user may have put it there",
        path.display()
    )]
    Owner {
        path: PathBuf,
        owner: u32,
        trusted: Trusted,
    },
    #[error(
        "refusing the daemon at {}: the process listening there runs as uid {uid}, not as {trusted}; another user may have put it there",
        path.display()
    )]
    Peer {
        path: PathBuf,
        uid: u32,
        trusted: Trusted,
    },
    #[error("{OWNER_ENV}={0:?} is neither a user nor a uid")]
    UnknownOwner(String),
}

/// The uids a daemon's socket may belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trusted(Vec<u32>);

impl std::fmt::Display for Trusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .0
            .iter()
            .map(|&u| {
                if u == 0 {
                    "root".to_owned()
                } else {
                    format!("uid {u} ({OWNER_ENV})")
                }
            })
            .collect();
        f.write_str(&names.join(" or "))
    }
}

impl Trusted {
    /// Root, and `PROBECTL_SOCKET_OWNER` when set.
    pub fn from_env() -> Result<Self, TrustError> {
        let mut uids = vec![0];
        if let Some(owner) = std::env::var_os(OWNER_ENV) {
            let owner = owner.to_string_lossy().into_owned();
            let uid = match owner.parse::<u32>() {
                Ok(uid) => uid,
                Err(_) => nix::unistd::User::from_name(&owner)
                    .ok()
                    .flatten()
                    .map(|u| u.uid.as_raw())
                    .ok_or(TrustError::UnknownOwner(owner))?,
            };
            uids.push(uid);
        }
        Ok(Self(uids))
    }

    pub fn root_only() -> Self {
        Self(vec![0])
    }

    fn contains(&self, uid: u32) -> bool {
        self.0.contains(&uid)
    }

    /// The socket file: a socket (not a symbolic link to one) owned by a trusted uid.
    pub fn check_file(&self, path: &Path) -> Result<(), TrustError> {
        let meta = std::fs::symlink_metadata(path).map_err(|source| TrustError::Io {
            path: path.to_owned(),
            source,
        })?;
        let file_type = meta.file_type();
        if file_type.is_symlink() {
            return Err(TrustError::Symlink {
                path: path.to_owned(),
                owner: meta.uid(),
            });
        }
        if !file_type.is_socket() {
            return Err(TrustError::NotSocket {
                path: path.to_owned(),
            });
        }
        if !self.contains(meta.uid()) {
            return Err(TrustError::Owner {
                path: path.to_owned(),
                owner: meta.uid(),
                trusted: self.clone(),
            });
        }
        Ok(())
    }

    /// The process at the other end of a connected socket runs as a trusted uid.
    pub fn check_peer(&self, path: &Path, socket: impl AsFd) -> Result<(), TrustError> {
        let cred =
            nix::sys::socket::getsockopt(&socket, nix::sys::socket::sockopt::PeerCredentials)
                .map_err(|errno| TrustError::Io {
                    path: path.to_owned(),
                    source: errno.into(),
                })?;
        if !self.contains(cred.uid()) {
            return Err(TrustError::Peer {
                path: path.to_owned(),
                uid: cred.uid(),
                trusted: self.clone(),
            });
        }
        Ok(())
    }

    /// `check_file`, connect, `check_peer`.
    pub fn connect(&self, path: &Path) -> Result<std::os::unix::net::UnixStream, TrustError> {
        self.check_file(path)?;
        let stream =
            std::os::unix::net::UnixStream::connect(path).map_err(|source| TrustError::Io {
                path: path.to_owned(),
                source,
            })?;
        self.check_peer(path, &stream)?;
        Ok(stream)
    }
}

impl TrustError {
    /// The I/O error behind a failed connect, for hints (not running, no access).
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            TrustError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_of_another_user_a_link_or_a_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("probectl-trust-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let sock = dir.join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let mine = Trusted(vec![me]);
        let stream = mine.connect(&sock).expect("own socket, own listener");
        drop((stream, listener));

        let other = Trusted(vec![me.wrapping_add(1)]);
        let err = other.check_file(&sock).unwrap_err();
        assert!(
            matches!(err, TrustError::Owner { owner, .. } if owner == me),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("another user may have put it there")
        );

        let link = dir.join("link.sock");
        std::os::unix::fs::symlink(&sock, &link).unwrap();
        assert!(matches!(
            mine.check_file(&link),
            Err(TrustError::Symlink { .. })
        ));
        let file = dir.join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            mine.check_file(&file),
            Err(TrustError::NotSocket { .. })
        ));
        let missing = mine.check_file(&dir.join("none")).unwrap_err();
        assert_eq!(missing.io_kind(), Some(std::io::ErrorKind::NotFound));

        // The peer check reads the listener's credentials, not the file's owner.
        let listener = {
            let _ = std::fs::remove_file(&sock);
            std::os::unix::net::UnixListener::bind(&sock).unwrap()
        };
        let stream = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        let err = other.check_peer(&sock, &stream).unwrap_err();
        assert!(
            matches!(err, TrustError::Peer { uid, .. } if uid == me),
            "{err}"
        );
        drop(listener);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(Trusted::root_only().to_string(), "root");
    }
}
