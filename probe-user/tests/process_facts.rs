//! Root integration tests of what probectl learns about a process itself: its own
//! `~/` (HOME and XDG_CONFIG_HOME at exec), how its executable is linked, and whether
//! its runtime copies the environment at start.

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::*;

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("its address").port()
}

/// The connects of `pid` to `port`.
fn connects_to(run: &JsonRun, pid: u64, port: u16) -> Vec<&serde_json::Value> {
    run.of_type("connect")
        .into_iter()
        .filter(|c| c["pid"] == pid && c["destination"]["port"] == port)
        .collect()
}

/// The pid of the exec of `exe` (by basename).
fn pid_of(run: &JsonRun, exe: &str) -> u64 {
    run.of_type("exec")
        .into_iter()
        .find(|e| {
            e["exe"]
                .as_str()
                .is_some_and(|x| x.ends_with(&format!("/{exe}")))
        })
        .and_then(|e| e["pid"].as_u64())
        .unwrap_or_else(|| {
            panic!(
                "no exec of {exe}: {:#?}\n{}",
                run.of_type("exec"),
                run.stderr
            )
        })
}

#[test]
fn curl_reads_curlrc_under_its_own_home_before_it_connects() {
    if !bpf_available("curl_reads_curlrc_under_its_own_home_before_it_connects") {
        return;
    }
    // Not a passwd home: only the process's own HOME makes it `~/`.
    let home = short_dir("own-home");
    let proxy = Listener::start();
    std::fs::write(
        home.join(".curlrc"),
        format!("proxy = \"http://127.0.0.1:{}\"\n", proxy.port),
    )
    .unwrap();
    let home_var = format!("HOME={}", home.display());
    let url = format!("http://127.0.0.1:{}/", closed_port());
    let run = probectl_json(
        &[
            OsStr::new("env"),
            OsStr::new(&home_var),
            OsStr::new("curl"),
            OsStr::new("-s"),
            OsStr::new("-m1"),
            OsStr::new(&url),
        ],
        &[],
    );
    let curl = pid_of(&run, "curl");
    let curlrc = home.join(".curlrc").display().to_string();
    let probe = run.probe(curl, &["openat", "open"], &curlrc);
    assert_eq!(probe["categories"][0], "proxy-config", "{probe:#}");
    let conns = connects_to(&run, curl, proxy.port);
    assert!(
        !conns.is_empty(),
        "curl used the proxy from its .curlrc: {:#?}",
        run.of_type("connect")
    );
    let before = probes_before(conns[0]);
    assert!(
        before
            .iter()
            .any(|(cat, _, target)| cat == "proxy-config" && *target == curlrc),
        "{before:?}"
    );
    // HOME is placed, never reported as a probe: no category names it.
    assert!(
        run.of_type("probe").iter().all(|p| p["target"] != "HOME"),
        "{:#?}",
        run.of_type("probe")
    );
}

#[test]
fn git_reads_its_config_under_xdg_config_home() {
    if !bpf_available("git_reads_its_config_under_xdg_config_home") {
        return;
    }
    let dir = short_dir("own-xdg");
    let (home, xdg) = (dir.join("home"), dir.join("xdg"));
    std::fs::create_dir_all(home.join(".config/git")).unwrap();
    std::fs::create_dir_all(xdg.join("git")).unwrap();
    std::fs::write(xdg.join("git/config"), "[user]\n\tname = t\n").unwrap();
    std::fs::write(home.join(".config/git/config"), "[user]\n\tname = u\n").unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: xdg}\n\
         categories:\n  - name: git-config\n    paths: [~/.config/git/config]\n",
    )
    .unwrap();
    let home_var = format!("HOME={}", home.display());
    let xdg_var = format!("XDG_CONFIG_HOME={}", xdg.display());
    let run = probectl_json_with_policy(
        &policy,
        &[
            OsStr::new("env"),
            OsStr::new(&home_var),
            OsStr::new(&xdg_var),
            OsStr::new("git"),
            OsStr::new("config"),
            OsStr::new("--global"),
            OsStr::new("user.name"),
        ],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let git = pid_of(&run, "git");
    let config = xdg.join("git/config").display().to_string();
    let probe = run
        .of_type("probe")
        .into_iter()
        .find(|p| p["pid"] == git && p["target"] == config.as_str())
        .unwrap_or_else(|| panic!("no probe of {config}: {:#?}", run.of_type("probe")));
    assert_eq!(probe["categories"][0], "git-config");
    // XDG_CONFIG_HOME replaces ~/.config: $HOME/.config/git/config is not `~/`.
    let shadowed = home.join(".config/git/config").display().to_string();
    assert!(
        run.of_type("probe")
            .iter()
            .all(|p| p["target"] != shadowed.as_str()),
        "{:#?}",
        run.of_type("probe")
    );
}

