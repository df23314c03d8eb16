//! Loading the kernel object, filling its policy maps, attaching every program, and
//! reporting honestly what attached where.

pub mod block;
mod block_addrs;
mod btf;
mod cgroup_attach;
pub mod chain;
mod elf;
mod env_attach;
pub mod env_objects;
mod error;
pub mod features;
mod file_hooks;
mod file_maps;
mod kernel_maps;
mod libc;
mod load_error;
mod lsm;
mod map_update;
mod node_bins;
mod notes;
mod parallel_load;
mod proc_maps;
mod process_tier;
mod programs;
mod reload;
mod sock_state_tier;
pub mod teardown;
pub mod tracefs;
mod watch_hint;

pub use env_attach::{EnvObjectsStatus, Scanned};
pub use error::SensorError;
pub use file_hooks::{HookOutcome, HookTier};
pub use file_maps::FileResolution;
pub use proc_maps::FileKey;
pub use process_tier::ProcessOutcome;
use programs::{AttachPoint, programs};
pub use reload::PolicyMaps;
pub use sock_state_tier::SockStateOutcome;

use std::path::PathBuf;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{TracePoint, UProbe, uprobe::UProbeScope},
};
use probe_common::{
    DROP_SLOT_NAMES, DROP_SLOTS, MAP_DROPS, MAP_EVENTS, MAP_WATCH_HINT, MAP_WATCHED,
    WATCH_ORIGIN_ROOT, WatchEntry,
};
use serde::Serialize;

use crate::policy::PreparedPolicy;

/// The compiled kernel object, embedded at build time.
static PROBE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe"));

/// Which family of sensors a program belongs to (see docs/architecture.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Process,
    Files,
    Env,
    Net,
    /// Host identity asked of the kernel without a file: uname, SIOCGIFHWADDR,
    /// RTM_GETLINK.
    Host,
}

impl Family {
    /// Every family, in the order reports list them.
    pub const ALL: [Family; 5] = [
        Family::Process,
        Family::Files,
        Family::Env,
        Family::Net,
        Family::Host,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Process => "process",
            Family::Files => "files",
            Family::Env => "env",
            Family::Net => "net",
            Family::Host => "host",
        }
    }
}

/// What happened to one program at start-up; shown in reports and logs.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AttachStatus {
    pub program: String,
    pub family: Family,
    /// e.g. `tracepoint syscalls/sys_enter_openat`, `uprobe /lib/.../libc.so.6:getenv`.
    pub attach_point: String,
    pub attached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Loaded and attached kernel sensors. Dropping it detaches everything.
pub struct Sensors {
    ebpf: Ebpf,
    pub status: Vec<AttachStatus>,
    /// probectl mounted tracefs itself (it was missing).
    pub mounted_tracefs: bool,
    /// RLIMIT_MEMLOCK before probectl raised it, so a command it starts gets the
    /// original limit back instead of inheriting "unlimited".
    pub original_memlock: Option<::libc::rlimit>,
    /// The libc probectl maps; its getenv uprobes are attached at start.
    pub libc: Option<PathBuf>,
    /// The files with lazily attached env uprobes (bounded, released when unused).
    env_objects: env_objects::EnvObjects<env_attach::EnvLink>,
    reaper: env_attach::Reaper,
    /// What probing the kernel found, and each family's place in its fallback chain.
    pub features: features::KernelFeatures,
    pub choices: Vec<chain::SensorChoice>,
    /// Which tier of kernel file hooks is in use (none: the syscall tracepoints alone).
    pub file_hooks: HookOutcome,
    /// Whether the process family runs on its tp_btf tier, or why not.
    pub process_tier: ProcessOutcome,
    /// Whether TCP outcomes come from the raw tracepoint (`sock_state_tier.rs`).
    pub sock_state: SockStateOutcome,
    /// The policy's files on this host (inodes, directories, basenames).
    pub file_index: std::sync::Arc<crate::policy::FileIndex>,
    /// How files are matched beyond the path string.
    pub file_resolution: Option<FileResolution>,
    /// What the policy maps hold (written by `apply_policy`).
    in_force: PolicyMaps,
    /// What `BLOCK_ADDRS` holds, and the names learned to recompute it on reload.
    block_addrs: crate::policy::block_hosts::LearnedAddrs,
    /// The resolvers whose answers `block_addrs` learns from, and the answers refused.
    dns_trust: crate::policy::dns_trust::DnsTrust,
    /// Handled DNS answers whose "done" the kernel map refused (`dns_answer_handled`).
    pub block_dns_done_not_written: u64,
    /// Late block feeds (`feed_block_late`) that could not be written.
    block_late_failed: u64,
    /// The raw-send judges' links, while a block rule naming udp_send is in force.
    raw_links: cgroup_attach::RawJudgeLinks,
    /// Programs whose parallel load failed, with the error: their attach reports it
    /// instead of verifying them a second time.
    load_errors: std::collections::HashMap<String, String>,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// `WATCH_HINT`'s bytes: set for a root before it enters `WATCHED`.
    watch_hint: watch_hint::WatchHint,
}

