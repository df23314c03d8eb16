use probe_common::*;

use super::*;
use crate::policy::load_default;

/// The body of the record an event makes, if any.
fn handle(c: &mut Correlator, event: &Event, procs: &mut ProcessTable) -> Option<Body> {
    c.handle(event, procs).map(|r| r.body)
}

fn hdr(kind: u32, pid: u32, ktime_ns: u64) -> EventHeader {
    EventHeader {
        kind,
        cpu: 0,
        tgid: pid,
        tid: pid,
        ktime_ns,
    }
}

fn env(pid: u32, t: u64, name: &str) -> Event {
    let mut e = EnvEvent {
        header: hdr(EVENT_ENV, pid, t),
        op: ENV_OP_GETENV,
        entry_id: 1,
        name_len: name.len() as u32,
        name_truncated: 0,
        value_present: 0,
        _pad0: 0,
        name: [0; ENV_NAME_LEN],
    };
    e.name[..name.len()].copy_from_slice(name.as_bytes());
    Event::Env(e)
}

fn file(pid: u32, t: u64, op: u32, path: &str) -> Event {
    let mut e = FileEvent {
        header: hdr(EVENT_FILE, pid, t),
        op,
        entry_id: 1,
        dfd: -100,
        open_flags: 0,
        ret: 3,
        path_len: path.len() as u32,
        path_truncated: 0,
        matched_by: 0,
        base_dev: 0,
        base_ino: 0,
        path: [0; PATH_LEN],
    };
    e.path[..path.len()].copy_from_slice(path.as_bytes());
    Event::File(Box::new(e))
}

fn connect(pid: u32, t: u64, port: u16, ret: i32) -> Event {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    Event::Connect(ConnectEvent {
        header: hdr(EVENT_CONNECT, pid, t),
        fd: 3,
        ret,
        family: AF_INET,
        port,
        flags: 0,
        addr,
    })
}

