//! Probe events (an env lookup, the environment at exec, a file syscall) into probe
//! records: classified by the policy, recorded in the tree's timeline, folded in the
//! stream when a prefix bursts.

use probe_common::{
    ENV_OP_ENUMERATE, ENV_OP_GETENV, EXEC_ENV_VALUE_CAPTURED, EXEC_ENV_VALUE_TRUNCATED, EnvEvent,
    ExecEnvEvent, FileEvent, HostCallEvent, PeerMemoryEvent,
};

use super::{Correlator, fold, paths, probes};
use crate::escape::escape_bytes;
use crate::ops::How;
use crate::policy::own_home::{ExecHomes, HOME_ENV_NAMES, check_home};
use crate::process::ProcessTable;
use crate::records::*;

impl Correlator {
    pub(super) fn on_env(&mut self, e: &EnvEvent, procs: &ProcessTable) -> Option<Record> {
        if e.op == ENV_OP_ENUMERATE {
            let cats = self.classifier.whole_environment_categories();
            if cats.is_empty() {
                return None;
            }
            let seen = Seen {
                how: How::Enumerated,
                result: ProbeResult::Set,
                ..Seen::default()
            };
            return self.probe(
                &e.header,
                cats,
                TargetType::Env,
                "*".to_owned(),
                seen,
                procs,
            );
        }
        let name = escape_bytes(e.name_bytes());
        let cats = self.classifier.env_categories(&name);
        if cats.is_empty() {
            self.case_mismatches += 1;
            return None;
        }
        let how = if e.op == ENV_OP_GETENV {
            How::Getenv
        } else {
            How::SecureGetenv
        };
        let seen = Seen {
            how,
            result: if e.value_present != 0 {
                ProbeResult::Set
            } else {
                ProbeResult::Unset
            },
            truncated: e.name_truncated != 0,
            // The kernel judges a case-sensitive category only for the name written
            // in upper case, and a cut name not at all.
            kernel_fed: e.name_truncated == 0 && !name.bytes().any(|b| b.is_ascii_lowercase()),
            ..Seen::default()
        };
        self.probe(&e.header, cats, TargetType::Env, name, seen, procs)
    }

    /// A host-identity request that reads no file. The target names what was asked
    /// for: the interface of a SIOCGIFHWADDR, `*` for an RTM_GETLINK dump of every
    /// interface, `link` for one, `uname` for uname(2).
    pub(super) fn on_host_call(
        &mut self,
        e: &HostCallEvent,
        procs: &ProcessTable,
    ) -> Option<Record> {
        let call = crate::ops::HostCall::of_kernel(e.call)?;
        let cats = self.classifier.host_call_categories(call);
        if cats.is_empty() {
            return None;
        }
        /// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`).
        const NLM_F_DUMP: u32 = 0x300;
        let target = match call {
            crate::ops::HostCall::Uname => "uname".to_owned(),
            crate::ops::HostCall::Siocgifhwaddr => escape_bytes(e.ifname_bytes()),
            crate::ops::HostCall::RtmGetlink if e.flags & NLM_F_DUMP == NLM_F_DUMP => {
                "*".to_owned()
            }
            crate::ops::HostCall::RtmGetlink => "link".to_owned(),
        };
        let seen = Seen {
            how: call.how(),
            result: ProbeResult::Issued,
            ..Seen::default()
        };
        self.probe(&e.header, cats, TargetType::Host, target, seen, procs)
    }

    /// process_vm_readv of another process: its environment may have been read. The
    /// categories that count other processes' environments (`proc_environ`) get it;
    /// the target names the process (`pid:<N>`).
    pub(super) fn on_peer_memory(
        &mut self,
        e: &PeerMemoryEvent,
        procs: &ProcessTable,
    ) -> Option<Record> {
        let cats = self.classifier.whole_environment_categories();
        if cats.is_empty() {
            return None;
        }
        let seen = Seen {
            how: How::ProcessVmReadv,
            result: ProbeResult::Issued,
            kernel_fed: false,
            ..Seen::default()
        };
        let target = format!("pid:{}", e.target_pid);
        self.probe(&e.header, cats, TargetType::Env, target, seen, procs)
    }

