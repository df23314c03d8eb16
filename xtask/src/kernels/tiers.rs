//! The tier tests in the guest: each evasion technique of the shared list
//! (probe-user/tests/fixtures/techniques.rs, which the host's root tests use too)
//! performed by its static C fixture under `probectl run --json`, and judged from
//! the records: caught (the expected probe or destination is reported) or named
//! (the files blind spots of the tier in use name it). Anything else fails the boot.
//!
//! One watched run for all of them, not one per technique: each `probectl run`
//! costs about 8 s of start and stop under TCG, and the techniques' targets are
//! distinct files and ports, so their records cannot be confused.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::debian::Kernel;
use crate::cmd;

#[path = "../../../probe-user/tests/fixtures/techniques.rs"]
#[expect(dead_code, reason = "file_technique is for the host tests")]
mod techniques;

use techniques::{DECOY_PORT, FILE_TECHNIQUES, FileSetup, FileTechnique, NET_TECHNIQUES};

const TAG: &str = "kernels";

/// The guest's section (see [`super::guest::GUEST_COMMANDS`]).
pub const SECTION: &str = "tiers";

/// Where the techniques' files live in the guest: the initramfs root (tmpfs), the
/// filesystem of `/`, which open_by_handle_at's mount fd names.
const DIR: &str = "/ev";
/// The first UDP port the net techniques send to.
const FIRST_PORT: u16 = 40001;
/// What the fixtures print after each technique: `@@technique NAME rc=N`.
const MARK: &str = "@@technique ";

