//! Running child processes. Every command xtask runs for real is echoed first as a
//! `$ cmd args` line, so a reader can see each step and copy it to run by hand.
//! Quiet probes (version checks, status queries) are not echoed: they are the
//! "checking" part of setup and print their result as a progress line instead.

use std::ffi::OsStr;
use std::fmt::Display;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context as _, Result, bail};

/// The workspace root (xtask/..), so commands work from any directory `cargo xtask`
/// is run in.
pub fn root() -> &'static std::path::Path {
    std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Prints one progress line tagged with the xtask step that produced it. Progress goes
/// to stderr, where cargo and probectl write theirs, so the two interleave in order.
pub fn say(tag: &str, msg: impl Display) {
    eprintln!("[xtask {tag}] {msg}");
}

/// Echoes `cmd`, then runs it with inherited stdio (output streams live) and returns
/// its exit status. Failing to start it at all is an error.
pub fn run(tag: &str, cmd: &mut Command) -> Result<ExitStatus> {
    let shown = display(cmd);
    say(tag, format_args!("$ {shown}"));
    cmd.status()
        .with_context(|| format!("could not start `{shown}`"))
}

/// Like [`run`], but a non-zero exit is an error too.
pub fn run_ok(tag: &str, cmd: &mut Command) -> Result<()> {
    let status = run(tag, cmd)?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs a quiet check and returns its stdout if it started and exited with 0; `None`
/// means "not there" (not installed, not on PATH, or it reported failure).
pub fn probe_stdout(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The exit code to pass on for a child's status. A child killed by a signal gets the
/// shell's convention, 128 + signal number, so callers still see a failure.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// The cargo that is running us (`cargo run` sets $CARGO), so nested builds use the
/// same toolchain as the `cargo xtask` invocation; plain `cargo` from PATH otherwise.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Renders `cmd` the way one would type it in a shell: explicitly set variables first
/// (except PATH, which is long and only ever extended), then the program and its
/// arguments, quoted where needed.
pub fn display(cmd: &Command) -> String {
    let mut words = Vec::new();
    for (key, value) in cmd.get_envs() {
        if let (Some(value), false) = (value, key == "PATH") {
            words.push(format!("{}={}", key.to_string_lossy(), quote(value)));
        }
    }
    // $CARGO is an absolute path into the toolchain directory; `cargo` reads better
    // and is what a person would type.
    let program = cmd.get_program();
    let is_cargo = std::env::var_os("CARGO").is_some_and(|cargo| cargo == program);
    words.push(if is_cargo {
        "cargo".to_owned()
    } else {
        quote(program)
    });
    words.extend(cmd.get_args().map(quote));
    words.join(" ")
}

/// Single-quotes a word for a POSIX shell unless it consists only of safe characters.
fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
