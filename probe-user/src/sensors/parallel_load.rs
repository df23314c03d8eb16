//! Verifying the programs on several threads at once.
//!
//! Loading is dominated by the kernel's verifier, and the verifier runs privileged
//! loads of different programs in parallel (no global lock for CAP_BPF callers).
//! On the development machine the slowest programs (the two exec-environment scans
//! and `sys_exit_sendmsg`) take about 0.1 s each and the other ~50 a few ms, so
//! verifying them one after the other would make the start wait for the sum. Here every program of the table is loaded
//! by a pool of threads, the slowest first (longest job first), and attaching, which
//! is quick, stays in table order on the caller's thread.

use std::collections::HashMap;
use std::sync::Mutex;

use aya::{Ebpf, programs::Program};

/// Programs known to take the verifier far longer than the rest (measured: 60 to
/// 115 ms each on Linux 6.18, the others a few ms; `verified` debug lines). Started first so that the rest fill the
/// other threads meanwhile. A name missing from the object is ignored.
const SLOW_FIRST: [&str; 3] = [
    "sys_enter_execve_env",
    "sys_enter_execveat_env",
    "sys_exit_sendmsg",
];

/// Loads (verifies) every program named in `names` that is not loaded yet, on up to
/// `threads` threads. Returns the load error of each program that failed, by name;
/// programs of a type this function does not load are left for their attach code.
pub(super) fn load_all(
    ebpf: &mut Ebpf,
    names: &[String],
    threads: usize,
) -> HashMap<String, String> {
    let mut jobs: Vec<(&str, &mut Program)> = ebpf
        .programs_mut()
        .filter(|(name, program)| names.iter().any(|n| n == name) && program.fd().is_err())
        .collect();
    // Longest first: workers pop from the end, so the slow ones go last.
    jobs.sort_by_key(|(name, _)| SLOW_FIRST.contains(name));
    let queue = Mutex::new(jobs);
    let errors = Mutex::new(HashMap::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                // The guard is consumed inside `pop_job`: no lock is held while a
                // program is verified.
                while let Some((name, program)) = pop_job(&queue) {
                    if let Err(err) = load_one(name, program)
                        && let Ok(mut errors) = errors.lock()
                    {
                        errors.insert(name.to_owned(), err);
                    }
                }
            });
        }
    });
    errors.into_inner().unwrap_or_default()
}

/// The next program to load. A poisoned lock means another worker panicked: stop
/// taking work (the scope re-raises the panic).
fn pop_job<T>(queue: &Mutex<Vec<T>>) -> Option<T> {
    queue.lock().ok().and_then(|mut q| q.pop())
}

/// The load call of the program types the table uses.
fn load_one(name: &str, program: &mut Program) -> Result<(), String> {
    let started = std::time::Instant::now();
    let result = match program {
        Program::TracePoint(p) => p.load(),
        Program::UProbe(p) => p.load(),
        Program::CgroupSockAddr(p) => p.load(),
        Program::CgroupSock(p) => p.load(),
        Program::CgroupSkb(p) => p.load(),
        // Other types are loaded where they are attached.
        _ => return Ok(()),
    };
    tracing::debug!(
        program = name,
        ms = started.elapsed().as_millis(),
        ok = result.is_ok(),
        "verified"
    );
    result.map_err(|e| super::load_error::load_error(name, &e))
}

/// How many loader threads: one per CPU, and at least one per slow program plus one,
/// so that the quick ones are not queued behind the slow ones (the kernel shares the
/// CPUs between them), at most eight.
pub(super) fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(SLOW_FIRST.len() + 1, 8)
}
