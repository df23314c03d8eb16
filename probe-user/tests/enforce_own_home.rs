//! Root integration tests of `action: block` for `~/` files under a process's own
//! home (a `HOME` or `XDG_CONFIG_HOME` that is in no passwd entry: CI, containers,
//! `HOME=/tmp/x cmd`). The kernel checks the path's front against a hash of the home
//! value the process got at exec (probe-ebpf `own_home`), so the read counts for a
//! block rule at the file syscall's exit, before any connect that follows: a CLI
//! cannot race the userspace late feed by connecting in the same millisecond (Python
//! did, 13 times in 20, before). And a path that only has the home's length in front,
//! or `$HOME/.config` while `XDG_CONFIG_HOME` stands for `~/.config`, counts for
//! nothing.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::*;

/// The script's exit code when its connect was refused with EPERM.
const REFUSED: i32 = 13;

/// Reads argv[1], then connects to 127.0.0.2:argv[2] at once.
const READ_THEN_CONNECT: &str = "import socket, sys\n\
open(sys.argv[1], 'rb').read()\n\
s = socket.socket()\n\
try:\n    s.connect(('127.0.0.2', int(sys.argv[2])))\n\
except PermissionError:\n    sys.exit(13)\n";

fn relay_policy(dir: &Path) -> PathBuf {
    default_policy_plus(
        dir,
        "  - name: relay-then-out\n    probed: {all_of: [api-relay]}\n    then: [connect]\n    destination: {except: {cidr: [127.0.0.1/32]}}\n    within: 30s\n    action: block\n",
    )
}

/// `HOME=` (or another name) with a value short enough to be used.
fn home_var(name: &str, value: &Path) -> String {
    let value = value.display().to_string();
    assert!(value.len() < 63, "{value} is too long to be a usable home");
    format!("{name}={value}")
}

fn put(file: &Path) {
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, b"{}").unwrap();
}

/// `probectl run --json --enforce --policy POLICY -- ARGV`.
fn enforcing(policy: &Path, argv: &[&OsStr]) -> JsonRun {
    probectl_json_with(
        &[
            OsStr::new("--policy"),
            policy.as_os_str(),
            OsStr::new("--enforce"),
        ],
        argv,
    )
}

/// `env VARS python3 -c READ_THEN_CONNECT FILE PORT` under `probectl run --enforce`.
fn read_then_connect(policy: &Path, vars: &[String], file: &Path, port: u16) -> JsonRun {
    let port = port.to_string();
    let mut argv: Vec<&OsStr> = vec![OsStr::new("env")];
    argv.extend(vars.iter().map(OsStr::new));
    argv.extend([
        OsStr::new("python3"),
        OsStr::new("-c"),
        OsStr::new(READ_THEN_CONNECT),
        file.as_os_str(),
        OsStr::new(&port),
    ]);
    enforcing(policy, &argv)
}

#[test]
fn a_read_under_an_own_home_blocks_a_connect_made_at_once() {
    if !bpf_available("a_read_under_an_own_home_blocks_a_connect_made_at_once") {
        return;
    }
    let policy = relay_policy(&test_dir("block-own-home"));
    let dir = short_dir("oh");
    let (home, xdg) = (dir.join("home"), dir.join("xdg"));
    // An exact `~/` path, and a prefix under `~/.config` reached through
    // XDG_CONFIG_HOME, elsewhere and where it usually is.
    let settings = home.join(".claude/settings.json");
    let configs = xdg.join("anthropic/configs/default");
    // The usual layout: XDG_CONFIG_HOME is `$HOME/.config`.
    let usual = home.join(".config/anthropic/configs/default");
    put(&settings);
    put(&configs);
    put(&usual);
    let listener = Listener::start_on("127.0.0.2:0");
    let cases = [
        (vec![home_var("HOME", &home)], &settings),
        (
            vec![home_var("HOME", &home), home_var("XDG_CONFIG_HOME", &xdg)],
            &configs,
        ),
        (
            vec![
                home_var("HOME", &home),
                home_var("XDG_CONFIG_HOME", &home.join(".config")),
            ],
            &usual,
        ),
    ];
    for (vars, file) in &cases {
        // Each run is a new tree with no read behind it: the connect that follows the
        // read by microseconds must be refused every time.
        for attempt in 0..6 {
            let run = read_then_connect(&policy, vars, file, listener.port);
            assert_eq!(
                run.code,
                REFUSED,
                "attempt {attempt}: {vars:?}, read {}, connect at once: EPERM; stderr:\n{}",
                file.display(),
                run.stderr
            );
            let blocked = run.of_type("blocked");
            assert_eq!(blocked.len(), 1, "{blocked:#?}");
            assert_eq!(blocked[0]["rule"], "relay-then-out");
        }
    }
}

