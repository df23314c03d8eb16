//! Each hostile policy is built here and must be refused with a clear error of the
//! right kind. Before these bounds each one cost minutes or gigabytes (measured on the
//! development machine: the alias bomb ran past 150 s at 2 GB, 100,000 nested brackets
//! took 16-38 s, 100,000 env names 9 s): that these tests finish at all is the bound
//! on time; no test measures time.

use super::super::{Limit, PolicyError, parse, parse_policy};

const HEAD: &str = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: hostile}\n";

fn refused(text: &str) -> PolicyError {
    parse(text, "hostile.yaml").expect_err("a hostile policy is refused")
}

fn assert_placed(err: &PolicyError) {
    let text = err.to_string();
    assert!(text.starts_with("hostile.yaml:"), "{text}");
    assert!(text.contains("\n  hint: "), "{text}");
}

/// 118 KB that expand to 20 million env names: one anchored list of 10,000 names,
/// used again by 2,000 categories.
#[test]
fn an_alias_bomb_is_refused_while_parsing() {
    let names: Vec<String> = (0..10_000).map(|i| format!("N{i}")).collect();
    let mut text = format!(
        "{HEAD}categories:\n  - {{name: c0, env: &n [{}]}}\n",
        names.join(", ")
    );
    for i in 1..2_000 {
        text.push_str(&format!("  - {{name: c{i}, env: *n}}\n"));
    }
    assert!(text.len() < 130_000);
    let err = refused(&text);
    assert_eq!(err.limit(), Some(Limit::YamlSize), "{err}");
    assert_placed(&err);
    assert!(err.to_string().contains("aliases"), "{err}");
    let PolicyError::Limit {
        at: Some((line, _)),
        ..
    } = err
    else {
        panic!("no position: {err}")
    };
    assert!(
        line > 5,
        "the alias in use when the budget ran out, not line {line}"
    );
}

/// A 512 KiB string used 100 times: 50 MB of text from half a megabyte.
#[test]
fn an_alias_bomb_of_long_strings_is_refused() {
    let mut text = format!(
        "{HEAD}categories:\n  - {{name: c0, description: &s {}}}\n",
        "x".repeat(512 * 1024)
    );
    for i in 1..100 {
        text.push_str(&format!("  - {{name: c{i}, description: *s}}\n"));
    }
    let err = refused(&text);
    assert_eq!(err.limit(), Some(Limit::YamlSize), "{err}");
}

/// 100,000 levels: flow sequences, flow mappings, and the one field that may nest
/// (`destination.except`), so the depth is what is refused, not a type.
#[test]
fn deep_nesting_is_refused_while_parsing() {
    let depth = 100_000;
    let except = format!(
        "{HEAD}categories: [{{name: tz, env: [TZ]}}]\nrules:\n  - name: r\n    probed: {{any_of: [tz]}}\n    within: 1s\n    destination: {}{}\n",
        "{except: ".repeat(depth),
        "}".repeat(depth)
    );
    let err = refused(&except);
    assert_eq!(err.limit(), Some(Limit::YamlDepth), "{err}");
    assert_placed(&err);
    for (open, close) in [("[", "]"), ("{a: ", "}")] {
        let text = format!(
            "{HEAD}categories:\n  - name: c\n    env: {}{}\n",
            open.repeat(depth),
            close.repeat(depth)
        );
        // Refused at once, by the depth or by the type of its first level.
        let err = refused(&text);
        assert!(err.to_string().starts_with("hostile.yaml:6:"), "{err}");
    }
    let block = format!(
        "{HEAD}categories:\n  - name: c\n    env:\n      {}x\n",
        "- ".repeat(depth)
    );
    assert!(refused(&block).to_string().starts_with("hostile.yaml:7:"));
}

/// 100,000 distinct env names: compiled in one pass, refused at the first name the
/// kernel's `ENV_NAMES` (1,024 entries, 2 of them kept for the built-in HOME and
/// XDG_CONFIG_HOME) cannot hold, with its place in the file.
#[test]
fn more_env_names_than_the_kernel_map_holds_are_refused_with_the_first_extra_one() {
    let names: Vec<String> = (0..100_000).map(|i| format!("E{i}")).collect();
    let text = format!(
        "{HEAD}categories:\n  - name: c\n    env: [{}]\n",
        names.join(", ")
    );
    let err = refused(&text);
    assert_eq!(err.limit(), Some(Limit::KernelMap("ENV_NAMES")), "{err}");
    assert_placed(&err);
    let msg = err.to_string();
    assert!(msg.contains("(1022)") && msg.contains("\"E1022\""), "{msg}");
    // The same names once each in a valid number: accepted.
    let fits = format!(
        "{HEAD}categories:\n  - name: c\n    env: [{}]\n",
        names[..1_022].join(", ")
    );
    assert_eq!(
        parse(&fits, "ok.yaml").unwrap().kernel.env_names.len(),
        1_024,
        "the names and the two built-in ones"
    );
}

