//! The daemon's two kinds of listener: sinks (every shipped record, with its
//! envelope) and subscribers (`run`/`watch` clients: every record of their trees,
//! rendered for them and queued on their connection).

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::protocol;
use crate::engine::listener::{Delivery, Listener, Outgoing};
use crate::engine::losses::{Losses, SinkLoss};
use crate::output::{Format, Printer};
use crate::process::ProcessTable;
use crate::records::{Body, Record};
use crate::ship::sinks::Sink;

impl Listener for Sink {
    fn deliver(&mut self, out: &Outgoing<'_>, _procs: &ProcessTable) -> Delivery {
        match out.envelope {
            Some(envelope) => {
                self.send(envelope);
                Delivery::Taken
            }
            // Held back by the repeat summariser: a `repeated` record will count it.
            None => Delivery::Skipped,
        }
    }

    fn flush(&mut self) {
        self.finish();
    }

    fn settle(&self, deadline: std::time::Instant) {
        self.wait_idle(deadline);
    }

    fn sink_status(&self) -> Option<crate::ship::sinks::SinkStatus> {
        Some(self.status())
    }

    fn add_losses(&self, losses: &mut Losses) {
        let st = self.status();
        losses.sink(&st.name, SinkLoss::QueueFull, st.queue_full);
        losses.sink(&st.name, SinkLoss::Errors, st.errors);
        losses.sink(&st.name, SinkLoss::SpoolFull, st.spool_full);
        losses.sink(&st.name, SinkLoss::NotEncodable, st.not_encodable);
        losses.sink(&st.name, SinkLoss::TooLarge, st.too_large);
    }
}

/// Bytes a subscriber's printer wrote, sent on as one protocol line per record.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A client of the control socket that subscribed to process trees.
pub struct Subscriber {
    pub roots: Vec<u32>,
    /// Records' offsets count from here: the moment it subscribed.
    base_ms: f64,
    /// Only records of processes with this uid (a group member's own).
    uid_only: Option<u32>,
    printer: Printer,
    buf: SharedBuf,
    out: mpsc::Sender<String>,
}

impl Subscriber {
    pub fn new(
        roots: Vec<u32>,
        base_ms: f64,
        uid_only: Option<u32>,
        format: Format,
        color: bool,
        details: bool,
        out: mpsc::Sender<String>,
    ) -> Self {
        let buf = SharedBuf::default();
        Self {
            roots,
            base_ms,
            uid_only,
            printer: Printer::new(format, Box::new(buf.clone()))
                .with_color(color)
                .with_details(details),
            buf,
            out,
        }
    }

    fn wants(&self, record: &Record, procs: &ProcessTable) -> bool {
        let Some(pid) = record.pid() else {
            return matches!(record.body, Body::PolicyReload(_));
        };
        if let Some(uid) = self.uid_only
            && procs.get(pid).and_then(|p| p.uid).is_some_and(|u| u != uid)
        {
            return false;
        }
        procs.descends_from(pid, &self.roots)
    }

    /// Renders and queues one record; false when the subscriber must go (gone, or
    /// so far behind that its queue is full).
    pub fn send(&mut self, record: &Record) -> bool {
        self.printer.emit(&record.shifted(self.base_ms));
        let text = match self.buf.0.lock() {
            Ok(mut b) => String::from_utf8_lossy(&std::mem::take(&mut *b)).into_owned(),
            Err(_) => return false,
        };
        self.out.try_send(protocol::out_line(&text)).is_ok()
    }

    pub fn is_closed(&self) -> bool {
        self.out.is_closed()
    }
}

impl Listener for Subscriber {
    /// The last line of a subscription.
    fn end(&mut self, reason: &str) {
        let _ = self.out.try_send(protocol::end_line(reason));
    }

    fn deliver(&mut self, out: &Outgoing<'_>, procs: &ProcessTable) -> Delivery {
        if !out.direct && !self.wants(out.record, procs) {
            return if self.is_closed() {
                Delivery::Gone { lagging: false }
            } else {
                Delivery::Skipped
            };
        }
        if self.send(out.record) {
            Delivery::Taken
        } else {
            Delivery::Gone {
                lagging: !self.is_closed(),
            }
        }
    }
}
