use super::*;

#[test]
fn default_policy_declares_the_built_in_categories() {
    let policy = load_default().expect("default policy is valid");
    let names: Vec<&str> = policy.categories.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "timezone",
            "proxy",
            "api-relay",
            "environment",
            "proxy-config",
            "host-identity",
            "ci-detection",
            "credentials"
        ]
    );
    assert!(!policy.kernel.env_names.is_empty());
    assert!(!policy.kernel.paths.is_empty());
}

#[test]
fn default_policy_classifies_env_names_with_each_case_rule() {
    let p = load_default().unwrap();
    let cat = |i: Vec<usize>| {
        i.iter()
            .map(|&i| p.categories[i].name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(cat(p.classifier.env_categories("https_proxy")), ["proxy"]);
    assert_eq!(cat(p.classifier.env_categories("HTTPS_PROXY")), ["proxy"]);
    assert_eq!(cat(p.classifier.env_categories("TZ")), ["timezone"]);
    assert!(
        p.classifier.env_categories("tz").is_empty(),
        "TZ is case-sensitive"
    );
    assert_eq!(
        cat(p.classifier.env_categories("ANTHROPIC_BASE_URL")),
        ["api-relay"]
    );
    assert!(p.classifier.env_categories("HOME").is_empty());
}

#[test]
fn default_policy_classifies_paths() {
    let p = load_default().unwrap();
    let cat = |i: Vec<usize>| {
        i.iter()
            .map(|&i| p.categories[i].name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cat(p.classifier.path_categories("/etc/localtime")),
        ["timezone"]
    );
    assert_eq!(
        cat(p
            .classifier
            .path_categories("/usr/share/zoneinfo/Europe/Paris")),
        ["timezone"]
    );
    assert!(
        p.classifier
            .path_categories("/etc/localtime.bak")
            .is_empty()
    );
    assert!(p.classifier.path_categories("/etc/passwd").is_empty());
    assert_eq!(
        cat(p.classifier.path_categories("/proc/self/environ")),
        ["environment"]
    );
    assert_eq!(
        cat(p.classifier.path_categories("/proc/1234/task/1235/environ")),
        ["environment"]
    );
    assert!(p.classifier.path_categories("/proc/environ").is_empty());
    assert!(p.kernel.proc_environ);
    assert_eq!(
        cat(p.classifier.path_categories("/etc/machine-id")),
        ["host-identity"]
    );
    assert_eq!(
        cat(p.classifier.path_categories("/sys/class/net/eth0/address")),
        ["host-identity"]
    );
    assert_eq!(
        cat(p.classifier.path_categories("/etc/environment")),
        ["proxy-config"]
    );
    use crate::ops::HostCall;
    assert_eq!(
        cat(p.classifier.host_call_categories(HostCall::Siocgifhwaddr)),
        ["host-identity"]
    );
    assert_eq!(
        cat(p.classifier.host_call_categories(HostCall::RtmGetlink)),
        ["host-identity"]
    );
    // uname is too common to mean anything by default.
    assert!(
        p.classifier
            .host_call_categories(HostCall::Uname)
            .is_empty()
    );
    assert_eq!(
        p.kernel.host_calls,
        1 << probe_common::HOST_CALL_IFHWADDR | 1 << probe_common::HOST_CALL_GETLINK
    );
}

#[test]
fn an_unknown_host_call_is_refused_with_the_names_it_could_be() {
    let yaml = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: t}\ncategories:\n  - name: host\n    host_calls: [uname, gethostid]\n";
    let err = parse_policy(yaml, "t.yaml").expect_err("gethostid is not a host call");
    let text = err.to_string();
    assert!(text.contains("gethostid"), "{text}");
    assert!(
        text.contains("rtm_getlink"),
        "the error lists the known calls: {text}"
    );
}

#[test]
fn home_paths_expand_for_every_home() {
    let yaml = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: t}\ncategories:\n  - name: proxy-config\n    paths: [~/.npmrc, /etc/environment]\n    path_prefixes: [~/.config/app/]\n";
    let parsed = parse_policy(yaml, "t.yaml").expect("`~/` paths are valid");
    let homes = vec!["/home/ada".to_owned(), "/root".to_owned()];
    let p = compile::compile_for_homes(parsed, &homes, "t.yaml").unwrap();
    let exact: Vec<&str> = p.classifier.exact_paths().collect();
    assert_eq!(
        exact,
        ["/home/ada/.npmrc", "/root/.npmrc", "/etc/environment"]
    );
    let prefixes: Vec<&str> = p.classifier.prefixes().collect();
    assert_eq!(prefixes, ["/home/ada/.config/app/", "/root/.config/app/"]);
    assert_eq!(p.kernel.paths.len(), 5);
}

#[test]
fn relative_and_dot_dot_policy_paths_are_rejected() {
    for bad in ["etc/localtime", "/etc/../etc/localtime", "~user/.npmrc"] {
        let yaml = format!(
            "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {{name: t}}\ncategories:\n  - name: c\n    paths: [\"{bad}\"]\n"
        );
        let err = parse(&yaml, "t.yaml").expect_err(bad).to_string();
        assert!(err.contains("absolute"), "{bad}: {err}");
    }
}

#[test]
fn exact_kernel_keys_include_the_nul_and_prefixes_do_not() {
    let p = load_default().unwrap();
    let localtime = p
        .kernel
        .paths
        .iter()
        .find(|(_, k, _)| k.starts_with(b"/etc/localtime\0"))
        .unwrap();
    assert_eq!(localtime.0, (b"/etc/localtime".len() as u32 + 1) * 8);
    let zoneinfo = p
        .kernel
        .paths
        .iter()
        .find(|(_, k, _)| k.starts_with(b"/usr/share/zoneinfo/\0"))
        .unwrap();
    assert_eq!(zoneinfo.0, b"/usr/share/zoneinfo/".len() as u32 * 8);
}

#[test]
fn kernel_env_keys_are_upper_case_and_unique() {
    let p = load_default().unwrap();
    let key = |s: &str| {
        let mut k = [0u8; probe_common::ENV_NAME_LEN];
        k[..s.len()].copy_from_slice(s.as_bytes());
        k
    };
    assert!(
        p.kernel
            .env_names
            .iter()
            .any(|(k, _)| *k == key("HTTPS_PROXY"))
    );
    let mut keys: Vec<_> = p.kernel.env_names.iter().map(|(k, _)| *k).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), p.kernel.env_names.len());
}