/// `~/` paths become one entry per home: 2,000 of them times 256 homes would be
/// 512,000 kernel paths. Refused at the first that does not fit, before expanding
/// the rest.
#[test]
fn home_expansion_is_checked_against_the_paths_map() {
    let paths: Vec<String> = (0..2_000).map(|i| format!("~/.f{i}")).collect();
    let text = format!(
        "{HEAD}categories:\n  - name: c\n    paths: [{}]\n",
        paths.join(", ")
    );
    let parsed = parse_policy(&text, "hostile.yaml").unwrap();
    let homes: Vec<String> = (0..256).map(|i| format!("/home/u{i}")).collect();
    let err = super::super::compile::compile_for_homes(parsed, &homes, "hostile.yaml")
        .expect_err("over PATHS");
    assert_eq!(err.limit(), Some(Limit::KernelMap("PATHS")), "{err}");
}

/// The same 20 paths listed by 1,000 categories: 20 kernel entries, but 20,000 pairs
/// for userspace to classify against.
#[test]
fn too_many_category_entries_are_refused() {
    let paths: Vec<String> = (0..20).map(|i| format!("/etc/f{i}")).collect();
    let mut text = format!("{HEAD}categories:\n");
    for i in 0..1_000 {
        text.push_str(&format!(
            "  - {{name: c{i}, paths: [{}]}}\n",
            paths.join(", ")
        ));
    }
    let err = refused(&text);
    assert_eq!(err.limit(), Some(Limit::CategoryEntries), "{err}");
}

#[test]
fn a_file_over_a_mebibyte_is_refused_unread() {
    let text = format!("{HEAD}# {}\n", "x".repeat(super::MAX_POLICY_FILE_BYTES));
    assert_eq!(refused(&text).limit(), Some(Limit::FileSize));
    let path = std::env::temp_dir().join(format!("probectl-big-{}.yaml", std::process::id()));
    std::fs::write(&path, &text).unwrap();
    let err = super::super::load_file(&path).expect_err("too large");
    std::fs::remove_file(&path).unwrap();
    assert_eq!(err.limit(), Some(Limit::FileSize), "{err}");
}

/// `/**/**` (and any glob or prefix whose literal directory is `/`) would make the
/// kernel send every file a watched program touches.
#[test]
fn globs_and_prefixes_that_would_pass_every_path_are_refused() {
    for (field, value) in [
        ("paths", "'/**/**'"),
        ("paths", "'/*/x'"),
        ("paths", "'/**/**/**/**/**/**/**/**/x'"),
        ("path_prefixes", "/"),
    ] {
        let text = format!("{HEAD}categories:\n  - name: c\n    {field}: [{value}]\n");
        let msg = refused(&text).to_string();
        assert!(msg.starts_with("hostile.yaml:6:"), "{msg}");
        assert!(msg.contains("every file"), "{msg}");
    }
    for ok in ["'/etc/**/**/x'", "'~/**/credentials'"] {
        let text = format!("{HEAD}categories:\n  - name: c\n    paths: [{ok}]\n");
        parse(&text, "ok.yaml").unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

/// A glob with many `**` under a real, large tree: expanding it reads a bounded
/// number of directory entries (the matcher is polynomial, the walk has a budget).
#[test]
fn indexing_a_glob_with_many_double_stars_is_bounded() {
    let text = format!(
        "{HEAD}categories:\n  - name: c\n    paths: ['/usr/**/**/**/**/**/**/**/**/**/**/**/**/nomatch-x']\n"
    );
    let p = parse(&text, "t.yaml").unwrap();
    let index = super::super::FileIndex::build(&p.classifier);
    assert!(index.files.is_empty());
}

/// Categories and rules are mapped by name onto the next policy at each reload, and
/// every exec is checked against each userspace selector: their numbers are bounded
/// before anything costly (compiling regexes) is done.
#[test]
fn too_many_categories_rules_or_selectors_are_refused_before_compiling_them() {
    let mut cats = format!("{HEAD}categories:\n");
    for i in 0..2_000 {
        cats.push_str(&format!("  - {{name: c{i}}}\n"));
    }
    assert_eq!(refused(&cats).limit(), Some(Limit::Count));
    let mut rules = format!("{HEAD}categories: [{{name: tz, env: [TZ]}}]\nrules:\n");
    for i in 0..2_000 {
        rules.push_str(&format!(
            "  - {{name: r{i}, probed: {{any_of: [tz]}}, within: 1s}}\n"
        ));
    }
    assert_eq!(refused(&rules).limit(), Some(Limit::Count));
    let regexes: Vec<String> = (0..10_000)
        .map(|i| format!("'(a{{1000}}){{1000}}{i}'"))
        .collect();
    let text = format!("{HEAD}select:\n  argv_regex: [{}]\n", regexes.join(", "));
    let err = refused(&text);
    assert_eq!(err.limit(), Some(Limit::Count), "{err}");
    assert_placed(&err);
    // One such regex: refused for its compiled size, not compiled to gigabytes.
    let one = format!("{HEAD}select:\n  argv_regex: ['(((a{{1000}}){{1000}}){{1000}})']\n");
    assert!(
        refused(&one)
            .to_string()
            .contains("not a valid regular expression")
    );
}
