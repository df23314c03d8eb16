/* Benchmark workloads for `cargo xtask bench`. Each runs its operation N times and
 * prints the elapsed time (elapsed_ns=) and CPU time (cpu_ns=) of the loop alone (not
 * process start-up), so every condition is measured on the same work:
 *
 *   workload open-policy N     open+close /etc/localtime (a path the policy names)
 *   workload open-other N      open+close /dev/null (a path no policy names)
 *   workload write N           write(2) of 64 bytes to /dev/null (the first-bytes
 *                              sensor's hook runs on every write of every process)
 *   workload getenv N          getenv("HTTPS_PROXY")
 *   workload connect N         TCP connect+accept+close on loopback (closed with a reset)
 *   workload read-connect N    getenv("TZ") and getenv("ANTHROPIC_BASE_URL") once, then
 *                              the connect loop (a block rule's sequence holds: the
 *                              connects are judged, to an allowlisted 127.0.0.1)
 *   workload read-refused N    the same reads, then socket+connect to 127.0.0.2:9+close,
 *                              a refused or denied connect (no listener; a block rule
 *                              that excludes only 127.0.0.1 denies it)
 *   workload forkexec N        fork, exec /bin/true, wait
 *   workload spawn N CMD...    fork, exec CMD..., wait (a realistic run: node -e 0)
 *   workload stamp             prints started_ns=<CLOCK_MONOTONIC> at once and exits
 *                              (the moment a watched command's first instruction ran)
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int run_child(char *const argv[]) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) { dup2(devnull, 1); dup2(devnull, 2); }
        execvp(argv[0], argv);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "stamp") == 0) {
        printf("started_ns=%lld\n", now_ns());
        return 0;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: workload MODE N [CMD...]\n");
        return 2;
    }
    const char *mode = argv[1];
    long n = atol(argv[2]);
    volatile long sink = 0;
    int listener = -1;
    struct sockaddr_in addr = { .sin_family = AF_INET };
    int reads = strcmp(mode, "read-connect") == 0 || strcmp(mode, "read-refused") == 0;
    if (reads) {
        sink += getenv("TZ") != NULL;
        sink += getenv("ANTHROPIC_BASE_URL") != NULL;
        if (strcmp(mode, "read-connect") == 0) mode = "connect";
    }
    if (strcmp(mode, "read-refused") == 0) {
        inet_pton(AF_INET, "127.0.0.2", &addr.sin_addr);
        addr.sin_port = htons(9);
    }
    if (strcmp(mode, "connect") == 0) {
        listener = socket(AF_INET, SOCK_STREAM, 0);
        inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
        socklen_t len = sizeof addr;
        if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 64) ||
            getsockname(listener, (struct sockaddr *)&addr, &len)) {
            perror("listener");
            return 1;
        }
    }
    int devnull = -1;
    static const char bytes[64];
    if (strcmp(mode, "write") == 0 && (devnull = open("/dev/null", O_WRONLY)) < 0) {
        perror("/dev/null");
        return 1;
    }
    struct timespec cpu0, cpu1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu0);
    long long start = now_ns();
    for (long i = 0; i < n; i++) {
        if (strcmp(mode, "open-policy") == 0 || strcmp(mode, "open-other") == 0) {
            int fd = open(mode[5] == 'p' ? "/etc/localtime" : "/dev/null", O_RDONLY);
            if (fd >= 0) close(fd);
        } else if (strcmp(mode, "write") == 0) {
            sink += write(devnull, bytes, sizeof bytes);
        } else if (strcmp(mode, "getenv") == 0) {
            sink += getenv("HTTPS_PROXY") != NULL;
        } else if (strcmp(mode, "connect") == 0) {
            int c = socket(AF_INET, SOCK_STREAM, 0);
            if (connect(c, (struct sockaddr *)&addr, sizeof addr) != 0) { perror("connect"); return 1; }
            int s = accept(listener, NULL, NULL);
            /* Closed with a reset (linger 0): no TIME_WAIT is left behind. 5000 of them
             * per run, each kept 60 s, slowed the next runs' ephemeral port searches,
             * so the conditions measured later in a round paid for the earlier ones. */
            struct linger lg = {1, 0};
            setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(c);
            if (s >= 0) close(s);
        } else if (strcmp(mode, "read-refused") == 0) {
            int c = socket(AF_INET, SOCK_STREAM, 0);
            if (connect(c, (struct sockaddr *)&addr, sizeof addr) == 0) {
                fprintf(stderr, "connect to 127.0.0.2:9 succeeded\n");
                return 1;
            }
            close(c);
        } else if (strcmp(mode, "forkexec") == 0) {
            char *const args[] = { "/bin/true", NULL };
            if (run_child(args) != 0) return 1;
        } else if (strcmp(mode, "spawn") == 0 && argc > 3) {
            if (run_child(&argv[3]) != 0) return 1;
        } else {
            fprintf(stderr, "unknown mode %s\n", mode);
            return 2;
        }
    }
    long long elapsed = now_ns() - start;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu1);
    /* The loop's CPU time: under QEMU's -icount (bench_icount) the guest's clocks
     * count instructions, and this excludes what other guest tasks ran meanwhile. */
    printf("elapsed_ns=%lld\ncpu_ns=%lld\n", elapsed,
           (long long)(cpu1.tv_sec - cpu0.tv_sec) * 1000000000LL + (cpu1.tv_nsec - cpu0.tv_nsec));
    return 0;
}
