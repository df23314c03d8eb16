//! Package lookups off the event loop. The script's directory is the watched user's:
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

use super::identity::{PackageInfo, package_of};

/// How long the loop waits for an idle worker's answer.
pub const WAIT: Duration = Duration::from_millis(20);
/// Requests queued behind a slow one before further ones are counted and skipped.
const QUEUE: usize = 64;

/// One lookup: which process (and which of its execs) asked for which script.
#[derive(Debug)]
struct Request {
    pid: u32,
    exec: u64,
    script: String,
    cwd: Option<String>,
}

/// An answer: the package, for (pid, exec).
#[derive(Debug)]
pub struct Answer {
    pub pid: u32,
    pub exec: u64,
    pub package: Option<PackageInfo>,
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
                    let package = package_of(&r.script, r.cwd.as_deref());
                    let answer = Answer {
                        pid: r.pid,
                        exec: r.exec,
                        package,
                    };
                    if answers.send(answer).is_err() {
                        break;
                    }
                }
            });
        if let Err(err) = &spawned {
            tracing::warn!("cannot start the package lookup thread: {err}; packages are not named");
        }
        Self {
            tx: spawned.ok().map(|_| tx),
            rx,
            in_flight: 0,
            timeouts: 0,
        }
    }

    /// Asks for the package of `script` (relative to `cwd`). Returns the answer when it
    /// came within the wait; otherwise it comes later, through `poll`.
    pub fn ask(
        &mut self,
        pid: u32,
        exec: u64,
        script: String,
        cwd: Option<String>,
    ) -> Option<Answer> {
        let tx = self.tx.as_ref()?;
        let request = Request {
            pid,
            exec,
            script,
            cwd,
        };
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
}