/// An execve that fails leaves the process in its old image, with its old home: the
/// env scan at the failed call's entry (here with `HOME=/`) must not take it away.
#[test]
fn a_failed_execve_keeps_the_home() {
    if !bpf_available("a_failed_execve_keeps_the_home") {
        return;
    }
    let policy = relay_policy(&test_dir("block-own-home-failed-exec"));
    let home = short_dir("oh-exec").join("home");
    let settings = home.join(".claude/settings.json");
    put(&settings);
    let listener = Listener::start_on("127.0.0.2:0");
    let script = format!(
        "import os\n\
         try:\n    os.execve('/nonexistent/probectl-test', ['x'], {{'HOME': '/'}})\n\
         except OSError:\n    pass\n\
         {READ_THEN_CONNECT}"
    );
    let port = listener.port.to_string();
    let home_env = home_var("HOME", &home);
    for attempt in 0..6 {
        let run = enforcing(
            &policy,
            &[
                OsStr::new("env"),
                OsStr::new(&home_env),
                OsStr::new("python3"),
                OsStr::new("-c"),
                OsStr::new(&script),
                settings.as_os_str(),
                OsStr::new(&port),
            ],
        );
        assert_eq!(
            run.code, REFUSED,
            "attempt {attempt}: failed execve, read, connect at once: EPERM; stderr:\n{}",
            run.stderr
        );
        let probes = run.of_type("probe");
        assert!(
            probes
                .iter()
                .any(|p| p["target"] == settings.display().to_string().as_str()),
            "the read is reported under the kept home: {probes:#?}"
        );
    }
}

/// An envp with two `HOME` entries, or `HOME` and `home`: the program's libc (and
/// Python's `os.environ`, Go's, Node's) takes the first exact-case one, so the kernel
/// and the report must too. Before, the kernel took the last match in any case and
/// userspace the last exact-case one: a process that re-executed itself with
/// `HOME=$HOME HOME=/` read its `~/.claude/settings.json` unreported and unfed.
#[test]
fn the_first_home_entry_is_the_process_home() {
    if !bpf_available("the_first_home_entry_is_the_process_home") {
        return;
    }
    let policy = relay_policy(&test_dir("block-own-home-duplicate"));
    let home = short_dir("oh-dup").join("home");
    let settings = home.join(".claude/settings.json");
    put(&settings);
    let listener = Listener::start_on("127.0.0.2:0");
    let home_env = home_var("HOME", &home);
    // The launcher execs Python with the raw envp (os.execve takes a dict, which
    // cannot hold a name twice); the new image reads `~/` as it sees it.
    let reads_own_home = READ_THEN_CONNECT.replace(
        "open(sys.argv[1], 'rb')",
        "import os.path\nopen(os.path.expanduser('~/.claude/settings.json'), 'rb')",
    );
    let launcher = "import ctypes, sys\n\
        libc = ctypes.CDLL(None, use_errno=True)\n\
        def arr(xs):\n    return (ctypes.c_char_p * (len(xs) + 1))(*[x.encode() for x in xs], None)\n\
        argv = [sys.executable, '-c', sys.argv[1], '-', sys.argv[2]]\n\
        libc.execve(sys.executable.encode(), arr(argv), arr(sys.argv[3:]))\n\
        sys.exit(99)\n";
    let port = listener.port.to_string();
    let cases = [
        vec![home_env.clone(), "HOME=/".to_owned()],
        vec![home_env.clone(), "home=/tmp".to_owned()],
        vec![
            "home=/".to_owned(),
            home_env.clone(),
            "HOME=/tmp".to_owned(),
        ],
    ];
    for envp in &cases {
        for attempt in 0..3 {
            let mut argv: Vec<&OsStr> = vec![
                OsStr::new("python3"),
                OsStr::new("-c"),
                OsStr::new(launcher),
                OsStr::new(&reads_own_home),
                OsStr::new(&port),
            ];
            argv.extend(envp.iter().map(OsStr::new));
            let run = enforcing(&policy, &argv);
            assert_eq!(
                run.code, REFUSED,
                "attempt {attempt}: envp {envp:?}, read ~/.claude/settings.json, connect \
                 at once: EPERM; stderr:\n{}",
                run.stderr
            );
            let probes = run.of_type("probe");
            assert!(
                probes
                    .iter()
                    .any(|p| p["target"] == settings.display().to_string().as_str()),
                "envp {envp:?}: the read is reported under the first HOME: {probes:#?}"
            );
        }
    }
}

