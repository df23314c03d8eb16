//! Sinks: each has its own bounded queue and its own thread, so a slow sink (a full
//! disk, a syslog server that is down) never blocks the others or the event loop.
//! The loop hands each sink the same envelope (`Arc`) with `try_send`; a full queue
//! is counted per sink (`queue_full`), never waited on.

mod file;
mod journald;
mod spool;
mod syslog;
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use file::{RotateConfig, RotatingFile};
pub use syslog::{Syslog, SyslogConfig, Transport};

use super::Envelope;
use super::host::HostInfo;
use crate::output::{Format, Printer};

/// One entry of the config's `sinks:`; each sink type owns its settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    /// Lines on stderr, which systemd puts in the journal: readable (`human`, the
    /// default) or a machine format.
    Stderr {
        #[serde(default)]
        format: Format,
    },
    /// One record per line on stdout.
    Stdout {
        #[serde(default = "Format::machine_default")]
        format: Format,
    },
    /// One JSON object per line, appended to a file: probectl's records (`json`),
    /// ECS or OCSF.
    Jsonl {
        path: PathBuf,
        #[serde(default = "Format::machine_default")]
        format: Format,
    },
    /// A file like `jsonl`, rotated by size and/or age, keeping `keep` old ones.
    File {
        path: PathBuf,
        #[serde(default = "Format::machine_default")]
        format: Format,
        rotate: RotateConfig,
    },
    /// RFC 5424 syslog over UDP, TCP or TLS; the record (ECS unless `format` says
    /// otherwise) is the message.
    Syslog(SyslogConfig),
    /// journald's native protocol: the readable line as MESSAGE, structured
    /// `PROBECTL_*` fields, the record as JSON in `PROBECTL_RECORD`.
    Journald {
        /// The journal's socket (`/run/systemd/journal/socket` unless set).
        #[serde(default)]
        socket: Option<PathBuf>,
    },
}

impl SinkConfig {
    /// What serde cannot check: the formats a sink writes, and each sink's own rules.
    pub fn check(&self) -> Result<(), String> {
        match self {
            SinkConfig::Jsonl { format, .. } | SinkConfig::File { format, .. }
                if *format == Format::Human =>
            {
                Err("a jsonl or file sink writes json, ecs or ocsf, not human".into())
            }
            SinkConfig::File { rotate, .. } => rotate.check(),
            SinkConfig::Syslog(s) => s.check(),
            _ => Ok(()),
        }
    }
}

/// Records queued per sink before further ones are counted as `queue_full`.
pub const SINK_QUEUE: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {name}: {message}")]
    Open { name: String, message: String },
}

/// Counters of one sink, shared with its thread.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub written: AtomicU64,
    pub errors: AtomicU64,
    pub queue_full: AtomicU64,
    pub not_encodable: AtomicU64,
    pub too_large: AtomicU64,
    pub spooled: AtomicU64,
    pub spool_full: AtomicU64,
    /// Records the worker has taken off the queue.
    pub handled: AtomicU64,
}

#[derive(Debug, Serialize)]
pub struct SinkStatus {
    pub name: String,
    pub written: u64,
    pub errors: u64,
    pub queue_full: u64,
    /// Records the format has no form for (OCSF: execs, exits, env probes...).
    pub not_encodable: u64,
    /// Records longer than the sink may send (syslog `max_message_bytes`).
    pub too_large: u64,
    pub queued: u64,
    /// Waiting in the on-disk spool.
    pub spooled: u64,
    /// Dropped because the spool was full.
    pub spool_full: u64,
}

/// What became of one record.
pub(crate) enum Delivery {
    Sent,
    /// In the spool, to be sent later (counted as written then).
    Spooled,
    /// The spool was full (counted by the writer's `backlog`).
    Dropped,
    /// Longer than the destination accepts whole: not sent, counted.
    TooLarge,
}

/// Where one sink's worker writes.
pub(crate) trait Writer: Send {
    /// Writes one encoded record (a complete line or message, no trailing newline).
    /// `stopping` is set at shutdown: a writer that retries gives up then.
    fn write_record(
        &mut self,
        envelope: &Envelope,
        text: &str,
        stopping: &AtomicBool,
    ) -> std::io::Result<Delivery>;
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    /// Called between records and at least every `IDLE_TURN`: sends what waits in a
    /// spool; returns how many went.
    fn idle(&mut self, _stopping: &AtomicBool) -> u64 {
        0
    }
    /// (records waiting in a spool, records the spool had no room for).
    fn backlog(&self) -> (u64, u64) {
        (0, 0)
    }
}

