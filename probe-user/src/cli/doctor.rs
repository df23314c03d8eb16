//! `probectl doctor`: what the kernel allows, which attach point each sensor family
//! uses, what better ones it passed over and why, and what that costs in coverage.

use probe_user::policy;
use probe_user::sensors::{Sensors, chain::SensorChoice, features::KernelFeatures};
use serde::Serialize;

#[derive(Serialize)]
struct DoctorReport<'a> {
    kernel: String,
    features: &'a KernelFeatures,
    sensors: &'a [SensorChoice],
    programs_attached: usize,
    /// Some program did not attach: what it watches is missing (a report would say
    /// PARTIAL). The exit code is 1 then.
    partial: bool,
    programs_failed: Vec<&'a probe_user::sensors::AttachStatus>,
    file_resolution: Option<&'a probe_user::sensors::FileResolution>,
    /// Whether block rules (`action: block`) can refuse calls on this kernel.
    enforcement: probe_user::sensors::block::BlockCapability,
    coverage_notes: Vec<String>,
}

pub fn doctor(json: bool) -> anyhow::Result<i32> {
    let policy = policy::prepare(&policy::PolicySource::BuiltIn)?;
    let sensors = Sensors::load(&policy)?;
    let kernel = nix::sys::utsname::uname()
        .map(|u| {
            format!(
                "{} {}",
                u.sysname().to_string_lossy(),
                u.release().to_string_lossy()
            )
        })
        .unwrap_or_else(|_| "unknown".to_owned());
    let report = DoctorReport {
        kernel,
        features: &sensors.features,
        sensors: &sensors.choices,
        programs_attached: sensors.status.iter().filter(|s| s.attached).count(),
        partial: sensors.unattached().next().is_some(),
        programs_failed: sensors.unattached().collect(),
        file_resolution: sensors.file_resolution.as_ref(),
        enforcement: sensors.block_capability(),
        coverage_notes: sensors.coverage_notes(),
    };
    // The same test as a report's PARTIAL, plus a family with nothing attached.
    let healthy = sensors.choices.iter().all(|c| c.chosen != "none") && !report.partial;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    // Like `run`: the kernel's detaches (an RCU grace period each) happen in a
    // short-lived child, not before doctor exits.
    super::standalone::detach_off_the_exit_path();
    Ok(if healthy { 0 } else { 1 })
}

fn render(r: &DoctorReport<'_>) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "Kernel: {}", r.kernel);
    let _ = writeln!(
        s,
        "\nKernel features (probed by loading and attaching a program where one exists):"
    );
    for f in &r.features.features {
        let _ = writeln!(
            s,
            "  [{}] {:<17} {}",
            if f.available { "ok" } else { "--" },
            f.name,
            f.detail
        );
    }
    let _ = writeln!(
        s,
        "\nSensors (attach point in use; better ones passed over, and why):"
    );
    for c in r.sensors {
        let family = c.family.as_str();
        let _ = writeln!(s, "  {family:<8} {}", c.chosen);
        for p in &c.passed_over {
            let _ = writeln!(
                s,
                "           passed over: {} -- {}",
                p.attach_point, p.reason
            );
        }
        for b in &c.blind_spots {
            let _ = writeln!(s, "           blind spot:  {b}");
        }
    }
    let _ = writeln!(
        s,
        "\nPrograms: {} attached, {} failed{}",
        r.programs_attached,
        r.programs_failed.len(),
        if r.partial {
            " (PARTIAL: what they watch is missing)"
        } else {
            ""
        }
    );
    for p in &r.programs_failed {
        let _ = writeln!(
            s,
            "  {} ({}): {}",
            p.program,
            p.attach_point,
            p.error.as_deref().unwrap_or("?")
        );
    }
    if let Some(f) = r.file_resolution {
        let _ = writeln!(
            s,
            "\nFiles beyond the path string: by inode {} ({} policy files indexed{}), {} basenames resolved in userspace",
            if f.by_inode { "on" } else { "OFF" },
            f.indexed_files,
            if f.not_indexed > 0 {
                format!(
                    ", at least {} not indexed: map full or walk bound reached",
                    f.not_indexed
                )
            } else {
                String::new()
            },
            f.basenames
        );
        if let Some(why) = &f.by_inode_off {
            let _ = writeln!(s, "  by inode is off: {why}");
        }
    }
    let _ = writeln!(
        s,
        "\nEnforcement: [{}] {}",
        if r.enforcement.possible { "ok" } else { "--" },
        r.enforcement.detail
    );
    let _ = writeln!(s, "\nNot covered by this build:");
    for n in &r.coverage_notes {
        let _ = writeln!(s, "  - {n}");
    }
    s
}
