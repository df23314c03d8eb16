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

    /// Waits until the kernel has published at least one record, then appends every
    /// available event to `out`.
    pub async fn read_batch(&mut self, out: &mut Vec<Event>) -> std::io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        let ring = guard.get_inner_mut();
        let before = out.len();
        let (errors, last) = drain_ring(ring, out);
        guard.clear_ready();
        self.received += (out.len() - before) as u64 + errors;
        self.count(errors, last);
        Ok(())
    }

    /// Appends every event already in the ring without waiting.
    pub fn drain(&mut self, out: &mut Vec<Event>) {
        let before = out.len();
        let (errors, last) = drain_ring(self.ring.get_mut(), out);
        self.received += (out.len() - before) as u64 + errors;
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

fn drain_ring(ring: &mut RingBuf<MapData>, out: &mut Vec<Event>) -> (u64, Option<DecodeError>) {
    let mut errors = 0;
    let mut last = None;
    while let Some(record) = ring.next() {
        match probe_common::decode::decode(&record) {
            Ok(event) => out.push(event),
            Err(err) => {
                errors += 1;
                last = Some(err);
            }
        }
    }
    (errors, last)
}