/// A full ring buffer at exec loses the environment's records (counted), not the
/// process's home in the kernel: a CLI that floods the ring and then execs with a new
/// `HOME` still has its reads there counted for block rules, with no userspace in the
/// loop. The ring is filled deterministically: the fixture stops probectl (its
/// parent; the test runs as root) before the flood and lets it go on before exiting.
#[test]
fn a_full_ring_at_exec_keeps_the_home_in_the_kernel() {
    if !bpf_available("a_full_ring_at_exec_keeps_the_home_in_the_kernel") {
        return;
    }
    let policy = relay_policy(&test_dir("block-own-home-ring-full"));
    let home = short_dir("oh-ring").join("home");
    let settings = home.join(".claude/settings.json");
    put(&settings);
    let listener = Listener::start_on("127.0.0.2:0");
    // The exec'd image reads, connects, and lets probectl go on whatever happened.
    let reads_then_resumes = format!(
        "import os, signal\n\
         try:\n{}\n\
         finally:\n    os.kill(os.getppid(), signal.SIGCONT)\n",
        READ_THEN_CONNECT
            .replace(
                "import socket, sys\n",
                "import socket, sys\nimport os.path\n"
            )
            .replace(
                "open(sys.argv[1], 'rb')",
                "open(os.path.expanduser('~/.claude/settings.json'), 'rb')"
            )
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // 40,000 file events of 4 MiB's worth and more, while nothing reads the ring.
    let flood_then_exec = "import os, signal, sys\n\
        os.kill(os.getppid(), signal.SIGSTOP)\n\
        for _ in range(40000):\n    open('/etc/localtime', 'rb').close()\n\
        os.execve(sys.executable, [sys.executable, '-c', sys.argv[1], '-', sys.argv[2]],\n\
        \x20         {'HOME': sys.argv[3], 'PATH': os.environ['PATH']})\n";
    let port = listener.port.to_string();
    let run = enforcing(
        &policy,
        &[
            OsStr::new("python3"),
            OsStr::new("-c"),
            OsStr::new(flood_then_exec),
            OsStr::new(&reads_then_resumes),
            OsStr::new(&port),
            home.as_os_str(),
        ],
    );
    let drops = &run.report()["drops"];
    let lost_at_exec = drops
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["reason"] == "kernel:ring_full_env_at_exec")
        .map(|d| d["count"].as_u64().unwrap());
    assert!(
        lost_at_exec.is_some_and(|n| n >= 1),
        "the fixture filled the ring before its exec (else this test proves nothing): {drops:#}"
    );
    assert_eq!(
        run.code, REFUSED,
        "flood, exec with HOME, read ~/.claude/settings.json, connect: EPERM; stderr:\n{}",
        run.stderr
    );
}

#[test]
fn a_path_that_only_looks_like_an_own_home_feeds_no_block() {
    if !bpf_available("a_path_that_only_looks_like_an_own_home_feeds_no_block") {
        return;
    }
    let policy = relay_policy(&test_dir("block-own-home-lookalike"));
    let dir = short_dir("oh-look");
    let (home, other, xdg) = (dir.join("homeA"), dir.join("homeB"), dir.join("xdg"));
    // The same length in front of `.claude/settings.json`, another directory.
    let lookalike = other.join(".claude/settings.json");
    // `~/.config/...` spelled under HOME while XDG_CONFIG_HOME is set: not the
    // process's `~/.config`.
    let dot_config = home.join(".config/anthropic/configs/default");
    put(&lookalike);
    put(&dot_config);
    std::fs::create_dir_all(&xdg).unwrap();
    let listener = Listener::start_on("127.0.0.2:0");
    for (vars, file) in [
        (vec![home_var("HOME", &home)], &lookalike),
        (
            vec![home_var("HOME", &home), home_var("XDG_CONFIG_HOME", &xdg)],
            &dot_config,
        ),
    ] {
        let run = read_then_connect(&policy, &vars, file, listener.port);
        assert_eq!(
            run.code,
            0,
            "{vars:?}, read {}: no api-relay read, the connect goes through; stderr:\n{}",
            file.display(),
            run.stderr
        );
        assert!(run.of_type("blocked").is_empty());
        assert!(
            run.of_type("probe")
                .iter()
                .all(|p| p["target"] != file.display().to_string().as_str()),
            "not reported as a read either: {:#?}",
            run.of_type("probe")
        );
    }
}