#[test]
fn bad_yaml_reports_line_and_column() {
    let text = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: x\ncategories:\n  - name: a\n    env: [TZ\n";
    let err = parse(text, "bad.yaml").unwrap_err();
    let PolicyError::Parse {
        source_name,
        line,
        column,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(source_name, "bad.yaml");
    assert!(*line >= 7, "line {line} in {err}");
    assert!(*column > 0, "{err}");
    assert!(err.to_string().starts_with("bad.yaml:"), "{err}");
}

#[test]
fn unknown_field_is_rejected_with_its_position() {
    let text = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: x\ncategories:\n  - name: a\n    envs: [TZ]\n";
    let err = parse(text, "typo.yaml").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("typo.yaml:7:"), "{msg}");
    assert!(msg.contains("unknown field `envs`"), "{msg}");
    assert!(msg.contains("hint: did you mean `env`?"), "{msg}");
    assert_eq!(
        msg.matches("line 7").count(),
        0,
        "position given once, as file:line:col: {msg}"
    );
}

#[test]
fn relative_path_and_bad_env_name_are_rejected_with_a_hint() {
    let base = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: x\ncategories:\n  - name: a\n";
    let err = parse(&format!("{base}    paths: [etc/localtime]\n"), "p.yaml").unwrap_err();
    assert!(err.to_string().contains("is neither absolute"), "{err}");
    let err = parse(&format!("{base}    env: [\"BAD NAME\"]\n"), "p.yaml").unwrap_err();
    assert!(err.to_string().contains("hint:"), "{err}");
}

#[test]
fn duplicate_category_and_wrong_api_version_are_rejected() {
    let dup = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: x\ncategories:\n  - name: a\n  - name: a\n";
    assert!(
        parse(dup, "d.yaml")
            .unwrap_err()
            .to_string()
            .contains("defined twice")
    );
    let ver = "apiVersion: v9\nkind: Policy\nmetadata:\n  name: x\n";
    assert!(
        parse(ver, "v.yaml")
            .unwrap_err()
            .to_string()
            .contains("unsupported apiVersion")
    );
}

/// Every YAML example in docs/policy.md parses: a whole policy as it is, a `rules:`
/// fragment after the default policy's categories.
#[test]
fn the_examples_in_the_policy_docs_parse() {
    let doc = include_str!("../../../docs/policy.md");
    let mut examples = 0;
    for block in doc.split("```yaml\n").skip(1) {
        let yaml = block.split("```").next().unwrap();
        // The default policy ends with its `rules:` list: a fragment's rules join it.
        let text = if let Some(items) = yaml.strip_prefix("rules:\n") {
            format!("{DEFAULT_POLICY_YAML}\n{items}")
        } else {
            yaml.to_owned()
        };
        parse(&text, "docs/policy.md").unwrap_or_else(|e| panic!("{e}\n---\n{yaml}"));
        examples += 1;
    }
    assert!(examples >= 2, "found {examples} examples");
}

/// Checks after parsing (names, paths, rule references) also name file:line:column.
#[test]
fn semantic_errors_name_line_and_column() {
    let cases = [
        (
            "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: x\ncategories:\n  - name: a\n    paths: [/etc/a, etc/relative]\n",
            "p.yaml:7:21: category \"a\": path \"etc/relative\"",
        ),
        (
            "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: x\ncategories:\n  - name: a\n  - name: a\n",
            "p.yaml:7:11: category \"a\" is defined twice",
        ),
        (
            "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: x\ncategories:\n  - name: timezone\nrules:\n  - name: r\n    probed: {all_of: [timezon]}\n    within: 1s\n",
            "p.yaml:9:23: rule \"r\": uses category \"timezon\"",
        ),
        (
            "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: x\ncategories:\n  - name: timezone\nrules:\n  - name: r\n    probed: {all_of: [timezone]}\n    within: soon\n",
            "p.yaml:10:5: rule \"r\": within:",
        ),
    ];
    for (yaml, expected) in cases {
        let err = parse(yaml, "p.yaml").expect_err(expected).to_string();
        assert!(
            err.starts_with(expected),
            "expected {expected:?}, got:\n{err}"
        );
        assert!(err.contains("\n  hint: "), "{err}");
    }
}

#[test]
fn every_bundled_policy_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let p = load_file(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!p.categories.is_empty(), "{}", path.display());
            checked.push(p.name);
        }
    }
    checked.sort();
    assert_eq!(
        checked,
        ["ai-cli-strict", "ci-runner", "default", "package-managers"]
    );
}

