//! Sinks. One internal record, several encodings: human lines for `run`, JSON lines
//! for machines.

pub mod escape;
mod human;
pub mod time;

use std::io::Write;

use crate::correlate::Record;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Readable lines and a final report.
    Human,
    /// One JSON object per line (`type` says which record).
    Json,
}

pub struct Printer {
    format: Format,
    out: Box<dyn Write + Send>,
    /// Records that could not be written (closed pipe, full disk), counted for the report.
    pub write_errors: u64,
}

impl Printer {
    pub fn new(format: Format, out: Box<dyn Write + Send>) -> Self {
        Self {
            format,
            out,
            write_errors: 0,
        }
    }

    pub fn emit(&mut self, record: &Record) {
        let result = match self.format {
            Format::Json => serde_json::to_writer(&mut self.out, record)
                .map_err(std::io::Error::from)
                .and_then(|()| self.out.write_all(b"\n")),
            Format::Human => self.out.write_all(human::render(record).as_bytes()),
        }
        .and_then(|()| self.out.flush());
        if let Err(err) = result {
            self.write_errors += 1;
            if self.write_errors == 1 {
                tracing::warn!("cannot write output: {err}");
            }
        }
    }
}