/// Builds `fixtures/static_getenv.c` with `compiler` and `flags` into the cargo tmp
/// dir, named `name`.
fn build_static(compiler: &str, flags: &[&str], name: &str) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/static_getenv.c");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let status = std::process::Command::new(compiler)
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e} (run `cargo xtask setup --tests`)"));
    assert!(status.success(), "{compiler} {flags:?} failed");
    out
}

/// The summary of the CLI whose exe is `exe`.
fn cli_summary<'a>(run: &'a JsonRun, exe: &Path) -> &'a serde_json::Value {
    run.report()["clis"]
        .as_array()
        .expect("clis")
        .iter()
        .find(|c| c["exe"] == exe.display().to_string())
        .unwrap_or_else(|| {
            panic!(
                "no summary of {}: {:#}",
                exe.display(),
                run.report()["clis"]
            )
        })
}

const STATIC_NOTE: &str =
    "statically linked: environment lookups cannot be seen; the environment at exec is shown";

#[test]
fn a_static_executable_is_marked_and_its_report_is_partial() {
    if !bpf_available("a_static_executable_is_marked_and_its_report_is_partial") {
        return;
    }
    // musl's -static, and a static-pie (ET_DYN without PT_INTERP, as Codex's musl
    // build is; Debian's musl-gcc cannot make one, gcc can).
    for (compiler, flags, name) in [
        ("musl-gcc", &["-O1", "-static"][..], "static_getenv_musl"),
        ("gcc", &["-O1", "-static-pie"][..], "static_getenv_pie"),
    ] {
        let exe = build_static(compiler, flags, name);
        let listener = Listener::start();
        let port = listener.port.to_string();
        let run = probectl_json(
            &[exe.as_os_str(), OsStr::new(&port)],
            &[("HTTPS_PROXY", "http://proxy.corp.example:3128")],
        );
        assert_eq!(run.code, 0, "{name}: stderr:\n{}", run.stderr);
        let report = run.report();
        let pid = report["cli"]["pid"].as_u64().unwrap();
        assert_eq!(
            report["cli"]["linkage"], "static",
            "{name}: {:#}",
            report["cli"]
        );
        run.probe(pid, &["present_at_exec"], "HTTPS_PROXY");
        let cli = cli_summary(&run, &exe);
        assert_eq!(cli["partial"], true, "{name}: {cli:#}");
        assert_eq!(cli["notes"][0], STATIC_NOTE, "{name}: {cli:#}");
        assert_eq!(report["partial"], true, "{name}");
        let reasons = report["partial_reasons"]
            .as_array()
            .expect("partial_reasons");
        assert!(
            reasons.iter().any(|r| r
                .as_str()
                .is_some_and(|r| r.contains(&format!("pid {pid}")) && r.contains(STATIC_NOTE))),
            "{name}: {reasons:?}"
        );
    }
    // The readable report says so too.
    let exe = build_static("musl-gcc", &["-O1", "-static"], "static_getenv_human");
    let listener = Listener::start();
    let mut cmd = probectl_command();
    cmd.arg("run")
        .arg("--")
        .arg(&exe)
        .arg(listener.port.to_string());
    let out = run_with_deadline(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("PARTIAL: {STATIC_NOTE}"))
            && stderr.contains("PARTIAL: static_getenv_human"),
        "{stderr}"
    );
}

