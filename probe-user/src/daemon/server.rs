//! The daemon's control socket: accepts connections, reads each caller's
//! credentials (`SO_PEERCRED`), parses newline-delimited JSON requests with a size
//! and time limit, checks access, and hands the request to the event loop, which
//! owns all state. A connection task never blocks the event loop: replies come
//! back on a oneshot, subscribed output on a bounded queue the loop fills with
//! `try_send` (a subscriber that falls behind is disconnected, counted).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use super::access::{self, Caller, Role};
use super::protocol::{self, MAX_REQUEST_BYTES, REQUEST_TIMEOUT, Request, WRITE_TIMEOUT};
use crate::output::Format;
use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// What a connection asks of the event loop.
pub enum Command {
    Status {
        reply: oneshot::Sender<serde_json::Value>,
    },
    PolicyList {
        reply: oneshot::Sender<serde_json::Value>,
    },
    Reload {
        reply: oneshot::Sender<Result<String, String>>,
    },
    Subscribe {
        pids: Vec<u32>,
        /// Only records of processes with this uid (a group member's own).
        uid_only: Option<u32>,
        format: Format,
        color: bool,
        out: mpsc::Sender<String>,
        /// The subscription's id and the pids watched.
        reply: oneshot::Sender<Result<(u64, Vec<u32>), String>>,
    },
    /// End a subscription now, with its report.
    Finish { id: u64 },
}

/// Counters of the socket, for `status`.
#[derive(Debug, Default, serde::Serialize)]
pub struct SocketStats {
    pub connections: u64,
    pub refused: u64,
    pub bad_requests: u64,
    pub timed_out: u64,
}

pub type SharedStats = std::sync::Arc<std::sync::Mutex<SocketStats>>;

/// Binds the socket: the directory is created if missing, a stale socket from a
/// crashed daemon is replaced, and the mode is 0660 with the daemon's group, so
/// the kernel already keeps out everyone but root and the group.
pub fn bind(path: &Path, group_gid: Option<u32>) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the socket directory {}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!(
            "another daemon already listens on {}\n  hint: `probectl status` talks to it; stop it first (systemctl stop probectl)",
            path.display()
        );
    }
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(gid) = group_gid {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .with_context(|| format!("cannot give {} to gid {gid}", path.display()))?;
    }
    Ok(listener)
}

pub async fn accept_loop(
    listener: UnixListener,
    commands: mpsc::Sender<Command>,
    group: String,
    queue: usize,
    stats: SharedStats,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if let Ok(mut s) = stats.lock() {
            s.connections += 1;
        }
        let (commands, group, stats) = (commands.clone(), group.clone(), stats.clone());
        tokio::spawn(async move {
            serve(stream, commands, &group, queue, &stats).await;
        });
    }
}