    /// A policy env name handed to the new program by exec. Timed at the exec, since
    /// that is when the program received it.
    pub(super) fn on_env_at_exec(
        &mut self,
        e: &ExecEnvEvent,
        exec_ktime: u64,
        procs: &ProcessTable,
    ) -> Option<Record> {
        let name = escape_bytes(e.name_bytes());
        let cats = self.classifier.env_categories(&name);
        if cats.is_empty() {
            // The built-in home names come whatever the policy names (`exec_homes`).
            if !HOME_ENV_NAMES.iter().any(|h| h.eq_ignore_ascii_case(&name)) {
                self.case_mismatches += 1;
            }
            return None;
        }
        let shown = e.flags & EXEC_ENV_VALUE_CAPTURED != 0 && self.classifier.shows_value_of(&name);
        let value_prefix = shown.then(|| {
            let cut = e.flags & EXEC_ENV_VALUE_TRUNCATED != 0;
            let mut v = redact_userinfo(&escape_bytes(e.value_bytes()), cut);
            if cut {
                v.push('…');
            }
            v
        });
        // Passed down unchanged: the parent had it at its exec, with the same value.
        let ppid = procs.get(e.header.tgid).map_or(0, |p| p.ppid);
        let inherited = self.values.exposed(ppid, &name, value_prefix.as_deref());
        self.values
            .insert(e.header.tgid, &name, value_prefix.as_deref().unwrap_or(""));
        let seen = Seen {
            how: How::PresentAtExec,
            result: ProbeResult::Set,
            inherited,
            value_prefix,
            ..Seen::default()
        };
        let header = probe_common::EventHeader {
            ktime_ns: exec_ktime,
            ..e.header
        };
        self.probe(&header, cats, TargetType::Env, name, seen, procs)
    }

    /// The process's own homes from its environment at exec (the built-in names the
    /// kernel always reports with their value), checked; a value that cannot place
    /// `~/` is counted (`homes_unusable`).
    pub(super) fn exec_homes(
        &mut self,
        at_exec: &std::collections::BTreeMap<Vec<u8>, ExecEnvEvent>,
    ) -> ExecHomes {
        let mut homes = ExecHomes::default();
        for (name, slot) in [
            (HOME_ENV_NAMES[0], &mut homes.home),
            (HOME_ENV_NAMES[1], &mut homes.xdg_config_home),
        ] {
            // Exact case: `home=` is not where the process's libc looks.
            let Some(e) = at_exec.get(name.as_bytes()) else {
                continue;
            };
            if e.flags & EXEC_ENV_VALUE_CAPTURED == 0 {
                continue;
            }
            let value = String::from_utf8_lossy(e.value_bytes());
            match check_home(&value, e.flags & EXEC_ENV_VALUE_TRUNCATED != 0) {
                Ok(home) => *slot = Some(home.into()),
                Err(why) => {
                    tracing::debug!(pid = e.header.tgid, "{name} does not place ~/: {why}");
                    self.homes_unusable += 1;
                }
            }
        }
        homes
    }

    pub(super) fn on_file(&mut self, e: &FileEvent, procs: &ProcessTable) -> Option<Record> {
        let given = escape_bytes(e.path_bytes());
        let homes = procs
            .get(e.header.tgid)
            .map(|p| p.homes.clone())
            .unwrap_or_default();
        let resolved = match paths::resolve(e, &given, &self.file_index, &self.classifier, &homes) {
            paths::Resolution::Found(resolved) => resolved,
            paths::Resolution::NoMatch => return None,
            paths::Resolution::Unresolvable => {
                self.unresolved_paths += 1;
                return None;
            }
        };
        if crate::policy::is_own_proc_mem(&resolved.path, e.header.tgid) {
            // A process reading its own memory probes nobody's environment.
            return None;
        }
        let cats = self.classifier.path_categories_for(&resolved.path, &homes);
        if cats.is_empty() {
            self.unclassified_paths += 1;
            return None;
        }
        if e.path_truncated != 0 {
            *self.truncated.entry("file_path").or_default() += 1;
        }
        let Some(how) = How::of_file_op(e.op) else {
            // The decoder checks sizes, not values: an op this build does not know
            // means kernel and userspace differ.
            self.unknown_file_ops += 1;
            return None;
        };
        let result = ProbeResult::of_syscall(e.ret);
        let seen = Seen {
            how,
            result,
            truncated: e.path_truncated != 0,
            // A hook's own event names the file's last component, not a path given.
            given_path: (given != resolved.path && e.op < probe_common::FILE_OP_HOOK_OPEN)
                .then_some(given),
            resolved_by: resolved.resolved_by,
            // Basename and own-home candidates are decided here; a path glob's
            // categories are not in the kernel's path entries (feeding twice only
            // writes the same time again).
            kernel_fed: match e.matched_by {
                probe_common::FILE_MATCH_INODE | probe_common::FILE_MATCH_HOOK => true,
                probe_common::FILE_MATCH_PATH => {
                    !self.classifier.glob_adds_category(&resolved.path)
                }
                _ => false,
            },
            ..Seen::default()
        };
        self.probe(
            &e.header,
            cats,
            TargetType::File,
            resolved.path,
            seen,
            procs,
        )
    }