#[test]
fn env_globs_classify_by_prefix_with_the_case_rule() {
    let yaml = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: t}\ncategories:\n  - name: locale\n    env: [LC_*, LANG]\n  - name: any-case\n    env_case_insensitive: true\n    env: [MY_*]\n";
    let p = parse(yaml, "t.yaml").unwrap();
    let cats = |n: &str| p.classifier.env_categories(n);
    assert_eq!(cats("LC_TIME"), [0]);
    assert_eq!(cats("LC_"), [0], "the literal part alone matches too");
    assert!(cats("lc_time").is_empty(), "exact case");
    assert!(cats("LCX").is_empty());
    assert_eq!(cats("LANG"), [0]);
    assert_eq!(cats("my_thing"), [1]);
    assert_eq!(p.kernel.env_prefixes.len(), 2);
    assert_eq!(p.kernel.env_prefixes[0].0, 3 * 8, "LC_ is a 24-bit prefix");
    for bad in ["*", "A*B", "**", "LC-*"] {
        let y = format!(
            "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {{name: t}}\ncategories:\n  - name: c\n    env: [\"{bad}\"]\n"
        );
        assert!(parse(&y, "t.yaml").is_err(), "{bad}");
    }
}

#[test]
fn selectors_compile_and_bad_ones_are_rejected() {
    let base = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: t}\n";
    let p = parse(
        &format!("{base}select:\n  comms: [node]\n  uids: [1000]\n  exe: ['**/bin/claude']\n  argv_contains: ['@anthropic-ai/claude-code']\n  argv_regex: ['cli\\.js$']\n"),
        "t.yaml",
    )
    .unwrap();
    assert_eq!(p.kernel.select_uids, [1000]);
    assert!(
        p.kernel.exec_candidates,
        "exe and argv selectors need every exec"
    );
    assert!(
        p.selectors
            .matching("/home/a/bin/claude", &[], None)
            .is_some()
    );
    let only_kernel = parse(&format!("{base}select:\n  comms: [node]\n"), "t.yaml").unwrap();
    assert!(!only_kernel.kernel.exec_candidates);
    for (select, message) in [
        ("  exe: [claude]\n", "not an absolute path glob"),
        (
            "  argv_regex: ['(unclosed']\n",
            "not a valid regular expression",
        ),
        ("  uids: [-1]\n", "u32"),
        ("  containers: [abc]\n", "not a container id"),
    ] {
        let err = parse(&format!("{base}select:\n{select}"), "t.yaml")
            .expect_err(select)
            .to_string();
        assert!(err.contains(message), "{select}: {err}");
        assert!(err.contains("t.yaml:"), "{err}");
    }
}

/// The SDKs' and CLIs' endpoint variables and config files (docs/policy.md, "Where the
/// api-relay names come from") are api-relay; their API-key variables are not in the
/// policy at all.
#[test]
fn default_policy_names_the_sdks_endpoints_and_the_clis_config_files() {
    let p = load_default().unwrap();
    let relay = p
        .categories
        .iter()
        .position(|c| c.name == "api-relay")
        .unwrap();
    for name in [
        "ANTHROPIC_BEDROCK_BASE_URL",
        "ANTHROPIC_VERTEX_BASE_URL",
        "AZURE_OPENAI_ENDPOINT",
        "OPENAI_API_BASE",
        "GOOGLE_VERTEX_BASE_URL",
        "GROQ_BASE_URL",
        "CO_API_URL",
        "OLLAMA_HOST",
        "HF_ENDPOINT",
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
    ] {
        assert_eq!(p.classifier.env_categories(name), [relay], "{name}");
    }
    for name in ["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "AWS_ENDPOINT_URL"] {
        assert!(p.classifier.env_categories(name).is_empty(), "{name}");
    }
    for path in [
        "/etc/claude-code/managed-settings.json",
        "/etc/gemini-cli/settings.json",
        "/etc/qwen-code/settings.json",
    ] {
        assert_eq!(p.classifier.path_categories(path), [relay], "{path}");
    }
}
