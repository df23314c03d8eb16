//! Who may use the control socket, from the peer's credentials (`SO_PEERCRED`, read
//! when the connection is accepted) and its supplementary groups (from
//! `/proc/<pid>/status`, which is what the kernel itself checks, rather than the
//! group database, which a user may have joined without logging in again).
//!
//! - root may do everything, for any process;
//! - a member of the daemon's group may read status and subscribe to processes of
//!   their own uid;
//! - anyone else is refused with a message that says how to get access.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// Supplementary groups of the connecting process.
    pub groups: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Root,
    /// In the daemon's group: its own processes only.
    Member,
    Outsider,
}

impl Caller {
    pub fn new(uid: u32, gid: u32, pid: Option<i32>) -> Self {
        let groups = pid.map(proc_groups).unwrap_or_default();
        Self {
            uid,
            gid,
            pid,
            groups,
        }
    }

    pub fn role(&self, group_gid: Option<u32>) -> Role {
        if self.uid == 0 {
            Role::Root
        } else if group_gid.is_some_and(|g| self.gid == g || self.groups.contains(&g)) {
            Role::Member
        } else {
            Role::Outsider
        }
    }
}

/// The gid of `group`, if it exists.
pub fn group_gid(group: &str) -> Option<u32> {
    nix::unistd::Group::from_name(group)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

pub fn refusal(caller: &Caller, group: &str) -> String {
    format!(
        "permission denied: uid {} is not root and not in group {group:?}; an administrator can run `usermod -aG {group} USER` (then log in again)",
        caller.uid
    )
}

/// Real uid of a process, from `/proc/<pid>/status`.
pub fn process_uid(pid: u32) -> Option<u32> {
    status_field(pid as i32, "Uid:")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn proc_groups(pid: i32) -> Vec<u32> {
    status_field(pid, "Groups:")
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn status_field(pid: i32, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_uid_and_groups() {
        let c = |uid, gid, groups: Vec<u32>| Caller {
            uid,
            gid,
            pid: None,
            groups,
        };
        assert_eq!(c(0, 0, vec![]).role(None), Role::Root);
        assert_eq!(c(1000, 1000, vec![5000]).role(Some(5000)), Role::Member);
        assert_eq!(c(1000, 5000, vec![]).role(Some(5000)), Role::Member);
        assert_eq!(c(1000, 1000, vec![27]).role(Some(5000)), Role::Outsider);
        assert_eq!(c(1000, 1000, vec![]).role(None), Role::Outsider);
        assert!(refusal(&c(1000, 1000, vec![]), "probectl").contains("uid 1000"));
    }

    #[test]
    fn this_process_is_read_from_proc() {
        let me = std::process::id();
        assert_eq!(process_uid(me), Some(nix::unistd::getuid().as_raw()));
    }
}
