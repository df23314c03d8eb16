//! Unprivileged users and groups the root tests act as (made once, idempotent across
//! runs): the group member and outsider of the control socket, and the users who plant
//! hostile files.

use std::process::Command;

fn exists(db: &str, name: &str) -> bool {
    Command::new("getent")
        .args([db, name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A system group, created if missing.
pub fn ensure_group(group: &str) {
    if !exists("group", group) {
        let out = Command::new("groupadd")
            .args(["--system", group])
            .output()
            .expect("run groupadd");
        assert!(out.status.success(), "groupadd {group}: {out:?}");
    }
}

/// A system user without a home or a login shell, in `groups` (created if missing);
/// returns its uid and gid.
pub fn ensure_user(user: &str, groups: &[&str]) -> (u32, u32) {
    for g in groups {
        ensure_group(g);
    }
    if !exists("passwd", user) {
        let mut cmd = Command::new("useradd");
        cmd.args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ]);
        if !groups.is_empty() {
            cmd.args(["--groups", &groups.join(",")]);
        }
        let out = cmd.arg(user).output().expect("run useradd");
        assert!(out.status.success(), "useradd {user}: {out:?}");
    }
    let u = nix::unistd::User::from_name(user)
        .expect("read the passwd entry")
        .unwrap_or_else(|| panic!("no user {user} after useradd"));
    (u.uid.as_raw(), u.gid.as_raw())
}
