//! The control socket's table of open connections: who holds each one, whether it is
//! waiting for a request (idle) or being served, and how to close it. It keeps root's
//! path open whatever other users do:
//!
//! - each non-root uid may hold `per_uid` connections; a further one is refused at
//!   once (written one error line and closed), so one user cannot take every slot;
//! - all non-root users together may hold `non_root`; when they do, the oldest idle
//!   non-root connection is shed to make room, or the new one is refused;
//! - root is never counted against either limit and never shed;
//! - when the process runs out of file descriptors, the accept loop sheds the oldest
//!   idle non-root connections (`shed_idle`).
//!
//! A connection is idle while it waits for (part of) a request line: it costs a file
//! descriptor and nothing else, and dropping it loses no answer. Subscribed and busy
//! connections are never shed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Non-root connections one uid may hold at once.
pub const MAX_CLIENTS_PER_UID: usize = 32;
/// Non-root connections all users together may hold at once.
pub const MAX_NON_ROOT_CLIENTS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_uid: usize,
    pub non_root: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_uid: MAX_CLIENTS_PER_UID,
            non_root: MAX_NON_ROOT_CLIENTS,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for a request line (or the rest of one).
    Idle,
    /// A request is being answered.
    Busy,
    /// Streaming a subscription.
    Subscribed,
}

/// Why a new connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The uid already holds `per_uid` connections.
    PerUid { uid: u32, limit: usize },
    /// Non-root users hold `non_root` connections and none of them is idle.
    NonRoot { limit: usize },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::PerUid { uid, limit } => write!(
                f,
                "too many connections: uid {uid} already holds {limit}, the most one user may; close one and retry"
            ),
            Refusal::NonRoot { limit } => write!(
                f,
                "too many connections: other users hold {limit}, all busy; retry later"
            ),
        }
    }
}

struct Entry {
    uid: u32,
    state: State,
    /// When the current state began.
    since: Instant,
    /// Closes the connection (its task is dropped with its socket).
    abort: Option<tokio::task::AbortHandle>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    entries: HashMap<u64, Entry>,
}

impl Table {
    fn count(&self, pred: impl Fn(&Entry) -> bool) -> usize {
        self.entries.values().filter(|e| pred(e)).count()
    }

    /// Closes the `n` oldest idle non-root connections; returns how many.
    fn shed_oldest_idle(&mut self, n: usize) -> usize {
        let mut idle: Vec<(Instant, u64)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.uid != 0 && e.state == State::Idle && e.abort.is_some())
            .map(|(id, e)| (e.since, *id))
            .collect();
        idle.sort_unstable();
        let mut shed = 0;
        for (_, id) in idle.into_iter().take(n) {
            // Removed now, so the slot counts as free at once; the task's own
            // `Registration` finds nothing to remove when it is dropped.
            if let Some(entry) = self.entries.remove(&id)
                && let Some(abort) = entry.abort
            {
                abort.abort();
                shed += 1;
            }
        }
        shed
    }
}

/// The table, shared by the accept loop and the connection tasks.
#[derive(Clone, Default)]
pub struct Clients {
    table: Arc<Mutex<Table>>,
    limits: Limits,
}

/// What `admit` did.
#[derive(Debug, PartialEq, Eq)]
pub struct Admitted {
    pub registration: Registration,
    /// Idle connections closed to make room.
    pub shed: usize,
}

