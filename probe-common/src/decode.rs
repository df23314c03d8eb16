//! Checked decoding of ring-buffer records. The only place where raw bytes become
//! typed events; every length is checked before a read.

use core::mem::size_of;

use crate::abi::*;
use crate::block::*;
use crate::first_bytes::*;
use crate::host::*;
use crate::maps::{InodeKey, InodeRef, PolicyRef, WatchEntry};

// SAFETY: all of these are `repr(C)`, `Copy`, made only of integers and byte arrays,
// and have explicit padding fields, so every bit pattern is a valid value.
unsafe impl aya::Pod for WatchEntry {}
unsafe impl aya::Pod for PolicyRef {}
unsafe impl aya::Pod for InodeRef {}
unsafe impl aya::Pod for EventHeader {}
unsafe impl aya::Pod for PendingConnect {}
unsafe impl aya::Pod for PendingSend {}
unsafe impl aya::Pod for PendingPath {}
unsafe impl aya::Pod for InodeKey {}
unsafe impl aya::Pod for PendingEnv {}
unsafe impl aya::Pod for BlockEntry {}
unsafe impl aya::Pod for BlockRule {}
unsafe impl aya::Pod for BlockNet {}
unsafe impl aya::Pod for BlockTreeState {}
unsafe impl aya::Pod for BlockAddrKey {}
unsafe impl aya::Pod for BlockAddr {}

/// A decoded event. Large payloads are boxed so the enum stays small.
#[derive(Clone, Debug)]
pub enum Event {
    Exec(alloc_box::Box<ExecEvent>),
    Fork(ForkEvent),
    Exit(ExitEvent),
    File(alloc_box::Box<FileEvent>),
    Env(EnvEvent),
    EnvAtExec(alloc_box::Box<ExecEnvEvent>),
    Connect(ConnectEvent),
    ConnectUnix(alloc_box::Box<UnixConnectEvent>),
    ConnectOutcome(ConnectOutcomeEvent),
    UdpSend(alloc_box::Box<UdpSendEvent>),
    DnsAnswer(alloc_box::Box<DnsAnswerEvent>),
    HostCall(HostCallEvent),
    ExecMapped(ExecMappedEvent),
    PeerMemory(PeerMemoryEvent),
    FirstBytes(alloc_box::Box<FirstBytesEvent>),
    /// A block rule held at a connect or send (`EVENT_BLOCK`).
    Block(alloc_box::Box<BlockEvent>),
}

mod alloc_box {
    pub use alloc::boxed::Box;
}

impl Event {
    pub fn header(&self) -> &EventHeader {
        match self {
            Event::Exec(e) => &e.header,
            Event::Fork(e) => &e.header,
            Event::Exit(e) => &e.header,
            Event::File(e) => &e.header,
            Event::Env(e) => &e.header,
            Event::EnvAtExec(e) => &e.header,
            Event::Connect(e) => &e.header,
            Event::ConnectUnix(e) => &e.header,
            Event::ConnectOutcome(e) => &e.header,
            Event::UdpSend(e) => &e.header,
            Event::DnsAnswer(e) => &e.header,
            Event::HostCall(e) => &e.header,
            Event::ExecMapped(e) => &e.header,
            Event::PeerMemory(e) => &e.header,
            Event::FirstBytes(e) => &e.header,
            Event::Block(e) => &e.header,
        }
    }

