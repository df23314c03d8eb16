//! The guest: an initramfs with busybox, a release probectl and the libraries it
//! links, whose /init mounts what probectl needs, runs each of [`GUEST_COMMANDS`]
//! with its output between markers on the serial console, and powers off; and the
//! QEMU boot that runs it under a hard timeout.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, say};

const TAG: &str = "kernels";

/// A command the guest runs after boot: its section name and its shell command.
/// `optional` commands run only when `probe` (a shell test) succeeds, so a command
/// that another branch adds is picked up as soon as probectl has it.
pub struct GuestCommand {
    pub name: &'static str,
    pub command: &'static str,
    pub optional: Option<&'static str>,
}

/// What every boot runs, in order. Adding a command is one line here.
pub const GUEST_COMMANDS: &[GuestCommand] = &[
    GuestCommand {
        name: "doctor",
        command: "probectl doctor --json",
        optional: None,
    },
    // The sensors at work, not only attached: a watched program started with a
    // policy env name that reads a policy file (the exec-environment and file exit
    // programs, or their twins on kernels without bpf_loop). The policy name comes
    // after 300 other entries, so the twins' chained scan must go on through many
    // tail calls to see it (it once stopped after 34 entries).
    GuestCommand {
        name: "watch",
        command: "env $(for i in $(seq 300); do echo PAD$i=x; done) HTTPS_PROXY=http://proxy.invalid:3128 probectl run --json -- /bin/busybox cat /etc/timezone",
        optional: None,
    },
    GuestCommand {
        name: "selftest",
        command: "probectl selftest",
        optional: Some("probectl selftest --help"),
    },
    // The tier tests (tiers.rs): every evasion technique of the shared list, each
    // caught or named as a blind spot of the tier this kernel gave.
    GuestCommand {
        name: super::tiers::SECTION,
        command: "probectl run --json --policy /tiers/policy.yaml -- /bin/sh /tiers/techniques.sh",
        optional: None,
    },
];

/// Marker lines on the serial console; the output between them is the command's.
pub const BEGIN: &str = "@@kernels-begin";
pub const END: &str = "@@kernels-end";
/// Printed last, just before poweroff: the guest got through every command.
pub const DONE: &str = "@@kernels-done";

/// The start of every guest's /init (this one's and the hook bench's, `icount.rs`):
/// busybox's applets, the pseudo-filesystems, loopback up, a time zone.
pub const INIT_PRELUDE: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mkdir -p /proc /sys /dev /tmp /run /sys/fs/cgroup /sys/fs/bpf
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
# securityfs is left for probectl doctor to mount (it must when it is absent).
dmesg -n 1
ip link set lo up
mkdir -p /etc && echo Etc/UTC >/etc/timezone
"#;

/// The /init script.
fn init_script() -> String {
    let mut s = String::from(INIT_PRELUDE);
    s.push_str(
        r#"section() {
    echo "@@kernels-begin $1"
    cat "$2"
    echo "@@kernels-end $1 rc=$3"
}
run() {
    name=$1; shift
    "$@" >/tmp/$name.out 2>/tmp/$name.err </dev/null
    rc=$?
    section "$name" /tmp/$name.out $rc
    # stderr is kept short: aya's verifier logs can run to thousands of lines.
    head -c 16384 /tmp/$name.err >/tmp/$name.err.head
    section "$name.stderr" /tmp/$name.err.head 0
}
echo "@@kernels-begin cmdline"; cat /proc/cmdline; echo "@@kernels-end cmdline rc=0"
# The tier tests' files, and the unwatched sender of the SCM_RIGHTS technique.
sh /tiers/setup.sh >/tmp/tiers-setup.out 2>&1
section tiers-setup /tmp/tiers-setup.out $?
"#,
    );
    // `PROBECTL_LOG=probe_user::sensors::load_error=debug cargo xtask kernels` puts
    // the tail of each refused program's verifier log in the console logs.
    if let Ok(filter) = std::env::var("PROBECTL_LOG") {
        let quoted = filter.replace('\'', r"'\''");
        s.push_str(&format!("export PROBECTL_LOG='{quoted}'\n"));
    }
    for c in GUEST_COMMANDS {
        match c.optional {
            None => s.push_str(&format!("run {} {}\n", c.name, c.command)),
            Some(probe) => s.push_str(&format!(
                "if {probe} >/dev/null 2>&1; then run {} {}; else echo '@@kernels-begin {0}'; echo '@@kernels-end {0} rc=absent'; fi\n",
                c.name, c.command
            )),
        }
    }
    s.push_str(
        r#"mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security
echo "@@kernels-begin lsm"; cat /sys/kernel/security/lsm; echo; echo "@@kernels-end lsm rc=$?"
echo "@@kernels-done"
poweroff -f
"#,
    );
    s
}

/// Builds `out` (gzip'd cpio newc) from busybox, `probectl` and its libraries.
pub fn build_initramfs(probectl: &Path, work: &Path, out: &Path) -> Result<()> {
    let root = work.join("initramfs");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("bin"))?;
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .context("busybox not found (busybox-static)")?;
    copy(busybox, &root.join("bin/busybox"))?;
    copy(probectl, &root.join("bin/probectl"))?;
    super::tiers::install(&root)?;
    let ldd = cmd::probe_stdout(Command::new("ldd").arg(probectl))
        .with_context(|| format!("`ldd {}` failed", probectl.display()))?;
    for lib in ldd_paths(&ldd) {
        copy(&lib, &root.join(lib.strip_prefix("/").unwrap_or(&lib)))?;
    }
    let init = root.join("init");
    std::fs::write(&init, init_script())?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    let script =
        "cd \"$1\" && find . -print0 | cpio --null --quiet -o -H newc -R 0:0 | gzip -1 > \"$2\"";
    cmd::run_ok(
        TAG,
        Command::new("sh")
            .args(["-c", script, "sh"])
            .arg(&root)
            .arg(out),
    )?;
    Ok(())
}