impl Clients {
    pub fn new(limits: Limits) -> Self {
        Self {
            table: Arc::default(),
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding this lock cannot leave the table inconsistent (each
        // change is one insert or remove), so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection of `uid`, or says why not.
    pub fn admit(&self, uid: u32) -> Result<Admitted, Refusal> {
        let mut table = self.lock();
        let mut shed = 0;
        if uid != 0 {
            if table.count(|e| e.uid == uid) >= self.limits.per_uid {
                return Err(Refusal::PerUid {
                    uid,
                    limit: self.limits.per_uid,
                });
            }
            if table.count(|e| e.uid != 0) >= self.limits.non_root {
                shed = table.shed_oldest_idle(1);
                if shed == 0 {
                    return Err(Refusal::NonRoot {
                        limit: self.limits.non_root,
                    });
                }
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        table.entries.insert(
            id,
            Entry {
                uid,
                state: State::Idle,
                since: Instant::now(),
                abort: None,
            },
        );
        Ok(Admitted {
            registration: Registration {
                id,
                clients: self.clone(),
            },
            shed,
        })
    }

    /// Closes the `n` oldest idle non-root connections; returns how many.
    pub fn shed_oldest_idle(&self, n: usize) -> usize {
        self.lock().shed_oldest_idle(n)
    }

    /// The handle that closes connection `id`, once its task runs (nothing if the
    /// task has ended already).
    pub fn set_abort(&self, id: u64, abort: tokio::task::AbortHandle) {
        if let Some(entry) = self.lock().entries.get_mut(&id) {
            entry.abort = Some(abort);
        }
    }

    /// Open connections: (root's, everyone else's).
    pub fn counts(&self) -> (usize, usize) {
        let table = self.lock();
        let root = table.count(|e| e.uid == 0);
        (root, table.entries.len() - root)
    }
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (root, others) = self.counts();
        write!(f, "Clients {{ root: {root}, others: {others} }}")
    }
}

/// One connection's place in the table; dropping it (the task ended, or was
/// aborted) frees the place.
pub struct Registration {
    id: u64,
    clients: Clients,
}

impl PartialEq for Registration {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for Registration {}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registration({})", self.id)
    }
}

impl Registration {
    /// The key to `Clients::set_abort`.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn set_state(&self, state: State) {
        if let Some(entry) = self.clients.lock().entries.get_mut(&self.id)
            && entry.state != state
        {
            entry.state = state;
            entry.since = Instant::now();
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.clients.lock().entries.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_uid: usize, non_root: usize) -> Clients {
        Clients::new(Limits { per_uid, non_root })
    }

    /// A task that never ends, so that aborting it is observable.
    fn parked(rt: &tokio::runtime::Runtime) -> tokio::task::JoinHandle<()> {
        rt.spawn(std::future::pending())
    }

    #[test]
    fn one_uid_cannot_take_more_than_its_share_and_root_is_never_counted() {
        let clients = limits(2, 10);
        let a = clients.admit(1000).unwrap();
        let b = clients.admit(1000).unwrap();
        assert_eq!(
            clients.admit(1000),
            Err(Refusal::PerUid {
                uid: 1000,
                limit: 2
            })
        );
        // Another user, and root, still get in.
        let _c = clients.admit(1001).unwrap();
        let roots: Vec<_> = (0..50).map(|_| clients.admit(0).unwrap()).collect();
        assert_eq!(clients.counts(), (50, 3));
        drop((a, b));
        assert_eq!(clients.counts(), (50, 1));
        let _d = clients.admit(1000).unwrap();
        drop(roots);
        assert_eq!(clients.counts(), (0, 2));
    }

    #[test]
    fn when_others_hold_every_slot_the_oldest_idle_one_is_shed() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let clients = limits(10, 3);
        let mut held = Vec::new();
        let mut tasks = Vec::new();
        for uid in [1000, 1001, 1002] {
            let admitted = clients.admit(uid).unwrap();
            let task = parked(&rt);
            clients.set_abort(admitted.registration.id(), task.abort_handle());
            held.push(admitted.registration);
            tasks.push(task);
        }
        // The oldest is busy, the second one subscribed: the third is the one shed.
        held[0].set_state(State::Busy);
        held[1].set_state(State::Subscribed);
        let admitted = clients.admit(1003).unwrap();
        assert_eq!(admitted.shed, 1);
        assert!(rt.block_on(&mut tasks[2]).unwrap_err().is_cancelled());
        assert!(!tasks[0].is_finished() && !tasks[1].is_finished());
        let newcomer = admitted.registration;
        let task = parked(&rt);
        clients.set_abort(newcomer.id(), task.abort_handle());
        // Now none is idle: refused.
        newcomer.set_state(State::Busy);
        assert_eq!(clients.admit(1004), Err(Refusal::NonRoot { limit: 3 }));
        // Root is never shed, nor refused.
        let root = clients.admit(0).unwrap().registration;
        let root_task = parked(&rt);
        clients.set_abort(root.id(), root_task.abort_handle());
        newcomer.set_state(State::Idle);
        assert_eq!(clients.shed_oldest_idle(10), 1, "the newcomer only");
        assert!(rt.block_on(task).unwrap_err().is_cancelled());
        assert!(!root_task.is_finished());
        assert_eq!(clients.counts(), (1, 2));
    }
}
