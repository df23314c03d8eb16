//! Root integration tests of the environment present at exec: the only signal for
//! runtimes that copy the environment at start (Python, Bun, Go).

mod common;

use std::ffi::OsStr;
use std::process::Command;

use common::*;

#[test]
fn env_present_at_exec_is_reported_with_a_redacted_value_prefix() {
    if !bpf_available("env_present_at_exec_is_reported_with_a_redacted_value_prefix") {
        return;
    }
    let long_value = format!("http://{}.example:3128", "a".repeat(100));
    let long_password = format!(
        "http://alice:{}@proxy.corp.example:3128",
        "tok3nS3cr3t".repeat(8)
    );
    let run = probectl_json(
        &[c_fixture().as_os_str(), OsStr::new("exit"), OsStr::new("0")],
        &[
            (
                "HTTPS_PROXY",
                "http://alice:hunter2@proxy.corp.example:3128",
            ),
            ("TZ", "Europe/Paris"),
            ("SECRET_TOKEN", "not-in-any-policy"),
            ("HTTP_PROXY", &long_value),
            // A token as password, longer than the 63 bytes captured: its `@` is cut off.
            ("ALL_PROXY", &long_password),
        ],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    // The kernel keeps the first 63 bytes of a value and marks the cut. Cut inside
    // the authority, the `@` that ends a password may be past the cut: the authority
    // captured is hidden whole.
    assert_eq!(
        run.probe(pid, &["present_at_exec"], "HTTP_PROXY")["value_prefix"],
        "http://[redacted]…",
    );
    assert_eq!(
        run.probe(pid, &["present_at_exec"], "ALL_PROXY")["value_prefix"],
        "http://[redacted]…",
    );
    let proxy = run.probe(pid, &["present_at_exec"], "HTTPS_PROXY");
    assert_eq!(proxy["categories"][0], "proxy");
    assert_eq!(proxy["result"], "set");
    assert_eq!(
        proxy["value_prefix"],
        "http://[redacted]@proxy.corp.example:3128"
    );
    // The zone is the fact fingerprinting wants: the default policy shows it.
    let tz = run.probe(pid, &["present_at_exec"], "TZ");
    assert_eq!(tz["value_prefix"], "Europe/Paris", "{tz:#}");
    let all = serde_json::to_string(&run.records).unwrap();
    assert!(
        !all.contains("hunter2") && !all.contains("tok3n"),
        "a proxy password never reaches the output, even cut before its @"
    );
    assert!(
        !all.contains("SECRET_TOKEN"),
        "names no policy lists are filtered in the kernel"
    );
}

#[test]
fn python_copies_the_environment_and_is_reported_as_exposed_before_it_connects() {
    if !bpf_available("python_copies_the_environment_and_is_reported_as_exposed_before_it_connects")
    {
        return;
    }
    // The interpreter itself, not a version-manager shim.
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is installed");
    let python = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let listener = Listener::start();
    let script = format!(
        "import os, socket\nproxy = os.environ.get('HTTPS_PROXY')\nsocket.create_connection(('127.0.0.1', {})).close()\n",
        listener.port
    );
    let run = probectl_json(
        &[OsStr::new(&python), OsStr::new("-c"), OsStr::new(&script)],
        &[
            ("HTTPS_PROXY", "http://proxy.corp.example:3128"),
            ("ANTHROPIC_BASE_URL", "https://relay.example/v1"),
        ],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    assert_eq!(
        run.probe(pid, &["present_at_exec"], "HTTPS_PROXY")["value_prefix"],
        "http://proxy.corp.example:3128"
    );
    assert_eq!(
        run.probe(pid, &["present_at_exec"], "ANTHROPIC_BASE_URL")["categories"][0],
        "api-relay"
    );
    let conns: Vec<_> = run
        .of_type("connect")
        .into_iter()
        .filter(|c| c["destination"]["port"] == listener.port)
        .collect();
    assert_eq!(conns.len(), 1, "{:#?}", run.of_type("connect"));
    let before = probes_before(conns[0]);
    assert!(
        before.contains(&(
            "proxy".into(),
            "present_at_exec".into(),
            "HTTPS_PROXY".into()
        )),
        "{before:?}"
    );
    assert!(
        before.contains(&(
            "api-relay".into(),
            "present_at_exec".into(),
            "ANTHROPIC_BASE_URL".into()
        )),
        "{before:?}"
    );
}

#[test]
fn env_globs_match_lookups_and_names_present_at_exec() {
    if !bpf_available("env_globs_match_lookups_and_names_present_at_exec") {
        return;
    }
    let dir = test_dir("env-glob");
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: glob}\ncategories:\n  - name: locale\n    env: [LC_*]\n",
    )
    .unwrap();
    let mut cmd = std::process::Command::new(probectl());
    cmd.args(["run", "--json", "--policy"])
        .arg(&policy)
        .args([
            "--",
            "node",
            "-e",
            "process.env.LC_PROBE_TEST; process.env.LCX_NOT_IT",
        ])
        .env("LC_PROBE_EXPOSED", "fr_FR.UTF-8");
    let out = run_with_deadline(cmd);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probes: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["type"] == "probe")
        .collect();
    let find = |how: &str, target: &str| {
        probes
            .iter()
            .find(|p| p["how"] == how && p["target"] == target)
            .unwrap_or_else(|| panic!("no {how} {target}: {probes:#?}"))
    };
    assert_eq!(find("getenv", "LC_PROBE_TEST")["categories"][0], "locale");
    assert_eq!(find("present_at_exec", "LC_PROBE_EXPOSED")["result"], "set");
    assert!(
        !probes.iter().any(|p| p["target"] == "LCX_NOT_IT"),
        "LC_* needs the underscore: {probes:#?}"
    );
}

#[test]
fn secure_getenv_is_one_probe_and_its_inner_getenv_is_no_loss() {
    if !bpf_available("secure_getenv_is_one_probe_and_its_inner_getenv_is_no_loss") {
        return;
    }
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/secure_getenv.c");
    let exe = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("secure_getenv-{}", std::process::id()));
    let status = Command::new("cc")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("run cc (`cargo xtask setup --tests` installs it)");
    assert!(status.success(), "cc {} failed", src.display());
    let run = probectl_json(
        &[exe.as_os_str()],
        &[
            ("TZ", "Asia/Shanghai"),
            ("HTTPS_PROXY", "http://127.0.0.1:9"),
        ],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.of_type("exec")[0]["pid"].as_u64().unwrap();
    let tz: Vec<_> = run
        .of_type("probe")
        .into_iter()
        .filter(|p| p["pid"] == pid && p["target"] == "TZ" && p["evidence"] == "read")
        .collect();
    assert_eq!(tz.len(), 1, "one TZ lookup, as secure_getenv: {tz:#?}");
    assert_eq!(tz[0]["how"], "secure_getenv", "{:#}", tz[0]);
    run.probe(pid, &["getenv"], "HTTPS_PROXY");
    // The inner getenv's return once took the outer call's parked entry, and the
    // outer return counted a loss that was none.
    let drops = run.report()["drops"].as_array().unwrap();
    assert!(
        drops
            .iter()
            .all(|d| d["reason"] != "kernel:env_exit_without_entry"),
        "{drops:#?}"
    );
}
