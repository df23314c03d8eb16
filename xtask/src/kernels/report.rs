//! One row per boot, from the guest's `probectl doctor --json` and its securityfs
//! LSM list, and the table of all of them.

use std::fmt::Write as _;

use serde_json::Value;

/// The sensor families, in the doctor's order.
pub const FAMILIES: [&str; 4] = ["process", "files", "env", "net"];

/// What one boot showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    pub kernel: String,
    /// `default`, or the `lsm=` list the boot added.
    pub cmdline: String,
    /// Per family (in [`FAMILIES`] order), the chosen attach point, shortened.
    pub chosen: Vec<String>,
    /// Whether the doctor said BPF-LSM is usable; `None` when it did not run.
    pub doctor_bpf_lsm: Option<bool>,
    /// Whether `bpf` is in the guest's /sys/kernel/security/lsm.
    pub lsm_active: Option<bool>,
    pub failed_programs: Vec<String>,
    pub doctor_rc: String,
    pub selftest: String,
    /// What the watched run reported: `env+file` when both probes came through.
    pub watch: String,
    /// The tier tests' cell ([`super::tiers::Tiers::cell`]); `-` when not run.
    pub tiers: String,
    pub seconds: u64,
    /// Boots needed (2 after one retry).
    pub attempts: u32,
    /// Empty when the boot passed; otherwise why not.
    pub problems: Vec<String>,
}

