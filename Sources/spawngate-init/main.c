// spawngate-init: pid 1 of an agent's own pid namespace. `cspawn_start` (Sources/CSpawn/cspawn.c) makes the
// namespaces, the agent's /proc, stdio and descriptors in a child that shares the gateway's memory only until it
// execs this program; from here on nothing of the gateway is in the agent's namespace. This program starts the
// agent (the last steps before its exec: limits, cwd, capabilities, no_new_privs, Landlock, seccomp), then only
// forwards signals and reaps until the agent's own process exits, with its status.
//
// Its arguments come from cspawn_start, never from a person (see build_init_argv there):
//
//   spawngate-init EP CWDFD LANDLOCKFD SELFFD ENVFD CWD CWDSLOT DROPCAPS FILTER NRLIMITS [RES VALUE]...
//                  NARGV PATH ARGV[0..NARGV-1]
//
// EP is the error pipe (a failure is written there as {stage, errno}), CWDFD the approved directory, LANDLOCKFD
// a ruleset or -1, SELFFD this program's own descriptor (closed at once), ENVFD a sealed memfd with the agent's
// environment (NUL-separated: never in argv, which anyone on the machine can read), CWDSLOT a number to leave the
// cwd descriptor at or -1, FILTER the seccomp program in hex or "-", then the agent's program and arguments. This
// program's own environment is empty and it is linked statically: nothing of the agent's environment
// (LD_PRELOAD, GLIBC_TUNABLES) reaches a loader outside the sandbox. Only system calls and libc; no allocation
// after the agent starts.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

// The stages of cspawn.h's enum cspawn_stage that happen here (the same numbers).
enum { STAGE_FORK = 1, STAGE_SIGNALS = 2, STAGE_CLOSE_FDS = 5, STAGE_RLIMIT = 6, STAGE_CHDIR = 7,
       STAGE_CWD_CHANGED = 8, STAGE_NO_NEW_PRIVS = 9, STAGE_LANDLOCK = 10, STAGE_SECCOMP = 11, STAGE_EXEC = 12,
       STAGE_CAPS = 14, STAGE_INIT = 15 };

static void report(int fd, int stage) {
    int msg[2] = { stage, errno };
    ssize_t n = write(fd, msg, sizeof msg);
    (void)n;
    _exit(127);
}

static int close_from(unsigned lo) {
    if (syscall(SYS_close_range, lo, ~0U, 0) == 0) return 0;
    if (errno != ENOSYS) return -1;
    for (unsigned fd = lo; fd < 65536; fd++) close((int)fd);
    return 0;
}

static int number(const char *s, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

struct agent {
    int ep, cwd_fd, landlock_fd, cwd_slot, drop_caps, n_rlimits;
    const char *cwd, *path;
    char **argv, **envp;
    struct rlimit limits[16];
    int resources[16];
    struct sock_fprog filter;
};

// The agent: a vfork child of this init, so only system calls until execve.
static void agent_main(const struct agent *a) {
    int ep = a->ep;
    sigset_t none; sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) != 0) report(ep, STAGE_SIGNALS);
    for (int i = 0; i < a->n_rlimits; i++)
        if (setrlimit(a->resources[i], &a->limits[i]) != 0) report(ep, STAGE_RLIMIT);
    // The approved directory, by the descriptor the Landlock rule was made from: whatever its path names now,
    // the fence and the working directory are the same object.
    if (fchdir(a->cwd_fd) != 0) report(ep, STAGE_CHDIR);
    // It must still be where the decision found it: getcwd(2) names where we really are.
    char here[4096];
    long n = syscall(SYS_getcwd, here, sizeof here);
    if (n <= 0 || strcmp(here, a->cwd) != 0) { errno = ESTALE; report(ep, STAGE_CWD_CHANGED); }
    if (a->cwd_slot >= 0 && dup2(a->cwd_fd, a->cwd_slot) < 0) report(ep, STAGE_CHDIR);
    if (a->drop_caps) {
        // Root without capabilities: no CAP_SYS_PTRACE to read other processes, no CAP_DAC_OVERRIDE to read other
        // users' files; the empty bounding set keeps exec from granting them back.
        for (int cap = 0; cap < 64; cap++)
            if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) report(ep, STAGE_CAPS);
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) report(ep, STAGE_CAPS);
        struct { uint32_t version; int pid; } hdr = { 0x20080522 /* _LINUX_CAPABILITY_VERSION_3 */, 0 };
        struct { uint32_t effective, permitted, inheritable; } data[2];
        memset(data, 0, sizeof data);
        if (syscall(SYS_capset, &hdr, data) != 0) report(ep, STAGE_CAPS);
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) report(ep, STAGE_NO_NEW_PRIVS);
    if (a->landlock_fd >= 0 && syscall(SYS_landlock_restrict_self, a->landlock_fd, 0) != 0) report(ep, STAGE_LANDLOCK);
    if (a->filter.len && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &a->filter, 0, 0) != 0) report(ep, STAGE_SECCOMP);
    execve(a->path, a->argv, a->envp);
    report(ep, STAGE_EXEC);
}