/// Compiles the fixtures statically (the guest has no libc) into `root/bin` and
/// writes the guest's scripts under `root/tiers`.
pub fn install(root: &Path) -> Result<()> {
    let fixtures = cmd::root().join("probe-user/tests/fixtures");
    for stem in ["file_evasion", "net_probe"] {
        let src = fixtures.join(format!("{stem}.c"));
        cmd::run_ok(
            TAG,
            Command::new("cc")
                .args(["-static", "-O1", "-Wall", "-pthread", "-o"])
                .arg(root.join("bin").join(stem))
                .arg(&src),
        )
        .with_context(|| format!("compiling {} statically (libc6-dev)", src.display()))?;
    }
    let dir = root.join("tiers");
    std::fs::create_dir_all(&dir)?;
    for (name, text) in [
        ("setup.sh", setup_script()),
        ("policy.yaml", policy()),
        ("techniques.sh", files_script() + &net_script()),
    ] {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// The initramfs to boot `kernel` with: `common`, followed (the kernel unpacks
/// concatenated archives) by one holding the kernel's overlay module, which
/// Debian builds as a module (`=m`), taken from its image package in `debs`. Where
/// the package has none (7.x ships modules in another package), `common` itself,
/// and the overlayfs technique says it did not run.
pub fn kernel_initramfs(common: &Path, kernel: &Kernel, cache: &Path) -> Result<PathBuf> {
    let deb = cache.join("debs").join(format!(
        "{}_{}_amd64.deb",
        kernel.package,
        kernel.version.replace(':', "%3a")
    ));
    let work = cache.join("overlay").join(kernel.release());
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("root/lib/modules"))?;
    if deb.is_file() {
        // No match makes tar fail: the module's absence is checked below instead.
        let script = "dpkg-deb --fsys-tarfile \"$1\" | tar -x -C \"$2\" --wildcards '*/kernel/fs/overlayfs/overlay.ko*' 2>/dev/null; exit 0";
        cmd::run_ok(
            TAG,
            Command::new("sh")
                .args(["-c", script, "sh"])
                .arg(&deb)
                .arg(&work),
        )?;
    }
    let found = ["lib", "usr/lib"]
        .iter()
        .map(|l| work.join(l).join("modules").join(kernel.release()))
        .map(|d| d.join("kernel/fs/overlayfs/overlay.ko"))
        .flat_map(|ko| [ko.with_extension("ko.xz"), ko])
        .find(|p| p.is_file());
    let Some(module) = found else {
        return Ok(common.to_owned());
    };
    let into = work.join("root/lib/modules/overlay.ko");
    if module.extension().is_some_and(|e| e == "xz") {
        // busybox insmod takes the module as it is: decompress it here.
        let out = std::fs::File::create(&into)?;
        cmd::run_ok(TAG, Command::new("xz").arg("-dc").arg(&module).stdout(out))?;
    } else {
        std::fs::copy(&module, &into)?;
    }
    let out = cache.join(format!("initramfs-{}.cpio.gz", kernel.release()));
    super::guest::append_archive(common, &work.join("root"), &out)?;
    Ok(out)
}

/// The policy file of a technique, and what the fixture is given.
fn target(t: &FileTechnique) -> (String, String) {
    let d = format!("{DIR}/{}", t.name);
    match t.setup {
        FileSetup::File => (format!("{d}/secret"), format!("{d}/secret")),
        FileSetup::Overlay => (format!("{d}/lower/secret"), format!("{d}/merged/secret")),
        FileSetup::HardlinkedSymlink => (format!("{d}/zone"), format!("{d}/other-name")),
        FileSetup::LongPathToSymlink => {
            let tail = format!("{d}/zone");
            let mut long = "/.".repeat((4094 - tail.len()) / 2);
            if long.len() + tail.len() < 4094 {
                long.push('/');
            }
            long.push_str(&tail);
            (tail, long)
        }
        FileSetup::ReceivedFd => (format!("{d}/secret"), format!("{d}/fd.sock")),
    }
}

/// Prepares every technique (run unwatched, before the watched runs).
fn setup_script() -> String {
    let mut s =
        String::from("#!/bin/sh\n# The files of the tier tests (xtask/src/kernels/tiers.rs).\n");
    for t in FILE_TECHNIQUES {
        let d = format!("{DIR}/{}", t.name);
        let (policy, _) = target(t);
        let _ = writeln!(s, "mkdir -p {d}");
        match t.setup {
            FileSetup::File => {
                let _ = writeln!(s, "echo s3cret >{policy}");
            }
            FileSetup::Overlay => {
                // overlay is a module in Debian's kernels: [`kernel_initramfs`] adds
                // it where the kernel's package has it; where the mount fails,
                // files.sh says the technique did not run.
                let _ = writeln!(
                    s,
                    "[ -f /lib/modules/overlay.ko ] && insmod /lib/modules/overlay.ko\nmkdir -p {d}/lower {d}/upper {d}/work {d}/merged && echo s3cret >{policy} && mount -t overlay overlay -o lowerdir={d}/lower,upperdir={d}/upper,workdir={d}/work {d}/merged"
                );
            }
            FileSetup::HardlinkedSymlink => {
                // link(2) does not follow the symlink: other-name is the link itself.
                let _ = writeln!(
                    s,
                    "ln -s /usr/share/zoneinfo/Etc/UTC {policy} && ln {policy} {d}/other-name"
                );
            }
            FileSetup::LongPathToSymlink => {
                let _ = writeln!(s, "ln -s /usr/share/zoneinfo/Etc/UTC {policy}");
            }
            FileSetup::ReceivedFd => {
                // The sender is not watched: it opens the file now and passes the fd
                // to the watched fixture when it connects.
                let _ = writeln!(
                    s,
                    "echo s3cret >{policy}\n/bin/file_evasion send_fd {d}/fd.sock {policy} &\nfor i in $(seq 100); do [ -S {d}/fd.sock ] && break; sleep 0.1; done"
                );
            }
        }
    }
    s
}

/// One category per technique, named after it.
fn policy() -> String {
    let mut s = String::from(
        "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: tiers\ncategories:\n",
    );
    for t in FILE_TECHNIQUES {
        let _ = writeln!(s, "  - name: {}\n    paths: [{}]", t.name, target(t).0);
    }
    s
}

/// Every file technique, one after the other, each followed by its mark.
fn files_script() -> String {
    let mut s = String::from("#!/bin/sh\n");
    for t in FILE_TECHNIQUES {
        let (_, arg) = target(t);
        let run = format!(
            "/bin/file_evasion {} {arg}; echo \"{MARK}{} rc=$?\"",
            t.mode, t.name
        );
        if t.setup == FileSetup::Overlay {
            let _ = writeln!(
                s,
                "if grep -q ' {DIR}/{0}/merged ' /proc/mounts; then {run}; else echo '{MARK}{0} rc=skipped: no overlay filesystem in the guest (no overlay module in this kernel image package)'; fi",
                t.name
            );
        } else {
            s.push_str(&run);
            s.push('\n');
        }
    }
    s
}

/// The UDP ports of each net technique, in list order.
fn net_ports() -> Vec<Vec<u16>> {
    let mut next = FIRST_PORT;
    NET_TECHNIQUES
        .iter()
        .map(|t| {
            let ports: Vec<u16> = (next..next + t.udp_ports as u16).collect();
            next += t.udp_ports as u16;
            ports
        })
        .collect()
}

fn net_script() -> String {
    let mut s = String::from("#!/bin/sh\n");
    for (t, ports) in NET_TECHNIQUES.iter().zip(net_ports()) {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let _ = writeln!(
            s,
            "/bin/net_probe {} {}; echo \"{MARK}{0} rc=$?\"",
            t.mode,
            ports.join(" ")
        );
    }
    s
}

/// What the tier tests of one boot showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tiers {
    pub techniques: usize,
    pub caught: usize,
    pub named: usize,
    /// Techniques the guest could not perform, with why (not a failure).
    pub skipped: Vec<String>,
    /// One line per technique neither caught nor named, or not performed.
    pub problems: Vec<String>,
}

