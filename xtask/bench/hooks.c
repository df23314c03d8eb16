/* Empty BPF programs on the hooks named on the command line, for the hook-cost table
 * of `cargo xtask bench --only hooks` (xtask/src/kernels/icount.rs): what a hook
 * costs by itself, before any program body, next to probectl on the same hooks.
 *
 *   hooks tp:CATEGORY/NAME ...   a tracepoint (through a perf event, as aya does)
 *         raw:NAME ...           a raw tracepoint
 *         cg:connect4 | cg:egress | cg:sockcreate
 *                                a cgroup hook at $CG (default /sys/fs/cgroup)
 *
 * Each program returns at once (0, or 1 = allow for the cgroup hooks). Prints
 * "Attaching" once every program is attached, then waits for a signal. */
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static int load(int type, int attach_type, int ret) {
    struct bpf_insn insns[2] = {
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = ret},
        {.code = BPF_JMP | BPF_EXIT},
    };
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.prog_type = type;
    a.expected_attach_type = attach_type;
    a.insns = (unsigned long)insns;
    a.insn_cnt = 2;
    a.license = (unsigned long)"GPL";
    int prog = syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof a);
    if (prog < 0) {
        perror("BPF_PROG_LOAD");
        exit(1);
    }
    return prog;
}

static void tracepoint(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "/sys/kernel/tracing/events/%s/id", name);
    FILE *f = fopen(path, "r");
    int id;
    if (!f || fscanf(f, "%d", &id) != 1) {
        perror(path);
        exit(1);
    }
    fclose(f);
    int prog = load(BPF_PROG_TYPE_TRACEPOINT, 0, 0);
    struct perf_event_attr pa;
    memset(&pa, 0, sizeof pa);
    pa.type = PERF_TYPE_TRACEPOINT;
    pa.size = sizeof pa;
    pa.config = id;
    pa.sample_period = 1;
    pa.wakeup_events = 1;
    int fd = syscall(SYS_perf_event_open, &pa, -1, 0, -1, 0);
    if (fd < 0 || ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog) || ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)) {
        perror(name);
        exit(1);
    }
}

static void raw_tracepoint(const char *name) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.raw_tracepoint.name = (unsigned long)name;
    a.raw_tracepoint.prog_fd = load(BPF_PROG_TYPE_RAW_TRACEPOINT, 0, 0);
    if (syscall(SYS_bpf, BPF_RAW_TRACEPOINT_OPEN, &a, sizeof a) < 0) {
        perror(name);
        exit(1);
    }
}

static void cgroup(const char *name) {
    int type, attach_type;
    if (!strcmp(name, "connect4")) {
        type = BPF_PROG_TYPE_CGROUP_SOCK_ADDR;
        attach_type = BPF_CGROUP_INET4_CONNECT;
    } else if (!strcmp(name, "egress")) {
        type = BPF_PROG_TYPE_CGROUP_SKB;
        attach_type = BPF_CGROUP_INET_EGRESS;
    } else if (!strcmp(name, "sockcreate")) {
        type = BPF_PROG_TYPE_CGROUP_SOCK;
        attach_type = BPF_CGROUP_INET_SOCK_CREATE;
    } else {
        fprintf(stderr, "unknown cgroup hook %s\n", name);
        exit(2);
    }
    const char *dir = getenv("CG") ? getenv("CG") : "/sys/fs/cgroup";
    int cg = open(dir, O_RDONLY | O_DIRECTORY);
    if (cg < 0) {
        perror(dir);
        exit(1);
    }
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.target_fd = cg;
    a.attach_bpf_fd = load(type, attach_type, 1);
    a.attach_type = attach_type;
    a.attach_flags = BPF_F_ALLOW_MULTI;
    if (syscall(SYS_bpf, BPF_PROG_ATTACH, &a, sizeof a) < 0) {
        perror(name);
        exit(1);
    }
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strncmp(arg, "tp:", 3)) {
            tracepoint(arg + 3);
        } else if (!strncmp(arg, "raw:", 4)) {
            raw_tracepoint(arg + 4);
        } else if (!strncmp(arg, "cg:", 3)) {
            cgroup(arg + 3);
        } else {
            fprintf(stderr, "usage: hooks tp:CATEGORY/NAME | raw:NAME | cg:HOOK ...\n");
            return 2;
        }
    }
    printf("Attaching\n");
    fflush(stdout);
    pause();
    return 0;
}
