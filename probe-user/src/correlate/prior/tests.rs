use super::*;
use proptest::prelude::*;

fn file(p: &mut PriorIndex, cat: usize, target: &str, prefix: Option<&str>, t: u64) {
    p.record(&[cat], TargetType::File, How::Openat, target, prefix, 7, t);
}

#[test]
fn the_window_is_inclusive_to_the_nanosecond() {
    let mut p = PriorIndex::default();
    file(&mut p, 0, "/etc/localtime", None, 1_000);
    assert!(
        p.probed(0, EvidenceSet::DEFAULT, 1_000, 5_000),
        "exactly at the window's start"
    );
    assert!(
        !p.probed(0, EvidenceSet::DEFAULT, 1_001, 5_000),
        "one ns outside"
    );
    assert!(!p.probed(0, EvidenceSet::DEFAULT, 0, 999), "after the call");
    assert!(
        !p.probed(1, EvidenceSet::DEFAULT, 0, 5_000),
        "another category"
    );
}

#[test]
fn files_under_a_prefix_fold_after_five_and_the_listing_is_bounded() {
    let mut p = PriorIndex::default();
    let zi = "/usr/share/zoneinfo/";
    for i in 0..600u64 {
        file(&mut p, 0, &format!("{zi}z{i}"), Some(zi), 10 + i);
    }
    file(&mut p, 0, "/etc/localtime", None, 5);
    p.record(&[1], TargetType::Env, How::Getenv, "TZ", None, 7, 1);
    let ranked = [(0, "timezone".to_owned()), (1, "tz-env".to_owned())];
    let (rows, more) = p.listed(10_000, &ranked);
    assert_eq!(more, 0);
    let targets: Vec<&str> = rows.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(
        targets,
        ["/etc/localtime", "/usr/share/zoneinfo/**", "TZ"],
        "first probe first, per category in rank order"
    );
    assert_eq!(rows[1].distinct_targets, Some(600));
    assert_eq!(rows[1].count, 600);
    assert_eq!(rows[1].first_ns, 10);
    assert!((rows[1].last_ms_before - (10_000 - 609) as f64 / 1e6).abs() < 1e-12);

    // Thousands of exact targets: a record lists MAX_LISTED_PRIOR, counts the rest.
    let mut many = PriorIndex::default();
    for i in 0..5_000u64 {
        many.record(
            &[0],
            TargetType::Env,
            How::Getenv,
            &format!("V{i}"),
            None,
            7,
            i,
        );
    }
    let (rows, more) = many.listed(10_000, &ranked);
    assert_eq!(
        (rows.len(), more),
        (MAX_LISTED_PRIOR, 5_000 - MAX_LISTED_PRIOR as u64)
    );
    // A later-ranked category with one row still gets listed: the first keeps
    // the rest of the room.
    many.record(&[1], TargetType::Env, How::Getenv, "TZ", None, 7, 9_000);
    let (rows, more) = many.listed(10_000, &ranked);
    assert_eq!(rows.len(), MAX_LISTED_PRIOR);
    assert_eq!(more, 5_000 - (MAX_LISTED_PRIOR as u64 - 1));
    assert_eq!(rows.last().map(|r| r.target.as_str()), Some("TZ"));
    assert!(
        rows[..MAX_LISTED_PRIOR - 1]
            .iter()
            .all(|r| r.category == "timezone")
    );
}

proptest! {
    /// What the index answers is what a walk over every probe would answer.
    #[test]
    fn the_index_answers_like_a_walk_over_every_probe(
        probes in proptest::collection::vec((0usize..3, 0usize..12, 0u64..1_000), 0..60),
        since in 0u64..1_000,
        span in 0u64..1_000,
        min in 1u64..6,
    ) {
        let at = since + span;
        let mut p = PriorIndex::default();
        for &(c, target, t) in &probes {
            p.record(&[c], TargetType::Env, How::Getenv, &format!("T{target}"), None, 1, t);
        }
        // The walk: latest time per (category, target).
        let mut latest: HashMap<(usize, usize), u64> = HashMap::new();
        for &(c, target, t) in &probes {
            let l = latest.entry((c, target)).or_insert(t);
            *l = (*l).max(t);
        }
        let inside = |&(_, &t): &(&(usize, usize), &u64)| t >= since && t <= at;
        for c in 0..3 {
            let walked = latest.iter().filter(inside).any(|((cc, _), _)| *cc == c);
            prop_assert_eq!(p.probed(c, EvidenceSet::DEFAULT, since, at), walked);
        }
        let distinct = latest.iter().filter(inside).count() as u64;
        prop_assert_eq!(p.distinct_at_least(None, EvidenceSet::DEFAULT, since, at, min), distinct >= min);
        let of_0 = latest.iter().filter(inside).filter(|((c, _), _)| *c == 0).count() as u64;
        prop_assert_eq!(p.distinct_at_least(Some(&[0]), EvidenceSet::DEFAULT, since, at, min), of_0 >= min);
        let mut cats: Vec<usize> = latest.iter().filter(inside).map(|((c, _), _)| *c).collect();
        cats.sort_unstable();
        cats.dedup();
        prop_assert_eq!(p.categories(EvidenceSet::DEFAULT, since, at), cats);
    }
}