/// How long a worker waits for a record before its idle turn.
const IDLE_TURN: std::time::Duration = std::time::Duration::from_millis(100);

pub struct Sink {
    pub name: String,
    format: Option<Format>,
    tx: Option<SyncSender<Arc<Envelope>>>,
    stats: Arc<SinkStats>,
    stopping: Arc<AtomicBool>,
    sent: u64,
    worker: Option<JoinHandle<()>>,
}

impl Sink {
    /// Opens the sink's destination (failing early on a bad path or address) and
    /// starts its thread.
    /// `state_dir`: where a spooling sink keeps its spool (`spool/<sink name>`).
    pub fn open(
        config: &SinkConfig,
        host: Arc<HostInfo>,
        state_dir: &std::path::Path,
    ) -> Result<Self, SinkError> {
        // `format`: the encoding the worker applies before `write_record`; `None` for
        // writers that render records themselves (readable lines, journald).
        let (name, format, mut writer): (String, Option<Format>, Box<dyn Writer>) = match config {
            SinkConfig::Stderr { format } | SinkConfig::Stdout { format } => {
                let stderr = matches!(config, SinkConfig::Stderr { .. });
                let stream: Box<dyn std::io::Write + Send> = if stderr {
                    Box::new(std::io::stderr())
                } else {
                    Box::new(std::io::stdout())
                };
                let name = match (stderr, format) {
                    (true, Format::Human) => "stderr".to_owned(),
                    (true, f) => format!("stderr:{}", f.name()),
                    (false, f) => format!("stdout:{}", f.name()),
                };
                match format {
                    Format::Human => (
                        name,
                        None,
                        Box::new(Readable(Printer::new(Format::Human, stream))),
                    ),
                    f => (name, Some(*f), Box::new(Lines(stream))),
                }
            }
            SinkConfig::Jsonl { path, format } => {
                let name = format!("file:{}:{}", format.name(), path.display());
                let file = RotatingFile::open(path, None).map_err(|e| open_error(&name, e))?;
                (name, Some(*format), Box::new(file))
            }
            SinkConfig::File {
                path,
                format,
                rotate,
            } => {
                let name = format!("file:{}:{}", format.name(), path.display());
                let file = RotatingFile::open(path, Some(rotate.clone()))
                    .map_err(|e| open_error(&name, e))?;
                (name, Some(*format), Box::new(file))
            }
            SinkConfig::Journald { socket } => {
                let path = socket
                    .clone()
                    .unwrap_or_else(|| journald::JOURNAL_SOCKET.into());
                let name = format!("journald:{}", path.display());
                let sink = journald::Journald::new(path).map_err(|e| open_error(&name, e))?;
                (name, None, Box::new(sink))
            }
            SinkConfig::Syslog(s) => {
                let name = format!(
                    "syslog:{}:{}:{}",
                    s.transport.name(),
                    s.format.name(),
                    s.address
                );
                let spool_dir = state_dir
                    .join("spool")
                    .join(name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "_"));
                let sink = Syslog::new(s.clone(), host.name.clone(), &spool_dir)
                    .map_err(|e| open_error(&name, e))?;
                (name, Some(s.format), Box::new(sink))
            }
        };
        let stats = Arc::new(SinkStats::default());
        // What an earlier run left in the spool shows in `status` at once.
        stats.spooled.store(writer.backlog().0, Relaxed);
        let stopping = Arc::new(AtomicBool::new(false));
        let (tx, rx) = sync_channel::<Arc<Envelope>>(SINK_QUEUE);
        let worker = {
            let (stats, host, stop) = (stats.clone(), host.clone(), stopping.clone());
            let thread_name = name.clone();
            std::thread::Builder::new()
                .name(format!("sink {}", short(&name)))
                .spawn(move || {
                    loop {
                        let envelope = match rx.recv_timeout(IDLE_TURN) {
                            Ok(envelope) => Some(envelope),
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                        };
                        if let Some(envelope) = envelope {
                            let text = match format {
                                None => Some(String::new()),
                                Some(f) => {
                                    super::encode(f, &envelope, &host).map(|v| v.to_string())
                                }
                            };
                            match text.map(|t| writer.write_record(&envelope, &t, &stop)) {
                                None => {
                                    stats.handled.fetch_add(1, Relaxed);
                                    stats.not_encodable.fetch_add(1, Relaxed);
                                }
                                Some(Ok(Delivery::Sent)) => {
                                    stats.handled.fetch_add(1, Relaxed);
                                    stats.written.fetch_add(1, Relaxed);
                                }
                                Some(Ok(Delivery::TooLarge)) => {
                                    stats.handled.fetch_add(1, Relaxed);
                                    stats.too_large.fetch_add(1, Relaxed);
                                }
                                Some(Ok(Delivery::Spooled | Delivery::Dropped)) => {
                                    stats.handled.fetch_add(1, Relaxed);
                                }
                                Some(Err(err)) => {
                                    stats.handled.fetch_add(1, Relaxed);
                                    if stats.errors.fetch_add(1, Relaxed) == 0 {
                                        tracing::warn!("sink {thread_name}: {err}");
                                    }
                                }
                            }
                        }
                        let sent = writer.idle(&stop);
                        stats.written.fetch_add(sent, Relaxed);
                        let (waiting, full) = writer.backlog();
                        stats.spooled.store(waiting, Relaxed);
                        stats.spool_full.store(full, Relaxed);
                    }
                    let _ = writer.flush();
                })
                .map_err(|e| open_error(&name, e))?
        };
        Ok(Self {
            name,
            format,
            tx: Some(tx),
            stats,
            stopping,
            sent: 0,
            worker: Some(worker),
        })
    }

    /// Queues a record without waiting; a full queue is counted.
    pub fn send(&mut self, envelope: &Arc<Envelope>) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(envelope.clone()) {
            Ok(()) => self.sent += 1,
            Err(TrySendError::Full(_)) => {
                self.stats.queue_full.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.errors.fetch_add(1, Relaxed);
            }
        }
    }

    /// ECS and OCSF need the process's identity in the envelope.
    pub fn needs_process(&self) -> bool {
        matches!(self.format, Some(Format::Ecs | Format::Ocsf))
    }

    /// Waits (until `deadline` at the latest) until the worker has handled every
    /// record queued so far, so its counters cover them.
    pub fn wait_idle(&self, deadline: std::time::Instant) {
        while self.stats.handled.load(Relaxed) < self.sent
            && self.worker.as_ref().is_some_and(|w| !w.is_finished())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Closes the queue and waits until the thread has written everything queued
    /// (a sink that cannot deliver stops retrying and counts what is left).
    pub fn finish(&mut self) {
        self.tx = None;
        self.stopping.store(true, Relaxed);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }

    pub fn status(&self) -> SinkStatus {
        let s = &self.stats;
        let (written, errors, not_encodable) = (
            s.written.load(Relaxed),
            s.errors.load(Relaxed),
            s.not_encodable.load(Relaxed),
        );
        SinkStatus {
            name: self.name.clone(),
            written,
            errors,
            queue_full: s.queue_full.load(Relaxed),
            not_encodable,
            too_large: s.too_large.load(Relaxed),
            queued: self.sent.saturating_sub(s.handled.load(Relaxed)),
            spooled: s.spooled.load(Relaxed),
            spool_full: s.spool_full.load(Relaxed),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.finish();
    }
}

fn open_error(name: &str, e: impl std::fmt::Display) -> SinkError {
    SinkError::Open {
        name: name.to_owned(),
        message: e.to_string(),
    }
}

fn short(name: &str) -> &str {
    name.split(':').next().unwrap_or(name)
}

/// Readable lines (the human format, or probectl's JSON) through a `Printer`.
struct Readable(Printer);

impl Writer for Readable {
    fn write_record(
        &mut self,
        envelope: &Envelope,
        _: &str,
        _: &AtomicBool,
    ) -> std::io::Result<Delivery> {
        let before = self.0.write_errors;
        self.0.emit(&envelope.record);
        if self.0.write_errors > before {
            return Err(std::io::Error::other("write failed"));
        }
        Ok(Delivery::Sent)
    }
}

/// One line per record, in one write.
struct Lines(Box<dyn std::io::Write + Send>);

impl Writer for Lines {
    fn write_record(
        &mut self,
        _: &Envelope,
        text: &str,
        _: &AtomicBool,
    ) -> std::io::Result<Delivery> {
        let mut line = Vec::with_capacity(text.len() + 1);
        line.extend_from_slice(text.as_bytes());
        line.push(b'\n');
        self.0.write_all(&line)?;
        self.0.flush()?;
        Ok(Delivery::Sent)
    }
}
