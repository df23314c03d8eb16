//! Forcing a fallback for real: probectl runs in a private mount namespace in which
//! the kernel's BTF (`/sys/kernel/btf/vmlinux`) reads as an empty file, as on a
//! kernel built without `CONFIG_DEBUG_INFO_BTF`, so the tiers that need BTF (tp_btf,
//! the raw tracepoint's socket members) cannot be used.

use std::ffi::OsStr;
use std::process::Command;

/// The `sh -c` script that hides the kernel's BTF in a private mount namespace, then
/// runs its arguments.
pub const HIDE_BTF: &str = r#"mount --bind /dev/null /sys/kernel/btf/vmlinux && exec "$0" "$@""#;

/// `probectl ARGS` (set up like `probectl_command`), in a mount namespace without
/// kernel BTF when `btf` is false.
pub fn probectl_with(btf: bool, args: &[&OsStr]) -> Command {
    let mut cmd = if btf {
        super::probectl_command()
    } else {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(HIDE_BTF)
            .arg(super::probectl());
        cmd.env_remove("CI");
        cmd.env(
            "PROBECTL_SOCKET",
            "/nonexistent/probectl-tests/no-daemon.sock",
        );
        cmd
    };
    cmd.args(args);
    cmd
}

/// `probectl doctor --json` (without kernel BTF when `btf` is false): exit code and
/// document.
pub fn doctor(btf: bool) -> (i32, serde_json::Value) {
    let out = super::run_with_deadline(probectl_with(
        btf,
        &[OsStr::new("doctor"), OsStr::new("--json")],
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let doc = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json is not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), doc)
}
