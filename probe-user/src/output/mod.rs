//! Sinks. One internal record, several encodings: human lines for `run`, JSON lines
//! for machines.

mod human;
mod report;
mod report_details;
mod route;
mod tree;

use std::io::Write;

use crate::records::Record;

/// The one list of formats records are written in: `run`/`watch` (`--json`), the
/// subscribe protocol and every sink's `format:`. `Printer` writes `Human` and `Json`;
/// the machine formats need a sink's envelope (`ship::encode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Readable lines and a final report.
    #[default]
    Human,
    /// One JSON object per line (`type` says which record): probectl's own records
    /// (docs/events.md); a sink adds `id`, `seq` and `host`. `native` is its other name.
    #[serde(alias = "native")]
    Json,
    /// Elastic Common Schema (docs/events.md#ecs): the sinks' default.
    Ecs,
    /// OCSF 1.8 (docs/events.md#ocsf).
    Ocsf,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Human => "human",
            Format::Json => "json",
            Format::Ecs => "ecs",
            Format::Ocsf => "ocsf",
        }
    }

    /// ECS, the default of the machine sinks.
    pub fn machine_default() -> Self {
        Format::Ecs
    }
}

pub struct Printer {
    format: Format,
    out: Box<dyn Write + Send>,
    /// ANSI colours in the human format (a terminal, and neither `--no-color` nor
    /// `NO_COLOR`).
    color: bool,
    /// Records that could not be written (closed pipe, full disk), counted for the report.
    pub write_errors: u64,
    /// Records written.
    pub written: u64,
    /// Readable format: lines indented by the process's depth in its tree.
    tree: tree::TreeIndent,
    /// The readable report lists every probe and connection (`--details`).
    details: bool,
}

impl Printer {
    pub fn new(format: Format, out: Box<dyn Write + Send>) -> Self {
        Self {
            format,
            out,
            color: false,
            write_errors: 0,
            written: 0,
            tree: tree::TreeIndent::default(),
            details: false,
        }
    }

    /// The readable report lists every probe and every connection with the probes
    /// before it (`--details`); without it the report is a summary that fits a screen.
    pub fn with_details(mut self, details: bool) -> Self {
        self.details = details;
        self
    }

    /// Colours the human format. Every process-controlled string is escaped before it
    /// gets here, so the only escape sequences in the output are these.
    pub fn with_color(mut self, color: bool) -> Self {
        self.color = color;
        self
    }

    pub fn emit(&mut self, record: &Record) {
        let result = match self.format {
            // One write per record: a reader tailing the file (a log shipper, an
            // appending sink) never sees half a line.
            // ECS and OCSF need an envelope (id, sequence, host) that only sinks have;
            // the subscribe protocol refuses them, so a Printer writes probectl's JSON.
            Format::Json | Format::Ecs | Format::Ocsf => serde_json::to_vec(record)
                .map_err(std::io::Error::from)
                .and_then(|mut line| {
                    line.push(b'\n');
                    self.out.write_all(&line)
                }),
            Format::Human => {
                let text = self
                    .tree
                    .indent(record, human::render_with(record, self.details));
                let text = if self.color {
                    human::paint(record, &text)
                } else {
                    text
                };
                self.out.write_all(text.as_bytes())
            }
        }
        .and_then(|()| self.out.flush());
        if result.is_ok() {
            self.written += 1;
        }
        if let Err(err) = result {
            self.write_errors += 1;
            if self.write_errors == 1 {
                tracing::warn!("cannot write output: {err}");
            }
        }
    }
}

/// A record's readable line(s), without colour or tree indentation (for journald's
/// MESSAGE).
pub fn render_plain(record: &Record) -> String {
    human::render(record)
}

/// Whether to colour human output written to stderr: only on a terminal, and neither
/// `--no-color` nor a non-empty `NO_COLOR` (https://no-color.org).
pub fn use_color(no_color_flag: bool, to_file: bool) -> bool {
    use std::io::IsTerminal as _;
    !no_color_flag
        && !to_file
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stderr().is_terminal()
}
