//! `probectl policy check`.

use std::path::PathBuf;

use probe_user::policy;

use super::exit;

pub fn check(files: &[PathBuf]) -> i32 {
    let mut failed = false;
    for file in files {
        match policy::load_file(file) {
            Ok(p) => println!(
                "ok: {} (policy {:?}, {} categories)",
                file.display(),
                p.name,
                p.categories.len()
            ),
            Err(err) => {
                failed = true;
                eprintln!("probectl: invalid policy: {err}");
            }
        }
    }
    if failed { exit::INVALID_POLICY } else { 0 }
}
