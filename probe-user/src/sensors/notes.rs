//! What this build cannot see on any kernel, in words: the coverage notes of every
//! report and `doctor`, built from what actually attached.

use super::{HookTier, Sensors};

impl Sensors {
    /// What this build cannot see on any kernel, stated in every report so that a clean
    /// report is not read as "nothing happened". Shrinks as the sensors grow.
    pub fn coverage_notes(&self) -> Vec<String> {
        let libc = self.libc.as_ref().map_or_else(
            || "no libc (none found)".to_owned(),
            |p| p.display().to_string(),
        );
        vec![
            self.process_note(),
            self.env_note(&libc),
            "runtimes that copy the environment at start (Bun, Python, Go) make no getenv call per lookup: for them probectl reports the policy names present in the environment at exec (present_at_exec), not each read; each such CLI's summary says so (its runtime is known from its executable's name or ELF sections)".to_owned(),
            self.files_note(),
            self.net_note(),
        ]
    }

    /// The process family's tier, and the tier passed over with its reason.
    fn process_note(&self) -> String {
        match &self.process_tier.tp_btf {
            Ok(()) => "execs, forks and exits are seen by tp_btf programs on sched_process_exec, task_newtask and sched_process_exit (a group's exit when no thread of it is left alive); argv at the execve/execveat syscall tracepoints".to_owned(),
            Err(why) => format!(
                "execs, forks and exits are seen by the sched/task tracepoints, tp_btf passed over ({why}); argv at the execve/execveat syscall tracepoints"
            ),
        }
    }

    fn env_note(&self, libc: &str) -> String {
        let mut note = format!(
            "getenv/secure_getenv are traced in {libc} from the start, and in every other libc (glibc, musl) a watched process maps, at exec or later (dlopen, dlmopen: seen by its executable mmap), from the moment the mapping is seen, up to {} such files at once (released when no watched process maps them): lookups made before that attach are missed; statically linked programs are not covered (each one's summary says so, and the report is partial for it)",
            self.env_objects.limit()
        );
        let c = &self.env_objects.counts;
        if c.over_limit > 0 {
            note.push_str(&format!(
                "; {} libc files were not attached because {} were (their getenv calls are missed)",
                c.over_limit,
                self.env_objects.limit()
            ));
        }
        if c.not_elf + c.no_getenv > 0 {
            note.push_str(&format!(
                "; {} files named like a libc were not one (not an ELF object for this machine, or no getenv) and got no uprobes",
                c.not_elf + c.no_getenv
            ));
        }
        note
    }

    fn net_note(&self) -> String {
        let cgroup = self
            .status
            .iter()
            .filter(|s| s.attach_point.starts_with("cgroup"))
            .all(|s| s.attached);
        let outcomes = match &self.sock_state.raw {
            Ok(()) => "the raw tracepoint inet_sock_set_state".to_owned(),
            Err(why) => format!(
                "the sock/inet_sock_set_state tracepoint, raw tracepoint passed over ({why})"
            ),
        };
        let base = format!(
            "connects are traced at the connect(2) syscall (IPv4, IPv6, unix; TCP outcomes of non-blocking connects from the socket state, by {outcomes}); UDP sends with a destination and DNS queries/answers on port 53 from sendto/sendmsg/sendmmsg/recvfrom (answers only to a query still pending, from its server), and queries written with write(2) on a socket connected to port 53 (Go's resolver; its answers, read with read(2), are not decoded); the first bytes sent on each connection (write, send/sendto, sendmsg, writev: the first buffer, up to 4 KiB) name it by its TLS server name or HTTP request line, except bytes sent through io_uring, sendmmsg, sendfile or splice"
        );
        if cgroup {
            format!(
                "{base}; IPv4/IPv6 destinations are the kernel's own copy, given by the cgroup v2 sock_addr hooks (also for connects and sends made through io_uring, without a DNS query's name there); unix paths are read from the caller's memory; DNS over TCP or TLS is not decoded"
            )
        } else {
            format!(
                "{base}; the cgroup v2 hooks did not attach, so destinations are read from the caller's memory (a thread can rewrite them during the call) and io_uring connects and sends are missed; DNS over TCP or TLS is not decoded"
            )
        }
    }

    fn files_note(&self) -> String {
        match &self.file_resolution {
            Some(r) if r.by_inode => {
                let mut note = format!(
                    "files are matched by path string and by the file an open or stat reached ({} policy files indexed by inode), so relative, dirfd-relative, `..`, /proc/self/root and symlinked paths are seen; readlink, access and failed calls through such paths are resolved by probectl for exact policy paths only; files created after start are matched by path string only",
                    r.indexed_files
                );
                match self.file_hooks.chosen {
                    Some(tier) => note.push_str(&format!(
                        "; {} file hooks also see opens, readlinks, stats and received files outside those syscalls (io_uring, 32-bit syscalls, open_by_handle_at, SCM_RIGHTS, fstat) and files reached through overlayfs or a hardlinked symlink",
                        match tier {
                            HookTier::Lsm => "BPF-LSM",
                            HookTier::Fentry => "fentry/fexit",
                        }
                    )),
                    None => note.push_str(
                        "; no kernel file hooks: opens outside the traced syscalls are missed (see the files chain's blind spots)",
                    ),
                }
                if r.not_indexed > 0 {
                    note.push_str(&format!(
                        "; at least {} files under policy prefixes were not indexed (map full, or the walk's bound of 16,384 directory entries reached)",
                        r.not_indexed
                    ));
                }
                note
            }
            Some(r) => format!(
                "files are matched by path string only ({}): relative, dirfd-relative and symlinked paths into open or stat are missed",
                r.by_inode_off
                    .as_deref()
                    .unwrap_or("matching by inode is off")
            ),
            None => "files: not loaded".to_owned(),
        }
    }
}
