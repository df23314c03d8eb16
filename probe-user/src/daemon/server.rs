//! The daemon's control socket: accepts connections, reads each caller's
//! credentials (`SO_PEERCRED`), parses newline-delimited JSON requests with a size
//! and time limit, checks access, and hands the request to the event loop, which
//! owns all state. A connection task never blocks the event loop: replies come
//! back on a oneshot, subscribed output on a bounded queue the loop fills with
//! `try_send` (a subscriber that falls behind is disconnected, counted).
//!
//! Every read on a connection is bounded (`MAX_REQUEST_BYTES` per line, also on a
//! subscribed connection), connections are limited per user with root exempt
//! (`clients`), and running out of file descriptors makes the accept loop shed
//! idle clients and back off instead of spinning.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::access::{self, Caller, Role};
use super::clients::{Admitted, Clients, Limits, Registration, State};
use super::protocol::{self, MAX_REQUEST_BYTES, REQUEST_TIMEOUT, Request, WRITE_TIMEOUT};
use crate::output::Format;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf, UCred};
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
        details: bool,
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
    /// Connections admitted.
    pub connections: u64,
    /// Callers who may not use the socket (not root, not in the group).
    pub refused: u64,
    pub bad_requests: u64,
    pub timed_out: u64,
    /// New connections refused because their user holds too many already, or the
    /// daemon had no file descriptor to spare (root is never refused for either).
    pub refused_busy: u64,
    /// Idle connections of non-root users closed to make room.
    pub shed_idle: u64,
    /// `accept` failures, out of file descriptors above all.
    pub accept_errors: u64,
    /// Connections open now.
    pub open: OpenClients,
}

/// The connections open now, read from the accept loop's table when shown.
#[derive(Debug, Default, Clone)]
pub struct OpenClients(Option<Clients>);

impl serde::Serialize for OpenClients {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (root, others) = self.0.as_ref().map_or((0, 0), Clients::counts);
        serde::Serialize::serialize(&serde_json::json!({"root": root, "others": others}), s)
    }
}

pub type SharedStats = std::sync::Arc<std::sync::Mutex<SocketStats>>;

