//! Package and executable lookups off the event loop: the package of an interpreted
//! CLI's script (`identity`), and how each exec'd program is linked and which runtime
//! it is (`exe_facts`). The script's directory is the watched user's:
//! even a regular-file-only, non-blocking read can stall there (a FUSE file system
//! that never answers), and a stalled lookup must cost the loop at most a short,
//! fixed wait, once.
//!
//! One worker thread answers requests in order. The loop waits up to `WAIT` for an
//! answer when the worker is idle (the usual case: microseconds), so a CLI's first
//! connection already names its package. When an answer does not come in time, the
//! lookup is counted (`identity_lookup_timeout`) and later requests are queued
//! without waiting until the worker catches up; late answers are applied when they
//! arrive (`poll`). The queue is bounded: a request that does not fit is counted
//! the same way.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use super::exe_facts::{self, ExeFacts};
use super::identity::{PackageInfo, package_of};

/// How long the loop waits for an idle worker's answer.
pub const WAIT: Duration = Duration::from_millis(20);
/// Requests queued behind a slow one before further ones are counted and skipped.
const QUEUE: usize = 64;

/// One lookup: which process (and which of its execs) asked, its executable's name,
/// and for an interpreter its script.
#[derive(Debug)]
pub struct Request {
    pub pid: u32,
    pub exec: u64,
    pub exe_name: String,
    /// The exec'd path (escaped), read when the process is gone.
    pub exe_path: String,
    pub script: Option<String>,
    pub cwd: Option<String>,
}

/// An answer: the package and the executable's facts, for (pid, exec).
#[derive(Debug)]
pub struct Answer {
    pub pid: u32,
    pub exec: u64,
    pub package: Option<PackageInfo>,
    pub facts: ExeFacts,
}

#[derive(Debug)]
pub struct Lookups {
    tx: Option<SyncSender<Request>>,
    rx: Receiver<Answer>,
    /// Requests sent and not yet answered.
    in_flight: usize,
    /// Lookups that did not finish in time, or did not fit the queue.
    pub timeouts: u64,
}

impl Default for Lookups {
    fn default() -> Self {
        Self::new()
    }
}

impl Lookups {
    pub fn new() -> Self {
        let (tx, requests) = sync_channel::<Request>(QUEUE);
        let (answers, rx) = sync_channel::<Answer>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("package lookups".into())
            .spawn(move || {
                for r in requests {
                    let package = r
                        .script
                        .as_deref()
                        .and_then(|script| package_of(script, r.cwd.as_deref()));
                    // The process's own executable while it lives; one that exec'd
                    // again meanwhile is caught by the exec count when applied.
                    let facts = exe_facts::of_process(r.pid, &r.exe_path, &r.exe_name);
                    let answer = Answer {
                        pid: r.pid,
                        exec: r.exec,
                        package,
                        facts,
                    };
                    if answers.send(answer).is_err() {
                        break;
                    }
                }
            });
        if let Err(err) = &spawned {
            tracing::warn!(
                "cannot start the package lookup thread: {err}; packages and linkage are not named"
            );
        }
        Self {
            tx: spawned.ok().map(|_| tx),
            rx,
            in_flight: 0,
            timeouts: 0,
        }
    }

    /// Asks for the facts of a process's executable and the package of its script
    /// (relative to `cwd`). Returns the answer when it came within the wait; otherwise
    /// it comes later, through `poll`.
    pub fn ask(&mut self, request: Request) -> Option<Answer> {
        let tx = self.tx.as_ref()?;
        match tx.try_send(request) {
            Ok(()) => self.in_flight += 1,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.timeouts += 1;
                return None;
            }
        }
        if self.in_flight > 1 {
            // The worker is behind (a stalled lookup): do not wait behind it.
            return None;
        }
        match self.rx.recv_timeout(WAIT) {
            Ok(answer) => {
                self.in_flight -= 1;
                Some(answer)
            }
            Err(RecvTimeoutError::Timeout) => {
                self.timeouts += 1;
                None
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.tx = None;
                None
            }
        }
    }

    /// Answers that came late, without waiting.
    pub fn poll(&mut self) -> Vec<Answer> {
        let mut out = Vec::new();
        while let Ok(answer) = self.rx.try_recv() {
            self.in_flight = self.in_flight.saturating_sub(1);
            out.push(answer);
        }
        out
    }

    /// Answers still owed, waiting up to `within` in all (before a report: a loaded
    /// machine can make the worker late, and the report should still name packages).
    pub fn wait(&mut self, within: Duration) -> Vec<Answer> {
        let deadline = std::time::Instant::now() + within;
        let mut out = self.poll();
        while self.in_flight > 0 && self.tx.is_some() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match self.rx.recv_timeout(left) {
                Ok(answer) => {
                    self.in_flight -= 1;
                    out.push(answer);
                }
                Err(_) => break,
            }
        }
        out
    }
}
