//! probectl: shows which command-line tool read the time zone, proxy settings, API-relay
//! settings or host identity before it made network calls.
//!
//! Data flow: kernel sensors (`sensors`) → ring buffer → `events` (decode) →
//! `process` (table) → `correlate` (timelines, probes-before-connect) → `output`.
//! `policy` compiles YAML into the kernel maps and the userspace classifier.

pub mod correlate;
pub mod daemon;
pub mod engine;
pub mod escape;
pub mod events;
pub mod ops;
pub mod output;
pub mod policy;
pub mod private_file;
pub mod process;
pub mod profile;
pub mod records;
pub mod selftest;
pub mod sensors;
pub mod ship;
pub mod time;