    /// The kind's name, as the kernel's ring-full drop counters name it
    /// (`ring_full_<name>`), so received and dropped events line up per kind.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Event::Exec(_) => "exec",
            Event::Fork(_) => "fork",
            Event::Exit(_) => "exit",
            Event::File(_) => "file",
            Event::Env(_) => "env",
            Event::EnvAtExec(_) => "env_at_exec",
            Event::Connect(_) => "connect",
            Event::ConnectUnix(_) => "connect_unix",
            Event::ConnectOutcome(_) => "connect_outcome",
            Event::UdpSend(_) => "udp",
            Event::DnsAnswer(_) => "dns_answer",
            Event::HostCall(_) => "host_call",
            Event::ExecMapped(_) => "exec_mapped",
            Event::PeerMemory(_) => "peer_memory",
            Event::FirstBytes(_) => "first_bytes",
            Event::Block(_) => "block",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the {need}-byte event header")]
    ShortHeader { len: usize, need: usize },
    #[error("unknown event kind {kind} in a {len}-byte record")]
    UnknownKind { kind: u32, len: usize },
    #[error("event kind {kind} needs {need} bytes but the record has {len}")]
    Truncated { kind: u32, len: usize, need: usize },
    #[error(
        "event kind {kind} is {need} bytes but the record has {len}: kernel and userspace ABI differ"
    )]
    Oversized { kind: u32, len: usize, need: usize },
    #[error("event kind {kind}: {field} length {value} exceeds its {cap}-byte array")]
    BadLength {
        kind: u32,
        field: &'static str,
        value: u32,
        cap: usize,
    },
    #[error("event kind {kind}: {field} has the unknown value {value}")]
    BadField {
        kind: u32,
        field: &'static str,
        value: u32,
    },
}

/// Reads a `T` from the start of `bytes`, which must be exactly `size_of::<T>()` long.
fn read_exact<T: Copy>(kind: u32, bytes: &[u8]) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Truncated {
            kind,
            len: bytes.len(),
            need,
        });
    }
    if bytes.len() > need {
        return Err(DecodeError::Oversized {
            kind,
            len: bytes.len(),
            need,
        });
    }
    // SAFETY: length checked above; `T` is one of the plain-old-data ABI structs for
    // which every bit pattern is valid; `read_unaligned` because ring-buffer records
    // are only 8-byte aligned by contract, which we do not rely on.
    Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

fn check_len(kind: u32, field: &'static str, value: u32, cap: usize) -> Result<(), DecodeError> {
    if value as usize >= cap {
        return Err(DecodeError::BadLength {
            kind,
            field,
            value,
            cap,
        });
    }
    Ok(())
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let need = size_of::<EventHeader>();
    if bytes.len() < need {
        return Err(DecodeError::ShortHeader {
            len: bytes.len(),
            need,
        });
    }
    let kind = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    Ok(match kind {
        EVENT_EXEC | EVENT_EXEC_CANDIDATE => {
            let e: ExecEvent = read_exact(kind, bytes)?;
            check_len(kind, "filename_len", e.filename_len, e.filename.len())?;
            Event::Exec(alloc_box::Box::new(e))
        }
        EVENT_FORK => Event::Fork(read_exact(kind, bytes)?),
        EVENT_EXIT => Event::Exit(read_exact(kind, bytes)?),
        EVENT_FILE => {
            let e: FileEvent = read_exact(kind, bytes)?;
            check_len(kind, "path_len", e.path_len, e.path.len())?;
            Event::File(alloc_box::Box::new(e))
        }
        EVENT_ENV => {
            let e: EnvEvent = read_exact(kind, bytes)?;
            check_len(kind, "name_len", e.name_len, e.name.len())?;
            Event::Env(e)
        }
        EVENT_ENV_AT_EXEC => {
            let e: ExecEnvEvent = read_exact(kind, bytes)?;
            check_len(kind, "name_len", e.name_len, e.name.len())?;
            check_len(kind, "value_len", e.value_len, e.value.len() + 1)?;
            Event::EnvAtExec(alloc_box::Box::new(e))
        }
        EVENT_CONNECT | EVENT_CONNECT_ISSUED => Event::Connect(read_exact(kind, bytes)?),
        EVENT_CONNECT_UNIX => {
            let e: UnixConnectEvent = read_exact(kind, bytes)?;
            check_len(kind, "path_len", e.path_len, e.path.len() + 1)?;
            Event::ConnectUnix(alloc_box::Box::new(e))
        }
        EVENT_CONNECT_OUTCOME => Event::ConnectOutcome(read_exact(kind, bytes)?),
        EVENT_UDP_SEND => {
            let e: UdpSendEvent = read_exact(kind, bytes)?;
            check_len(kind, "captured_len", e.captured_len, e.payload.len() + 1)?;
            Event::UdpSend(alloc_box::Box::new(e))
        }
        EVENT_DNS_ANSWER => {
            let e: DnsAnswerEvent = read_exact(kind, bytes)?;
            check_len(kind, "captured_len", e.captured_len, e.payload.len() + 1)?;
            Event::DnsAnswer(alloc_box::Box::new(e))
        }
        EVENT_EXEC_MAPPED => Event::ExecMapped(read_exact(kind, bytes)?),
        EVENT_HOST_CALL => {
            let e: HostCallEvent = read_exact(kind, bytes)?;
            check_len(kind, "ifname_len", e.ifname_len, e.ifname.len())?;
            if !matches!(
                e.call,
                HOST_CALL_UNAME | HOST_CALL_IFHWADDR | HOST_CALL_GETLINK
            ) {
                return Err(DecodeError::BadField {
                    kind,
                    field: "call",
                    value: e.call,
                });
            }
            Event::HostCall(e)
        }
        EVENT_PEER_MEMORY => {
            let e: PeerMemoryEvent = read_exact(kind, bytes)?;
            if e.call != PEER_MEMORY_PROCESS_VM_READV {
                return Err(DecodeError::BadField {
                    kind,
                    field: "call",
                    value: e.call,
                });
            }
            Event::PeerMemory(e)
        }
        EVENT_FIRST_BYTES => {
            let e: FirstBytesEvent = read_exact(kind, bytes)?;
            check_len(kind, "captured_len", e.captured_len, e.payload.len() + 1)?;
            Event::FirstBytes(alloc_box::Box::new(e))
        }
        EVENT_BLOCK => {
            let e: BlockEvent = read_exact(kind, bytes)?;
            if !matches!(e.verdict, BLOCK_VERDICT_BLOCKED | BLOCK_VERDICT_WOULD_BLOCK) {
                return Err(DecodeError::BadField {
                    kind,
                    field: "verdict",
                    value: e.verdict,
                });
            }
            check_len(kind, "rule", e.rule, MAX_BLOCK_RULES as usize)?;
            Event::Block(alloc_box::Box::new(e))
        }
        _ => {
            return Err(DecodeError::UnknownKind {
                kind,
                len: bytes.len(),
            });
        }
    })
}

