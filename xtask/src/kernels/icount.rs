//! `cargo xtask bench --only hooks`: what the hooks on the connect path cost a process
//! probectl does not watch, hook by hook and then probectl itself, measured where the
//! figures repeat. On the development machine the same workload's wall time drifts by
//! 20% from minute to minute (a shared host), far more than the 2% the block bench
//! asks about. Here the workload runs in a QEMU guest with `-icount shift=0`: the
//! guest's clocks advance one nanosecond per instruction executed, so a loop's CPU
//! time (`cpu_ns`) is its instruction count, the same from run to run to a few tenths
//! of a percent, whatever the host does. Instructions are not cycles (no cache or
//! branch effects), but hooks that add instructions add time.
//!
//! Each condition is measured right after its own "no monitor" runs, twice over
//! (two passes), and reported as a ratio to them and as instructions added per
//! operation. The hooks are first measured with empty programs (`xtask/bench/hooks.c`):
//! that is what the kernel's hook machinery costs before any program body, and no
//! design of probectl's programs can take it back.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::{debian, guest};
use crate::cmd::{self, say};

const TAG: &str = "bench-hooks";

/// The kernel the guest boots: Debian bookworm's 6.1 (also one of the CI kernels, so
/// usually cached already).
const SERIES: &str = "6.1";

/// Workload rows: (name, label, workload arguments, operations per run).
const ROWS: &[(&str, &str, &str, u32)] = &[
    (
        "refused",
        "TCP connect to 127.0.0.2:9, refused (socket+connect+close)",
        "read-refused",
        2000,
    ),
    (
        "connect",
        "TCP connect+accept+close (reset) on loopback",
        "read-connect",
        500,
    ),
];

/// What runs next to the workload.
enum Kind {
    /// Empty programs on these hooks (`hooks` arguments).
    Hooks(&'static [&'static str]),
    /// `probectl run --enforce` with this policy, watching a sleep.
    Probectl(Policy),
}

#[derive(Clone, Copy)]
enum Policy {
    NoRule,
    ConnectRule,
    Rule,
}

impl Policy {
    fn file(self) -> &'static str {
        match self {
            Policy::NoRule => "no-rule.yaml",
            Policy::ConnectRule => "connect-rule.yaml",
            Policy::Rule => "rule.yaml",
        }
    }

    /// The block bench's policy (`bench_block::POLICY`), without its rule or with the
    /// rule on connects only.
    fn text(self) -> String {
        let full = crate::bench_block::POLICY;
        match self {
            Policy::NoRule => full.split("rules:").next().unwrap_or(full).to_owned(),
            Policy::ConnectRule => full.replace("then: [connect, udp_send]", "then: [connect]"),
            Policy::Rule => full.to_owned(),
        }
    }
}

struct Condition {
    name: &'static str,
    label: &'static str,
    kind: Kind,
}

const SYNC: &str = "tp:syscalls/sys_enter_sync";
const ENTER_CONNECT: &str = "tp:syscalls/sys_enter_connect";
const EXIT_CONNECT: &str = "tp:syscalls/sys_exit_connect";
const TCP_STATE: &str = "raw:inet_sock_set_state";

const CONDITIONS: &[Condition] = &[
    Condition {
        name: "floor",
        label: "empty program on sys_enter_sync (a syscall the loop never makes: the slow syscall path alone)",
        kind: Kind::Hooks(&[SYNC]),
    },
    Condition {
        name: "exit-tp",
        label: "+ empty sys_exit_connect (every syscall exit now calls the perf hook too)",
        kind: Kind::Hooks(&[SYNC, EXIT_CONNECT]),
    },
    Condition {
        name: "connect-tps",
        label: "+ empty sys_enter_connect",
        kind: Kind::Hooks(&[SYNC, ENTER_CONNECT, EXIT_CONNECT]),
    },
    Condition {
        name: "no-rule-hooks",
        label: "+ empty inet_sock_set_state (raw) and cgroup connect4: probectl's connect-path hooks without block rules",
        kind: Kind::Hooks(&[SYNC, ENTER_CONNECT, EXIT_CONNECT, TCP_STATE, "cg:connect4"]),
    },
    Condition {
        name: "rule-hooks",
        label: "+ empty cgroup egress and sock_create: the hooks a block rule on udp_send adds",
        kind: Kind::Hooks(&[
            SYNC,
            ENTER_CONNECT,
            EXIT_CONNECT,
            TCP_STATE,
            "cg:connect4",
            "cg:egress",
            "cg:sockcreate",
        ]),
    },
    Condition {
        name: "probectl-no-rule",
        label: "probectl, the block bench's categories, no block rule (not watched)",
        kind: Kind::Probectl(Policy::NoRule),
    },
    Condition {
        name: "probectl-connect-rule",
        label: "probectl enforcing a block rule on connect (not watched)",
        kind: Kind::Probectl(Policy::ConnectRule),
    },
    Condition {
        name: "probectl-rule",
        label: "probectl enforcing the block bench's rule, connect and udp_send (not watched)",
        kind: Kind::Probectl(Policy::Rule),
    },
];

