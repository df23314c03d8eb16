//! getenv in a libc that probectl did not map itself (a container's, a Nix store's,
//! musl): the uprobes are attached when a watched process that maps it execs.

mod common;

use std::ffi::OsStr;

use common::*;

#[test]
fn getenv_in_another_libc_is_seen_once_that_libc_is_attached() {
    if !bpf_available("getenv_in_another_libc_is_seen_once_that_libc_is_attached") {
        return;
    }
    // A second copy of glibc under another path: another inode, so the uprobes placed
    // on the system libc at start do not fire in it.
    let dir = test_dir("altlibc");
    let system_libc = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libc.so.6"))
        .expect("this test runs against glibc")
        .to_owned();
    std::fs::copy(&system_libc, dir.join("libc.so.6")).expect("copy libc");
    let fifo = fifo(&dir, "gate");

    let listener = Listener::start();
    let port = listener.port.to_string();
    let fixture = c_fixture();
    // Only the fixture gets the copy (through env), not probectl: probectl's own libc
    // is attached at start.
    let ld_path = format!("LD_LIBRARY_PATH={}", dir.display());
    let mut run = StreamingRun::start(
        &[
            OsStr::new("env"),
            OsStr::new(&ld_path),
            fixture.as_os_str(),
            OsStr::new("gate-probe"),
            fifo.as_os_str(),
            OsStr::new(&port),
        ],
        &[],
    );
    let exec = run.wait_for("the fixture's exec", |r| {
        r["type"] == "exec" && r["argv"][1] == "gate-probe"
    });
    let pid = exec["pid"].as_u64().unwrap();
    // probectl reports the attach to the copy; only then is the fixture let go.
    let copy = dir.join("libc.so.6");
    let sensor = run.wait_for("the attach to the copied libc", |r| {
        r["type"] == "sensor"
            && r["attach_point"]
                .as_str()
                .is_some_and(|a| a.contains(copy.to_str().unwrap()))
    });
    assert_eq!(sensor["attached"], true, "{sensor:#}");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    assert!(
        maps.contains(copy.to_str().unwrap()),
        "the fixture really maps the copy: {maps}"
    );
    std::fs::write(&fifo, b"x").expect("release the fixture");
    let run = run.finish();
    assert_eq!(run.code, 0);
    run.probe(pid, &["getenv"], "TZ");
    run.probe(pid, &["getenv"], "HTTPS_PROXY");
    let report = run.report();
    let lazily_attached = report["sensors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["family"] == "env" && s["chosen"] != "none");
    assert!(lazily_attached, "{:#}", report["sensors"]);
    assert_eq!(
        report["partial"], false,
        "{:#}",
        report["unattached_sensors"]
    );
}

#[test]
fn getenv_in_musl_libc_is_seen() {
    if !bpf_available("getenv_in_musl_libc_is_seen") {
        return;
    }
    let dir = test_dir("musl");
    let fifo = fifo(&dir, "gate");
    let fixture = musl_fixture();
    let mut run = StreamingRun::start(&[fixture.as_os_str(), fifo.as_os_str()], &[("TZ", "UTC")]);
    let exec = run.wait_for("the musl fixture's exec", |r| r["type"] == "exec");
    let pid = exec["pid"].as_u64().unwrap();
    let sensor = run.wait_for("the attach to musl's libc", |r| {
        r["type"] == "sensor"
            && r["program"] == "getenv"
            && r["attach_point"]
                .as_str()
                .is_some_and(|a| a.contains("musl"))
    });
    assert_eq!(sensor["attached"], true, "{sensor:#}");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    assert!(
        maps.contains("musl"),
        "the fixture really maps musl: {maps}"
    );
    assert!(
        !maps.contains("libc.so.6"),
        "and not glibc, so only the musl uprobes can see its getenv: {maps}"
    );
    std::fs::write(&fifo, b"x").expect("release the fixture");
    let run = run.finish();
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let tz = run.probe(pid, &["getenv"], "TZ");
    assert_eq!(tz["result"], "set");
    assert_eq!(
        run.probe(pid, &["getenv"], "HTTPS_PROXY")["result"],
        "unset"
    );
}

#[test]
fn node_enumerating_process_env_is_reported() {
    if !bpf_available("node_enumerating_process_env_is_reported") {
        return;
    }
    let dir = test_dir("node-enum");
    let fifo = fifo(&dir, "gate");
    let listener = Listener::start();
    // Object.keys(process.env) lists every variable without a getenv per name.
    let script = format!(
        "require('node:fs').readFileSync({fifo:?});\nconst names = Object.keys(process.env);\nrequire('node:net').connect({}, '127.0.0.1', function () {{ this.end(String(names.length)); }});",
        listener.port,
        fifo = fifo.to_str().unwrap()
    );
    let mut run = StreamingRun::start(
        &[OsStr::new("node"), OsStr::new("-e"), OsStr::new(&script)],
        &[],
    );
    let sensor = run.wait_for("the uv_os_environ uprobe on node", |r| {
        r["type"] == "sensor" && r["program"] == "uv_os_environ"
    });
    assert_eq!(sensor["attached"], true, "{sensor:#}");
    std::fs::write(&fifo, b"go").expect("release the script");
    let run = run.finish();
    assert_eq!(run.code, 0);
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    let probe = run.probe(pid, &["enumerated"], "*");
    assert_eq!(probe["categories"][0], "environment");
    let conn: Vec<_> = run
        .of_type("connect")
        .into_iter()
        .filter(|c| c["destination"]["port"] == listener.port)
        .collect();
    assert_eq!(conn.len(), 1, "{:#?}", run.of_type("connect"));
    assert!(
        probes_before(conn[0]).contains(&("environment".into(), "enumerated".into(), "*".into())),
        "{:#}",
        conn[0]
    );
}

/// `run` looks for a getenv of its own in the command's program before the exec,
/// found in PATH like exec would: a FIFO planted there with execute bits is not a
/// program (PATH lookup skips it; an open would wait for a writer that never comes),
/// and the exec's failure is reported.
#[test]
fn a_fifo_planted_as_the_command_in_path_is_refused_without_blocking_run() {
    if !bpf_available("a_fifo_planted_as_the_command_in_path_is_refused_without_blocking_run") {
        return;
    }
    let dir = test_dir("fifo-command");
    let fifo = dir.join("evil-cli");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o755)).expect("mkfifo");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = probectl_command();
    cmd.env("PATH", path)
        .args(["run", "--standalone", "--", "evil-cli"]);
    let out = run_with_deadline(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{stderr}");
    assert!(stderr.contains("cannot execute evil-cli"), "{stderr}");
}

