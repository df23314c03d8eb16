//! Where records go. A run's printer, a daemon's sinks and its subscribers are all
//! listeners behind one trait, served by one fan-out (as tetragon's observer serves
//! its sinks and gRPC subscribers alike). A listener never blocks the caller: it
//! writes, queues with `try_send`, or says it must go.

use std::sync::Arc;

use crate::process::ProcessTable;
use crate::records::Record;
use crate::ship::Envelope;

use super::losses::Losses;

/// One record on its way out.
pub struct Outgoing<'a> {
    pub record: &'a Record,
    /// The record as it leaves the machine (ids, sequence), when it passed the
    /// repeat summariser; sinks take only these, subscribers every record.
    pub envelope: Option<&'a Arc<Envelope>>,
    /// Addressed to one listener (a subscription's own report): it takes the record
    /// whatever its filter says.
    pub direct: bool,
}

/// What became of a record handed to a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Taken (written, or queued).
    Taken,
    /// Not for this listener (another tree, or not shipped).
    Skipped,
    /// The listener must go: its reader left, or (`lagging`) fell so far behind that
    /// its queue is full (counted as `subscriber_lagging`).
    Gone { lagging: bool },
}

pub trait Listener: Send {
    /// Offers one record. `procs` answers which tree a process belongs to.
    fn deliver(&mut self, out: &Outgoing<'_>, procs: &ProcessTable) -> Delivery;
    /// Waits until what was taken is written (at shutdown).
    fn flush(&mut self) {}
    /// Waits (until `deadline` at the latest) until what was taken is handled, so the
    /// loss counters cover it; the listener stays open.
    fn settle(&self, _deadline: std::time::Instant) {}
    /// Adds this listener's own loss counters.
    fn add_losses(&self, _losses: &mut Losses) {}
    /// A sink's counters, for `status`.
    fn sink_status(&self) -> Option<crate::ship::sinks::SinkStatus> {
        None
    }
    /// The listener is being let go (a subscription that ended): its last word.
    fn end(&mut self, _reason: &str) {}
}

/// Identifies a listener in a fan-out.
pub type ListenerId = u64;

/// Every listener, served in the order they were added.
#[derive(Default)]
pub struct Fanout {
    listeners: Vec<(ListenerId, Box<dyn Listener>)>,
    next_id: ListenerId,
    /// Listeners removed because their queue was full.
    pub lagging_dropped: u64,
}

impl Fanout {
    pub fn add(&mut self, listener: Box<dyn Listener>) -> ListenerId {
        self.next_id += 1;
        self.listeners.push((self.next_id, listener));
        self.next_id
    }

    /// Takes a listener out (a subscription that ends gets its report on its own).
    pub fn remove(&mut self, id: ListenerId) -> Option<Box<dyn Listener>> {
        let i = self.listeners.iter().position(|(l, _)| *l == id)?;
        Some(self.listeners.remove(i).1)
    }

    pub fn contains(&self, id: ListenerId) -> bool {
        self.listeners.iter().any(|(l, _)| *l == id)
    }

    /// Ends listener `id` with `reason` and drops it.
    pub fn end(&mut self, id: ListenerId, reason: &str) {
        if let Some(mut l) = self.remove(id) {
            l.end(reason);
        }
    }

    pub fn sink_status(&self, id: ListenerId) -> Option<crate::ship::sinks::SinkStatus> {
        let (_, l) = self.listeners.iter().find(|(l, _)| *l == id)?;
        l.sink_status()
    }

    pub fn len(&self) -> usize {
        self.listeners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    /// Hands `record` to listener `id` only (see `Outgoing::direct`); false when it is
    /// gone.
    pub fn send_to(&mut self, id: ListenerId, record: &Record, procs: &ProcessTable) -> bool {
        let Some((_, l)) = self.listeners.iter_mut().find(|(l, _)| *l == id) else {
            return false;
        };
        let out = Outgoing {
            record,
            envelope: None,
            direct: true,
        };
        l.deliver(&out, procs) == Delivery::Taken
    }

    /// Offers `out` to every listener, dropping those that must go.
    pub fn send(&mut self, out: &Outgoing<'_>, procs: &ProcessTable) {
        let mut lagging = 0;
        self.listeners
            .retain_mut(|(_, l)| match l.deliver(out, procs) {
                Delivery::Taken | Delivery::Skipped => true,
                Delivery::Gone { lagging: behind } => {
                    lagging += u64::from(behind);
                    false
                }
            });
        self.lagging_dropped += lagging;
    }

    pub fn flush(&mut self) {
        for (_, l) in &mut self.listeners {
            l.flush();
        }
    }

    pub fn settle(&self, deadline: std::time::Instant) {
        for (_, l) in &self.listeners {
            l.settle(deadline);
        }
    }

    /// Every listener's loss counters, and the fan-out's own.
    pub fn add_losses(&self, losses: &mut Losses) {
        for (_, l) in &self.listeners {
            l.add_losses(losses);
        }
        losses.userspace(
            super::losses::UserspaceLoss::SubscriberLagging,
            self.lagging_dropped,
        );
    }
}

/// A run's or watch's output is a listener like any other: it takes every record.
impl Listener for crate::output::Printer {
    fn deliver(&mut self, out: &Outgoing<'_>, _procs: &ProcessTable) -> Delivery {
        self.emit(out.record);
        Delivery::Taken
    }

    fn add_losses(&self, losses: &mut Losses) {
        losses.userspace(
            super::losses::UserspaceLoss::OutputWriteError,
            self.write_errors,
        );
    }
}