/// Passes over every condition.
const PASSES: usize = 2;
/// Runs of each row per condition (and per baseline); their median is taken.
const RUNS: usize = 3;
/// Printed by the guest before each result line.
const MARK: &str = "@@bench";

/// Builds the guest, boots it, and returns the table.
pub fn run(probectl: &Path, dir: &Path) -> Result<String> {
    crate::setup::kernel_tools()?;
    guest::check_qemu()?;
    let cache = crate::workspace::target_dir()?.join("kernels");
    std::fs::create_dir_all(&cache)?;
    let mirror = debian::system_mirror()?;
    let suite = debian::SUITES
        .into_iter()
        .find(|s| s.series == SERIES)
        .context("no Debian suite for the bench kernel")?;
    let kernel = debian::fetch(&cache, suite, &mirror, false)?;

    let work = dir.join("icount");
    std::fs::create_dir_all(&work)?;
    let common = work.join("common.cpio.gz");
    guest::build_initramfs(probectl, &work, &common)?;
    let initramfs = work.join("initramfs.cpio.gz");
    build_bench_archive(&work, &common, &initramfs)?;

    let log = work.join("console.log");
    say(
        TAG,
        format_args!(
            "booting {} with -icount ({} conditions x {PASSES} passes; about 5 minutes)",
            kernel.release(),
            CONDITIONS.len()
        ),
    );
    let console = boot(&kernel.vmlinuz, &initramfs, &log)?;
    if !console.contains("@@bench-done") {
        bail!(
            "the guest did not finish the bench (console in {}): {}",
            log.display(),
            console
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    Ok(table(&console, kernel.release()))
}

/// The common initramfs followed by a second archive (the kernel unpacks both, the
/// later one's files winning): the bench's /init, the workload, `hooks`, policies.
fn build_bench_archive(work: &Path, common: &Path, out: &Path) -> Result<()> {
    let root = work.join("bench-root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::create_dir_all(root.join("bench"))?;
    for name in ["workload", "hooks"] {
        cmd::run_ok(
            TAG,
            Command::new("cc")
                .args(["-O2", "-Wall", "-o"])
                .arg(root.join("bin").join(name))
                .arg(cmd::root().join(format!("xtask/bench/{name}.c"))),
        )?;
    }
    for policy in [Policy::NoRule, Policy::ConnectRule, Policy::Rule] {
        std::fs::write(root.join("bench").join(policy.file()), policy.text())?;
    }
    let init = root.join("init");
    std::fs::write(&init, init_script())?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    guest::append_archive(common, &root, out)
}

/// The guest's /init: every condition after its own baseline, `PASSES` times.
fn init_script() -> String {
    let mut s = String::from(guest::INIT_PRELUDE);
    s.push_str(
        &r#"measure() {
  i=0
  while [ $i -lt RUNS ]; do
"#
        .replace("RUNS", &RUNS.to_string()),
    );
    for (name, _, mode, n) in ROWS {
        let _ = writeln!(
            s,
            "    echo \"{MARK} $1 {name} $(workload {mode} {n} | sed -n 's/^cpu_ns=//p')\""
        );
    }
    s.push_str(
        r#"    i=$((i+1))
  done
}
# waits until file $2 holds $1, or process $3 is gone (then fails)
wait_for() {
  while ! grep -q "$1" "$2"; do
    kill -0 $3 2>/dev/null || return 1
    sleep 0.1
  done
}
with_hooks() {
  name=$1; shift
  measure none
  : >/tmp/hooks.out
  hooks "$@" >/tmp/hooks.out 2>&1 & hp=$!
  if wait_for Attaching /tmp/hooks.out $hp; then measure $name; else echo "@@bench-error $name: $(cat /tmp/hooks.out)"; fi
  kill $hp 2>/dev/null; wait $hp 2>/dev/null
}
with_probectl() {
  name=$1
  measure none
  : >/tmp/probectl.err
  probectl run --enforce --policy /bench/$2 --output /dev/null -- sleep 100000 2>/tmp/probectl.err & pp=$!
  if wait_for "watching pid" /tmp/probectl.err $pp; then measure $name; else echo "@@bench-error $name: $(head -c 2000 /tmp/probectl.err)"; fi
  kill $pp 2>/dev/null; wait $pp 2>/dev/null
  # probectl's detaches finish in a grandchild after its exit: wait for it.
  while pidof probectl >/dev/null; do sleep 0.5; done
}
measure warmup
"#,
    );
    for _ in 0..PASSES {
        for c in CONDITIONS {
            match &c.kind {
                Kind::Hooks(hooks) => {
                    let _ = writeln!(s, "with_hooks {} {}", c.name, hooks.join(" "));
                }
                Kind::Probectl(policy) => {
                    let _ = writeln!(s, "with_probectl {} {}", c.name, policy.file());
                }
            }
        }
    }
    s.push_str("echo \"@@bench-done\"\npoweroff -f\n");
    s
}

/// Boots single-threaded TCG with instruction counting (`-icount` needs it), one vCPU
/// like the measured CPU, and returns the console.
fn boot(vmlinuz: &Path, initramfs: &Path, log: &Path) -> Result<String> {
    const TIMEOUT: Duration = Duration::from_secs(1800);
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-icount", "shift=0,sleep=off"])
        .args(["-cpu", "max", "-m", "1G", "-smp", "1"])
        .args(["-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=1"])
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    say(TAG, format_args!("$ {}", cmd::display(&qemu)));
    let start = Instant::now();
    let mut child = qemu.spawn().context("could not start qemu-system-x86_64")?;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the guest ran over {} s", TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    say(
        TAG,
        format_args!("guest done in {:.0} s", start.elapsed().as_secs_f64()),
    );
    Ok(String::from_utf8_lossy(&std::fs::read(log)?).into_owned())
}

/// One group of consecutive runs of a condition.
#[derive(Debug, Default, PartialEq)]
struct Group {
    name: String,
    /// Per row (index into `ROWS`): the runs' CPU ns.
    runs: Vec<Vec<f64>>,
}

/// The result lines, grouped by consecutive condition.
fn parse(console: &str) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for line in console.lines() {
        let Some(rest) = line.split(MARK).nth(1) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (Some(name), Some(row), Some(value)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (Some(row), Ok(value)) = (
            ROWS.iter().position(|(r, ..)| *r == row),
            value.parse::<f64>(),
        ) else {
            continue;
        };
        if groups.last().is_none_or(|g| g.name != name) {
            groups.push(Group {
                name: name.to_owned(),
                runs: vec![Vec::new(); ROWS.len()],
            });
        }
        if let Some(g) = groups.last_mut() {
            g.runs[row].push(value);
        }
    }
    groups
}

/// Per condition and pass: (ratio to the baseline just before, instructions added per
/// operation), per row.
type Pass = Vec<(f64, f64)>;
/// Each condition with its passes.
type Compared = Vec<(&'static Condition, Vec<Pass>)>;

/// The passes of each condition, and every baseline's instructions per operation (per
/// row).
fn compare(groups: &[Group]) -> (Compared, Vec<Vec<f64>>) {
    let mut out: Compared = CONDITIONS.iter().map(|c| (c, Vec::new())).collect();
    let mut baselines = vec![Vec::new(); ROWS.len()];
    for pair in groups.windows(2) {
        let (base, cond) = (&pair[0], &pair[1]);
        if base.name != "none" {
            continue;
        }
        let Some(slot) = out.iter_mut().find(|(c, _)| c.name == cond.name) else {
            continue;
        };
        let mut pass = Vec::new();
        for (row, (_, _, _, n)) in ROWS.iter().enumerate() {
            let (Some(b), Some(m)) = (
                crate::bench::median(Some(&base.runs[row])),
                crate::bench::median(Some(&cond.runs[row])),
            ) else {
                pass.push((f64::NAN, f64::NAN));
                continue;
            };
            baselines[row].push(b / f64::from(*n));
            pass.push((m / b, (m - b) / f64::from(*n)));
        }
        slot.1.push(pass);
    }
    (out, baselines)
}

fn table(console: &str, release: &str) -> String {
    let groups = parse(console);
    let (rows, baselines) = compare(&groups);
    let mut s = format!(
        "\nHook costs for a process probectl does not watch, in instructions (QEMU -icount, \
         Debian {release}, one vCPU; each condition right after its own no-monitor runs, \
         {PASSES} passes, median of {RUNS} runs each):\n\n"
    );
    let _ = write!(s, "| condition |");
    for (_, label, _, _) in ROWS {
        let _ = write!(s, " {label}: ratio to no monitor | added per operation |");
    }
    let _ = writeln!(s, "\n|---|{}", "---|---|".repeat(ROWS.len()));
    let _ = write!(s, "| no monitor |");
    for per_op in &baselines {
        let mean = per_op.iter().sum::<f64>() / per_op.len().max(1) as f64;
        let _ = write!(s, " 1.000 | ({mean:.0} instructions per operation) |");
    }
    s.push('\n');
    for (cond, passes) in rows {
        let _ = write!(s, "| {} |", cond.label);
        for row in 0..ROWS.len() {
            if passes.is_empty() {
                s.push_str(" not measured | |");
                continue;
            }
            let ratios: Vec<String> = passes.iter().map(|p| format!("{:.3}", p[row].0)).collect();
            let added: Vec<String> = passes.iter().map(|p| format!("{:.0}", p[row].1)).collect();
            let _ = write!(s, " {} | {} |", ratios.join(", "), added.join(", "));
        }
        s.push('\n');
    }
    for line in console.lines().filter(|l| l.contains("@@bench-error")) {
        let _ = writeln!(s, "\n{}", line.trim_start_matches("@@bench-error "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_each_condition_with_the_baseline_just_before() {
        let console = "\
noise @@bench warmup refused 50
@@bench none refused 100
@@bench none connect 200
@@bench none refused 102
@@bench none connect 198
@@bench none refused 99
@@bench none connect 201
@@bench floor refused 110
@@bench floor connect 210
@@bench floor refused 111
@@bench floor connect 212
@@bench floor refused 109
@@bench floor connect 211
@@bench none refused 100
@@bench none connect 200
@@bench probectl-no-rule refused 150
@@bench probectl-no-rule connect 300
@@bench-error floor: nothing
";
        let groups = parse(console);
        assert_eq!(
            groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
            ["warmup", "none", "floor", "none", "probectl-no-rule"]
        );
        let (rows, _) = compare(&groups);
        let floor = &rows.iter().find(|(c, _)| c.name == "floor").unwrap().1;
        assert_eq!(floor.len(), 1);
        // median 110 over median 100
        assert!((floor[0][0].0 - 1.1).abs() < 1e-9);
        // (110 - 100) / 2000 operations
        assert!((floor[0][0].1 - 10.0 / 2000.0).abs() < 1e-9);
        let probectl = &rows
            .iter()
            .find(|(c, _)| c.name == "probectl-no-rule")
            .unwrap()
            .1;
        assert!((probectl[0][1].0 - 1.5).abs() < 1e-9);
        let table = table(console, "6.1.0-test");
        assert!(
            table.contains(
                "| probectl, the block bench's categories, no block rule (not watched) | 1.500"
            ),
            "{table}"
        );
        assert!(table.contains("not measured"), "{table}");
        assert!(table.contains("\nfloor: nothing"), "{table}");
    }

    #[test]
    fn init_runs_every_condition_after_a_baseline() {
        let init = init_script();
        for c in CONDITIONS {
            assert_eq!(
                init.matches(&format!(" {} ", c.name)).count(),
                PASSES,
                "{}",
                c.name
            );
        }
        assert!(init.contains("workload read-refused 2000"));
        assert!(init.ends_with("poweroff -f\n"));
    }
}
