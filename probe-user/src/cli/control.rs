//! Clients of the daemon's control socket: `probectl status`, `probectl policy
//! reload` and `probectl policy list`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;

use anyhow::Context as _;
use probe_user::daemon::protocol::{self, Request};
use probe_user::daemon::trust::Trusted;
use probe_user::escape::escape_bytes;

use super::exit;

/// Connects to the daemon, or explains why not (and what to do). The socket must
/// be root's (or `PROBECTL_SOCKET_OWNER`'s), both the file and the process behind
/// it, before anything is sent on it.
pub(super) fn connect() -> anyhow::Result<UnixStream> {
    let path = probe_user::daemon::socket_path();
    let trusted = Trusted::from_env()?;
    trusted.connect(&path).map_err(|e| {
        let hint = match e.io_kind() {
            Some(std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
                "the daemon is not running (systemctl start probectl, or probectl daemon)"
            }
            Some(std::io::ErrorKind::PermissionDenied) => {
                "only root and members of group probectl may use the socket"
            }
            Some(_) => "check that the daemon runs and PROBECTL_SOCKET, if set",
            None => {
                "nothing was sent to it; check PROBECTL_SOCKET, if set, and who created that path"
            }
        };
        anyhow::anyhow!("{e}\n  hint: {hint}")
    })
}

/// Sends one request and reads one response line.
pub(super) fn request(request: &Request) -> anyhow::Result<serde_json::Value> {
    let mut stream = connect()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .ok();
    // A write the daemon cut short (it refused the caller at once) still leaves its
    // answer to read.
    let sent = stream.write_all(protocol::request_line(request).as_bytes());
    let mut line = String::new();
    let read = BufReader::new(&stream).read_line(&mut line);
    match (sent, read) {
        (_, Ok(n)) if n > 0 => {}
        (Err(e), _) => return Err(e).context("cannot send the request"),
        (Ok(()), Err(e)) => return Err(e).context("no answer from the daemon"),
        (Ok(()), Ok(_)) => anyhow::bail!("the daemon closed the connection without an answer"),
    }
    let value: serde_json::Value =
        serde_json::from_str(&line).context("the daemon's answer is not JSON")?;
    if value["ok"] != serde_json::Value::Bool(true) {
        anyhow::bail!(
            "{}",
            value["error"]
                .as_str()
                .unwrap_or("the daemon refused the request")
        );
    }
    Ok(value)
}

pub(super) fn status(json: bool) -> anyhow::Result<i32> {
    let value = request(&Request::Status {})?;
    let status = &value["status"];
    if json {
        println!("{status}");
        return Ok(0);
    }
    print!("{}", render_status(status));
    Ok(0)
}

pub(super) fn reload() -> anyhow::Result<i32> {
    match request(&Request::Reload {}) {
        Ok(v) => {
            println!("policy reloaded: {}", v["policy"].as_str().unwrap_or("?"));
            Ok(0)
        }
        Err(err) => {
            eprintln!("probectl: {err}");
            Ok(exit::INVALID_POLICY)
        }
    }
}

pub(super) fn list() -> anyhow::Result<i32> {
    let value = request(&Request::PolicyList {})?;
    let p = &value["policies"];
    println!(
        "policy in force: {} (version {}, loaded {})",
        p["name"].as_str().unwrap_or("?"),
        p["version"].as_str().unwrap_or("?"),
        p["loaded_at"].as_str().unwrap_or("?")
    );
    for f in p["files"].as_array().into_iter().flatten() {
        println!(
            "  {}  {}: {} categories, {} rules",
            f["path"].as_str().unwrap_or("?"),
            f["name"].as_str().unwrap_or("?"),
            f["categories"],
            f["rules"]
        );
    }
    Ok(0)
}

