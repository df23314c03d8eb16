//! `probectl selftest` and `probectl doctor --selftest`: arguments and output only;
//! the test itself is `probe_user::selftest`.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use probe_user::sensors::Family;

#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Leave this sensor family's programs unattached (process, files, env, net),
    /// to see what the self-test reports when a sensor is missing. Repeatable.
    #[arg(long, value_name = "FAMILY", value_parser = parse_family)]
    pub without: Vec<Family>,
    /// How long to wait for the child and its operations, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    pub timeout: u64,
}

impl SelftestArgs {
    pub fn json_only(json: bool) -> Self {
        Self {
            json,
            without: Vec::new(),
            timeout: 20,
        }
    }
}

fn parse_family(name: &str) -> Result<Family, String> {
    [Family::Process, Family::Files, Family::Env, Family::Net]
        .into_iter()
        .find(|f| f.as_str() == name)
        .ok_or_else(|| format!("unknown family {name:?}: process, files, env or net"))
}

/// Exits 0 when every operation was seen, 1 when one was not.
pub fn selftest(args: &SelftestArgs) -> anyhow::Result<i32> {
    let exe = std::env::current_exe().context("cannot find probectl's own binary")?;
    let outcome = probe_user::selftest::run(&probe_user::selftest::Options {
        exe,
        without: args.without.clone(),
        timeout: Duration::from_secs(args.timeout),
    })?;
    let report = &outcome.report;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", probe_user::selftest::render(report));
    }
    let code = if report.passed { 0 } else { 1 };
    // The report is out: the detaches go to a child, then the engine is dropped.
    super::standalone::detach_off_the_exit_path();
    drop(outcome);
    Ok(code)
}