    fn probe(
        &mut self,
        header: &probe_common::EventHeader,
        mut cats: Vec<usize>,
        target_type: TargetType,
        target: String,
        seen: Seen,
        procs: &ProcessTable,
    ) -> Option<Record> {
        let (ktime_ns, pid, tid, how) = (header.ktime_ns, header.tgid, header.tid, seen.how);
        // Categories that limit their operations drop the others.
        cats.retain(|&c| self.classifier.counts(c, how));
        if cats.is_empty() {
            self.operation_not_counted += 1;
            return None;
        }
        // Before the timeline's de-duplication: a repeated read refreshes its time.
        if !seen.kernel_fed {
            self.feed_late(pid, &cats, how, ktime_ns);
        }
        let tree = procs.tree_of(pid);
        let fold_prefix = match target_type {
            TargetType::File => self.classifier.fold_prefix(&target),
            TargetType::Env | TargetType::Host => None,
        };
        match self.timelines.record(
            tree,
            target_type,
            how,
            &target,
            &cats,
            fold_prefix,
            pid,
            ktime_ns,
        ) {
            probes::Recorded::New => {}
            probes::Recorded::Repeat | probes::Recorded::Dropped => return None,
        }
        let categories: Vec<String> = cats
            .iter()
            .map(|&i| self.category_names[i].clone())
            .collect();
        let (mut target, mut folded) = (target, false);
        if target_type == TargetType::File
            && let Some(prefix) = self.classifier.fold_prefix(&target)
        {
            match self.folder.decide(pid, prefix, &target) {
                fold::StreamDecision::Show => {}
                fold::StreamDecision::StartFold(prefix_target) => {
                    (target, folded) = (prefix_target, true)
                }
                fold::StreamDecision::Suppress => return None,
            }
        }
        let body = Body::Probe(ProbeRecord {
            tid,
            process: procs
                .get(pid)
                .map(|p| p.name().to_owned())
                .unwrap_or_default(),
            categories,
            target_type,
            target,
            how,
            evidence: how.evidence(),
            result: seen.result,
            truncated: seen.truncated,
            folded,
            inherited: seen.inherited,
            value_prefix: seen.value_prefix,
            given_path: seen.given_path,
            resolved_by: seen.resolved_by,
        });
        Some(self.record(ktime_ns, pid, procs, body))
    }
}

/// How a probe was seen and what it got.
struct Seen {
    how: How,
    result: ProbeResult,
    truncated: bool,
    /// An exposure the parent had too.
    inherited: bool,
    value_prefix: Option<String>,
    /// The path as the process wrote it, when it differs from the target.
    given_path: Option<String>,
    /// How a path that was not the target itself was tied to it.
    resolved_by: Option<ResolvedBy>,
    /// The kernel fed block rules from this probe itself; when not, userspace does
    /// (`feed_late`).
    kernel_fed: bool,
}

impl Default for Seen {
    fn default() -> Self {
        Self {
            how: How::Getenv,
            result: ProbeResult::Unset,
            truncated: false,
            inherited: false,
            value_prefix: None,
            given_path: None,
            resolved_by: None,
            kernel_fed: true,
        }
    }
}

/// Hides credentials in a proxy URL: `http://user:pass@proxy:3128` becomes
/// `http://[redacted]@proxy:3128`. A value prefix must never leak a password.
///
/// `cut`: the value is a prefix cut at the capture limit. When the cut falls inside
/// the authority, the `@` that would end a `user:password` may be past it, so what
/// was captured of the authority is hidden whole (`http://[redacted]`): a long
/// password must not show its first bytes because its `@` was not captured.
pub fn redact_userinfo(value: &str, cut: bool) -> String {
    let authority_start = value.find("://").map_or(0, |i| i + 3);
    let rest = &value[authority_start..];
    let authority_end = rest.find('/');
    match rest[..authority_end.unwrap_or(rest.len())].rfind('@') {
        Some(at) => format!("{}[redacted]{}", &value[..authority_start], &rest[at..]),
        None if cut && authority_end.is_none() && !rest.is_empty() => {
            format!("{}[redacted]", &value[..authority_start])
        }
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_userinfo;

    #[test]
    fn a_password_cut_before_its_at_sign_is_not_shown() {
        assert_eq!(
            redact_userinfo("http://user:pw@proxy:3128", false),
            "http://[redacted]@proxy:3128"
        );
        // The first 64 bytes of `http://alice:<long token>@proxy.corp:3128`: the `@`
        // was not captured, the token's first bytes were.
        let prefix = "http://alice:S3cr3tT0kenThatIsLongerThanTheCaptureLimitOfSixty";
        let shown = redact_userinfo(prefix, true);
        assert!(!shown.contains("S3cr3t"), "{shown}");
        assert_eq!(shown, "http://[redacted]");
        // Cut in the path: the authority was captured whole and is shown.
        assert_eq!(
            redact_userinfo("https://relay.example/v1/a-long-path", true),
            "https://relay.example/v1/a-long-path"
        );
        // Not cut: nothing to hide in a value without userinfo.
        assert_eq!(
            redact_userinfo("http://proxy.corp:3128", false),
            "http://proxy.corp:3128"
        );
    }
}