impl Tiers {
    /// The table's cell: `10/11 caught-or-named, 7 caught, 1 skipped`.
    pub fn cell(&self) -> String {
        let mut cell = format!(
            "{}/{} caught-or-named, {} caught",
            self.caught + self.named,
            self.techniques,
            self.caught
        );
        if !self.skipped.is_empty() {
            let _ = write!(cell, ", {} skipped", self.skipped.len());
        }
        cell
    }
}

/// The records (JSON objects with a `type`) of a watched run's output, and the
/// fixtures' marks: technique name to exit status.
fn parse(output: &str) -> (Vec<Value>, Vec<(String, String)>) {
    let mut records = Vec::new();
    let mut marks = Vec::new();
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix(MARK) {
            if let Some((name, rc)) = rest.split_once(" rc=") {
                marks.push((name.to_owned(), rc.to_owned()));
            }
        } else if let Ok(v) = serde_json::from_str::<Value>(line)
            && v.get("type").is_some()
        {
            records.push(v);
        }
    }
    (records, marks)
}

/// Whether the technique's fixture ran and succeeded; pushes why not.
fn performed(tiers: &mut Tiers, family: &str, name: &str, marks: &[(String, String)]) -> bool {
    match marks
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, rc)| rc.as_str())
    {
        Some("0") => true,
        Some(rc) if rc.starts_with("skipped") => {
            tiers.skipped.push(format!("{family} {name}: {rc}"));
            false
        }
        Some(rc) => {
            tiers
                .problems
                .push(format!("{family} {name}: the fixture failed (exit {rc})"));
            false
        }
        None => {
            tiers
                .problems
                .push(format!("{family} {name}: the fixture never finished"));
            false
        }
    }
}

/// Judges the watched run's output (records and the command's own output);
/// `None` when the console does not hold the section whole.
pub fn judge(output: Option<&str>) -> Tiers {
    let mut tiers = Tiers {
        techniques: FILE_TECHNIQUES.len() + NET_TECHNIQUES.len(),
        ..Tiers::default()
    };
    match output {
        Some(out) => {
            judge_files(&mut tiers, out);
            judge_net(&mut tiers, out);
        }
        None => tiers.problems.push(format!(
            "no complete {SECTION} output: the techniques did not run"
        )),
    }
    tiers
}