#[test]
fn connection_lists_the_probes_before_it_by_category() {
    let policy = load_default().unwrap();
    let mut c = Correlator::new(&policy, 0);
    let mut procs = ProcessTable::default();
    procs.add_root(100, 1);
    for ev in [
        env(100, 1_000_000, "TZ"),
        env(100, 2_000_000, "https_proxy"),
        file(100, 3_000_000, FILE_OP_OPENAT, "/etc/localtime"),
        file(100, 4_000_000, FILE_OP_READLINK, "/etc/localtime"),
        file(100, 4_500_000, FILE_OP_OPENAT, "/etc/localtime"),
    ] {
        handle(&mut c, &ev, &mut procs);
    }
    let Some(Body::Connect(rec)) = handle(&mut c, &connect(100, 10_000_000, 4000, 0), &mut procs)
    else {
        panic!("no connect record")
    };
    assert_eq!(rec.destination.address, "127.0.0.1");
    assert_eq!(rec.destination.port, 4000);
    assert_eq!(rec.result.to_string(), "ok");
    let got: Vec<(&str, &str, &str, u64)> = rec
        .probes_before
        .iter()
        .map(|p| {
            (
                p.category.as_str(),
                p.how.name(),
                p.target.as_str(),
                p.count,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("proxy", "getenv", "https_proxy", 1),
            ("timezone", "getenv", "TZ", 1),
            ("timezone", "openat", "/etc/localtime", 2),
            ("timezone", "readlink", "/etc/localtime", 1),
        ]
    );
    let tz = &rec.probes_before[1];
    assert!(
        (tz.first_ms_before - 9.0).abs() < 1e-9,
        "{}",
        tz.first_ms_before
    );
}

#[test]
fn a_connection_is_joined_only_with_its_own_trees_probes() {
    let policy = load_default().unwrap();
    let mut c = Correlator::new(&policy, 0);
    let mut procs = ProcessTable::default();
    procs.add_root(100, 1);
    procs.on_fork(100, 101);
    procs.add_root(200, 1);
    handle(&mut c, &env(101, 1_000, "TZ"), &mut procs);
    handle(&mut c, &env(200, 2_000, "HTTPS_PROXY"), &mut procs);
    let Some(Body::Connect(of_100)) = handle(&mut c, &connect(100, 5_000, 443, 0), &mut procs)
    else {
        panic!("no connect record")
    };
    let seen: Vec<&str> = of_100
        .probes_before
        .iter()
        .map(|p| p.target.as_str())
        .collect();
    assert_eq!(
        seen,
        ["TZ"],
        "a child's probe counts for its tree; another tree's does not"
    );
    assert_eq!(c.timeline_usage().trees, 2);
    // Both trees exit; after the grace their timelines go, counted.
    procs.on_exit(101, Some(0));
    procs.on_exit(100, Some(0));
    procs.on_exit(200, Some(0));
    c.expire_trees(10_000, 1_000, &mut procs);
    assert_eq!(c.timeline_usage().trees, 2, "inside the grace period");
    c.expire_trees(11_000, 1_000, &mut procs);
    let usage = c.timeline_usage();
    assert_eq!(
        (
            usage.trees,
            usage.trees_evicted_after_exit,
            usage.probes_evicted
        ),
        (0, 2, 2)
    );
    assert!(procs.is_empty());
}

#[test]
fn probes_after_a_connection_are_not_linked_to_it() {
    let policy = load_default().unwrap();
    let mut c = Correlator::new(&policy, 0);
    let mut procs = ProcessTable::default();
    handle(&mut c, &connect(7, 5, 443, -115), &mut procs);
    handle(&mut c, &env(7, 6, "TZ"), &mut procs);
    assert!(c.connections[0].body.probes_before.is_empty());
    assert_eq!(c.connections[0].body.result.to_string(), "in_progress");
}

#[test]
fn repeated_probes_stream_once_and_case_rule_is_applied() {
    let policy = load_default().unwrap();
    let mut c = Correlator::new(&policy, 0);
    let mut procs = ProcessTable::default();
    assert!(handle(&mut c, &env(1, 1, "TZ"), &mut procs).is_some());
    assert!(
        handle(&mut c, &env(1, 2, "TZ"), &mut procs).is_none(),
        "repeat is folded"
    );
    // The kernel folds case; `tz` is not the policy's `TZ`.
    assert!(handle(&mut c, &env(1, 3, "tz"), &mut procs).is_none());
    assert_eq!(c.case_mismatches, 1);
    let summary = c.summarize(None);
    assert_eq!(summary[0].category, "timezone");
    assert_eq!(summary[0].probes[0].count, 2);
}

#[test]
fn connect_errors_are_named() {
    let policy = load_default().unwrap();
    let mut c = Correlator::new(&policy, 0);
    let mut procs = ProcessTable::default();
    let Some(Body::Connect(rec)) = handle(&mut c, &connect(1, 1, 9, -111), &mut procs) else {
        panic!()
    };
    assert_eq!(rec.result.to_string(), "ECONNREFUSED");
}

#[test]
fn a_zoneinfo_burst_folds_in_the_stream_the_summary_and_the_connection() {
    let policy = load_default().unwrap();
    let mut c = Correlator::new(&policy, 0);
    let mut procs = ProcessTable::default();
    let mut streamed = Vec::new();
    let zones: Vec<String> = (0..400)
        .map(|i| format!("/usr/share/zoneinfo/Zone{i}"))
        .collect();
    for (i, zone) in zones.iter().enumerate() {
        if let Some(Body::Probe(p)) = handle(
            &mut c,
            &file(9, 1_000 + i as u64, FILE_OP_OPENAT, zone),
            &mut procs,
        ) {
            streamed.push((p.target, p.folded));
        }
    }
    // /etc/localtime is an exact path: never folded.
    handle(
        &mut c,
        &file(9, 5_000, FILE_OP_OPENAT, "/etc/localtime"),
        &mut procs,
    );
    assert_eq!(streamed.len(), FOLD_AFTER + 1, "{streamed:?}");
    assert_eq!(
        streamed.last().unwrap(),
        &("/usr/share/zoneinfo/**".to_owned(), true)
    );

    let summary = c.summarize(None);
    let tz = &summary[0].probes;
    let burst = tz
        .iter()
        .find(|p| p.target == "/usr/share/zoneinfo/**")
        .expect("one folded row");
    assert_eq!((burst.count, burst.distinct_targets), (400, Some(400)));
    assert!(tz.iter().any(|p| p.target == "/etc/localtime"));
    assert_eq!(tz.len(), 2, "{tz:#?}");

    let Some(Body::Connect(rec)) = handle(&mut c, &connect(9, 10_000, 443, 0), &mut procs) else {
        panic!()
    };
    let folded: Vec<_> = rec
        .probes_before
        .iter()
        .filter(|p| p.target == "/usr/share/zoneinfo/**")
        .collect();
    assert_eq!(folded.len(), 1);
    assert_eq!(folded[0].count, 400);
    assert_eq!(rec.probes_before.len(), 2, "{:#?}", rec.probes_before);
}

#[test]
fn a_few_zone_files_are_listed_one_by_one() {
    let policy = load_default().unwrap();
    let mut c = Correlator::new(&policy, 0);
    let mut procs = ProcessTable::default();
    for (i, zone) in ["Etc/UTC", "Europe/Paris"].iter().enumerate() {
        handle(
            &mut c,
            &file(
                9,
                i as u64,
                FILE_OP_READLINK,
                &format!("/usr/share/zoneinfo/{zone}"),
            ),
            &mut procs,
        );
    }
    let targets: Vec<String> = c.summarize(None)[0]
        .probes
        .iter()
        .map(|p| p.target.clone())
        .collect();
    assert_eq!(
        targets,
        [
            "/usr/share/zoneinfo/Etc/UTC",
            "/usr/share/zoneinfo/Europe/Paris"
        ]
    );
}

#[test]
fn outcomes_of_blocking_connects_do_not_accumulate() {
    let policy = load_default().unwrap();
    let mut c = Correlator::new(&policy, 0);
    let mut procs = ProcessTable::default();
    let outcome = |t| {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        Event::ConnectOutcome(ConnectOutcomeEvent {
            header: hdr(EVENT_CONNECT_OUTCOME, 5, t),
            established: 1,
            family: AF_INET,
            port: 80,
            addr,
        })
    };
    for i in 0..3 {
        // The handshake ends inside a blocking connect(2): outcome first, then ret 0.
        handle(&mut c, &outcome(i * 10), &mut procs);
        let Some(Body::Connect(rec)) = handle(&mut c, &connect(5, i * 10 + 1, 80, 0), &mut procs)
        else {
            panic!()
        };
        assert_eq!(
            rec.outcome, None,
            "a blocking connect's result already says it"
        );
    }
    assert!(c.early_outcomes.is_empty(), "{:?}", c.early_outcomes);
    // A non-blocking one gets its early outcome.
    handle(&mut c, &outcome(100), &mut procs);
    let Some(Body::Connect(rec)) = handle(&mut c, &connect(5, 101, 80, -115), &mut procs) else {
        panic!()
    };
    assert_eq!(rec.outcome, Some(crate::records::TcpOutcome::Established));
}

#[test]
fn a_category_counts_only_its_operations() {
    let policy = crate::policy::parse(
        "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: t}\ncategories:\n  - name: tz-reads\n    paths: [/etc/localtime]\n    operations: [open]\n  - name: tz-any\n    paths: [/etc/localtime]\n",
        "t.yaml",
    )
    .unwrap();
    let mut c = Correlator::new(&policy, 0);
    let mut procs = ProcessTable::default();
    procs.add_root(100, 1);
    let Some(Body::Probe(open)) = handle(
        &mut c,
        &file(100, 1, FILE_OP_OPENAT, "/etc/localtime"),
        &mut procs,
    ) else {
        panic!("an open counts")
    };
    assert_eq!(open.categories, ["tz-reads", "tz-any"]);
    let Some(Body::Probe(readlink)) = handle(
        &mut c,
        &file(100, 2, FILE_OP_READLINK, "/etc/localtime"),
        &mut procs,
    ) else {
        panic!("a readlink counts for tz-any")
    };
    assert_eq!(
        readlink.categories,
        ["tz-any"],
        "tz-reads counts opens only"
    );
    assert_eq!(c.operation_not_counted, 0);
    let only_opens = crate::policy::parse(
        "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: t}\ncategories:\n  - name: tz-reads\n    paths: [/etc/localtime]\n    operations: [open, getenv]\n",
        "t.yaml",
    )
    .unwrap();
    let mut c = Correlator::new(&only_opens, 0);
    assert!(
        handle(
            &mut c,
            &file(100, 3, FILE_OP_READLINK, "/etc/localtime"),
            &mut procs
        )
        .is_none()
    );
    assert_eq!(c.operation_not_counted, 1);
}

#[test]
fn the_report_keeps_the_newest_connections_and_counts_the_rest() {
    let policy = load_default().unwrap();
    let mut c = Correlator::new(&policy, 0);
    let mut procs = ProcessTable::default();
    procs.add_root(7, 1);
    let total = super::MAX_KEPT_CONNECTIONS as u64 + 3;
    for i in 0..total {
        handle(
            &mut c,
            &connect(7, 1_000 + i, (i % 60_000) as u16 + 1, 0),
            &mut procs,
        )
        .expect("every connect is streamed");
    }
    assert_eq!(c.connections.len(), super::MAX_KEPT_CONNECTIONS);
    assert_eq!(c.connections_not_kept, 3);
    assert_eq!(
        c.connections.front().unwrap().body.destination.port,
        4,
        "the oldest three went"
    );
}

#[test]
fn a_reload_keeps_earlier_probes_under_their_category_names() {
    let first = crate::policy::parse(
        "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: a}\ncategories:\n  - {name: timezone, paths: [/etc/localtime]}\n  - {name: gone, env: [TZ]}\n",
        "a.yaml",
    )
    .unwrap();
    let second = crate::policy::parse(
        "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: b}\ncategories:\n  - {name: host, paths: [/etc/hostname]}\n  - {name: timezone, paths: [/etc/localtime]}\n",
        "b.yaml",
    )
    .unwrap();
    let mut c = Correlator::new(&first, 0);
    let mut procs = ProcessTable::default();
    procs.add_root(5, 1);
    handle(
        &mut c,
        &file(5, 1, FILE_OP_OPENAT, "/etc/localtime"),
        &mut procs,
    );
    handle(&mut c, &env(5, 2, "TZ"), &mut procs);
    c.set_policy(&second, Default::default());
    let names: Vec<String> = c.summarize(None).into_iter().map(|s| s.category).collect();
    assert_eq!(names, ["timezone"], "`gone` left with the old policy");
    let Some(Body::Probe(p)) = handle(
        &mut c,
        &file(5, 3, FILE_OP_OPENAT, "/etc/hostname"),
        &mut procs,
    ) else {
        panic!("the new category counts")
    };
    assert_eq!(p.categories, ["host"]);
}

proptest::proptest! {
    /// However wide and deep a tree grows, a probe anywhere in it is joined with a
    /// connection anywhere else in it, and never with a second tree's connection.
    #[test]
    fn a_probe_anywhere_in_a_large_tree_counts_for_every_connection_in_it(
        parents in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 1..400),
        prober in proptest::prelude::any::<proptest::sample::Index>(),
        connector in proptest::prelude::any::<proptest::sample::Index>(),
    ) {
        let policy = load_default().unwrap();
        let mut c = Correlator::new(&policy, 0);
        let mut procs = ProcessTable::default();
        procs.add_root(1000, 1);
        let mut pids = vec![1000u32];
        for (i, parent) in parents.iter().enumerate() {
            let child = 1001 + i as u32;
            procs.on_fork(pids[parent.index(pids.len())], child);
            pids.push(child);
        }
        procs.add_root(9000, 1);
        handle(&mut c, &env(pids[prober.index(pids.len())], 1_000, "TZ"), &mut procs);
        let Some(Body::Connect(same)) =
            handle(&mut c, &connect(pids[connector.index(pids.len())], 2_000, 443, 0), &mut procs)
        else {
            panic!("no connect record")
        };
        proptest::prop_assert_eq!(same.probes_before.len(), 1);
        let Some(Body::Connect(other)) = handle(&mut c, &connect(9000, 3_000, 443, 0), &mut procs)
        else {
            panic!("no connect record")
        };
        proptest::prop_assert!(other.probes_before.is_empty());
    }
}

