//! The kernel/user ABI of probectl.
//!
//! Everything that crosses the ring buffer or a BPF map is defined here, once. Rules:
//!
//! * every event starts with [`EventHeader`] at offset 0;
//! * every struct is `#[repr(C)]` with explicit padding fields, no `bool`, no enums;
//!   a `const` assertion next to each struct pins its size so a layout change is a
//!   compile error on both sides;
//! * strings are fixed arrays plus a length and a truncation flag; truncation is never silent.
//!
//! The `user` feature adds [`aya::Pod`] impls and the checked decoder ([`decode`]).
#![no_std]

pub mod abi;
pub mod block;
pub mod first_bytes;
pub mod host;
pub mod limits;
pub mod maps;

// probe-common is `no_std`; with the `user` feature the decoder may box large events.
#[cfg(feature = "user")]
extern crate alloc;
#[cfg(feature = "user")]
pub mod decode;

pub use abi::*;
pub use block::*;
pub use first_bytes::*;
pub use host::*;
pub use limits::*;
pub use maps::*;