/// Writes `out`: the archive `common` followed by one of `dir`'s files (the kernel
/// unpacks concatenated archives in order, the later one's files winning).
pub fn append_archive(common: &Path, dir: &Path, out: &Path) -> Result<()> {
    let script = "cat \"$3\" > \"$2\" && cd \"$1\" && find . -print0 | cpio --null --quiet -o -H newc -R 0:0 | gzip -1 >> \"$2\"";
    cmd::run_ok(
        TAG,
        Command::new("sh")
            .args(["-c", script, "sh"])
            .arg(dir)
            .arg(out)
            .arg(common),
    )
}

/// Copies `from` (following symlinks) to `to`, creating parents, keeping the mode.
fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// The absolute library paths in `ldd` output (vdso has none).
pub fn ldd_paths(ldd: &str) -> Vec<PathBuf> {
    ldd.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => line,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// How one QEMU run ended.
#[derive(Debug)]
pub enum BootEnd {
    /// QEMU exited by itself (guest powered off, or panicked with -no-reboot).
    Exited { success: bool, status: String },
    /// It was still running at the deadline and was killed.
    TimedOut,
}

/// A boot's console output and how it ended.
pub struct Boot {
    pub console: String,
    pub end: BootEnd,
    pub took: Duration,
}

impl Boot {
    /// Whether the emulator itself failed (crash, error exit, timeout) rather than the
    /// guest: such a boot is worth one retry.
    pub fn emulator_failed(&self) -> bool {
        match &self.end {
            BootEnd::TimedOut => true,
            BootEnd::Exited { success, .. } => !success,
        }
    }
}

/// Boots `vmlinuz` with the initramfs under TCG and returns the serial console output.
pub fn boot(
    vmlinuz: &Path,
    initramfs: &Path,
    append: &str,
    timeout: Duration,
    log: &Path,
) -> Result<Boot> {
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg,thread=multi", "-cpu", "max", "-m", "1G"])
        .args(["-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(append)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    say(TAG, format_args!("$ {}", cmd::display(&qemu)));
    let start = Instant::now();
    let mut child = qemu.spawn().context("could not start qemu-system-x86_64")?;
    let end = loop {
        if let Some(status) = child.try_wait()? {
            break BootEnd::Exited {
                success: status.success(),
                status: status.to_string(),
            };
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break BootEnd::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let took = start.elapsed();
    let mut console = String::new();
    std::fs::File::open(log)?
        .read_to_string(&mut console)
        .or_else(|_| {
            // Not UTF-8 (a garbled serial line): read it lossily.
            console = String::from_utf8_lossy(&std::fs::read(log)?).into_owned();
            Ok::<usize, std::io::Error>(0)
        })?;
    Ok(Boot { console, end, took })
}

/// One command's section of the console: its output and exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub output: String,
    /// The `rc=` of the end marker: a number, or `absent` for an optional command
    /// probectl does not have.
    pub rc: String,
}

/// The section `name` of the console output, if it was printed whole.
pub fn section(console: &str, name: &str) -> Option<Section> {
    // Serial lines end in CRLF; the guest's own lines may too.
    let mut lines = console.lines().map(|l| l.trim_end_matches('\r'));
    let begin = format!("{BEGIN} {name}");
    lines.find(|l| *l == begin)?;
    let end = format!("{END} {name} rc=");
    let mut output = String::new();
    for line in lines {
        if let Some(rc) = line.strip_prefix(&end) {
            return Some(Section {
                output,
                rc: rc.trim().to_owned(),
            });
        }
        output.push_str(line);
        output.push('\n');
    }
    None
}

/// Why a boot that printed no complete doctor section failed, from its console.
pub fn failure_reason(boot: &Boot) -> String {
    if let BootEnd::TimedOut = boot.end {
        return format!("timed out after {} s", boot.took.as_secs());
    }
    if let Some(line) = boot.console.lines().find(|l| l.contains("Kernel panic")) {
        return line.trim().chars().take(120).collect();
    }
    match &boot.end {
        BootEnd::Exited {
            success: false,
            status,
        } => format!("qemu failed ({status})"),
        _ => "the guest stopped before printing its results".to_owned(),
    }
}

/// Fails unless qemu is runnable (checked before the first boot).
pub fn check_qemu() -> Result<()> {
    if cmd::probe_stdout(Command::new("qemu-system-x86_64").arg("--version")).is_none() {
        bail!("qemu-system-x86_64 --version fails");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_from_ldd() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1e)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f1f)\n";
        assert_eq!(
            ldd_paths(ldd),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn sections_between_markers() {
        let console = "[    0.1] boot\r\n@@kernels-begin doctor\r\n{\"a\": 1}\r\n@@kernels-end doctor rc=1\r\n@@kernels-begin selftest\n@@kernels-end selftest rc=absent\n@@kernels-begin lsm\nlockdown,capability";
        assert_eq!(
            section(console, "doctor"),
            Some(Section {
                output: "{\"a\": 1}\n".to_owned(),
                rc: "1".to_owned()
            })
        );
        assert_eq!(section(console, "selftest").unwrap().rc, "absent");
        // Cut off before its end marker: not a section.
        assert_eq!(section(console, "lsm"), None);
        assert_eq!(section(console, "missing"), None);
    }

    #[test]
    fn init_runs_every_command() {
        let init = init_script();
        for c in GUEST_COMMANDS {
            assert!(init.contains(&format!("run {} {}", c.name, c.command)));
        }
        assert!(init.ends_with("poweroff -f\n"));
    }
}
