//! `cargo xtask demo`: runs the bundled probe-demo under `probectl run`, so a newcomer
//! sees a full report without writing a fixture. probe-demo needs something to connect
//! to; a throwaway local listener keeps the demo off the network.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, say};
use crate::{setup, workspace};

const TAG: &str = "demo";

/// Returns probectl's exit code (which is probe-demo's, unless probectl itself failed).
pub fn run() -> Result<i32> {
    // Checked first: without root, setting up and building would only end in this error.
    if !setup::is_root()? {
        bail!(
            "the demo loads eBPF programs and needs root: run `sudo -E env PATH=$PATH cargo xtask demo`"
        );
    }
    let tools = setup::run(false)?;
    workspace::build(&tools)?;
    let debug = workspace::target_dir()?.join("debug");

    // Port 0: the kernel picks a free port, so parallel demos and busy ports are fine.
    let listener = TcpListener::bind("127.0.0.1:0").context("could not bind a local listener")?;
    let addr = listener
        .local_addr()
        .context("local listener has no address")?;
    // Detached: it lives as long as the process, which exits right after probectl.
    thread::spawn(move || serve(listener));

    say(
        TAG,
        "probe-demo looks up TZ and proxy variables, opens and readlinks /etc/localtime, then connects to a local listener; probectl shows those probes linked to that connection",
    );
    let status = cmd::run(
        TAG,
        Command::new(debug.join("probectl"))
            .arg("run")
            .arg("--")
            .arg(debug.join("probe-demo"))
            .arg(addr.to_string()),
    )?;
    Ok(cmd::exit_code(status))
}

/// Accepts every connection and reads it to the end, so the client's connect and any
/// write succeed; one thread per connection so a client that never closes cannot
/// block the next one.
fn serve(listener: TcpListener) {
    for stream in listener.incoming().flatten() {
        thread::spawn(move || drain(stream));
    }
}

fn drain(mut stream: TcpStream) {
    // Errors only mean the client went away; there is nobody to report them to.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = io::copy(&mut stream, &mut io::sink());
}