impl Row {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Fills `row` from the doctor's JSON, its exit code and the LSM file, and judges
/// it: every family chosen, no program failed, doctor exit 0, and the doctor's
/// BPF-LSM verdict equal to what securityfs lists.
pub fn judge(row: &mut Row, doctor_json: &str, doctor_rc: &str, lsm_file: Option<&str>) {
    row.doctor_rc = doctor_rc.to_owned();
    row.lsm_active = lsm_file.map(|l| l.trim().split(',').any(|m| m.trim() == "bpf"));
    let doc: Value = match serde_json::from_str(doctor_json) {
        Ok(v) => v,
        Err(e) => {
            row.problems.push(format!("doctor printed no JSON ({e})"));
            return;
        }
    };
    if let Some(k) = doc["kernel"].as_str() {
        row.kernel = k.trim_start_matches("Linux ").to_owned();
    }
    let sensors = doc["sensors"].as_array().cloned().unwrap_or_default();
    row.chosen = FAMILIES
        .iter()
        .map(|family| {
            let chosen = sensors
                .iter()
                .find(|s| s["family"] == *family)
                .and_then(|s| s["chosen"].as_str())
                .unwrap_or("?");
            if chosen == "none" || chosen == "?" {
                row.problems.push(format!("{family}: no attach point"));
            }
            short(chosen)
        })
        .collect();
    row.doctor_bpf_lsm = doc["features"]["features"].as_array().and_then(|fs| {
        fs.iter()
            .find(|f| f["name"] == "bpf-lsm")
            .and_then(|f| f["available"].as_bool())
    });
    row.failed_programs = doc["programs_failed"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter_map(|f| f["program"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if !row.failed_programs.is_empty() {
        row.problems.push(format!(
            "{} programs failed to load or attach",
            row.failed_programs.len()
        ));
    }
    if doctor_rc != "0" {
        row.problems.push(format!("doctor exited {doctor_rc}"));
    }
    if let (Some(doctor), Some(active)) = (row.doctor_bpf_lsm, row.lsm_active)
        && doctor != active
    {
        row.problems.push(format!(
            "doctor says BPF-LSM {}, securityfs says {}",
            yes_no(Some(doctor)),
            yes_no(Some(active))
        ));
    }
}

/// Judges the watched run (`probectl run --json` of a program started with
/// HTTPS_PROXY set that reads /etc/timezone): both probes must be reported.
pub fn judge_watch(row: &mut Row, records: &str, rc: &str) {
    let probes: Vec<Value> = records
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["type"] == "probe")
        .collect();
    let env = probes
        .iter()
        .any(|p| p["how"] == "present_at_exec" && p["target"] == "HTTPS_PROXY");
    let file = probes.iter().any(|p| {
        p["target"]
            .as_str()
            .is_some_and(|t| t.ends_with("/etc/timezone"))
    });
    row.watch = match (env, file) {
        (true, true) => "env+file".to_owned(),
        (true, false) => "env only".to_owned(),
        (false, true) => "file only".to_owned(),
        (false, false) => "nothing".to_owned(),
    };
    if !(env && file) {
        row.problems.push(format!(
            "watched run (exit {rc}) reported {}: expected HTTPS_PROXY at exec and /etc/timezone",
            row.watch
        ));
    }
}

/// The attach point's leading words ("syscall tracepoints", "cgroup v2 sock_addr").
fn short(chosen: &str) -> String {
    let cut = chosen.find([',', '+', '(']).unwrap_or(chosen.len());
    let words: Vec<&str> = chosen[..cut].split_whitespace().take(3).collect();
    words.join(" ")
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "active",
        Some(false) => "inactive",
        None => "?",
    }
}

/// The table of every boot, then `kernels ok N of M`.
pub fn table(rows: &[Row]) -> String {
    let mut header = vec!["kernel", "cmdline"];
    header.extend(FAMILIES);
    header.extend([
        "bpf-lsm", "failed", "watch", "selftest", "tiers", "time", "result",
    ]);
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells = vec![r.kernel.clone(), r.cmdline.clone()];
            for i in 0..FAMILIES.len() {
                cells.push(r.chosen.get(i).cloned().unwrap_or_else(|| "-".to_owned()));
            }
            cells.push(match (r.doctor_bpf_lsm, r.lsm_active) {
                (d, a) if d == a => yes_no(a).to_owned(),
                (d, a) => format!("doctor {} / lsm {}", yes_no(d), yes_no(a)),
            });
            cells.push(r.failed_programs.len().to_string());
            cells.push(r.watch.clone());
            cells.push(r.selftest.clone());
            cells.push(if r.tiers.is_empty() {
                "-".to_owned()
            } else {
                r.tiers.clone()
            });
            cells.push(format!(
                "{} s{}",
                r.seconds,
                if r.attempts > 1 { " (retried)" } else { "" }
            ));
            cells.push(if r.ok() {
                "ok".to_owned()
            } else {
                format!("FAIL: {}", r.problems.join("; "))
            });
            cells
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for cells in &body {
        for (w, c) in widths.iter_mut().zip(cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let n = cells.len();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == n {
                let _ = write!(out, "{c}");
            } else {
                let _ = write!(out, "{c:<w$}  ");
            }
        }
        out.push('\n');
    };
    line(
        &mut out,
        &header.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    );
    for cells in &body {
        line(&mut out, cells);
    }
    let ok = rows.iter().filter(|r| r.ok()).count();
    let _ = writeln!(out, "kernels ok {ok} of {}", rows.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCTOR: &str = r#"{
      "kernel": "Linux 6.1.0-50-amd64",
      "features": {"features": [
        {"name": "btf", "available": true, "detail": "x"},
        {"name": "bpf-lsm", "available": true, "detail": "bpf is in /sys/kernel/security/lsm"}
      ], "cgroup2": "/sys/fs/cgroup"},
      "sensors": [
        {"family": "process", "chosen": "tracepoints sched/*, task/task_newtask, syscalls/*execve*", "passed_over": [], "blind_spots": []},
        {"family": "files", "chosen": "syscall tracepoints, enter + exit", "passed_over": [], "blind_spots": []},
        {"family": "env", "chosen": "uprobes on libc getenv/secure_getenv + envp at execve", "passed_over": [], "blind_spots": []},
        {"family": "net", "chosen": "cgroup v2 sock_addr connect4/6 + sendmsg4/6 (also sees io_uring), with the syscall tracepoints", "passed_over": [], "blind_spots": []}
      ],
      "programs_attached": 53,
      "programs_failed": []
    }"#;

    #[test]
    fn a_clean_doctor_passes() {
        let mut row = Row {
            cmdline: "default".to_owned(),
            ..Row::default()
        };
        judge(
            &mut row,
            DOCTOR,
            "0",
            Some("lockdown,capability,landlock,yama,apparmor,bpf\n"),
        );
        assert!(row.ok(), "{:?}", row.problems);
        assert_eq!(row.kernel, "6.1.0-50-amd64");
        assert_eq!(
            row.chosen,
            [
                "tracepoints sched/*",
                "syscall tracepoints",
                "uprobes on libc",
                "cgroup v2 sock_addr"
            ]
        );
        assert_eq!(row.doctor_bpf_lsm, Some(true));
        let t = table(&[row]);
        assert!(t.contains("kernels ok 1 of 1"), "{t}");
        assert!(t.lines().nth(1).unwrap().ends_with("ok"), "{t}");
    }

    #[test]
    fn failures_are_named() {
        let failing = DOCTOR
            .replace(
                r#""programs_failed": []"#,
                r#""programs_failed": [{"program": "sys_exit_openat", "error": "load"}]"#,
            )
            .replace(
                r#""chosen": "syscall tracepoints, enter + exit""#,
                r#""chosen": "none""#,
            );
        let mut row = Row::default();
        // securityfs lists no bpf, but the doctor says BPF-LSM is usable: a lie.
        judge(
            &mut row,
            &failing,
            "1",
            Some("lockdown,capability,apparmor"),
        );
        assert!(!row.ok());
        let all = row.problems.join("; ");
        assert!(all.contains("files: no attach point"), "{all}");
        assert!(all.contains("1 programs failed"), "{all}");
        assert!(all.contains("doctor exited 1"), "{all}");
        assert!(
            all.contains("doctor says BPF-LSM active, securityfs says inactive"),
            "{all}"
        );
        assert!(table(&[row]).contains("kernels ok 0 of 1"));
    }

    #[test]
    fn watched_run_needs_both_probes() {
        let records = concat!(
            r#"{"type":"exec","pid":7}"#,
            "\n",
            r#"{"type":"probe","how":"present_at_exec","target":"HTTPS_PROXY"}"#,
            "\n",
            r#"{"type":"probe","how":"openat","target":"/etc/timezone"}"#,
            "\nnot json\n",
        );
        let mut row = Row::default();
        judge_watch(&mut row, records, "0");
        assert!(row.ok(), "{:?}", row.problems);
        assert_eq!(row.watch, "env+file");
        let mut row = Row::default();
        judge_watch(
            &mut row,
            r#"{"type":"probe","how":"openat","target":"/etc/timezone"}"#,
            "0",
        );
        assert_eq!(row.watch, "file only");
        assert!(!row.ok());
    }

    #[test]
    fn no_json_is_a_failure() {
        let mut row = Row::default();
        judge(&mut row, "error: cannot load", "125", None);
        assert!(row.problems[0].starts_with("doctor printed no JSON"));
    }
}