#[test]
fn python_is_noted_as_copying_the_environment_and_a_c_program_is_not() {
    if !bpf_available("python_is_noted_as_copying_the_environment_and_a_c_program_is_not") {
        return;
    }
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is installed");
    let python = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let listener = Listener::start();
    let script = format!(
        "import socket\nsocket.create_connection(('127.0.0.1', {})).close()\n",
        listener.port
    );
    let run = probectl_json(
        &[OsStr::new(&python), OsStr::new("-c"), OsStr::new(&script)],
        &[("HTTPS_PROXY", "http://proxy.corp.example:3128")],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let report = run.report();
    assert_eq!(report["cli"]["runtime"], "python", "{:#}", report["cli"]);
    assert_eq!(report["cli"]["linkage"], "dynamic", "{:#}", report["cli"]);
    let cli = cli_summary(&run, Path::new(report["cli"]["exe"].as_str().unwrap()));
    assert_eq!(
        cli["notes"][0],
        "runtime copies the environment at start (Python): lookups are not seen one by one; names present at exec are listed as exposed",
        "{cli:#}"
    );
    assert!(
        cli.get("partial").is_none(),
        "a copying runtime is not a blind spot: {cli:#}"
    );
    assert_eq!(report["partial"], false, "{:#}", report["partial_reasons"]);

    let port = listener.port.to_string();
    let run = probectl_json(
        &[
            c_fixture().as_os_str(),
            OsStr::new("probe"),
            OsStr::new(&port),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let report = run.report();
    assert_eq!(report["cli"]["linkage"], "dynamic", "{:#}", report["cli"]);
    assert!(
        report["cli"].get("runtime").is_none(),
        "{:#}",
        report["cli"]
    );
    let cli = cli_summary(&run, &c_fixture());
    assert!(cli.get("notes").is_none(), "{cli:#}");
}

#[test]
fn prefixes_under_its_own_home_and_xdg_config_home_are_seen_and_a_forked_child_inherits_them() {
    if !bpf_available(
        "prefixes_under_its_own_home_and_xdg_config_home_are_seen_and_a_forked_child_inherits_them",
    ) {
        return;
    }
    // Neither is a passwd home: the kernel's PATHS hold no prefix under them.
    let dir = short_dir("own-prefixes");
    let (home, xdg) = (dir.join("home"), dir.join("xdg"));
    for sub in [".ssh", ".config/gcloud"] {
        std::fs::create_dir_all(home.join(sub)).unwrap();
    }
    std::fs::create_dir_all(xdg.join("gcloud")).unwrap();
    for file in [
        home.join(".ssh/config"),
        home.join(".ssh/known_hosts"),
        home.join(".config/gcloud/credentials.db"),
        xdg.join("gcloud/credentials.db"),
    ] {
        std::fs::write(file, "x\n").unwrap();
    }
    // cat opens its files within its first millisecond: no time for a userspace
    // round trip. The forked python child never execs: it keeps its parent's `~/`.
    let script = r#"cat "$HOME/.ssh/config" "$XDG_CONFIG_HOME/gcloud/credentials.db" \
        "$HOME/.config/gcloud/credentials.db" >/dev/null
python3 -c '
import os
pid = os.fork()
if pid == 0:
    open(os.path.expanduser("~/.ssh/known_hosts")).read()
    os._exit(0)
os.waitpid(pid, 0)
'"#;
    let home_var = format!("HOME={}/", home.display());
    let xdg_var = format!("XDG_CONFIG_HOME={}", xdg.display());
    let run = probectl_json(
        &[
            OsStr::new("env"),
            OsStr::new(&home_var),
            OsStr::new(&xdg_var),
            OsStr::new("sh"),
            OsStr::new("-c"),
            OsStr::new(script),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let cat = pid_of(&run, "cat");
    for path in [home.join(".ssh/config"), xdg.join("gcloud/credentials.db")] {
        let probe = run.probe(cat, &["openat", "open"], &path.display().to_string());
        assert_eq!(probe["categories"][0], "credentials", "{probe:#}");
    }
    // XDG_CONFIG_HOME replaces ~/.config: $HOME/.config/gcloud/ is not `~/` here.
    let shadowed = home
        .join(".config/gcloud/credentials.db")
        .display()
        .to_string();
    assert!(
        run.of_type("probe")
            .iter()
            .all(|p| p["target"] != shadowed.as_str()),
        "{:#?}",
        run.of_type("probe")
    );
    // The forked child's read: a pid with no exec of its own.
    let known_hosts = home.join(".ssh/known_hosts").display().to_string();
    let probe = run
        .of_type("probe")
        .into_iter()
        .find(|p| p["target"] == known_hosts.as_str())
        .unwrap_or_else(|| panic!("no probe of {known_hosts}: {:#?}", run.of_type("probe")));
    assert_eq!(probe["categories"][0], "credentials", "{probe:#}");
    assert!(
        run.of_type("exec").iter().all(|e| e["pid"] != probe["pid"]),
        "the reader of known_hosts is the forked child, which never execs: {probe:#}"
    );
}
