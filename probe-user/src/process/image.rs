//! What one process is: its image (executable, command line, directory, container,
//! package), kept once per exec and shared (`Arc`) by every record about the process,
//! so a long command line costs its size once, not once per connection.

use std::sync::Arc;

use serde::Serialize;

use super::exe_facts::{Linkage, Runtime};
use super::identity::{self, PackageInfo};

/// What an exec gave a process, read once and shared by every record about it.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct Image {
    /// Executable path (escaped).
    pub exe: String,
    /// Command line (each entry escaped; bounded by the kernel's capture, or by
    /// `procfs::MAX_CMDLINE_BYTES` for a process found running).
    pub argv: Vec<String>,
    /// More arguments existed than were captured.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub argv_incomplete: bool,
    /// Working directory at exec (escaped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Why the working directory is not known (`ENAMETOOLONG`: deeper than PATH_MAX;
    /// `ENOENT`: the process was gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd_error: Option<String>,
    /// Container id, when it runs in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// For interpreters: the package of the script (nearest `package.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageInfo>,
    /// How the executable is linked (`static`: no dynamic loader, so environment
    /// lookups cannot be seen); left out while unknown.
    #[serde(skip_serializing_if = "Linkage::is_unknown")]
    pub linkage: Linkage,
    /// A runtime that copies the environment at start (Python, Go, Bun): lookups are
    /// not seen one by one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
}

impl Image {
    /// A live process's image: the working directory and container from /proc now
    /// (the package is looked up separately, off the loop).
    pub fn of_live(pid: u32, exe: String, argv: Vec<String>, argv_incomplete: bool) -> Self {
        let (cwd, cwd_error) = match super::procfs::cwd_of(pid) {
            Ok(cwd) => (Some(cwd), None),
            Err(err) => (None, Some(err)),
        };
        Self {
            exe,
            argv,
            argv_incomplete,
            cwd,
            cwd_error,
            container: identity::container_of(pid),
            package: None,
            linkage: Linkage::Unknown,
            runtime: None,
        }
    }

    /// A short name for output: the basename of the exe, or of argv[0].
    pub fn name(&self) -> &str {
        let full = if self.exe.is_empty() {
            self.argv.first().map(String::as_str).unwrap_or("?")
        } else {
            &self.exe
        };
        full.rsplit('/').next().unwrap_or(full)
    }

    /// For interpreters, the script or package they run (first argument that is not
    /// an option), which is what identifies the CLI; `None` for native programs.
    pub fn script(&self) -> Option<&str> {
        const INTERPRETERS: &[&str] = &[
            "node", "nodejs", "python", "python3", "bun", "deno", "ruby", "perl", "sh", "bash",
        ];
        let name = self.name();
        let is_interpreter = INTERPRETERS.iter().any(|i| {
            name == *i
                || (name.starts_with(i)
                    && name[i.len()..]
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '.'))
        });
        if !is_interpreter {
            return None;
        }
        self.argv
            .iter()
            .skip(1)
            .find(|a| !a.starts_with('-'))
            .map(String::as_str)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    pub uid: Option<u32>,
    /// Shared with every record about this process.
    pub image: Arc<Image>,
    /// Counts this process's execs, so a late package answer meets the right image.
    pub exec_seq: u64,
    pub exit_code: Option<i32>,
    pub exited: bool,
    /// Its own `HOME` and `XDG_CONFIG_HOME` from the environment at exec, where its
    /// `~/` is (kept across fork, replaced at exec).
    pub homes: crate::policy::own_home::ExecHomes,
}

impl ProcessInfo {
    /// A short name for output: the basename of the exe, or of argv[0].
    pub fn name(&self) -> &str {
        self.image.name()
    }

    pub fn script(&self) -> Option<&str> {
        self.image.script()
    }
}
