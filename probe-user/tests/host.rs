//! Root integration tests of host identity asked of the kernel without a file:
//! uname(2), ioctl(SIOCGIFHWADDR) and a netlink RTM_GETLINK request, each a probe a
//! policy selects with `host_calls:`.

mod common;

use std::ffi::OsStr;

use common::*;

/// The default policy, with `uname` added to host-identity's calls.
fn policy_with_uname(dir: &std::path::Path) -> std::path::PathBuf {
    let default = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/default.yaml"
    ))
    .unwrap();
    let selected = "host_calls: [siocgifhwaddr, rtm_getlink]";
    assert!(
        default.contains(selected),
        "the default policy selects: {selected}"
    );
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        default.replace(selected, "host_calls: [uname, siocgifhwaddr, rtm_getlink]"),
    )
    .unwrap();
    policy
}

fn host_probes(run: &JsonRun, pid: u64) -> Vec<(String, String)> {
    run.of_type("probe")
        .into_iter()
        .filter(|p| p["pid"] == pid && p["target_type"] == "host")
        .map(|p| {
            (
                p["how"].as_str().unwrap().to_owned(),
                p["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn uname_the_mac_ioctl_and_a_netlink_link_dump_are_host_identity_probes_before_the_connect() {
    if !bpf_available(
        "uname_the_mac_ioctl_and_a_netlink_link_dump_are_host_identity_probes_before_the_connect",
    ) {
        return;
    }
    let dir = test_dir("host-calls-all");
    let policy = policy_with_uname(&dir);
    let fixture = build_c_fixture("host_calls");
    let listener = Listener::start();
    let connect = format!("connect:{}", listener.port);
    let run = probectl_json_with_policy(
        &policy,
        &[
            fixture.as_os_str(),
            OsStr::new("uname"),
            OsStr::new("hwaddr:lo"),
            OsStr::new("getlink-dump"),
            OsStr::new("getlink-one"),
            OsStr::new("getaddr-dump"),
            OsStr::new(&connect),
        ],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    for (how, target) in [
        ("uname", "uname"),
        ("siocgifhwaddr", "lo"),
        ("rtm_getlink", "*"),
        ("rtm_getlink", "link"),
    ] {
        let p = run.probe(pid, &[how], target);
        assert_eq!(p["categories"][0], "host-identity", "{p:#}");
        assert_eq!(p["target_type"], "host", "{p:#}");
        assert_eq!(p["result"], "issued", "the answer is not recorded: {p:#}");
    }
    // RTM_GETADDR lists addresses, not the MACs: no probe. Exactly the four above.
    assert_eq!(
        host_probes(&run, pid).len(),
        4,
        "host probes: {:?}",
        host_probes(&run, pid)
    );
    let conns = run.of_type("connect");
    let conn = conns
        .iter()
        .find(|c| c["pid"] == pid)
        .unwrap_or_else(|| panic!("no connect by {pid}: {conns:#?}"));
    let before = probes_before(conn);
    for how in ["uname", "siocgifhwaddr", "rtm_getlink"] {
        assert!(
            before
                .iter()
                .any(|(cat, h, _)| cat == "host-identity" && h == how),
            "{how} is listed before the connect: {before:?}"
        );
    }
}

#[test]
fn the_default_policy_leaves_uname_out_and_the_kernel_does_not_send_it() {
    if !bpf_available("the_default_policy_leaves_uname_out_and_the_kernel_does_not_send_it") {
        return;
    }
    let fixture = build_c_fixture("host_calls");
    let run = probectl_json(
        &[
            fixture.as_os_str(),
            OsStr::new("uname"),
            OsStr::new("hwaddr:lo"),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    assert_eq!(
        host_probes(&run, pid),
        vec![("siocgifhwaddr".to_owned(), "lo".to_owned())]
    );
}

/// The interface name comes from the watched process: control bytes in it reach
/// neither the JSON nor the readable report raw.
#[test]
fn a_hostile_interface_name_is_escaped_in_json_and_in_the_readable_report() {
    if !bpf_available("a_hostile_interface_name_is_escaped_in_json_and_in_the_readable_report") {
        return;
    }
    let fixture = build_c_fixture("host_calls");
    // 12 bytes, within IFNAMSIZ: a colour escape, a newline and a fake log line.
    let hostile = OsStr::new("hwaddr-try:\x1b[31m\nfake x");
    let run = probectl_json(&[fixture.as_os_str(), hostile], &[]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    assert_eq!(
        host_probes(&run, pid),
        vec![(
            "siocgifhwaddr".to_owned(),
            "\\x1b[31m\\x0afake x".to_owned()
        )]
    );
    let mut cmd = probectl_command();
    cmd.args(["run", "--standalone", "--"])
        .arg(&fixture)
        .arg(hostile);
    let out = run_with_deadline(cmd);
    let text = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("\\x1b[31m\\x0afake x"),
        "the readable report names the interface, escaped:\n{text}"
    );
    assert!(
        !text.contains('\x1b') && !text.contains("\nfake x"),
        "a raw control byte of the name reached the readable report:\n{text}"
    );
}

#[test]
fn node_os_network_interfaces_is_a_netlink_link_dump() {
    if !bpf_available("node_os_network_interfaces_is_a_netlink_link_dump") {
        return;
    }
    let run = probectl_json(
        &[
            OsStr::new("node"),
            OsStr::new("-e"),
            OsStr::new(
                "const os = require('os'); console.log(Object.keys(os.networkInterfaces()).length)",
            ),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    let p = run.probe(pid, &["rtm_getlink"], "*");
    assert_eq!(p["categories"][0], "host-identity", "{p:#}");
    let human = probectl_command()
        .args([
            "run",
            "--",
            "node",
            "-e",
            "require('os').networkInterfaces()",
        ])
        .output()
        .expect("probectl runs");
    let text = String::from_utf8_lossy(&human.stdout).into_owned()
        + &String::from_utf8_lossy(&human.stderr);
    assert!(
        text.contains("rtm_getlink"),
        "the human report names the request:\n{text}"
    );
}
