//! Starting the watched command so that it is watched from its first instruction.
//!
//! The child is forked by `std::process::Command`, then blocks in `pre_exec` until the
//! parent has put its pid into the kernel's watched set; only then does it restore
//! the memlock limit, drop privileges and exec. Everything the child does between
//! fork and exec is async-signal-safe: raw read/write/close/setrlimit/setgroups/
//! setgid/setuid, no allocation.

use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command};
use std::thread::JoinHandle;

/// Who the command runs as.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
    /// From the passwd entry, for HOME/USER/LOGNAME: a CLI that reads `~/.npmrc` or
    /// its own settings must look in the user's home, not root's.
    pub user: Option<(String, std::path::PathBuf)>,
}

/// Under sudo, the invoking user (SUDO_UID/SUDO_GID) and their groups; otherwise
/// `None` (the command keeps probectl's identity).
pub fn invoking_user() -> Option<Credentials> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let uid: u32 = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid: u32 = std::env::var("SUDO_GID")
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(uid);
    let mut groups = vec![gid];
    let mut user_entry = None;
    if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        if let Ok(name) = std::ffi::CString::new(user.name.clone())
            && let Ok(list) = nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid))
        {
            groups = list.into_iter().map(|g| g.as_raw()).collect();
        }
        user_entry = Some((user.name, user.dir));
    }
    Some(Credentials {
        uid,
        gid,
        groups,
        user: user_entry,
    })
}

/// Puts the user's identity into the command's environment (sudo leaves root's).
pub fn set_user_env(cmd: &mut Command, creds: &Credentials) {
    if let Some((name, home)) = &creds.user {
        cmd.env("HOME", home).env("USER", name).env("LOGNAME", name);
    }
}

/// A forked child waiting at the gate, before exec.
pub struct Gate {
    pub pid: u32,
    go: std::fs::File,
    spawner: JoinHandle<io::Result<Child>>,
}

impl Gate {
    /// Lets the child exec. The returned handle yields the `Child`, or the exec error.
    pub fn release(mut self) -> io::Result<JoinHandle<io::Result<Child>>> {
        self.go.write_all(&[1])?;
        Ok(self.spawner)
    }

    /// Makes the child fail before exec; returns its spawn error.
    pub fn abort(self) {
        drop(self.go);
        let _ = self.spawner.join();
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// Forks the command and stops it before exec; see the module comment. `memlock` is
/// the RLIMIT_MEMLOCK to restore in the child (probectl raised its own).
pub fn spawn_gated(
    mut cmd: Command,
    creds: Option<Credentials>,
    memlock: Option<libc::rlimit>,
) -> io::Result<Gate> {
    let (pid_r, pid_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let (pid_r_raw, pid_w_raw, go_r_raw, go_w_raw) = (
        pid_r.as_raw_fd(),
        pid_w.as_raw_fd(),
        go_r.as_raw_fd(),
        go_w.as_raw_fd(),
    );
    // SAFETY: the closure only makes async-signal-safe system calls and does not
    // allocate; see the module comment.
    unsafe {
        cmd.pre_exec(move || {
            // The child's copies of the parent's ends: close them so that a parent
            // that dies leaves us reading EOF instead of hanging.
            libc::close(pid_r_raw);
            libc::close(go_w_raw);
            let pid = libc::getpid().to_ne_bytes();
            if libc::write(pid_w_raw, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                return Err(io::Error::last_os_error());
            }
            let mut byte = 0u8;
            loop {
                match libc::read(go_r_raw, (&raw mut byte).cast(), 1) {
                    1 => break,
                    0 => return Err(io::Error::from_raw_os_error(libc::ECANCELED)),
                    _ if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => continue,
                    _ => return Err(io::Error::last_os_error()),
                }
            }
            if let Some(limit) = &memlock
                && libc::setrlimit(libc::RLIMIT_MEMLOCK, limit) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if let Some(c) = &creds
                && (libc::setgroups(c.groups.len(), c.groups.as_ptr()) != 0
                    || libc::setgid(c.gid) != 0
                    || libc::setuid(c.uid) != 0)
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // `spawn` blocks until the child has exec'd, so it runs on its own thread. That
    // thread owns the parent's copy of the pid pipe's write end: if spawn fails before
    // the fork, dropping it makes our read below see EOF instead of hanging.
    let spawner = std::thread::spawn(move || {
        let result = cmd.spawn();
        drop(pid_w);
        drop(go_r);
        result
    });
    let mut pid_r = std::fs::File::from(pid_r);
    let mut pid = [0u8; 4];
    if let Err(read_err) = pid_r.read_exact(&mut pid) {
        return Err(match spawner.join() {
            Ok(Err(spawn_err)) => spawn_err,
            _ => read_err,
        });
    }
    Ok(Gate {
        pid: i32::from_ne_bytes(pid) as u32,
        go: std::fs::File::from(go_w),
        spawner,
    })
}
