//! `run` and `watch` through a running daemon: instead of loading a second copy of
//! the programs, they subscribe to the daemon's control socket for their trees and
//! write what it renders (readable lines or JSON, as asked) to their own output. The
//! daemon ends the subscription with the trees' report once every watched process
//! has exited, or when the client asks (`--for`, Ctrl-C).

use anyhow::Context as _;
use probe_user::daemon::protocol::{self, Request};
use probe_user::daemon::trust::Trusted;
use probe_user::output::Format;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// How `run`/`watch` choose: `--standalone` never uses the daemon; `--policy` and
/// `--profile` need probectl's own programs; otherwise a reachable daemon is used.
/// A socket that is there but not root's (file owner or listening process) is an
/// error, not a reason to run standalone: someone may be impersonating the daemon.
pub(super) async fn connect_if_running(standalone: bool) -> anyhow::Result<Option<UnixStream>> {
    if standalone {
        return Ok(None);
    }
    let path = probe_user::daemon::socket_path();
    let trusted = Trusted::from_env()?;
    match trusted.check_file(&path) {
        Ok(()) => {}
        // No daemon (or no access to it): run standalone, as before.
        Err(e) if e.io_kind().is_some() => return Ok(None),
        Err(e) => anyhow::bail!("{e}\n  hint: {HINT_STANDALONE}"),
    }
    let Ok(stream) = UnixStream::connect(&path).await else {
        return Ok(None);
    };
    trusted
        .check_peer(&path, &stream)
        .map_err(|e| anyhow::anyhow!("{e}\n  hint: {HINT_STANDALONE}"))?;
    Ok(Some(stream))
}

const HINT_STANDALONE: &str = "nothing was sent to it; check PROBECTL_SOCKET, if set, and who created that path; --standalone runs without the daemon";

pub(super) struct Subscription {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
    pub(super) watched: Vec<u32>,
    finish_sent: bool,
}

/// What the daemon sent next.
pub(super) enum Next {
    Out(String),
    End(String),
}

impl Subscription {
    pub(super) async fn open(
        stream: UnixStream,
        pids: Vec<u32>,
        format: Format,
        color: bool,
        details: bool,
    ) -> anyhow::Result<Self> {
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        let request = Request::Subscribe {
            pids,
            format,
            color,
            details,
        };
        write
            .write_all(protocol::request_line(&request).as_bytes())
            .await
            .context("cannot send the subscription to the daemon")?;
        let mut line = String::new();
        read.read_line(&mut line)
            .await
            .context("no answer from the daemon")?;
        let answer: serde_json::Value =
            serde_json::from_str(&line).context("the daemon's answer is not JSON")?;
        if answer["ok"] != serde_json::Value::Bool(true) {
            anyhow::bail!(
                "the daemon refused: {}",
                answer["error"].as_str().unwrap_or("no reason given")
            );
        }
        let watched = answer["subscribed"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_u64().map(|p| p as u32))
            .collect();
        Ok(Self {
            read,
            write,
            watched,
            finish_sent: false,
        })
    }

    pub(super) async fn next(&mut self) -> anyhow::Result<Next> {
        let mut line = String::new();
        let n = self
            .read
            .read_line(&mut line)
            .await
            .context("lost the daemon's stream")?;
        if n == 0 {
            anyhow::bail!("the daemon closed the stream before the report (was it stopped?)");
        }
        let value: serde_json::Value =
            serde_json::from_str(&line).context("the daemon sent a line that is not JSON")?;
        if let Some(out) = value["out"].as_str() {
            return Ok(Next::Out(out.to_owned()));
        }
        if value["end"] == serde_json::Value::Bool(true) {
            return Ok(Next::End(value["reason"].as_str().unwrap_or("").to_owned()));
        }
        anyhow::bail!(
            "the daemon reported an error: {}",
            value["error"].as_str().unwrap_or(line.trim())
        )
    }

    /// Asks for the report now (once).
    pub(super) async fn finish(&mut self) -> anyhow::Result<()> {
        if self.finish_sent {
            return Ok(());
        }
        self.finish_sent = true;
        self.write
            .write_all(protocol::request_line(&Request::Finish {}).as_bytes())
            .await
            .context("cannot ask the daemon to finish")
    }
}

/// Copies the daemon's output until the end line; `stop` resolving asks to finish.
/// Returns the reason the daemon gave.
pub(super) async fn stream_until_end(
    sub: &mut Subscription,
    out: &mut (dyn std::io::Write + Send),
    mut stop: impl std::future::Future<Output = ()> + Unpin,
) -> anyhow::Result<String> {
    let mut stopped = false;
    loop {
        tokio::select! {
            next = sub.next() => match next? {
                Next::Out(text) => {
                    // A closed stdout is the reader's choice; keep draining so the
                    // daemon's queue does not fill.
                    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
                }
                Next::End(reason) => return Ok(reason),
            },
            () = &mut stop, if !stopped => {
                stopped = true;
                sub.finish().await?;
            }
        }
    }
}

pub(super) fn sink_format(json: bool) -> Format {
    if json { Format::Json } else { Format::Human }
}