impl Sensors {
    /// Loads the object, writes the policy into the kernel maps and attaches every
    /// program. Attach failures are recorded in `status`, not fatal, unless nothing
    /// attached at all.
    pub fn load(policy: &PreparedPolicy) -> Result<Self, SensorError> {
        Self::load_without(policy, &[])
    }

    /// `load`, leaving the programs of the `without` families unattached (each is
    /// listed as not attached, with that reason): the self-test uses it to show what
    /// a missing sensor looks like.
    pub fn load_without(policy: &PreparedPolicy, without: &[Family]) -> Result<Self, SensorError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(SensorError::NotRoot);
        }
        let (tracefs_root, mounted_tracefs) = tracefs::ensure_mounted()?;
        let original_memlock = raise_memlock_limit();
        // Read and parsed once for every tier below; dropped at the end of the load.
        let types = btf::KernelTypes::read();
        // (aya's loader parses the BTF once more when it is made: 0.14 has no way
        // around that.)
        let hint_blocks = watch_hint::blocks_for_this_kernel();
        let mut ebpf = EbpfLoader::new()
            .btf(types.aya.as_ref().ok())
            .map_max_entries(MAP_WATCH_HINT, hint_blocks)
            .load(PROBE_OBJECT)
            .map_err(|source| SensorError::Load { source })?;
        // Without it, `watch` could not tell the kernel: no way to run blind.
        let watch_hint = match ebpf.map(MAP_WATCH_HINT) {
            Some(aya::maps::Map::Array(data)) => watch_hint::WatchHint::map(data, hint_blocks)
                .map_err(|source| SensorError::WatchHint { source })?,
            _ => return Err(SensorError::MissingMap(MAP_WATCH_HINT)),
        };
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(err) => {
                tracing::warn!("kernel-side diagnostics unavailable: {err}");
                None
            }
        };
        let own_libc = libc::own_libc();
        let mut env_objects = env_objects::EnvObjects::default();
        if let Some((_, key)) = &own_libc {
            env_objects.add_permanent(*key);
        }
        let mut sensors = Sensors {
            ebpf,
            status: Vec::new(),
            mounted_tracefs,
            original_memlock,
            libc: own_libc.map(|(path, _)| path),
            env_objects,
            reaper: env_attach::Reaper::default(),
            features: features::KernelFeatures {
                features: Vec::new(),
                cgroup2: None,
            },
            choices: Vec::new(),
            file_hooks: HookOutcome::default(),
            process_tier: ProcessOutcome::default(),
            sock_state: SockStateOutcome::default(),
            file_index: std::sync::Arc::clone(&policy.file_index),
            file_resolution: None,
            in_force: PolicyMaps::default(),
            block_addrs: Default::default(),
            dns_trust: Default::default(),
            block_dns_done_not_written: 0,
            block_late_failed: 0,
            raw_links: Default::default(),
            load_errors: std::collections::HashMap::new(),
            logger,
            watch_hint,
        };
        sensors.features = features::probe(&mut sensors.ebpf, &tracefs_root, &types.aya);
        sensors.write_tp_offsets(&tracefs_root)?;
        sensors.file_resolution = Some(sensors.write_kernel_offsets(&types)?);
        sensors.apply_policy(policy)?;
        // Before the rest: while the tp_btf tier is in use, the tracepoints it
        // replaces are neither loaded nor attached.
        sensors.process_tier = if without.contains(&Family::Process) {
            ProcessOutcome {
                tp_btf: Err("left out on request (without process)".to_owned()),
            }
        } else {
            sensors.attach_process_tier(&types)
        };
        sensors.sock_state = if without.contains(&Family::Net) {
            SockStateOutcome {
                raw: Err("left out on request (without net)".to_owned()),
            }
        } else {
            sensors.attach_sock_state_tier(&types)
        };
        sensors.attach_all(without);
        sensors.sync_raw_judges();
        if !without.contains(&Family::Env) {
            sensors.attach_node_binaries_at_start();
        }
        sensors.file_hooks = if without.contains(&Family::Files) {
            HookOutcome::default()
        } else {
            sensors.attach_file_hooks(&types)?
        };
        sensors.choices = chain::choices(
            &sensors.features,
            &sensors.status,
            &sensors.file_hooks,
            &sensors.process_tier,
        );
        if !sensors.status.iter().any(|s| s.attached) {
            let detail = sensors
                .status
                .iter()
                .map(|s| {
                    format!(
                        "  {}: {}",
                        s.attach_point,
                        s.error.as_deref().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            return Err(SensorError::NothingAttached(detail));
        }
        Ok(sensors)
    }

    fn attach_all(&mut self, without: &[Family]) {
        let libc = self.libc.clone();
        let bpf_loop = self.features.has(features::BPF_LOOP);
        // Without bpf_loop the exec-environment twins scan by tail calls into
        // exec_env_next; if that cannot be set up, they report why.
        let chain_error = if bpf_loop || without.contains(&Family::Env) {
            None
        } else {
            self.load_env_scan_chain().err()
        };
        // The sendmmsg exit looks at one message per tail call into sendmmsg_next;
        // without it the exit still reports the hooks' destinations, not the names
        // in DNS queries.
        if !without.contains(&Family::Net)
            && let Err(err) = self.load_tail_chain("sendmmsg_next", "SEND_MMSG_NEXT")
        {
            tracing::warn!(
                "the DNS names of sendmmsg messages will not be read: {err} (their destinations still are)"
            );
        }
        let (specs, left_out): (Vec<_>, Vec<_>) = programs(bpf_loop)
            .into_iter()
            .filter(|s| {
                !self.process_tier.replaces(&s.program) && !self.sock_state.replaces(&s.program)
            })
            .partition(|s| !without.contains(&s.family));
        for spec in left_out {
            self.status.push(AttachStatus {
                program: spec.program,
                family: spec.family,
                attach_point: "none".to_owned(),
                attached: false,
                error: Some(format!(
                    "left out on request (without {})",
                    spec.family.as_str()
                )),
            });
        }
        let names: Vec<String> = specs.iter().map(|s| s.program.clone()).collect();
        self.load_errors =
            parallel_load::load_all(&mut self.ebpf, &names, parallel_load::threads());
        for spec in specs {
            let (attach_point, result) = match &spec.point {
                AttachPoint::Tracepoint(category, name) => (
                    format!("tracepoint {category}/{name}"),
                    match &chain_error {
                        Some(err) if spec.program.ends_with("_env_bounded") => Err(err.clone()),
                        _ => self.attach_tracepoint(&spec.program, category, name),
                    },
                ),
                AttachPoint::LibcUprobe(symbol) => match &libc {
                    Some(path) => (
                        format!(
                            "{} {}:{symbol}",
                            if spec.program.ends_with("_ret") {
                                "uretprobe"
                            } else {
                                "uprobe"
                            },
                            path.display()
                        ),
                        self.attach_uprobe(&spec.program, symbol, path.clone()),
                    ),
                    None => (
                        format!("uprobe libc:{symbol}"),
                        Err("no libc found in /proc/self/maps".to_owned()),
                    ),
                },
                AttachPoint::CgroupSockAddr(hook) => self.at_cgroup_root(&spec.program, hook),
                // Attached while a block rule naming udp_send is in force (`sync_raw_judges`).
                AttachPoint::CgroupSockCreate => self.load_raw_judge(&spec.program, "sock_create"),
                AttachPoint::CgroupSkbEgress => self.load_raw_judge(&spec.program, "skb egress"),
            };
            if let Err(err) = &result {
                tracing::warn!(
                    "sensor {} not attached at {attach_point}: {err}",
                    spec.program
                );
            }
            self.status.push(AttachStatus {
                program: spec.program,
                family: spec.family,
                attach_point,
                attached: result.is_ok(),
                error: result.err(),
            });
        }
    }

    fn attach_tracepoint(
        &mut self,
        program: &str,
        category: &str,
        name: &str,
    ) -> Result<(), String> {
        if let Some(err) = self.load_errors.get(program) {
            return Err(err.clone());
        }
        let prog = self
            .ebpf
            .program_mut(program)
            .ok_or("program missing from the object")?;
        let prog: &mut TracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
        // Normally verified already, in parallel (`parallel_load`).
        if prog.fd().is_err() {
            prog.load()
                .map_err(|e| load_error::load_error(program, &e))?;
        }
        prog.attach(category, name)
            .map_err(|e| format!("attach: {e:#}"))?;
        Ok(())
    }

    /// Loads `exec_env_next` and puts it in slot 0 of `ENV_SCAN_NEXT`, where the
    /// exec-environment programs of kernels without bpf_loop tail-call it.
    fn load_env_scan_chain(&mut self) -> Result<(), String> {
        self.load_tail_chain("exec_env_next", "ENV_SCAN_NEXT")
    }

    /// Loads `program` and puts it in slot 0 of the program array `map`: the next
    /// step of a chain of tail calls (the exec-environment scan before 5.17, the
    /// messages of a sendmmsg exit).
    fn load_tail_chain(&mut self, program: &str, map: &str) -> Result<(), String> {
        let prog = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| format!("{program} missing from the object"))?;
        let prog: &mut TracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|e| format!("{program}: {}", load_error::load_error(program, &e)))?;
        }
        let fd = prog
            .fd()
            .map_err(|e| format!("{program}: {e}"))?
            .try_clone()
            .map_err(|e| format!("{program}: {e}"))?;
        let array = self
            .ebpf
            .map_mut(map)
            .ok_or_else(|| format!("{map} missing from the object"))?;
        let mut array =
            aya::maps::ProgramArray::try_from(array).map_err(|e| format!("{map}: {e}"))?;
        array.set(0, &fd, 0).map_err(|e| format!("{map}: {e}"))
    }

    fn attach_uprobe(
        &mut self,
        program: &str,
        symbol: &str,
        target: PathBuf,
    ) -> Result<(), String> {
        if let Some(err) = self.load_errors.get(program) {
            return Err(err.clone());
        }
        let prog = self
            .ebpf
            .program_mut(program)
            .ok_or("program missing from the object")?;
        let prog: &mut UProbe = prog.try_into().map_err(|e| format!("{e}"))?;
        // Lazily attached libcs reuse the loaded program.
        if prog.fd().is_err() {
            prog.load()
                .map_err(|e| load_error::load_error(program, &e))?;
        }
        prog.attach(symbol, &target, UProbeScope::AllProcesses)
            .map_err(|e| format!("attach: {e:#}"))?;
        Ok(())
    }

    /// The kernel's watched set.
    fn watched_map(
        &mut self,
    ) -> Result<HashMap<&mut aya::maps::MapData, u32, WatchEntry>, SensorError> {
        HashMap::try_from(self.map(MAP_WATCHED)?).map_err(map_err(MAP_WATCHED))
    }

    /// Adds a root process to the kernel's watched set. Its descendants are added by
    /// the kernel at fork.
    pub fn watch(&mut self, tgid: u32) -> Result<(), SensorError> {
        let entry = WatchEntry {
            origin: WATCH_ORIGIN_ROOT,
            parent_tgid: 0,
            // Set by the kernel at the root's next exec (`probectl run`); a process
            // already running (`watch`) has its `~/` matched only against passwd homes.
            ..WatchEntry::default()
        };
        // First: the kernel's hooks skip a tgid whose hint byte is clear.
        self.watch_hint.mark(tgid);
        self.watched_map()?
            .insert(tgid, entry, 0)
            .map_err(map_err(MAP_WATCHED))
    }

    /// Whether the kernel's hooks would look `tgid` up in the watched set (tests).
    pub fn watch_hint_set(&self, tgid: u32) -> bool {
        self.watch_hint.is_marked(tgid)
    }

    /// Removes a process from the kernel's watched set (a subscription ended). Its
    /// children forked from now on are not watched; those forked before keep their
    /// own entries until the caller removes them too.
    pub fn unwatch(&mut self, tgid: u32) -> Result<(), SensorError> {
        self.watched_map()?
            .remove(&tgid)
            .map_err(map_err(MAP_WATCHED))
    }

    /// Takes the event ring buffer; call once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, SensorError> {
        let map = self
            .ebpf
            .take_map(MAP_EVENTS)
            .ok_or(SensorError::MissingMap(MAP_EVENTS))?;
        RingBuf::try_from(map).map_err(|source| SensorError::Map {
            map: MAP_EVENTS,
            source,
        })
    }

    /// Kernel drop counters summed over CPUs, by reason, including zeros.
    pub fn drops(&self) -> Result<Vec<(&'static str, u64)>, SensorError> {
        let map = self
            .ebpf
            .map(MAP_DROPS)
            .ok_or(SensorError::MissingMap(MAP_DROPS))?;
        let array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|source| SensorError::Map {
                map: MAP_DROPS,
                source,
            })?;
        DROP_SLOT_NAMES
            .iter()
            .filter(|(slot, _)| *slot < DROP_SLOTS)
            .map(|&(slot, name)| {
                let per_cpu = array.get(&slot, 0).map_err(|source| SensorError::Map {
                    map: MAP_DROPS,
                    source,
                })?;
                Ok((name, per_cpu.iter().sum()))
            })
            // Slots with no name are not in use by this build.
            .filter(|slot| !matches!(slot, Ok(("", _))))
            .collect()
    }

    /// Forwards pending kernel-side diagnostics (aya-log) to tracing.
    pub fn flush_kernel_logs(&mut self) {
        if let Some(logger) = &mut self.logger {
            logger.flush();
        }
    }

    /// Sensors that did not attach, for "partial" markers in reports: at start, and
    /// on the lazily attached files in use.
    pub fn unattached(&self) -> impl Iterator<Item = &AttachStatus> {
        self.status
            .iter()
            .filter(|s| !s.attached)
            .chain(self.env_unattached())
    }
}

/// Raises RLIMIT_MEMLOCK to unlimited and returns the previous limit. Kernels since
/// 5.11 account BPF memory to the cgroup and ignore the limit; older ones need it
/// raised. Failure only matters on those, where loading will say so.
/// Turns an aya map error into ours, naming the map.
pub(super) fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> SensorError {
    move |source| SensorError::Map { map, source }
}

impl Sensors {
    /// One of the object's maps, by its `probe_common::MAP_*` name.
    pub(super) fn map(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, SensorError> {
        self.ebpf.map_mut(name).ok_or(SensorError::MissingMap(name))
    }
}

/// An error and its sources, so an attach failure names the errno.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn raise_memlock_limit() -> Option<::libc::rlimit> {
    let mut previous = ::libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit calls with valid pointers.
    if unsafe { ::libc::getrlimit(::libc::RLIMIT_MEMLOCK, &mut previous) } != 0 {
        return None;
    }
    let unlimited = ::libc::rlimit {
        rlim_cur: ::libc::RLIM_INFINITY,
        rlim_max: ::libc::RLIM_INFINITY,
    };
    let _ = unsafe { ::libc::setrlimit(::libc::RLIMIT_MEMLOCK, &unlimited) };
    Some(previous)
}
