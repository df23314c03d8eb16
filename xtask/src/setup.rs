//! `cargo xtask setup`: checks each prerequisite of the build and installs only what is
//! missing, so running it again (every other xtask command does) costs a few quick
//! checks. Anything it cannot fix stops the run with an error that names the missing
//! piece and the command that fixes it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, say};

const TAG: &str = "setup";

/// Debian packages bpf-linker needs to build and run against the system LLVM 22: the
/// LLVM development files with Polly, plus the zstd and zlib libraries LLVM links.
const LLVM_PACKAGES: [&str; 4] = [
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

/// Where the Debian LLVM 22 packages install; bpf-linker's build finds LLVM through it.
const DEFAULT_LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// What the later steps need to know about the environment setup found.
pub struct Tools {
    /// Set when bpf-linker lives in cargo's bin directory but that directory is not on
    /// PATH: rustc looks the linker up on PATH, so builds xtask runs get it prepended.
    extra_bin_dir: Option<PathBuf>,
}

impl Tools {
    /// A `cargo` command whose PATH finds bpf-linker.
    pub fn cargo(&self) -> Command {
        let mut cargo = cmd::cargo();
        if let Some(dir) = &self.extra_bin_dir {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let dirs = std::iter::once(dir.clone()).chain(std::env::split_paths(&path));
            // Only fails if the directory contains ':', in which case PATH stays as is
            // and the build reports the missing linker itself.
            if let Ok(joined) = std::env::join_paths(dirs) {
                cargo.env("PATH", joined);
            }
        }
        cargo
    }
}

/// How to tell that a prerequisite is there. The same question is asked before
/// apt-get runs and again after it, so a tool without `--version` (rsyslogd, useradd)
/// or a plug-in file is judged the way it was first judged.
#[derive(Clone, Copy, Debug)]
enum Check {
    /// `command --version` runs and exits 0.
    Version(&'static str),
    /// An executable file of this name on PATH or in /usr/sbin or /sbin (tools that
    /// have no `--version`, or live where a non-root PATH does not look).
    Present(&'static str),
    /// A regular file at this path (a plug-in, not a command).
    File(&'static str),
    /// The Debian package is installed (dpkg-query).
    Package(&'static str),
}

impl Check {
    /// `Some(detail)` when present (a version line or a path), `None` when missing.
    fn probe(self) -> Option<String> {
        match self {
            Check::Version(command) => version_of(Path::new(command)),
            Check::Present(command) => find_in_path(command).map(|p| p.display().to_string()),
            Check::File(path) => Path::new(path).is_file().then(|| path.to_owned()),
            Check::Package(package) => deb_installed(package)
                .unwrap_or(false)
                .then(|| "dpkg".to_owned()),
        }
    }

    /// The question asked, for an error message.
    fn describe(self) -> String {
        match self {
            Check::Version(command) => format!("`{command} --version` fails"),
            Check::Present(command) => {
                format!("no executable `{command}` on PATH, in /usr/sbin or /sbin")
            }
            Check::File(path) => format!("no file {path}"),
            Check::Package(package) => format!("dpkg does not list {package} as installed"),
        }
    }
}

/// One prerequisite: how to see it, what provides it, and what to do without apt.
#[derive(Clone, Copy, Debug)]
struct Requirement {
    /// What is checked, as shown to the user (a command, a file, a package).
    what: &'static str,
    check: Check,
    /// The Debian package that provides it.
    package: &'static str,
    /// How to get it where apt-get is not available.
    otherwise: &'static str,
}

/// The tools only the tests need: Node.js for the Node fixtures, a C compiler for the
/// C ones, musl-gcc for the musl-libc fixture, curl, python3 and git (real programs
/// the tests watch), systemd-analyze, setpriv and useradd for
/// the daemon's, rsyslog and its TLS driver for the syslog sink.
const TEST_TOOLS: &[Requirement] = &[
    Requirement {
        what: "node",
        check: Check::Version("node"),
        package: "nodejs",
        otherwise: "install Node.js so that `node` is on PATH",
    },
    Requirement {
        what: "cc",
        check: Check::Version("cc"),
        package: "gcc",
        otherwise: "install a C compiler so that `cc` is on PATH",
    },
    Requirement {
        what: "musl-gcc",
        check: Check::Present("musl-gcc"),
        package: "musl-tools",
        otherwise: "install musl-gcc (musl-tools) so that `musl-gcc` is on PATH",
    },
    Requirement {
        what: "curl",
        check: Check::Version("curl"),
        package: "curl",
        otherwise: "install curl so that `curl` is on PATH",
    },
    Requirement {
        what: "python3",
        check: Check::Version("python3"),
        package: "python3",
        otherwise: "install Python 3 so that `python3` is on PATH",
    },
    Requirement {
        what: "git",
        check: Check::Version("git"),
        package: "git",
        otherwise: "install git so that `git` is on PATH",
    },
    Requirement {
        what: "systemd-analyze",
        check: Check::Version("systemd-analyze"),
        package: "systemd",
        otherwise: "install systemd so that `systemd-analyze` is on PATH",
    },
    Requirement {
        what: "setpriv",
        check: Check::Version("setpriv"),
        package: "util-linux",
        otherwise: "install util-linux so that `setpriv` is on PATH",
    },
    // rsyslogd has no --version (it prints its version with -v and no exit status
    // worth trusting), so presence is the question.
    Requirement {
        what: "rsyslogd",
        check: Check::Present("rsyslogd"),
        package: "rsyslog",
        otherwise: "install rsyslog so that `rsyslogd` is in /usr/sbin",
    },
    Requirement {
        what: "rsyslog TLS driver",
        check: Check::File("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so"),
        package: "rsyslog-gnutls",
        otherwise: "install rsyslog-gnutls (rsyslog's TLS driver)",
    },
    Requirement {
        what: "useradd",
        check: Check::Present("useradd"),
        package: "passwd",
        otherwise: "install passwd so that `useradd` and `groupadd` are on PATH",
    },
];

/// Checks (and where possible installs) the prerequisites. `test_tools` adds the ones
/// only the tests need ([`TEST_TOOLS`]).
pub fn run(test_tools: bool) -> Result<Tools> {
    install_missing(test_tools)?;
    check_nightly()?;
    // After the LLVM packages: building bpf-linker needs them.
    let tools = check_bpf_linker()?;
    say(TAG, "all prerequisites are present");
    Ok(tools)
}

/// The apt-installed part of [`run`]: the LLVM packages and, with `test_tools`, the
/// test tools. Quick when everything is there; `cargo xtask setup --tests` runs it on
/// its own to check a fresh machine's test tools in seconds.
pub fn install_missing(test_tools: bool) -> Result<()> {
    let mut missing = Vec::new();
    check_llvm_packages(&mut missing);
    if test_tools {
        for req in TEST_TOOLS {
            check(*req, &mut missing);
        }
    }
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    Ok(())
}

fn check(req: Requirement, missing: &mut Vec<Requirement>) {
    match req.check.probe() {
        Some(detail) => say(TAG, format_args!("{}: installed ({detail})", req.what)),
        None => {
            say(TAG, format_args!("{}: missing", req.what));
            missing.push(req);
        }
    }
}

/// The tools `cargo xtask bench` compares probectl with: strace, bpftrace, auditd.
pub fn bench_tools() -> Result<()> {
    const BENCH_TOOLS: &[Requirement] = &[
        Requirement {
            what: "strace",
            check: Check::Version("strace"),
            package: "strace",
            otherwise: "install strace",
        },
        Requirement {
            what: "bpftrace",
            check: Check::Version("bpftrace"),
            package: "bpftrace",
            otherwise: "install bpftrace",
        },
        // auditctl has no --version: ask the package manager.
        Requirement {
            what: "auditd",
            check: Check::Package("auditd"),
            package: "auditd",
            otherwise: "install auditd (auditctl) by other means",
        },
    ];
    let mut missing = Vec::new();
    for req in BENCH_TOOLS {
        check(*req, &mut missing);
    }
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    Ok(())
}

/// What `cargo xtask kernels` needs besides apt itself: QEMU, a static busybox for
/// the guest, cpio to pack it, and Debian's archive keyring to check the downloads.
pub fn kernel_tools() -> Result<()> {
    const KERNEL_TOOLS: &[Requirement] = &[
        Requirement {
            what: "qemu-system-x86_64",
            check: Check::Version("qemu-system-x86_64"),
            package: "qemu-system-x86",
            otherwise: "install QEMU so that `qemu-system-x86_64` is on PATH",
        },
        // The guest has no libraries but probectl's: busybox must be static.
        Requirement {
            what: "busybox (static)",
            check: Check::Package("busybox-static"),
            package: "busybox-static",
            otherwise: "install a statically linked busybox at /bin/busybox",
        },
        Requirement {
            what: "cpio",
            check: Check::Version("cpio"),
            package: "cpio",
            otherwise: "install cpio",
        },
        Requirement {
            what: "Debian archive keyring",
            check: Check::File("/usr/share/keyrings/debian-archive-keyring.gpg"),
            package: "debian-archive-keyring",
            otherwise: "install debian-archive-keyring",
        },
        // The tier tests' fixtures are linked statically (`cc -static`: libc.a).
        Requirement {
            what: "static C library (libc.a)",
            check: Check::Package("libc6-dev"),
            package: "libc6-dev",
            otherwise: "install gcc and a static libc so that `cc -static` links",
        },
        // 6.12 and later ship their overlay module as .ko.xz.
        Requirement {
            what: "xz",
            check: Check::Version("xz"),
            package: "xz-utils",
            otherwise: "install xz",
        },
    ];
    let mut missing = Vec::new();
    for req in KERNEL_TOOLS {
        check(*req, &mut missing);
    }
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    Ok(())
}

/// Whether we run as root (effective uid 0). Asks `id -u` rather than libc so xtask
/// needs no dependency beyond anyhow and clap.
pub fn is_root() -> Result<bool> {
    let uid = cmd::probe_stdout(Command::new("id").arg("-u"))
        .context("could not run `id -u` to find out whether xtask runs as root")?;
    Ok(uid.trim() == "0")
}

fn check_llvm_packages(missing: &mut Vec<Requirement>) {
    if deb_installed(LLVM_PACKAGES[0]).is_none() {
        // Not Debian-based: nothing to query, and apt-get would not help. LLVM may
        // well be installed another way; if not, building bpf-linker below fails and
        // says so.
        say(
            TAG,
            format_args!(
                "LLVM 22 packages: cannot check (no dpkg-query); LLVM 22 must be installed by other means, with LLVM_PREFIX set if it is not in {DEFAULT_LLVM_PREFIX}"
            ),
        );
        return;
    }
    for package in LLVM_PACKAGES {
        check(
            Requirement {
                what: package,
                check: Check::Package(package),
                package,
                otherwise: "install the LLVM 22 development files (with Polly, zstd and zlib) by other means and set LLVM_PREFIX to their prefix",
            },
            missing,
        );
    }
}

/// `Some(installed?)`, or `None` when dpkg-query is not there to ask.
fn deb_installed(package: &str) -> Option<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .ok()?;
    // dpkg-query exits non-zero for a package it has never heard of: that is "missing".
    Some(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("install ok installed"),
    )
}

/// An executable file named `command` on PATH or in the sbin directories a non-root
/// PATH may lack.
fn find_in_path(command: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(command))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The first line of `program --version`, if it runs and succeeds.
fn version_of(program: &Path) -> Option<String> {
    let out = cmd::probe_stdout(Command::new(program).arg("--version"))?;
    Some(out.lines().next().unwrap_or_default().trim().to_owned())
}

/// Installs the missing packages with one `apt-get update` and one `apt-get install`,
/// or explains how to when that is not possible here.
fn apt_install(missing: &[Requirement]) -> Result<()> {
    let names: Vec<&str> = missing.iter().map(|m| m.what).collect();
    let names = names.join(", ");
    let packages: Vec<&str> = missing.iter().map(|m| m.package).collect();
    if cmd::probe_stdout(Command::new("apt-get").arg("--version")).is_none() {
        // One line per remedy: the four LLVM packages share one.
        let mut remedies: Vec<(&str, Vec<&str>)> = Vec::new();
        for m in missing {
            match remedies
                .iter_mut()
                .find(|(otherwise, _)| *otherwise == m.otherwise)
            {
                Some((_, whats)) => whats.push(m.what),
                None => remedies.push((m.otherwise, vec![m.what])),
            }
        }
        let mut how = String::new();
        for (otherwise, whats) in remedies {
            how.push_str(&format!("\n  {}: {otherwise}", whats.join(", ")));
        }
        bail!("missing: {names}; apt-get is not available to install them:{how}");
    }
    if !is_root()? {
        bail!(
            "missing: {names}; installing them needs root. Fix:\n  sudo apt-get install -y {}\n(run `sudo apt-get update` first if apt cannot find them), then run this xtask command again",
            packages.join(" ")
        );
    }
    say(
        TAG,
        format_args!("installing {} with apt-get...", packages.join(" ")),
    );
    let apt = || {
        let mut apt = Command::new("apt-get");
        // No debconf questions: there is nobody to answer them mid-build.
        apt.env("DEBIAN_FRONTEND", "noninteractive");
        apt
    };
    cmd::run_ok(TAG, apt().arg("update"))?;
    cmd::run_ok(TAG, apt().args(["install", "-y"]).args(&packages))?;
    // apt-get succeeding means the packages are installed; ask each prerequisite the
    // same question again, since a package could name its command differently.
    for req in missing {
        match req.check.probe() {
            Some(detail) => say(TAG, format_args!("{}: installed ({detail})", req.what)),
            None => bail!(
                "installed {} but {} is still missing ({}): {}",
                req.package,
                req.what,
                req.check.describe(),
                req.otherwise
            ),
        }
    }
    Ok(())
}

/// The eBPF crate is built by `rustup run nightly cargo build -Z build-std=core` (see
/// probe-user/build.rs), so rustup, a nightly toolchain and its rust-src are needed.
fn check_nightly() -> Result<()> {
    let toolchains = cmd::probe_stdout(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup not found: the eBPF crate is built with `rustup run nightly`. Fix: install rustup (https://rustup.rs), then `rustup toolchain install nightly --component rust-src`")?;
    let Some(nightly) = toolchains.lines().find(|line| line.starts_with("nightly")) else {
        bail!(
            "the rustup toolchain `nightly` is missing (the eBPF crate needs it). Fix: `rustup toolchain install nightly --component rust-src` (this downloads from static.rust-lang.org; where that is unreachable the toolchain has to be preinstalled)"
        );
    };
    let name = nightly.split_whitespace().next().unwrap_or(nightly);
    say(TAG, format_args!("nightly toolchain: installed ({name})"));

    let components = cmd::probe_stdout(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context("`rustup component list --toolchain nightly --installed` failed")?;
    if components
        .lines()
        .any(|line| line.split_whitespace().next() == Some("rust-src"))
    {
        say(TAG, "rust-src (nightly): installed");
        return Ok(());
    }
    say(TAG, "rust-src (nightly): missing; installing...");
    cmd::run_ok(
        TAG,
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
    )
    .context("could not add rust-src to nightly (build-std needs it). Fix: `rustup component add rust-src --toolchain nightly` where static.rust-lang.org is reachable")?;
    say(TAG, "rust-src (nightly): installed");
    Ok(())
}

/// bpf-linker links the eBPF object. It counts as present if it runs from PATH or from
/// cargo's bin directory (where `cargo install` puts it).
fn check_bpf_linker() -> Result<Tools> {
    if let Some(tools) = find_bpf_linker() {
        return Ok(tools);
    }
    say(TAG, "bpf-linker: missing");
    let llvm_prefix: OsString =
        std::env::var_os("LLVM_PREFIX").unwrap_or_else(|| DEFAULT_LLVM_PREFIX.into());
    say(TAG, "installing bpf-linker (about 3 minutes)...");
    // `--no-default-features --features llvm-22` makes bpf-linker link the system
    // LLVM 22 found through LLVM_PREFIX.
    cmd::run_ok(
        TAG,
        cmd::cargo()
            .args(["install", "bpf-linker", "--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", &llvm_prefix),
    )
    .with_context(|| {
        format!(
            "could not build bpf-linker against the LLVM in {}. Fix: make sure LLVM 22 is installed there (`sudo apt-get install -y {}`), or set LLVM_PREFIX to its prefix, then run `cargo xtask setup` again",
            llvm_prefix.to_string_lossy(),
            LLVM_PACKAGES.join(" ")
        )
    })?;
    find_bpf_linker().context(
        "`cargo install bpf-linker` succeeded but `bpf-linker --version` still fails. Fix: put cargo's bin directory (usually ~/.cargo/bin) on PATH",
    )
}

fn find_bpf_linker() -> Option<Tools> {
    if let Some(version) = version_of(Path::new("bpf-linker")) {
        say(TAG, format_args!("bpf-linker: installed ({version})"));
        return Some(Tools {
            extra_bin_dir: None,
        });
    }
    let bin_dir = cargo_bin_dir()?;
    let version = version_of(&bin_dir.join("bpf-linker"))?;
    say(
        TAG,
        format_args!(
            "bpf-linker: installed ({version}) in {}, which is not on PATH; xtask adds it for the builds it runs",
            bin_dir.display()
        ),
    );
    Some(Tools {
        extra_bin_dir: Some(bin_dir),
    })
}

/// Where `cargo install` puts binaries: $CARGO_INSTALL_ROOT/bin, else
/// $CARGO_HOME/bin, else ~/.cargo/bin.
fn cargo_bin_dir() -> Option<PathBuf> {
    let root = std::env::var_os("CARGO_INSTALL_ROOT")
        .or_else(|| std::env::var_os("CARGO_HOME"))
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))?;
    Some(root.join("bin"))
}