fn judge_files(tiers: &mut Tiers, output: &str) {
    let (records, marks) = parse(output);
    let files = records
        .iter()
        .find(|r| r["type"] == "report")
        .and_then(|r| r["sensors"].as_array())
        .and_then(|s| s.iter().find(|s| s["family"] == "files"));
    let Some(files) = files else {
        tiers.problems.push(
            "files techniques: the watched run printed no report with a files sensor".to_owned(),
        );
        return;
    };
    let tier = files["chosen"].as_str().unwrap_or("?");
    let blind_spots: Vec<&str> = files["blind_spots"]
        .as_array()
        .map(|b| b.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for t in FILE_TECHNIQUES {
        if !performed(tiers, "files", t.name, &marks) {
            continue;
        }
        let (target, _) = target(t);
        let caught = records.iter().any(|r| {
            r["type"] == "probe"
                && r["target"] == target.as_str()
                && t.hows.iter().any(|h| r["how"] == *h)
        });
        if caught {
            tiers.caught += 1;
        } else if blind_spots.iter().any(|b| b.contains(t.blind_spot)) {
            tiers.named += 1;
        } else {
            tiers.problems.push(format!(
                "files {}: neither caught (no probe of {target} by {}) nor named as a blind spot ({:?}) of the tier in use ({tier})",
                t.name,
                t.hows.join("/"),
                t.blind_spot
            ));
        }
    }
}

fn judge_net(tiers: &mut Tiers, output: &str) {
    let (records, marks) = parse(output);
    let connects: Vec<&Value> = records.iter().filter(|r| r["type"] == "connect").collect();
    let sent_to = |port: u64| {
        connects.iter().any(|c| {
            c["result"] == "sent"
                && c["destination"]["port"] == port
                && c["destination"]["address"] == "127.0.0.1"
        })
    };
    for (t, ports) in NET_TECHNIQUES.iter().zip(net_ports()) {
        if !performed(tiers, "net", t.mode, &marks) {
            continue;
        }
        let missed = if t.udp_ports == 0 {
            // The decoy: the real peer, which the fixture prints, and never the decoy.
            let real = output
                .lines()
                .find_map(|l| l.strip_prefix("real "))
                .and_then(|p| p.trim().parse::<u64>().ok());
            let ports: Vec<u64> = connects
                .iter()
                .filter_map(|c| c["destination"]["port"].as_u64())
                .collect();
            match real {
                Some(real) if ports.contains(&real) && !ports.contains(&DECOY_PORT) => None,
                _ => Some(format!(
                    "connects to ports {ports:?}: expected the real peer {real:?} and never the decoy {DECOY_PORT}"
                )),
            }
        } else {
            let unseen: Vec<u16> = ports
                .iter()
                .copied()
                .filter(|p| !sent_to(u64::from(*p)))
                .collect();
            (!unseen.is_empty()).then(|| format!("no sent datagram to 127.0.0.1:{unseen:?}"))
        };
        match missed {
            None => tiers.caught += 1,
            Some(why) => tiers
                .problems
                .push(format!("net {}: not caught: {why}", t.mode)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(chosen: &str, blind: &[&str]) -> String {
        serde_json::json!({"type": "report", "sensors": [
            {"family": "files", "chosen": chosen, "blind_spots": blind}
        ]})
        .to_string()
    }

    fn all_marks(names: impl Iterator<Item = &'static str>) -> String {
        names.map(|n| format!("{MARK}{n} rc=0\n")).collect()
    }

    #[test]
    fn the_tracepoint_tier_names_what_it_cannot_see() {
        let blind: Vec<&str> = FILE_TECHNIQUES.iter().map(|t| t.blind_spot).collect();
        let out = format!(
            "{}{}\n",
            all_marks(FILE_TECHNIQUES.iter().map(|t| t.name)),
            report("syscall tracepoints, enter + exit", &blind)
        );
        let mut tiers = Tiers::default();
        judge_files(&mut tiers, &out);
        assert_eq!(tiers.named, FILE_TECHNIQUES.len(), "{:?}", tiers.problems);
        assert!(tiers.problems.is_empty());
    }

    #[test]
    fn a_hook_tier_must_catch_and_a_miss_is_named_in_a_line() {
        let t = &FILE_TECHNIQUES[0];
        let probe = serde_json::json!({"type": "probe", "how": t.hows[0], "target": target(t).0});
        // Every technique ran; only the first was caught; the hook tier's blind spot
        // mentions io_uring statx, which must not count as naming io_uring opens.
        let out = format!(
            "{}{probe}\n{}\n",
            all_marks(FILE_TECHNIQUES.iter().map(|t| t.name)),
            report(
                "BPF-LSM file_open",
                &["stat and access (32-bit syscalls, io_uring statx)"]
            )
        );
        let mut tiers = Tiers::default();
        judge_files(&mut tiers, &out);
        assert_eq!(tiers.caught, 1);
        assert_eq!(tiers.problems.len(), FILE_TECHNIQUES.len() - 1);
        assert!(
            tiers
                .problems
                .iter()
                .any(|p| p.starts_with("files io_uring_open: neither caught")),
            "{:?}",
            tiers.problems
        );
    }

    #[test]
    fn net_needs_the_real_destinations() {
        let ports = net_ports();
        let mut out = all_marks(NET_TECHNIQUES.iter().map(|t| t.mode));
        out.push_str("real 5555\n");
        let connect = |port: u64, result: &str| {
            serde_json::json!({"type": "connect", "result": result,
                "destination": {"address": "127.0.0.1", "port": port}})
        };
        let _ = writeln!(out, "{}", connect(5555, "refused"));
        for p in ports.iter().flatten().skip(1) {
            let _ = writeln!(out, "{}", connect(u64::from(*p), "sent"));
        }
        let mut tiers = Tiers::default();
        judge_net(&mut tiers, &out);
        // The first UDP port (unspec's) was never reported.
        assert_eq!(
            tiers.caught,
            NET_TECHNIQUES.len() - 1,
            "{:?}",
            tiers.problems
        );
        assert!(tiers.problems[0].starts_with("net unspec: not caught"));
        // A decoy reported fails it.
        let _ = writeln!(out, "{}", connect(DECOY_PORT, "refused"));
        let mut tiers = Tiers::default();
        judge_net(&mut tiers, &out);
        assert!(tiers.problems.iter().any(|p| p.starts_with("net decoy")));
    }

    #[test]
    fn a_failed_or_skipped_fixture_is_said() {
        let out = format!(
            "{MARK}int80 rc=1\n{MARK}overlayfs rc=skipped: no overlay\n{}\n",
            report("x", &[])
        );
        let mut tiers = Tiers::default();
        judge_files(&mut tiers, &out);
        assert!(
            tiers
                .problems
                .contains(&"files int80: the fixture failed (exit 1)".to_owned())
        );
        assert_eq!(tiers.skipped, ["files overlayfs: skipped: no overlay"]);
        assert!(
            tiers
                .problems
                .iter()
                .any(|p| p == "files by_handle: the fixture never finished")
        );
    }

    #[test]
    fn the_long_path_is_4094_bytes_and_ends_in_the_policy_symlink() {
        let t = FILE_TECHNIQUES
            .iter()
            .find(|t| t.setup == FileSetup::LongPathToSymlink)
            .unwrap();
        let (policy, arg) = target(t);
        assert_eq!(arg.len(), 4094);
        assert!(arg.ends_with(&policy));
        assert!(policy_has_every_technique());
    }

    #[test]
    fn the_guest_scripts_parse() {
        for script in [setup_script(), files_script(), net_script()] {
            let status = Command::new("sh")
                .args(["-n", "-c", &script])
                .status()
                .unwrap();
            assert!(status.success(), "sh -n fails on:\n{script}");
        }
    }

    fn policy_has_every_technique() -> bool {
        let p = policy();
        FILE_TECHNIQUES
            .iter()
            .all(|t| p.contains(&format!("- name: {}\n", t.name)))
    }
}
