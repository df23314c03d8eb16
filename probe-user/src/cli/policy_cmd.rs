//! `probectl policy check`, `probectl policy explain` and `probectl diff`.

use std::path::PathBuf;

use probe_user::policy;

use super::exit;

pub fn check(files: &[PathBuf]) -> i32 {
    let mut failed = false;
    for file in files {
        // The same checks as a start or a reload, kernel map capacities included
        // (computed from the compiled policy; nothing is loaded).
        match policy::load_file(file) {
            Ok(p) => {
                println!(
                    "ok: {} (policy {:?}, {} categories; kernel maps: {})",
                    file.display(),
                    p.name,
                    p.categories.len(),
                    policy::KernelCapacity::of(&p, None)
                );
                if let Some(blocks) = policy::block_summary(&p) {
                    println!("  {blocks}");
                }
            }
            Err(err) => {
                failed = true;
                eprintln!("probectl: invalid policy: {err}");
            }
        }
    }
    if failed { exit::INVALID_POLICY } else { 0 }
}

pub fn explain(file: Option<&std::path::Path>) -> i32 {
    let (loaded, source) = match file {
        Some(f) => (policy::load_file(f), f.display().to_string()),
        None => (
            policy::load_default(),
            policy::DEFAULT_POLICY_SOURCE.to_owned(),
        ),
    };
    match loaded {
        Ok(p) => {
            let index = policy::FileIndex::build(&p.classifier);
            print!(
                "{}",
                policy::explain(&p, &source, &index, policy::home_dirs().len())
            );
            0
        }
        Err(err) => {
            eprintln!("probectl: invalid policy: {err}");
            exit::INVALID_POLICY
        }
    }
}

pub fn diff(old: &std::path::Path, new: &std::path::Path) -> i32 {
    let (a, b) = match (
        probe_user::profile::load(old),
        probe_user::profile::load(new),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(err), _) | (_, Err(err)) => {
            eprintln!("probectl: {err}");
            return exit::DIFF_ERROR;
        }
    };
    let changes = probe_user::profile::diff(&a, &b);
    if changes.text.is_empty() {
        println!("no differences");
    } else {
        print!("{}", changes.text);
    }
    if changes.behaviour_changed {
        exit::PROFILES_DIFFER
    } else {
        if !changes.text.is_empty() {
            println!("no change of behaviour");
        }
        0
    }
}
