//! Every program in the kernel object and where it attaches: one table, so that
//! loading, the status report and the fallback chains agree.

use probe_common::FILE_SYSCALLS;

use super::Family;

pub(super) enum AttachPoint {
    Tracepoint(&'static str, String),
    /// A libc symbol; the library is found at start (see `libc::own_libc`). The
    /// program's own section says whether it is a uprobe or a uretprobe.
    LibcUprobe(&'static str),
    /// A cgroup sock_addr hook (`connect4`, ...), attached at the cgroup v2 root.
    CgroupSockAddr(&'static str),
    /// The cgroup `sock_create` hook, attached at the cgroup v2 root.
    CgroupSockCreate,
    /// The cgroup_skb egress hook, attached at the cgroup v2 root.
    CgroupSkbEgress,
}

pub(super) struct ProgramSpec {
    pub(super) program: String,
    pub(super) family: Family,
    pub(super) point: AttachPoint,
}

/// A tracepoint program; programs are named after their tracepoints.
fn tp(family: Family, category: &'static str, name: &str) -> ProgramSpec {
    ProgramSpec {
        program: name.to_owned(),
        family,
        point: AttachPoint::Tracepoint(category, name.to_owned()),
    }
}

/// A tracepoint program whose name differs from its tracepoint (a second program on
/// the same tracepoint).
fn tp_on(family: Family, category: &'static str, program: &str, tracepoint: &str) -> ProgramSpec {
    ProgramSpec {
        program: program.to_owned(),
        family,
        point: AttachPoint::Tracepoint(category, tracepoint.to_owned()),
    }
}

fn uprobe(family: Family, program: &str, symbol: &'static str) -> ProgramSpec {
    ProgramSpec {
        program: program.to_owned(),
        family,
        point: AttachPoint::LibcUprobe(symbol),
    }
}

/// The env uprobes, (program, libc symbol), attached to every libc in use.
pub(super) const ENV_UPROBES: [(&str, &str); 4] = [
    ("getenv", "getenv"),
    ("getenv_ret", "getenv"),
    ("secure_getenv", "secure_getenv"),
    ("secure_getenv_ret", "secure_getenv"),
];

/// The name of a program that uses `bpf_loop`, or of its bounded-loop twin (see
/// probe-ebpf/src/compat.rs) on kernels without the helper.
fn looped(name: &str, bpf_loop: bool) -> String {
    if bpf_loop {
        name.to_owned()
    } else {
        format!("{name}_bounded")
    }
}

/// Every program in the object and where it attaches. `bpf_loop`: the kernel has
/// the helper (5.17+); without it the programs that use it are replaced by their
/// bounded-loop twins.
pub(super) fn programs(bpf_loop: bool) -> Vec<ProgramSpec> {
    let mut specs = vec![
        tp(Family::Process, "syscalls", "sys_enter_execve"),
        tp(Family::Process, "syscalls", "sys_enter_execveat"),
        tp(Family::Process, "sched", "sched_process_exec"),
        tp(Family::Process, "task", "task_newtask"),
        tp(Family::Process, "syscalls", "sys_enter_exit_group"),
        tp(Family::Process, "sched", "sched_process_exit"),
    ];
    for suffix in FILE_SYSCALLS {
        specs.push(tp(
            Family::Files,
            "syscalls",
            &format!("sys_enter_{suffix}"),
        ));
        let exit = format!("sys_exit_{suffix}");
        specs.push(tp_on(
            Family::Files,
            "syscalls",
            &looped(&exit, bpf_loop),
            &exit,
        ));
    }
    specs.extend([
        tp_on(
            Family::Env,
            "syscalls",
            &looped("sys_enter_execve_env", bpf_loop),
            "sys_enter_execve",
        ),
        tp_on(
            Family::Env,
            "syscalls",
            &looped("sys_enter_execveat_env", bpf_loop),
            "sys_enter_execveat",
        ),
        tp(Family::Env, "syscalls", "sys_enter_mmap"),
        tp(Family::Env, "syscalls", "sys_enter_process_vm_readv"),
        uprobe(Family::Env, "getenv", "getenv"),
        uprobe(Family::Env, "getenv_ret", "getenv"),
        uprobe(Family::Env, "secure_getenv", "secure_getenv"),
        uprobe(Family::Env, "secure_getenv_ret", "secure_getenv"),
        tp(Family::Net, "syscalls", "sys_enter_connect"),
        tp(Family::Net, "syscalls", "sys_exit_connect"),
        tp(Family::Net, "sock", "inet_sock_set_state"),
        tp(Family::Net, "syscalls", "sys_enter_sendto"),
        tp(Family::Net, "syscalls", "sys_enter_sendmsg"),
        tp(Family::Net, "syscalls", "sys_enter_sendmmsg"),
        tp(Family::Net, "syscalls", "sys_exit_sendto"),
        tp(Family::Net, "syscalls", "sys_exit_sendmsg"),
        tp(Family::Net, "syscalls", "sys_exit_sendmmsg"),
        tp(Family::Net, "syscalls", "sys_enter_recvfrom"),
        tp(Family::Net, "syscalls", "sys_exit_recvfrom"),
        tp(Family::Net, "syscalls", "sys_enter_write"),
        tp(Family::Net, "syscalls", "sys_enter_writev"),
    ]);
    specs.extend([
        tp(Family::Host, "syscalls", "sys_enter_newuname"),
        tp(Family::Host, "syscalls", "sys_enter_ioctl"),
        tp_on(
            Family::Host,
            "syscalls",
            "sys_enter_sendto_host",
            "sys_enter_sendto",
        ),
        tp_on(
            Family::Host,
            "syscalls",
            "sys_enter_sendmsg_host",
            "sys_enter_sendmsg",
        ),
    ]);
    for (program, hook) in [
        ("cg_connect4", "connect4"),
        ("cg_connect6", "connect6"),
        ("cg_sendmsg4", "sendmsg4"),
        ("cg_sendmsg6", "sendmsg6"),
    ] {
        specs.push(ProgramSpec {
            program: program.to_owned(),
            family: Family::Net,
            point: AttachPoint::CgroupSockAddr(hook),
        });
    }
    // Block rules on ICMP and raw-socket sends (probe-ebpf/src/raw_send.rs).
    specs.push(ProgramSpec {
        program: "cg_sock_create".to_owned(),
        family: Family::Net,
        point: AttachPoint::CgroupSockCreate,
    });
    specs.push(ProgramSpec {
        program: "cg_raw_egress".to_owned(),
        family: Family::Net,
        point: AttachPoint::CgroupSkbEgress,
    });
    specs
}
