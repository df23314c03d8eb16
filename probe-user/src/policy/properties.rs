//! Property tests of the matchers: path globs, host-name globs and CIDRs, checked
//! against what each pattern is built to mean over generated inputs, edge cases
//! (empty components, prefix lengths 0 and 32/128, v4-mapped addresses) included.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::glob::matches;
use super::rules::{cidr_contains, glob_matches};

/// A path component: no `/`, no `*`.
fn component() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,12}"
}

/// The glob as a regular expression: an independent statement of what it means.
/// `**/` is "nothing, or anything ending in `/`"; `**` anything; `*` anything but `/`.
fn glob_regex(pattern: &str) -> regex::Regex {
    let mut re = String::from("(?s)^");
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("**/") {
            re.push_str("(?:.*/)?");
            rest = r;
        } else if let Some(r) = rest.strip_prefix("**") {
            re.push_str(".*");
            rest = r;
        } else if let Some(r) = rest.strip_prefix('*') {
            re.push_str("[^/]*");
            rest = r;
        } else {
            re.push_str(&regex::escape(&c.to_string()));
            rest = &rest[c.len_utf8()..];
        }
    }
    re.push('$');
    regex::Regex::new(&re).expect("a valid regex")
}

/// Patterns and paths over a small alphabet, so that they often match.
fn small_pattern() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b", "/", "*", "**", "**/"]),
        0..10,
    )
    .prop_map(|parts| parts.concat())
}

fn small_path() -> impl Strategy<Value = String> {
    "[ab/]{0,14}"
}

fn path(max_parts: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(component(), 1..max_parts)
        .prop_map(|parts| format!("/{}", parts.join("/")))
}

proptest! {
    #[test]
    fn a_literal_path_matches_itself_and_nothing_longer(p in path(6), extra in component()) {
        prop_assert!(matches(&p, &p));
        let longer = format!("{p}{extra}");
        let deeper = format!("{p}/{extra}");
        prop_assert!(!matches(&p, &longer));
        prop_assert!(!matches(&p, &deeper));
    }

    #[test]
    fn a_star_stays_within_one_component(dir in path(4), name in component(), below in component()) {
        let pattern = format!("{dir}/*");
        let child = format!("{dir}/{name}");
        let grandchild = format!("{dir}/{name}/{below}");
        prop_assert!(matches(&pattern, &child));
        prop_assert!(!matches(&pattern, &grandchild));
        // A star inside a component: `/sys/class/net/*/address`.
        let inner = format!("{dir}/*/{below}");
        prop_assert!(matches(&inner, &grandchild));
        prop_assert!(!matches(&inner, &child));
    }

    #[test]
    fn a_double_star_crosses_any_number_of_components(
        dir in path(3),
        middle in prop::collection::vec(component(), 0..5),
        leaf in component(),
    ) {
        let pattern = format!("{dir}/**/{leaf}");
        let mut target = dir.clone();
        for m in &middle {
            target.push('/');
            target.push_str(m);
        }
        target.push('/');
        target.push_str(&leaf);
        prop_assert!(matches(&pattern, &target));
        // Outside the directory it never matches.
        let outside = format!("{dir}x/{leaf}");
        prop_assert!(!matches(&pattern, &outside));
    }

    #[test]
    fn globs_mean_what_their_regular_expression_means(pattern in small_pattern(), path in small_path()) {
        prop_assert_eq!(matches(&pattern, &path), glob_regex(&pattern).is_match(&path), "{} vs {}", pattern, path);
    }

    /// Many `**` against a long path that does not match (its last component
    /// differs): exponential for a backtracking matcher, which never finished with a
    /// dozen; polynomial here. And the same pattern matches the path it describes.
    #[test]
    fn many_double_stars_match_in_polynomial_time(
        stars in 8usize..40,
        parts in prop::collection::vec(component(), 40..120),
        leaf in component(),
    ) {
        let pattern = format!("/{}{leaf}", "**/".repeat(stars));
        let mut target = format!("/{}", parts.join("/"));
        let wrong_leaf = format!("{target}/{leaf}x");
        let wrong_pattern = format!("{pattern}/**/nomatch");
        prop_assert!(!matches(&pattern, &wrong_leaf));
        prop_assert!(!matches(&wrong_pattern, &target));
        target.push('/');
        target.push_str(&leaf);
        prop_assert!(matches(&pattern, &target));
    }

    #[test]
    fn a_host_glob_matches_its_host_with_any_part_starred(
        host in "[a-z0-9-]{1,10}(\\.[a-z0-9-]{1,10}){0,3}",
        cut in any::<prop::sample::Index>(),
        len in 0usize..6,
    ) {
        let start = cut.index(host.len() + 1);
        let end = (start + len).min(host.len());
        let pattern = format!("{}*{}", &host[..start], &host[end..]);
        prop_assert!(glob_matches(&pattern, &host));
        prop_assert!(glob_matches(&pattern, &host.to_ascii_uppercase()), "host names ignore case");
        prop_assert!(glob_matches(&host, &host));
        let longer = format!("{host}.evil.example");
        prop_assert!(!glob_matches(&host, &longer), "no star, no extension");
    }

    #[test]
    fn an_ipv4_network_holds_its_addresses_and_no_other(raw in any::<u32>(), len in 0u8..=32, bit in 0u32..32) {
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
        let net = (IpAddr::V4(Ipv4Addr::from(raw & mask)), len);
        let addr = IpAddr::V4(Ipv4Addr::from(raw));
        prop_assert!(cidr_contains(&net, &addr));
        // The same address as an IPv4-mapped IPv6 one (an IPv6 socket to a v4 host).
        prop_assert!(cidr_contains(&net, &IpAddr::V6(Ipv4Addr::from(raw).to_ipv6_mapped())));
        // Flipping a bit inside the prefix leaves the network; outside it does not.
        let flipped = IpAddr::V4(Ipv4Addr::from(raw ^ (1u32 << (31 - bit))));
        prop_assert_eq!(cidr_contains(&net, &flipped), bit >= u32::from(len));
    }

    #[test]
    fn an_ipv6_network_holds_its_addresses_and_no_other(raw in any::<u128>(), len in 0u8..=128, bit in 0u32..128) {
        let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
        let net = (IpAddr::V6(Ipv6Addr::from(raw & mask)), len);
        let addr = Ipv6Addr::from(raw);
        // A v4-mapped address is compared as IPv4, so it is not in an IPv6 network.
        prop_assume!(addr.to_ipv4_mapped().is_none());
        prop_assert!(cidr_contains(&net, &IpAddr::V6(addr)));
        let flipped = Ipv6Addr::from(raw ^ (1u128 << (127 - bit)));
        prop_assume!(flipped.to_ipv4_mapped().is_none());
        prop_assert_eq!(cidr_contains(&net, &IpAddr::V6(flipped)), bit >= u32::from(len));
    }
}