/// The default policy's relay settings beyond the SDK variables: Gemini CLI's
/// variable, looked up through libc's getenv (from Python through ctypes: Python's
/// own `os.getenv` reads its copy of the environment), and Codex's config file
/// (opened by path; root's home is one of the homes `~/` stands for).
#[test]
fn the_default_policy_names_gemini_cli_s_relay_variable_and_codex_s_config() {
    if !bpf_available("the_default_policy_names_gemini_cli_s_relay_variable_and_codex_s_config") {
        return;
    }
    let run = probectl_json(
        &[
            OsStr::new("python3"),
            OsStr::new("-c"),
            OsStr::new("import ctypes; ctypes.CDLL(None).getenv(b'GOOGLE_GEMINI_BASE_URL')"),
        ],
        &[("GOOGLE_GEMINI_BASE_URL", "https://relay.example/v1")],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    let p = run.probe(pid, &["getenv"], "GOOGLE_GEMINI_BASE_URL");
    assert_eq!(p["categories"][0], "api-relay", "{p:#}");

    let home = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(0))
        .ok()
        .flatten()
        .map(|u| u.dir)
        .expect("root's passwd entry");
    let config = home.join(".codex/config.toml");
    let run = probectl_json(&[OsStr::new("cat"), config.as_os_str()], &[]);
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    let p = run.probe(pid, &["open", "openat"], config.to_str().unwrap());
    assert_eq!(p["categories"][0], "api-relay", "{p:#}");
}

/// More of the SDKs' endpoint variables from the default policy (docs/policy.md, "Where
/// the api-relay names come from"), each looked up through libc's getenv by one
/// process, and Gemini CLI's settings file opened by path.
#[test]
fn the_default_policy_names_the_sdks_endpoint_variables_and_gemini_cli_s_settings() {
    if !bpf_available(
        "the_default_policy_names_the_sdks_endpoint_variables_and_gemini_cli_s_settings",
    ) {
        return;
    }
    let names = [
        "ANTHROPIC_BEDROCK_BASE_URL",
        "AZURE_OPENAI_ENDPOINT",
        "OLLAMA_HOST",
    ];
    let script = format!("import ctypes\nfor n in {names:?}: ctypes.CDLL(None).getenv(n.encode())");
    let run = probectl_json(
        &[OsStr::new("python3"), OsStr::new("-c"), OsStr::new(&script)],
        &[
            (
                "ANTHROPIC_BEDROCK_BASE_URL",
                "https://bedrock-relay.example",
            ),
            ("AZURE_OPENAI_ENDPOINT", "https://azure-relay.example"),
            ("OLLAMA_HOST", "http://127.0.0.1:11434"),
        ],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    for name in names {
        let p = run.probe(pid, &["getenv"], name);
        assert_eq!(p["categories"][0], "api-relay", "{name}: {p:#}");
    }

    let home = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(0))
        .ok()
        .flatten()
        .map(|u| u.dir)
        .expect("root's passwd entry");
    let settings = home.join(".gemini/settings.json");
    let run = probectl_json(&[OsStr::new("cat"), settings.as_os_str()], &[]);
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    let p = run.probe(pid, &["open", "openat"], settings.to_str().unwrap());
    assert_eq!(p["categories"][0], "api-relay", "{p:#}");
}
