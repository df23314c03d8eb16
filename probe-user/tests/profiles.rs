//! Behaviour profiles as a CI gate: `probectl diff OLD NEW` exits 0 when no CLI
//! behaves differently (a new version or build alone is listed, not a change), 1
//! when one does, 2 when a profile cannot be read; and `run --profile` keys a
//! native CLI on the sha256 of the executable it ran.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A profile with one native CLI, as `run --profile` writes it.
fn profile(dir: &Path, name: &str, digest: &str, probes: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let categories: Vec<String> = probes
        .iter()
        .map(|p| format!("  - {}\n", p.split(':').next().unwrap()))
        .collect();
    let probes: Vec<String> = probes.iter().map(|p| format!("  - '{p}'\n")).collect();
    let text = format!(
        "apiVersion: probectl.dev/v1alpha1\nkind: Profile\nmetadata:\n  policy: default\n  command: [tool]\nclis:\n- name: tool\n  exe: /opt/tool/{digest}/tool\n  fingerprint:\n    kind: sha256\n    digest: {digest}\n  categories:\n{}  probes:\n{}  destinations: []\n",
        categories.concat(),
        probes.concat()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn diff(old: &Path, new: &Path) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(probectl());
    cmd.arg("diff").arg(old).arg(new);
    let out = run_with_deadline(cmd);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn diff_exits_0_for_the_same_behaviour_1_for_a_change_and_2_for_an_unreadable_profile() {
    let dir = test_dir("profile-diff-codes");
    let v1 = profile(&dir, "v1.yaml", "aa11", &["timezone: env TZ"]);
    // A new build, at a new path, that probes the same.
    let v2 = profile(&dir, "v2.yaml", "bb22", &["timezone: env TZ"]);
    let (code, out, err) = diff(&v1, &v2);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("fingerprint sha256 aa11 -> sha256 bb22"),
        "{out}"
    );
    assert!(out.ends_with("no change of behaviour\n"), "{out}");

    // A build that also reads the relay variable.
    let v3 = profile(
        &dir,
        "v3.yaml",
        "cc33",
        &["timezone: env TZ", "api-relay: env ANTHROPIC_BASE_URL"],
    );
    let (code, out, err) = diff(&v1, &v3);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("+ probe api-relay: env ANTHROPIC_BASE_URL"),
        "{out}"
    );

    let (code, out, _) = diff(&v1, &v1);
    assert_eq!((code, out.as_str()), (Some(0), "no differences\n"));

    let (code, _, err) = diff(&v1, &dir.join("missing.yaml"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot read profile"), "{err}");
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/default.yaml");
    let (code, _, err) = diff(&policy, &v1);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a probectl profile"), "{err}");
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The profile's CLI entry for `exe_name`, as YAML text (from its `- name:` line to
/// the next CLI's).
fn cli_entry(profile: &str, exe_name: &str) -> String {
    profile
        .split("\n- ")
        .find(|e| e.contains(&format!("name: {exe_name}\n")))
        .unwrap_or_else(|| panic!("no CLI {exe_name}:\n{profile}"))
        .to_owned()
}

/// A native CLI is keyed on the sha256 of the file it ran; a rebuilt binary (one
/// byte more) at another path is the same CLI with a new fingerprint, and since it
/// behaves the same, `probectl diff` passes the gate.
#[test]
fn run_profile_keys_a_native_cli_on_its_executable_s_sha256() {
    if !bpf_available("run_profile_keys_a_native_cli_on_its_executable_s_sha256") {
        return;
    }
    let dir = test_dir("profile-sha256");
    let first = dir.join("v1/tz_probe");
    let second = dir.join("v2/tz_probe");
    for (path, extra) in [(&first, &b""[..]), (&second, &b"\0"[..])] {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut bytes = std::fs::read(c_fixture()).unwrap();
        bytes.extend_from_slice(extra);
        std::fs::write(path, bytes).unwrap();
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            path.as_path(),
            nix::sys::stat::Mode::from_bits_truncate(0o755),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .unwrap();
    }
    let mut profiles = Vec::new();
    // One destination for both: the same behaviour.
    let listener = Listener::start();
    for exe in [&first, &second] {
        let profile = dir.join(format!(
            "{}.yaml",
            exe.parent().unwrap().file_name().unwrap().to_str().unwrap()
        ));
        let port = listener.port.to_string();
        let run = probectl_json_with(
            &[OsStr::new("--profile"), profile.as_os_str()],
            &[exe.as_os_str(), OsStr::new("probe"), OsStr::new(&port)],
        );
        assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
        let text = std::fs::read_to_string(&profile).unwrap();
        let entry = cli_entry(&text, "tz_probe");
        assert!(entry.contains("kind: sha256"), "{entry}");
        assert!(
            entry.contains(&format!("digest: {}", sha256sum(exe))),
            "the file it ran ({}):\n{entry}",
            sha256sum(exe)
        );
        profiles.push(profile);
    }
    assert_ne!(sha256sum(&first), sha256sum(&second));
    let (code, out, err) = diff(&profiles[0], &profiles[1]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("fingerprint sha256 "), "{out}");
    assert!(out.contains("no change of behaviour"), "{out}");
}