fn count(stats: &SharedStats, f: impl FnOnce(&mut SocketStats)) {
    if let Ok(mut s) = stats.lock() {
        f(&mut s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot create the socket directory {}: {source}", dir.display())]
    Directory {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another daemon already listens on {}\n  hint: `probectl status` talks to it; stop it first (systemctl stop probectl)",
        .0.display()
    )]
    InUse(PathBuf),
    #[error("cannot listen on {}: {source}", path.display())]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot give {} to gid {gid}: {source}", path.display())]
    Group {
        path: PathBuf,
        gid: u32,
        source: nix::Error,
    },
}

/// Binds the socket: the directory is created if missing, a stale socket from a
/// crashed daemon is replaced, and the mode is 0660 with the daemon's group, so
/// the kernel already keeps out everyone but root and the group.
pub fn bind(path: &Path, group_gid: Option<u32>) -> Result<UnixListener, BindError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| BindError::Directory {
            dir: dir.to_owned(),
            source,
        })?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(BindError::InUse(path.to_owned()));
    }
    let _ = std::fs::remove_file(path);
    let listen = |source| BindError::Listen {
        path: path.to_owned(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(listen)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(listen)?;
    if let Some(gid) = group_gid {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(
            |source| BindError::Group {
                path: path.to_owned(),
                gid,
                source,
            },
        )?;
    }
    Ok(listener)
}

/// First pause of the accept loop when it cannot take a connection, doubled up to
/// `BACKOFF_MAX` while that lasts: a full descriptor table never makes it spin.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Idle connections closed each time `accept` finds no file descriptor.
const SHED_PER_ATTEMPT: usize = 4;

/// What every connection task shares.
#[derive(Clone)]
struct Shared {
    commands: mpsc::Sender<Command>,
    group: String,
    queue: usize,
    stats: SharedStats,
    clients: Clients,
}

pub async fn accept_loop(
    listener: UnixListener,
    commands: mpsc::Sender<Command>,
    group: String,
    queue: usize,
    stats: SharedStats,
) {
    let clients = Clients::new(Limits::default());
    count(&stats, |s| s.open = OpenClients(Some(clients.clone())));
    let shared = Shared {
        commands,
        group,
        queue,
        stats,
        clients,
    };
    // One descriptor kept for the moment the table is full: closing it lets one
    // pending connection in, so root can still be answered when nothing is idle.
    let mut spare = open_spare();
    let mut backoff = BACKOFF_FIRST;
    loop {
        if spare.is_none() {
            spare = open_spare();
        }
        let err = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = BACKOFF_FIRST;
                admit(stream, &shared, false);
                continue;
            }
            Err(err) => err,
        };
        count(&shared.stats, |s| s.accept_errors += 1);
        if out_of_descriptors(&err) {
            let shed = shared.clients.shed_oldest_idle(SHED_PER_ATTEMPT);
            if shed > 0 {
                count(&shared.stats, |s| s.shed_idle += shed as u64);
                // The shed tasks close their sockets when the runtime drops them.
                tokio::time::sleep(BACKOFF_FIRST).await;
                continue;
            }
            if let Some(fd) = spare.take() {
                drop(fd);
                if let Ok((stream, _)) = listener.accept().await {
                    admit(stream, &shared, true);
                }
                continue;
            }
        }
        if backoff == BACKOFF_FIRST {
            tracing::warn!("control socket: cannot accept a connection: {err}; backing off");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn open_spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

fn out_of_descriptors(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Registers a new connection and starts its task, or refuses it at once (one error
/// line, written only if the socket buffer takes it). `last_resort`: it came in on
/// the spare descriptor, which only root may keep.
fn admit(stream: UnixStream, shared: &Shared, last_resort: bool) {
    let Ok(cred) = stream.peer_cred() else {
        return;
    };
    let admitted = if last_resort && cred.uid() != 0 {
        Err("the daemon has no file descriptor to spare; retry later".to_owned())
    } else {
        shared.clients.admit(cred.uid()).map_err(|r| r.to_string())
    };
    let Admitted { registration, shed } = match admitted {
        Ok(admitted) => admitted,
        Err(why) => {
            count(&shared.stats, |s| s.refused_busy += 1);
            let _ = stream.try_write(protocol::error_line(&why).as_bytes());
            return;
        }
    };
    count(&shared.stats, |s| {
        s.connections += 1;
        s.shed_idle += shed as u64;
    });
    let id = registration.id();
    let task_shared = shared.clone();
    let task = tokio::spawn(async move {
        serve(stream, cred, &registration, &task_shared).await;
    });
    shared.clients.set_abort(id, task.abort_handle());
}

async fn serve(stream: UnixStream, cred: UCred, registration: &Registration, shared: &Shared) {
    let stats = &shared.stats;
    // Root needs no group lookup (nor a read of /proc, which may fail when the
    // daemon is out of file descriptors).
    let caller = if cred.uid() == 0 {
        Caller {
            uid: 0,
            gid: cred.gid(),
            pid: cred.pid(),
            groups: Vec::new(),
        }
    } else {
        Caller::new(cred.uid(), cred.gid(), cred.pid())
    };
    let role = caller.role(access::group_gid(&shared.group));
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    if role == Role::Outsider {
        count(stats, |s| s.refused += 1);
        // The refusal answers the first request (read within the usual limits, never
        // parsed), so a client that writes before it reads sees it, not a broken pipe.
        let _ = read_request(&mut read).await;
        let _ = send(
            &mut write,
            &protocol::error_line(&access::refusal(&caller, &shared.group)),
        )
        .await;
        return;
    }
    loop {
        registration.set_state(State::Idle);
        let line = match read_request(&mut read).await {
            Ok(Some(line)) => line,
            Ok(None) => return,
            Err(why) => {
                if why.contains("within") {
                    count(stats, |s| s.timed_out += 1);
                } else {
                    count(stats, |s| s.bad_requests += 1);
                }
                let _ = send(&mut write, &protocol::error_line(&why)).await;
                return;
            }
        };
        registration.set_state(State::Busy);
        let request = match protocol::parse_request(&line) {
            Ok(r) => r,
            Err(err) => {
                count(stats, |s| s.bad_requests += 1);
                if send(&mut write, &protocol::error_line(&err.to_string()))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        let commands = &shared.commands;
        let response = match request {
            Request::Status {} => ask(commands, |reply| Command::Status { reply })
                .await
                .map(|status| protocol::ok_line(serde_json::json!({ "status": status }))),
            Request::PolicyList {} => ask(commands, |reply| Command::PolicyList { reply })
                .await
                .map(|list| protocol::ok_line(serde_json::json!({ "policies": list }))),
            Request::Reload {} if role != Role::Root => Some(protocol::error_line(
                "permission denied: only root may reload the daemon's policy",
            )),
            Request::Reload {} => ask(commands, |reply| Command::Reload { reply })
                .await
                .map(|r| match r {
                    Ok(name) => protocol::ok_line(serde_json::json!({ "policy": name })),
                    Err(err) => protocol::error_line(&format!(
                        "the new policy was refused, the old one stays: {err}"
                    )),
                }),
            Request::Finish {} => Some(protocol::error_line(
                "finish ends a subscription: subscribe first, on this connection",
            )),
            Request::Subscribe {
                pids,
                format,
                color,
                details,
            } => {
                let connection = Connection {
                    read: &mut read,
                    write: &mut write,
                    registration,
                    shared,
                };
                subscribe(connection, &caller, role, pids, format, color, details).await;
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

/// A connection's halves and its place in the table, for `subscribe`.
struct Connection<'a> {
    read: &'a mut BufReader<OwnedReadHalf>,
    write: &'a mut OwnedWriteHalf,
    registration: &'a Registration,
    shared: &'a Shared,
}

async fn subscribe(
    connection: Connection<'_>,
    caller: &Caller,
    role: Role,
    pids: Vec<u32>,
    format: Format,
    color: bool,
    details: bool,
) {
    let Connection {
        read,
        write,
        registration,
        shared,
    } = connection;
    let commands = &shared.commands;
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
    let (out, mut records) = mpsc::channel(shared.queue);
    let Some(result) = ask(commands, |reply| Command::Subscribe {
        pids,
        uid_only,
        format,
        color,
        details,
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
    registration.set_state(State::Subscribed);
    // Stream until the loop drops us (lagging, shutdown) or the client hangs up. What
    // the client sends meanwhile is read under the same line limit as any request:
    // a subscriber that streams bytes without a newline is closed, not buffered.
    let mut scratch = Vec::new();
    loop {
        tokio::select! {
            line = records.recv() => match line {
                Some(line) => if send(write, &line).await.is_err() { return },
                None => return,
            },
            read = read_line_limited(read, &mut scratch, MAX_REQUEST_BYTES) => match read {
                Ok(Line::Complete) => {
                    match protocol::parse_request(&scratch) {
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
                Ok(Line::TooLong) => {
                    count(&shared.stats, |s| s.bad_requests += 1);
                    let _ = send(write, &protocol::error_line(&too_long())).await;
                    return;
                }
                // EOF (or a broken connection) ends the subscription.
                Ok(Line::End) | Err(_) => return,
            }
        }
    }
}

/// How `read_line_limited` stopped.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// `line` holds a whole line, without its newline.
    Complete,
    /// End of stream; `line` holds what came after the last newline.
    End,
    /// The line is longer than the limit; the connection is to be closed.
    TooLong,
}

/// Appends to `line` up to the next newline, keeping at most `max` bytes: a longer
/// line is never buffered. Cancel safe (for `select!`): bytes taken from the socket
/// are in `line` before the next await.
async fn read_line_limited(
    read: &mut BufReader<OwnedReadHalf>,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    loop {
        let chunk = read.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(Line::End);
        }
        let newline = chunk.iter().position(|&b| b == b'\n');
        let take = newline.unwrap_or(chunk.len());
        if line.len() + take > max {
            let n = chunk.len();
            read.consume(n);
            return Ok(Line::TooLong);
        }
        line.extend_from_slice(&chunk[..take]);
        read.consume(take + usize::from(newline.is_some()));
        if newline.is_some() {
            return Ok(Line::Complete);
        }
    }
}

fn too_long() -> String {
    format!("request is longer than {MAX_REQUEST_BYTES} bytes; closing")
}

/// One request line, or `None` at a clean end of stream. Errors are messages for
/// the client: too long, not finished in time.
async fn read_request(read: &mut BufReader<OwnedReadHalf>) -> Result<Option<Vec<u8>>, String> {
    let mut line = Vec::new();
    match tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_line_limited(read, &mut line, MAX_REQUEST_BYTES),
    )
    .await
    {
        Ok(Ok(Line::Complete)) => Ok(Some(line)),
        // A last request without its newline still counts.
        Ok(Ok(Line::End)) => Ok((!line.is_empty()).then_some(line)),
        Ok(Ok(Line::TooLong)) => Err(too_long()),
        Ok(Err(e)) => Err(e.to_string()),
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

async fn send(write: &mut OwnedWriteHalf, line: &str) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(line.as_bytes())).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client does not read",
        )),
    }
}