async fn serve(
    stream: UnixStream,
    commands: mpsc::Sender<Command>,
    group: &str,
    queue: usize,
    stats: &SharedStats,
) {
    let count = |f: fn(&mut SocketStats)| {
        if let Ok(mut s) = stats.lock() {
            f(&mut s)
        }
    };
    let Ok(cred) = stream.peer_cred() else {
        return;
    };
    let caller = Caller::new(cred.uid(), cred.gid(), cred.pid());
    let role = caller.role(access::group_gid(group));
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    if role == Role::Outsider {
        count(|s| s.refused += 1);
        // The refusal answers the first request (read within the usual limits, never
        // parsed), so a client that writes before it reads sees it, not a broken pipe.
        let _ = read_request(&mut read).await;
        let _ = send(
            &mut write,
            &protocol::error_line(&access::refusal(&caller, group)),
        )
        .await;
        return;
    }
    loop {
        let line = match read_request(&mut read).await {
            Ok(Some(line)) => line,
            Ok(None) => return,
            Err(why) => {
                if why.contains("within") {
                    count(|s| s.timed_out += 1);
                } else {
                    count(|s| s.bad_requests += 1);
                }
                let _ = send(&mut write, &protocol::error_line(&why)).await;
                return;
            }
        };
        let request = match protocol::parse_request(&line) {
            Ok(r) => r,
            Err(err) => {
                count(|s| s.bad_requests += 1);
                if send(&mut write, &protocol::error_line(&err.to_string()))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        let response = match request {
            Request::Status {} => ask(&commands, |reply| Command::Status { reply })
                .await
                .map(|status| protocol::ok_line(serde_json::json!({ "status": status }))),
            Request::PolicyList {} => ask(&commands, |reply| Command::PolicyList { reply })
                .await
                .map(|list| protocol::ok_line(serde_json::json!({ "policies": list }))),
            Request::Reload {} if role != Role::Root => Some(protocol::error_line(
                "permission denied: only root may reload the daemon's policy",
            )),
            Request::Reload {} => {
                ask(&commands, |reply| Command::Reload { reply })
                    .await
                    .map(|r| match r {
                        Ok(name) => protocol::ok_line(serde_json::json!({ "policy": name })),
                        Err(err) => protocol::error_line(&format!(
                            "the new policy was refused, the old one stays: {err}"
                        )),
                    })
            }
            Request::Finish {} => Some(protocol::error_line(
                "finish ends a subscription: subscribe first, on this connection",
            )),
            Request::Subscribe {
                pids,
                format,
                color,
            } => {
                subscribe(
                    &commands, &caller, role, pids, format, color, queue, &mut read, &mut write,
                )
                .await;
                return;
            }
        };
        let Some(response) = response else {
            let _ = send(
                &mut write,
                &protocol::error_line("the daemon is shutting down"),
            )
            .await;
            return;
        };
        if send(&mut write, &response).await.is_err() {
            return;
        }
    }
}

#[expect(clippy::too_many_arguments, reason = "one subscription's parts")]
async fn subscribe(
    commands: &mpsc::Sender<Command>,
    caller: &Caller,
    role: Role,
    pids: Vec<u32>,
    format: Format,
    color: bool,
    queue: usize,
    read: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    write: &mut tokio::net::unix::OwnedWriteHalf,
) {
    if pids.is_empty() {
        let _ = send(
            write,
            &protocol::error_line("subscribe needs at least one pid"),
        )
        .await;
        return;
    }
    if !matches!(format, Format::Human | Format::Json) {
        // ECS and OCSF carry a sink's envelope (id, sequence, host); subscribers get
        // readable lines or probectl's JSON.
        let _ = send(
            write,
            &protocol::error_line(&format!(
                "subscribers get format human or json, not {}",
                format.name()
            )),
        )
        .await;
        return;
    }
    let uid_only = (role != Role::Root).then_some(caller.uid);
    if let Some(uid) = uid_only
        && let Some(pid) = pids.iter().find(|&&p| access::process_uid(p) != Some(uid))
    {
        let _ = send(
            write,
            &protocol::error_line(&format!(
                "permission denied: process {pid} does not exist or does not belong to uid {uid}; members of the group may watch only their own processes"
            )),
        )
        .await;
        return;
    }
    let (out, mut records) = mpsc::channel(queue);
    let Some(result) = ask(commands, |reply| Command::Subscribe {
        pids,
        uid_only,
        format,
        color,
        out,
        reply,
    })
    .await
    else {
        return;
    };
    let (id, ack) = match result {
        Ok((id, watched)) => (
            id,
            protocol::ok_line(serde_json::json!({ "subscribed": watched })),
        ),
        Err(err) => {
            let _ = send(write, &protocol::error_line(&err)).await;
            return;
        }
    };
    if send(write, &ack).await.is_err() {
        return;
    }
    // Stream until the loop drops us (lagging, shutdown) or the client hangs up.
    let mut scratch = Vec::new();
    loop {
        tokio::select! {
            line = records.recv() => match line {
                Some(line) => if send(write, &line).await.is_err() { return },
                None => return,
            },
            n = read.read_until(b'\n', &mut scratch) => {
                // A subscriber may only ask to finish; EOF ends the subscription.
                if matches!(n, Ok(0) | Err(_)) || scratch.len() > MAX_REQUEST_BYTES {
                    return;
                }
                let line = scratch.strip_suffix(b"\n").unwrap_or(&scratch);
                match protocol::parse_request(line) {
                    Ok(Request::Finish {}) => {
                        // The loop sends the report and the end line, then drops
                        // our queue, which ends this loop.
                        if commands.send(Command::Finish { id }).await.is_err() {
                            return;
                        }
                    }
                    _ => {
                        let _ = send(write, &protocol::error_line("a subscribed connection accepts only finish")).await;
                    }
                }
                scratch.clear();
            }
        }
    }
}

/// One request line, or `None` at a clean end of stream. Errors are messages for
/// the client: too long, not finished in time.
async fn read_request(
    read: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
) -> Result<Option<Vec<u8>>, String> {
    let mut line = Vec::new();
    let reading = async {
        loop {
            let chunk = read.fill_buf().await.map_err(|e| e.to_string())?;
            if chunk.is_empty() {
                return Ok(!line.is_empty());
            }
            match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&chunk[..i]);
                    read.consume(i + 1);
                    return Ok(true);
                }
                None => {
                    let n = chunk.len();
                    line.extend_from_slice(chunk);
                    read.consume(n);
                }
            }
            if line.len() > MAX_REQUEST_BYTES {
                return Err(format!(
                    "request is longer than {MAX_REQUEST_BYTES} bytes; closing"
                ));
            }
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, reading).await {
        Ok(Ok(true)) => Ok(Some(line)),
        Ok(Ok(false)) => Ok(None),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "no complete request line within {} s; closing",
            REQUEST_TIMEOUT.as_secs()
        )),
    }
}

async fn ask<T>(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Option<T> {
    let (reply, answer) = oneshot::channel();
    commands.send(make(reply)).await.ok()?;
    answer.await.ok()
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, line: &str) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(line.as_bytes())).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client does not read",
        )),
    }
}