#[test]
fn shown_values_of_expired_trees_leave_room_for_the_processes_that_come() {
    use super::values::MAX_SHOWN_VALUES;
    let policy = load_default().unwrap();
    let mut c = Correlator::new(&policy, 0);
    let mut procs = ProcessTable::default();
    // A daemon's day: many short-lived processes, each given TZ, each gone.
    let storm = MAX_SHOWN_VALUES as u32 + 10;
    for pid in 1_000..1_000 + storm {
        procs.add_root(pid, 1);
        c.values.insert(pid, "TZ", "UTC");
        procs.on_exit(pid, Some(0));
    }
    assert_eq!(c.values.not_kept, 10);
    c.expire_trees(10_000, 1_000, &mut procs);
    c.expire_trees(11_000, 1_000, &mut procs);
    assert!(procs.is_empty());
    // A process that starts after their trees expired still has its value shown.
    procs.add_root(50_000, 1);
    c.values.insert(50_000, "TZ", "Asia/Shanghai");
    assert_eq!(c.values.get(50_000, "TZ"), Some("Asia/Shanghai"));
    assert_eq!(c.values.not_kept, 10);
    assert_eq!(c.values.get(1_000, "TZ"), None);
}

/// Reads the kernel could not count for block rules (a case variant of an env name,
/// a basename candidate) become late feeds with their slots; reads it counted
/// (an upper-case name, a path string match) do not; without block rules nothing does.
#[test]
fn reads_the_kernel_did_not_count_become_late_block_feeds() {
    let yaml = format!(
        "{}\n  - name: block-out\n    probed: {{any_of: [proxy, timezone]}}\n    then: [connect]\n    within: 30s\n    action: block\n",
        include_str!("../../../policies/default.yaml")
    );
    let policy = crate::policy::parse(&yaml, "t.yaml").unwrap();
    let mut c = Correlator::new(&policy, 0);
    let mut procs = ProcessTable::default();
    procs.add_root(100, 1);
    let mut candidate = file(100, 3_000, FILE_OP_OPENAT, "/etc/localtime");
    if let Event::File(f) = &mut candidate {
        f.matched_by = FILE_MATCH_BASENAME;
    }
    for ev in [
        env(100, 1_000, "HTTPS_PROXY"),
        env(100, 2_000, "https_proxy"),
        file(100, 2_500, FILE_OP_OPENAT, "/etc/localtime"),
        candidate,
    ] {
        handle(&mut c, &ev, &mut procs);
    }
    let feeds = c.take_late_feeds();
    let times: Vec<u64> = feeds.iter().map(|f| f.ktime_ns).collect();
    assert_eq!(times, [2_000, 3_000], "{feeds:?}");
    assert!(
        feeds.iter().all(|f| f.pid == 100 && f.slots != 0),
        "{feeds:?}"
    );
    assert!(c.take_late_feeds().is_empty());

    let mut plain = Correlator::new(&load_default().unwrap(), 0);
    handle(&mut plain, &env(100, 2_000, "https_proxy"), &mut procs);
    assert!(plain.take_late_feeds().is_empty());
}
