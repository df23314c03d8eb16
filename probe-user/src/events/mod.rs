//! The ring-buffer reader: raw records in, typed events out. Decoding itself (and every
//! unsafe byte cast) lives in `probe_common::decode`; this module owns the async
//! plumbing and counts records that fail to decode, so none is lost silently.

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

pub use probe_common::decode::{DecodeError, Event};

pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Records that could not be decoded (ABI mismatch or corruption), by count.
    pub decode_errors: u64,
    /// The last decode error, for the report.
    pub last_decode_error: Option<DecodeError>,
    /// Records taken from the ring (decoded or not), for rates and for checking
    /// that everything received was handled.
    pub received: u64,
}

impl EventReader {
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd, which stays open and unchanged for as long
        // as the RingBuf lives, i.e. as long as this AsyncFd.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|err| std::io::Error::other(err.to_string()))?;
        Ok(Self {
            ring,
            decode_errors: 0,
            last_decode_error: None,
            received: 0,
        })
    }

    /// Waits until the kernel has published at least one record, then appends up to
    /// `max` events to `out`. When `max` were taken, more may wait: readiness is kept,
    /// so the next call returns without waiting for a new wake-up.
    pub async fn read_batch(&mut self, out: &mut Vec<Event>, max: usize) -> std::io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        let ring = guard.get_inner_mut();
        let (taken, errors, last) = drain_ring(ring, out, max);
        if taken < max as u64 {
            // The ring is empty now: wait for the kernel's next wake-up.
            guard.clear_ready();
        }
        self.received += taken;
        self.count(errors, last);
        Ok(())
    }

    /// Appends up to `max` events already in the ring without waiting.
    pub fn drain(&mut self, out: &mut Vec<Event>, max: usize) {
        let (taken, errors, last) = drain_ring(self.ring.get_mut(), out, max);
        self.received += taken;
        self.count(errors, last);
    }

    fn count(&mut self, errors: u64, last: Option<DecodeError>) {
        if errors > 0 {
            self.decode_errors += errors;
            if let Some(err) = &last {
                tracing::warn!("{errors} ring-buffer record(s) could not be decoded: {err}");
            }
            self.last_decode_error = last;
        }
    }
}

/// Takes up to `max` records (decoded or not). Returns how many were taken, how many
/// of them could not be decoded, and the last decode error.
fn drain_ring(
    ring: &mut RingBuf<MapData>,
    out: &mut Vec<Event>,
    max: usize,
) -> (u64, u64, Option<DecodeError>) {
    let (mut taken, mut errors, mut last) = (0, 0, None);
    while taken < max as u64 {
        let Some(record) = ring.next() else { break };
        taken += 1;
        match probe_common::decode::decode(&record) {
            Ok(event) => out.push(event),
            Err(err) => {
                errors += 1;
                last = Some(err);
            }
        }
    }
    (taken, errors, last)
}