/// Bytes up to the first NUL (or the whole slice).
pub fn until_nul(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(n) => &bytes[..n],
        None => bytes,
    }
}

impl ExecEvent {
    pub fn filename_bytes(&self) -> &[u8] {
        &self.filename[..self.filename_len as usize]
    }
    /// The captured argv entries, in order; at most `ARGV_SLOTS`.
    pub fn argv_bytes(&self) -> impl Iterator<Item = &[u8]> {
        let filled = (self.argc as usize).min(self.argv.len());
        self.argv[..filled].iter().map(|slot| until_nul(slot))
    }
}

impl FileEvent {
    pub fn path_bytes(&self) -> &[u8] {
        &self.path[..self.path_len as usize]
    }
}

impl UnixConnectEvent {
    /// The socket path; for an abstract socket, the name after the leading NUL.
    pub fn path_bytes(&self) -> &[u8] {
        let path = &self.path[..self.path_len as usize];
        if self.flags & UNIX_ABSTRACT != 0 {
            path.get(1..).unwrap_or_default()
        } else {
            until_nul(path)
        }
    }
}

impl ExecEnvEvent {
    pub fn name_bytes(&self) -> &[u8] {
        &self.name[..self.name_len as usize]
    }
    pub fn value_bytes(&self) -> &[u8] {
        &self.value[..self.value_len as usize]
    }
}

impl HostCallEvent {
    pub fn ifname_bytes(&self) -> &[u8] {
        &self.ifname[..self.ifname_len as usize]
    }
}

impl FirstBytesEvent {
    pub fn payload_bytes(&self) -> &[u8] {
        &self.payload[..self.captured_len as usize]
    }
}

impl EnvEvent {
    pub fn name_bytes(&self) -> &[u8] {
        &self.name[..self.name_len as usize]
    }
}

#[cfg(test)]
mod tests;