/// The status as a few readable sections.
fn render_status(s: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "probectl daemon {} (pid {}), up {} s",
        s["version"].as_str().unwrap_or("?"),
        s["pid"],
        s["uptime_s"]
    );
    let _ = writeln!(out, "\nSensors:");
    for c in s["sensors"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<8} {}",
            c["family"].as_str().unwrap_or("?"),
            c["chosen"].as_str().unwrap_or("none")
        );
        for p in c["passed_over"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "           passed over {}: {}",
                p["attach_point"].as_str().unwrap_or("?"),
                p["reason"].as_str().unwrap_or("?")
            );
        }
    }
    for u in s["unattached"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  NOT ATTACHED: {} ({}): {}",
            u["program"].as_str().unwrap_or("?"),
            u["attach_point"].as_str().unwrap_or("?"),
            u["error"].as_str().unwrap_or("?")
        );
    }
    let enforcement = &s["enforcement"];
    let rules: Vec<&str> = enforcement["block_rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str())
        .collect();
    let _ = writeln!(
        out,
        "\nEnforcement: {}",
        match (
            enforcement["enforcing"].as_bool() == Some(true),
            rules.is_empty()
        ) {
            (_, true) => "no block rule in the policy".to_owned(),
            (true, false) => format!(
                "ON: calls matching {} are refused (EPERM); if this daemon stops or dies, blocking stops with it (fails open)",
                rules.join(", ")
            ),
            (false, false) => format!(
                "off (observe): calls matching {} go through and are recorded as would_block; `enforce: true` in the config refuses them",
                rules.join(", ")
            ),
        }
    );
    if let Some(gap) = enforcement["not_judged"].as_str() {
        let _ = writeln!(out, "  {gap}");
    }
    // Host names in block rules: whose DNS answers count, and those that did not.
    if let Some(dns) = enforcement.get("dns") {
        let list = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(|t| escape_bytes(t.as_bytes())))
                .collect()
        };
        let trusted = list(&dns["trusted"]);
        let _ = writeln!(
            out,
            "  host names learned from the DNS answers of: {} ({})",
            if trusted.is_empty() {
                "none".to_owned()
            } else {
                trusted.join(", ")
            },
            dns["trusted_from"].as_str().unwrap_or("?")
        );
        for u in dns["untrusted"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  {} DNS answers from {} not trusted for block rules (not learned)",
                u["answers"].as_u64().unwrap_or(0),
                escape_bytes(u["server"].as_str().unwrap_or("?").as_bytes())
            );
        }
    }
    let e = &s["events"];
    let _ = writeln!(
        out,
        "\nEvents: {} received, {} handled, {:.1}/s",
        e["received"],
        e["handled"],
        e["per_second"].as_f64().unwrap_or(0.0)
    );
    for k in e["by_kind"].as_array().into_iter().flatten() {
        let dropped = k["dropped_ring_full"].as_u64().unwrap_or(0);
        let _ = writeln!(
            out,
            "  {:<16} {:>10} received  {:>8.1}/s{}",
            k["kind"].as_str().unwrap_or("?"),
            k["received"],
            k["per_second"].as_f64().unwrap_or(0.0),
            if dropped > 0 {
                format!("  {dropped} DROPPED (ring full)")
            } else {
                String::new()
            }
        );
    }
    let drops: Vec<String> = s["drops"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["count"].as_u64().unwrap_or(0) > 0)
        .map(|d| format!("{} {}", d["reason"].as_str().unwrap_or("?"), d["count"]))
        .collect();
    let _ = writeln!(
        out,
        "Drops: {}",
        if drops.is_empty() {
            "none".to_owned()
        } else {
            drops.join(", ")
        }
    );
    let p = &s["policy"];
    let _ = writeln!(
        out,
        "\nPolicy: {} (version {}, loaded {})",
        p["name"].as_str().unwrap_or("?"),
        p["version"].as_str().unwrap_or("?"),
        p["loaded_at"].as_str().unwrap_or("?")
    );
    for f in p["files"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  {}", f["path"].as_str().unwrap_or("?"));
    }
    let t = &s["trees"];
    let tl = &t["timeline"];
    let _ = writeln!(
        out,
        "\nWatched: {} live processes ({} known), {} trees with probes; {} of {} distinct probes kept; trees let go: {} after exit (grace {} s), {} for room",
        t["watched_processes"],
        t["known_processes"],
        tl["trees"],
        tl["distinct_probes"],
        tl["max_distinct_probes"],
        tl["trees_evicted_after_exit"],
        t["tree_grace_s"],
        tl["trees_evicted_for_room"]
    );
    let _ = writeln!(
        out,
        "Memory: {} MiB resident",
        s["memory"]["rss_bytes"].as_u64().unwrap_or(0) / (1024 * 1024)
    );
    let _ = writeln!(out, "\nSinks:");
    for k in s["sinks"].as_array().into_iter().flatten() {
        let n = |key: &str| k[key].as_u64().unwrap_or(0);
        let mut problems = Vec::new();
        if n("errors") > 0 {
            problems.push(format!("{} WRITE ERRORS", n("errors")));
        }
        if n("queue_full") > 0 {
            problems.push(format!("{} LOST (queue full)", n("queue_full")));
        }
        if n("too_large") > 0 {
            problems.push(format!("{} NOT SENT (too large)", n("too_large")));
        }
        let _ = writeln!(
            out,
            "  {}: {} records written, {} queued{}{}",
            k["name"].as_str().unwrap_or("?"),
            n("written"),
            n("queued"),
            if n("not_encodable") > 0 {
                format!(", {} with no form in this format", n("not_encodable"))
            } else {
                String::new()
            },
            if problems.is_empty() {
                ", healthy".to_owned()
            } else {
                format!(", {}", problems.join(", "))
            }
        );
    }
    let state_errors = s["sequence"]["state_errors"].as_u64().unwrap_or(0);
    if state_errors > 0 {
        let _ = writeln!(
            out,
            "Sequence: {state_errors} STATE ERRORS (the reservation could not be saved; the next start still continues past every number used)"
        );
    }
    let _ = writeln!(out, "Subscribers: {}", s["subscribers"]);
    let k = &s["socket"];
    let n = |key: &str| k[key].as_u64().unwrap_or(0);
    let _ = writeln!(
        out,
        "Control socket: {} connections open ({} root's); {} admitted, {} refused (no access), {} refused (too many), {} idle ones shed, {} accept errors, {} bad requests, {} timed out",
        k["open"]["root"].as_u64().unwrap_or(0) + k["open"]["others"].as_u64().unwrap_or(0),
        k["open"]["root"].as_u64().unwrap_or(0),
        n("connections"),
        n("refused"),
        n("refused_busy"),
        n("shed_idle"),
        n("accept_errors"),
        n("bad_requests"),
        n("timed_out")
    );
    out
}
