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
    let fifo = dir.join("gate");
    let _ = std::fs::remove_file(&fifo);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();

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