// The agent's environment from the memfd `fd`: NUL-separated strings, as a NULL-terminated array.
static char **read_environment(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 0 || st.st_size > (64 << 20)) return NULL;
    size_t size = (size_t)st.st_size;
    char *text = malloc(size + 1);
    if (!text) return NULL;
    size_t off = 0;
    while (off < size) {
        ssize_t n = pread(fd, text + off, size - off, (off_t)off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return NULL;
        off += (size_t)n;
    }
    text[size] = 0;
    size_t count = 0;
    for (size_t k = 0; k < size; k++) if (text[k] == 0) count++;
    char **env = malloc((count + 1) * sizeof(char *));
    if (!env) return NULL;
    size_t e = 0;
    for (size_t k = 0; k < size; k += strlen(text + k) + 1) env[e++] = text + k;
    env[e] = NULL;
    return env;
}

static int hexdigit(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int main(int argc, char **argv) {
    // Same uid as the agent: not readable or traceable by it. (exec made this process dumpable again; no agent
    // exists yet in this namespace, and nothing outside it can name this pid but the gateway.)
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    long long v[9];
    struct agent a;
    memset(&a, 0, sizeof a);
    int ep = -1;
    if (argc < 13 || number(argv[1], &v[0]) != 0) _exit(127);
    ep = (int)v[0];
    if (number(argv[2], &v[1]) || number(argv[3], &v[2]) || number(argv[4], &v[3]) || number(argv[5], &v[7]) ||
        number(argv[7], &v[4]) || number(argv[8], &v[5]) || number(argv[10], &v[6]) || v[6] < 0 || v[6] > 16) {
        errno = EINVAL; report(ep, STAGE_INIT);
    }
    a.ep = ep; a.cwd_fd = (int)v[1]; a.landlock_fd = (int)v[2]; a.cwd = argv[6]; a.cwd_slot = (int)v[4];
    a.drop_caps = (int)v[5]; a.n_rlimits = (int)v[6];
    close((int)v[3]);
    a.envp = read_environment((int)v[7]);
    if (!a.envp) report(ep, STAGE_INIT);
    close((int)v[7]);
    int i = 11;
    for (int r = 0; r < a.n_rlimits; r++, i += 2) {
        long long res, val;
        if (i + 1 >= argc || number(argv[i], &res) || number(argv[i + 1], &val)) { errno = EINVAL; report(ep, STAGE_INIT); }
        a.resources[r] = (int)res;
        a.limits[r].rlim_cur = a.limits[r].rlim_max = (rlim_t)val;
    }
    long long nargv;
    if (i + 1 >= argc || number(argv[i], &nargv) || nargv < 1 || i + 2 + nargv != argc) { errno = EINVAL; report(ep, STAGE_INIT); }
    a.path = argv[i + 1];
    a.argv = argv + i + 2;   // ends with ours, NULL
    const char *hex = argv[9];
    if (strcmp(hex, "-") != 0) {
        size_t len = strlen(hex);
        if (len == 0 || len % 16 != 0 || len / 16 > 0xffff) { errno = EINVAL; report(ep, STAGE_INIT); }
        unsigned char *bytes = malloc(len / 2);
        if (!bytes) report(ep, STAGE_INIT);
        for (size_t k = 0; k < len / 2; k++) {
            int hi = hexdigit(hex[2 * k]), lo = hexdigit(hex[2 * k + 1]);
            if (hi < 0 || lo < 0) { errno = EINVAL; report(ep, STAGE_INIT); }
            bytes[k] = (unsigned char)(hi << 4 | lo);
        }
        a.filter.len = (unsigned short)(len / 16);
        a.filter.filter = (struct sock_filter *)bytes;
    }
    // The agent inherits stdio and the descriptors at 3, 4, …; these three close at its exec.
    if (fcntl(ep, F_SETFD, FD_CLOEXEC) != 0 || fcntl(a.cwd_fd, F_SETFD, FD_CLOEXEC) != 0 ||
        (a.landlock_fd >= 0 && fcntl(a.landlock_fd, F_SETFD, FD_CLOEXEC) != 0)) report(ep, STAGE_CLOSE_FDS);
    pid_t agent = vfork();
    if (agent == 0) agent_main(&a);
    if (agent < 0) report(ep, STAGE_FORK);
    // The agent has exec'd (or reported why not, then exited): nothing here is for it any more.
    close_from(3);
    sigset_t wanted; sigemptyset(&wanted);
    const int forwarded[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH };
    for (size_t k = 0; k < sizeof forwarded / sizeof forwarded[0]; k++) sigaddset(&wanted, forwarded[k]);
    sigaddset(&wanted, SIGCHLD);
    // Every signal stays blocked (as cspawn_start left them): they are taken here with sigwaitinfo.
    for (;;) {
        int status;
        pid_t r;
        while ((r = waitpid(-1, &status, WNOHANG)) > 0) {
            // The agent's own process is the agent: when it is gone, so is everything it started (the kernel
            // kills the rest of the namespace when its init exits).
            if (r == agent) _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        }
        if (r < 0 && errno == ECHILD) _exit(127);
        siginfo_t info;
        int sig = sigwaitinfo(&wanted, &info);
        // Every process of the namespace but this one; only ever as its pid 1 (outside a pid namespace of its
        // own, kill(-1) would reach every process of the user).
        if (sig > 0 && sig != SIGCHLD && getpid() == 1) kill(-1, sig);
    }
}
