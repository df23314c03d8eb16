//! Reading /proc for processes that run already (seeding a watched tree, programs a
//! policy selects at start) and for context at exec (the executable, the working
//! directory). Every read of something the process controls is bounded: its command
//! line can be megabytes, its working directory longer than PATH_MAX.

use std::io::Read as _;

use super::{Image, ProcessInfo};
use crate::escape::escape_bytes;

/// Bytes of `/proc/<pid>/cmdline` read for a process found running; the rest is
/// marked as missing (`argv_incomplete`), like the kernel's own capture limit.
pub const MAX_CMDLINE_BYTES: u64 = 16 * 1024;

/// The kernel reports the pathname as passed to execve, which may be relative
/// (`./cli`). Exec is rare enough to afford one readlink of /proc/<pid>/exe to make it
/// absolute; if the process is already gone, the relative name is kept.
pub(super) fn absolute_exe(pid: u32, exe: &[u8]) -> Vec<u8> {
    if exe.first() == Some(&b'/') {
        return exe.to_vec();
    }
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.into_os_string().into_encoded_bytes())
        .unwrap_or_else(|_| exe.to_vec())
}

/// The working directory of a live process, escaped, or why it is not known: a
/// directory deeper than PATH_MAX cannot be read back through /proc
/// (`ENAMETOOLONG`), and that must show rather than vanish.
pub fn cwd_of(pid: u32) -> Result<String, String> {
    match std::fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(p) => Ok(escape_bytes(p.as_os_str().as_encoded_bytes())),
        Err(err) => Err(match err.raw_os_error() {
            Some(code) => format!("{:?}", nix::errno::Errno::from_raw(code)),
            None => err.to_string(),
        }),
    }
}

/// Every pid in /proc now (empty if /proc is unreadable).
fn proc_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
}

/// Processes running now that the kernel's selectors would have picked at their exec:
/// program name (`comm`, as zero-padded kernel keys) in `comms`, or real uid in
/// `uids`. probectl itself is never one of them.
pub fn pids_selected(comms: &[[u8; 16]], uids: &[u32]) -> Vec<u32> {
    if comms.is_empty() && uids.is_empty() {
        return Vec::new();
    }
    let own = std::process::id();
    proc_pids()
        .filter(|&pid| pid != own)
        .filter(|pid| {
            let by_comm = || {
                let Ok(comm) = std::fs::read(format!("/proc/{pid}/comm")) else {
                    return false;
                };
                let comm = comm.strip_suffix(b"\n").unwrap_or(&comm);
                comms.iter().any(|key| {
                    let len = key.iter().position(|&b| b == 0).unwrap_or(key.len());
                    &key[..len] == comm
                })
            };
            let by_uid =
                || !uids.is_empty() && read_proc_uid(*pid).is_some_and(|uid| uids.contains(&uid));
            by_comm() || by_uid()
        })
        .collect()
}

fn read_proc_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// (pid, ppid) of every process in /proc, from `stat` (whose 4th field is the
/// parent; the comm before it is parenthesised and may contain anything).
pub(super) fn all_parents() -> Vec<(u32, u32)> {
    proc_pids()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect()
}

/// A command line, at most `MAX_CMDLINE_BYTES` of it; true when there was more.
fn read_cmdline(pid: u32) -> (Vec<String>, bool) {
    let Ok(file) = std::fs::File::open(format!("/proc/{pid}/cmdline")) else {
        return (Vec::new(), false);
    };
    let mut raw = Vec::new();
    if file
        .take(MAX_CMDLINE_BYTES + 1)
        .read_to_end(&mut raw)
        .is_err()
    {
        return (Vec::new(), false);
    }
    let more = raw.len() as u64 > MAX_CMDLINE_BYTES;
    raw.truncate(MAX_CMDLINE_BYTES as usize);
    let argv = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(escape_bytes)
        .collect();
    (argv, more)
}

/// A process that runs already, from /proc: parent, uid, executable, command line.
/// Its working directory and container are read too; its package is looked up by
/// the caller (off the loop).
pub(super) fn read_proc(pid: u32) -> Option<ProcessInfo> {
    let base = format!("/proc/{pid}");
    let status = std::fs::read_to_string(format!("{base}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok())
    };
    let exe = std::fs::read_link(format!("{base}/exe"))
        .map(|p| escape_bytes(p.as_os_str().as_encoded_bytes()))
        .unwrap_or_default();
    let (argv, argv_incomplete) = read_cmdline(pid);
    let mut info = ProcessInfo {
        pid,
        ppid: field("PPid:")?,
        uid: field("Uid:"),
        ..Default::default()
    };
    info.image = std::sync::Arc::new(Image::of_live(pid, exe, argv, argv_incomplete));
    Some(info)
}
