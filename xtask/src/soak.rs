//! `cargo xtask soak --minutes N`: the release daemon under mixed load for N minutes
//! (watched bursts, unwatched noise, policy reloads, control clients and short
//! subscriptions), sampling its memory, file descriptors and loop latency (the time
//! `status` takes to answer). Not part of `cargo xtask test`: it runs for minutes
//! and its figures go in docs/benchmarks.md. Results: target/soak/results.md.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::cmd::say;
use crate::setup;
use crate::workspace::{root, target_dir};

const TAG: &str = "soak";
/// How often a sample row is taken.
const SAMPLE_EVERY: Duration = Duration::from_secs(30);
/// The watched program's name (selected by the policy) and the unwatched one's.
const WATCHED: &str = "soak-watched";
const NOISE: &str = "soak-noise";

struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    /// Status round trips in the window: median and worst, in ms.
    status_median_ms: f64,
    status_worst_ms: f64,
    received: u64,
    handled: u64,
    drops: u64,
}

pub fn run(minutes: u64) -> Result<i32> {
    if !setup::is_root()? {
        bail!(
            "the soak loads eBPF programs and needs root: run `sudo -E env PATH=$PATH cargo xtask soak`"
        );
    }
    let tools = setup::run(true)?;
    let dir = target_dir()?.join("soak");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policies"))?;
    let (probectl, workload) =
        crate::bench::build_release_and_workload(TAG, &tools, &dir, WATCHED)?;
    std::fs::copy(&workload, dir.join(NOISE))?;
    write_policy(&dir, 0)?;
    let socket = dir.join("probectl.sock");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "socket: {}\nstate_dir: {}\npolicy_dirs: [{}]\nstatus_every: 5s\nsinks:\n  - {{type: file, path: {}, format: ecs, rotate: {{max_bytes: 52428800, keep: 2}}}}\n",
            socket.display(),
            dir.display(),
            dir.join("policies").display(),
            dir.join("events.jsonl").display()
        ),
    )?;
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path)?;
    notify.set_nonblocking(true)?;
    let mut daemon = Command::new(&probectl)
        .args(["daemon", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.stderr"))?)
        .spawn()
        .context("start the daemon")?;
    let pid = daemon.id();
    wait_ready(&notify, &mut daemon)?;
    say(
        TAG,
        format_args!("daemon {pid} ready; {minutes} minute(s) of load"),
    );

    let started = Instant::now();
    let end = started + Duration::from_secs(minutes * 60);
    let mut samples = Vec::new();
    let mut latencies: Vec<f64> = Vec::new();
    let mut noise: Vec<Child> = Vec::new();
    let mut last_sample = Instant::now();
    let (mut tick, mut reloads, mut subscriptions) = (0u64, 0u64, 0u64);
    while Instant::now() < end {
        tick += 1;
        // Unwatched noise, always running: opens, getenvs and connects nobody watches.
        noise.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        if noise.len() < 2 {
            let mode = if tick % 2 == 0 {
                "open-policy"
            } else {
                "connect"
            };
            noise.push(spawn(&dir.join(NOISE), &[mode, "20000"])?);
        }
        // A watched burst every other second.
        if tick % 2 == 0 {
            let (mode, n) = match tick % 6 {
                0 => ("open-policy", "20000"),
                2 => ("connect", "2000"),
                _ => ("getenv", "200000"),
            };
            spawn(&workload, &[mode, n])?.wait()?;
        }
        // A reload every 10 s, alternating two policies.
        if tick % 10 == 0 {
            reloads += 1;
            write_policy(&dir, reloads)?;
            nix_kill(pid, libc::SIGHUP);
        }
        // A short subscription every 15 s.
        if tick % 15 == 0 {
            subscriptions += 1;
            let mut sleeper = Command::new("sleep").arg("3").spawn()?;
            let _ = Command::new(&probectl)
                .args(["watch", "--json", "--for", "1s"])
                .arg(sleeper.id().to_string())
                .env("PROBECTL_SOCKET", &socket)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = sleeper.kill();
            let _ = sleeper.wait();
        }
        let t = Instant::now();
        let status = request(&socket, r#"{"v":1,"op":"status"}"#)?;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        if last_sample.elapsed() >= SAMPLE_EVERY {
            samples.push(sample(pid, started, &status, &mut latencies)?);
            let s = samples.last().expect("just pushed");
            say(
                TAG,
                format_args!(
                    "{:>5.0} s: RSS {} KiB, {} fds, status median {:.1} ms worst {:.1} ms, {} events, {} drops",
                    s.at.as_secs_f64(),
                    s.rss_kib,
                    s.fds,
                    s.status_median_ms,
                    s.status_worst_ms,
                    s.received,
                    s.drops
                ),
            );
            last_sample = Instant::now();
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
        if let Ok(Some(status)) = daemon.try_wait() {
            bail!("the daemon exited during the soak: {status}");
        }
    }
    for mut c in noise {
        let _ = c.kill();
        let _ = c.wait();
    }
    nix_kill(pid, libc::SIGTERM);
    let status = daemon.wait()?;
    let table = render(&samples, minutes, reloads, subscriptions, status.success());
    println!("{table}");
    let out = dir.join("results.md");
    std::fs::write(&out, &table)?;
    say(TAG, format_args!("results written to {}", out.display()));
    Ok(if status.success() { 0 } else { 1 })
}

fn spawn(program: &Path, args: &[&str]) -> Result<Child> {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", program.display()))
}

fn nix_kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid we started and a valid signal number.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// The default policy, selecting the watched workload by name; every other call
/// changes a comment so each reload is a real one.
fn write_policy(dir: &Path, generation: u64) -> Result<()> {
    let default = std::fs::read_to_string(root().join("policies/default.yaml"))?;
    let text = default.replace(
        "categories:\n",
        &format!("select:\n  comms: [{WATCHED:?}]\n\n# generation {generation}\ncategories:\n"),
    );
    std::fs::write(dir.join("policies/soak.yaml"), text)?;
    Ok(())
}

fn wait_ready(notify: &UnixDatagram, daemon: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = notify.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n]).contains("READY=1")
        {
            return Ok(());
        }
        if let Some(status) = daemon.try_wait()? {
            bail!("the daemon exited before it was ready: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("the daemon was not ready within 60 s")
}

fn request(socket: &PathBuf, line: &str) -> Result<serde_json::Value> {
    let mut s = UnixStream::connect(socket).context("connect to the control socket")?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(line.as_bytes())?;
    s.write_all(b"\n")?;
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer)?;
    serde_json::from_str(&answer).context("the daemon's answer is not JSON")
}

fn sample(
    pid: u32,
    started: Instant,
    status: &serde_json::Value,
    latencies: &mut Vec<f64>,
) -> Result<Sample> {
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    latencies.sort_by(f64::total_cmp);
    let median = latencies.get(latencies.len() / 2).copied().unwrap_or(0.0);
    let worst = latencies.last().copied().unwrap_or(0.0);
    latencies.clear();
    let events = &status["status"]["events"];
    let drops = status["status"]["drops"]
        .as_array()
        .map(|d| d.iter().filter_map(|x| x["count"].as_u64()).sum())
        .unwrap_or(0);
    Ok(Sample {
        at: started.elapsed(),
        rss_kib,
        fds,
        status_median_ms: median,
        status_worst_ms: worst,
        received: events["received"].as_u64().unwrap_or(0),
        handled: events["handled"].as_u64().unwrap_or(0),
        drops,
    })
}

fn render(samples: &[Sample], minutes: u64, reloads: u64, subs: u64, clean_exit: bool) -> String {
    let mut t = format!(
        "# Soak: {minutes} minute(s), release daemon\n\nLoad: watched bursts every 2 s (open, connect, getenv), unwatched noise always, {reloads} reloads, {subs} short subscriptions, a status request every second. Clean exit on SIGTERM: {clean_exit}.\n\n| time (s) | RSS (MiB) | fds | status median (ms) | status worst (ms) | events received | handled | drops (all counters) |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for s in samples {
        t.push_str(&format!(
            "| {:.0} | {:.1} | {} | {:.1} | {:.1} | {} | {} | {} |\n",
            s.at.as_secs_f64(),
            s.rss_kib as f64 / 1024.0,
            s.fds,
            s.status_median_ms,
            s.status_worst_ms,
            s.received,
            s.handled,
            s.drops
        ));
    }
    t
}
