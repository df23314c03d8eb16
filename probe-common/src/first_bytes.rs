//! The net sensor's first-bytes event: the start of what a watched process sent on a
//! connection it opened, from which userspace names the destination (TLS server name,
//! HTTP request line).

use crate::abi::{EventHeader, HookDest};

/// The first bytes a watched process sent on a connection it opened (`FirstBytesEvent`):
/// userspace reads a TLS ClientHello's server name or an HTTP request line from them.
pub const EVENT_FIRST_BYTES: u32 = 36;

/// Bytes captured of a connection's first send. A ClientHello with a post-quantum key
/// share (X25519MLKEM768: 1,216 bytes of it) is about 1,800 bytes, and browsers and
/// Go put the extensions in random order, so the server name can come after the key
/// share: 2 KiB would cut some. A power of two: the eBPF copy masks its length with it.
pub const FIRST_BYTES_CAPTURE: usize = 4096;

/// `FirstBytesEvent::call`: the syscall that sent the bytes.
pub const FIRST_CALL_WRITE: u32 = 1;
pub const FIRST_CALL_SENDTO: u32 = 2;
pub const FIRST_CALL_SENDMSG: u32 = 3;
pub const FIRST_CALL_WRITEV: u32 = 4;

/// The start of the first buffer a watched process sent on a socket after connecting
/// it (write, send/sendto, sendmsg or writev: the first iovec only), with the
/// destination its connect gave, so userspace can join it to the connection.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FirstBytesEvent {
    pub header: EventHeader,
    pub fd: i32,
    /// `FIRST_CALL_*`.
    pub call: u32,
    /// Length of the buffer the program sent (the first iovec's for sendmsg/writev).
    pub len: u32,
    /// Bytes of `payload` captured: `min(len, FIRST_BYTES_CAPTURE)`, 0 if unreadable.
    pub captured_len: u32,
    /// The destination of the connect that preceded it.
    pub dest: HookDest,
    pub _pad0: u32,
    pub payload: [u8; FIRST_BYTES_CAPTURE],
}
const _: () =
    assert!(core::mem::size_of::<FirstBytesEvent>() == 24 + 16 + 24 + FIRST_BYTES_CAPTURE);
