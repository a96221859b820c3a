// What Swift cannot do safely: the code between fork and exec (async-signal-safe system calls only, since the
// parent is multithreaded), Landlock's system calls, and libseccomp. Every policy decision is made in Swift
// before this runs; this file only carries it out.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include "cspawn.h"

// linux-libc-dev 6.1 knows Landlock ABI 1-2 only; later rights are defined here (values from the kernel UAPI).
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif

static void report(int fd, int stage) {
    int msg[2] = { stage, errno };
    ssize_t n = write(fd, msg, sizeof msg);
    (void)n;
    _exit(127);
}

static int close_from(int lo, int hi) {
    if (lo > hi) return 0;
    if (syscall(SYS_close_range, (unsigned)lo, (unsigned)hi, 0) == 0) return 0;
    if (errno != ENOSYS) return -1;
    for (int fd = lo; fd <= hi && fd < 65536; fd++) close(fd);
    return 0;
}

struct child_args { const cspawn_spec *spec; int ep; };

// Runs in the child, which shares the parent's memory until execve (CLONE_VM | CLONE_VFORK, as posix_spawn does):
// only system calls and writes to its own stack, never the heap or the parent's variables.
static int child_main(void *arg) {
    const struct child_args *args = arg;
    int ep = args->ep;
    const cspawn_spec *s = args->spec;
    // Signal mask and dispositions are inherited across exec: start the agent from a clean slate. Handlers are
    // reset while every signal is still blocked (the parent blocked them): a handler of the parent must never run
    // here, in its memory.
    struct sigaction dfl; memset(&dfl, 0, sizeof dfl); dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < 65; sig++) if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, NULL);
    sigset_t none; sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) != 0) report(ep, CSPAWN_SIGNALS);
    // A new session and process group: the whole agent can be signalled at once, and it has no terminal
    // unless stdio hands it one.
    if (setsid() < 0) report(ep, CSPAWN_SETSID);
    if (dup2(s->stdin_fd, 0) < 0 || dup2(s->stdout_fd, 1) < 0 || dup2(s->stderr_fd, 2) < 0) report(ep, CSPAWN_STDIO);
    // Descriptors the program inherits go to 3, 4, …: first moved above every target slot (so no source is
    // overwritten before it is copied), then into place, where dup2 clears close-on-exec.
    int first_free = 3 + s->n_pass;
    int high = first_free + 8;
    int moved[8];
    if (s->n_pass > 8) { errno = EINVAL; report(ep, CSPAWN_CLOSE_FDS); }
    if ((ep = fcntl(ep, F_DUPFD_CLOEXEC, high)) < 0) report(args->ep, CSPAWN_CLOSE_FDS);
    int ll = s->landlock_fd >= 0 ? fcntl(s->landlock_fd, F_DUPFD_CLOEXEC, high) : -1;
    if (s->landlock_fd >= 0 && ll < 0) report(ep, CSPAWN_CLOSE_FDS);
    for (int i = 0; i < s->n_pass; i++)
        if ((moved[i] = fcntl(s->pass_fds[i], F_DUPFD_CLOEXEC, high)) < 0) report(ep, CSPAWN_CLOSE_FDS);
    for (int i = 0; i < s->n_pass; i++)
        if (dup2(moved[i], 3 + i) < 0) report(ep, CSPAWN_CLOSE_FDS);
    // Close every other inherited descriptor, keeping only the error pipe and the Landlock ruleset.
    int keep1 = ep, keep2 = ll >= 0 ? ll : ep;
    int a = keep1 < keep2 ? keep1 : keep2, b = keep1 < keep2 ? keep2 : keep1;
    if (close_from(first_free, a - 1) != 0 || (a != b && close_from(a + 1, b - 1) != 0) || close_from(b + 1, ~0U >> 1) != 0)
        report(ep, CSPAWN_CLOSE_FDS);
    for (int i = 0; i < s->n_rlimits; i++) {
        struct rlimit rl = { s->rlimits[i].value, s->rlimits[i].value };
        if (setrlimit(s->rlimits[i].resource, &rl) != 0) report(ep, CSPAWN_RLIMIT);
    }
    if (chdir(s->cwd) != 0) report(ep, CSPAWN_CHDIR);
    // The directory we are in must still be the approved one: a symlink swapped in after the decision
    // would have taken us elsewhere, and getcwd(2) names where we really are.
    char here[4096];
    long n = syscall(SYS_getcwd, here, sizeof here);
    if (n <= 0 || strcmp(here, s->cwd) != 0) { errno = ESTALE; report(ep, CSPAWN_CWD_CHANGED); }
    if (s->cwd_fd_slot >= 0) {
        // The directory just checked, by descriptor: a sandbox that binds it cannot be sent elsewhere by a
        // later swap of the path.
        int d = open(".", O_PATH | O_DIRECTORY);
        if (d < 0) report(ep, CSPAWN_CHDIR);
        if (d != s->cwd_fd_slot) { if (dup2(d, s->cwd_fd_slot) < 0) report(ep, CSPAWN_CHDIR); close(d); }
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) report(ep, CSPAWN_NO_NEW_PRIVS);
    if (ll >= 0) {
        if (syscall(SYS_landlock_restrict_self, ll, 0) != 0) report(ep, CSPAWN_LANDLOCK);
        close(ll);
    }
    if (s->filter) {
        struct sock_fprog prog = { s->filter_len, (struct sock_filter *)s->filter };
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) report(ep, CSPAWN_SECCOMP);
    }
    execve(s->path, s->argv, s->envp);
    report(ep, CSPAWN_EXEC);
    return 127;
}

int cspawn_start(const cspawn_spec *s, pid_t *pid_out, int *stage, int *err) {
    int pipefd[2];
    *stage = CSPAWN_OK; *err = 0;
    if (pipe2(pipefd, O_CLOEXEC) != 0) { *stage = CSPAWN_FORK; *err = errno; return -1; }
    // Not fork(2): copying a large gateway's page tables costs most of a millisecond per agent. The child runs on
    // its own stack in our memory while we wait (CLONE_VFORK), with every signal blocked until it has reset them.
    const size_t stack_size = 256 * 1024;
    void *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) { *stage = CSPAWN_FORK; *err = errno; close(pipefd[0]); close(pipefd[1]); return -1; }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    struct child_args args = { s, pipefd[1] };
    pid_t pid = clone(child_main, (char *)stack + stack_size, CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    munmap(stack, stack_size);
    if (pid < 0) { *stage = CSPAWN_FORK; *err = clone_errno; close(pipefd[0]); close(pipefd[1]); return -1; }
    close(pipefd[1]);
    int msg[2];
    ssize_t n;
    do { n = read(pipefd[0], msg, sizeof msg); } while (n < 0 && errno == EINTR);
    close(pipefd[0]);
    if (n == (ssize_t)sizeof msg) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        *stage = msg[0]; *err = msg[1];
        return -1;
    }
    *pid_out = pid;
    return 0;
}

int cspawn_landlock_abi(void) {
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    return abi < 0 ? -errno : (int)abi;
}

int cspawn_landlock_ruleset(const char *const *paths, int n_paths, int *bad_path) {
    *bad_path = -1;
    int abi = cspawn_landlock_abi();
    if (abi < 1) { errno = -abi; return -1; }
    __u64 file_rights = LANDLOCK_ACCESS_FS_WRITE_FILE | (abi >= 3 ? LANDLOCK_ACCESS_FS_TRUNCATE : 0);
    __u64 rights = file_rights | LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
        LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
        LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |
        LANDLOCK_ACCESS_FS_MAKE_SYM | (abi >= 2 ? LANDLOCK_ACCESS_FS_REFER : 0);
    struct landlock_ruleset_attr attr = { .handled_access_fs = rights };
    int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0);
    if (ruleset < 0) return -1;
    for (int i = 0; i < n_paths; i++) {
        int fd = open(paths[i], O_PATH | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) { int e = errno; if (fd >= 0) close(fd); close(ruleset); *bad_path = i; errno = e; return -1; }
        struct landlock_path_beneath_attr rule = { .allowed_access = S_ISDIR(st.st_mode) ? rights : file_rights, .parent_fd = fd };
        long r = syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0);
        int e = errno;
        close(fd);
        if (r != 0) { close(ruleset); *bad_path = i; errno = e; return -1; }
    }
    return ruleset;
}

int cspawn_seccomp_standard(void **program) {
    *program = NULL;
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) { errno = ENOMEM; return -1; }
    int rc = 0;
    // Another architecture's system-call table (32-bit int 0x80) is refused outright by killing the process.
    rc |= seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    const int denied[] = {
        SCMP_SYS(ptrace), SCMP_SYS(process_vm_readv), SCMP_SYS(process_vm_writev), SCMP_SYS(mount), SCMP_SYS(umount2),
        SCMP_SYS(pivot_root), SCMP_SYS(kexec_load), SCMP_SYS(kexec_file_load), SCMP_SYS(bpf), SCMP_SYS(io_uring_setup),
        SCMP_SYS(io_uring_enter), SCMP_SYS(io_uring_register), SCMP_SYS(perf_event_open), SCMP_SYS(init_module),
        SCMP_SYS(finit_module), SCMP_SYS(delete_module), SCMP_SYS(open_by_handle_at), SCMP_SYS(userfaultfd),
        SCMP_SYS(setns), SCMP_SYS(swapon), SCMP_SYS(swapoff), SCMP_SYS(reboot), SCMP_SYS(acct), SCMP_SYS(keyctl),
        SCMP_SYS(add_key), SCMP_SYS(request_key), SCMP_SYS(syslog), SCMP_SYS(iopl), SCMP_SYS(ioperm),
        SCMP_SYS(fsopen), SCMP_SYS(fsconfig), SCMP_SYS(fsmount), SCMP_SYS(move_mount), SCMP_SYS(open_tree),
        SCMP_SYS(mount_setattr), SCMP_SYS(quotactl), SCMP_SYS(uselib),
    };
    for (size_t i = 0; i < sizeof denied / sizeof denied[0]; i++)
        rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), denied[i], 0);
    // New user namespaces are where most kernel exploits start: refused through unshare and clone; clone3's
    // flags live in memory a filter cannot read, so it reports ENOSYS and libc falls back to clone.
    rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
    rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
    rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    // Packet and VM sockets, and raw IP sockets (forged traffic, sniffing, host escape).
    rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_EQ, AF_PACKET));
    rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_EQ, 40 /* AF_VSOCK */));
    rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 2, SCMP_A0(SCMP_CMP_EQ, AF_INET), SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, SOCK_RAW));
    rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 2, SCMP_A0(SCMP_CMP_EQ, AF_INET6), SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, SOCK_RAW));
    if (rc != 0) { seccomp_release(ctx); errno = EINVAL; return -1; }
    int mfd = memfd_create("spawngate-seccomp", MFD_CLOEXEC);
    if (mfd < 0) { seccomp_release(ctx); return -1; }
    rc = seccomp_export_bpf(ctx, mfd);
    seccomp_release(ctx);
    if (rc != 0) { close(mfd); errno = -rc; return -1; }
    off_t size = lseek(mfd, 0, SEEK_END);
    void *buf = size > 0 ? malloc((size_t)size) : NULL;
    if (!buf || pread(mfd, buf, (size_t)size, 0) != size) { free(buf); close(mfd); errno = EIO; return -1; }
    close(mfd);
    *program = buf;
    return (int)(size / sizeof(struct sock_filter));
}

int cspawn_probe(const char *path, char *const *argv, char *out, size_t cap, size_t *out_len) {
    *out_len = 0;
    int errp[2];
    if (pipe2(errp, O_CLOEXEC) != 0) return -1;
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0) { int e = errno; close(errp[0]); close(errp[1]); errno = e; return -1; }
    char *const env[] = { NULL };
    cspawn_spec spec = { .path = path, .argv = argv, .envp = env, .cwd = "/", .stdin_fd = null, .stdout_fd = null,
                         .stderr_fd = errp[1], .landlock_fd = -1, .cwd_fd_slot = -1 };
    pid_t pid; int stage, err;
    int rc = cspawn_start(&spec, &pid, &stage, &err);
    close(null); close(errp[1]);
    if (rc != 0) { close(errp[0]); errno = err; return -1; }
    char buf[512];
    ssize_t n;
    // Read to the end (so the child never blocks on a full pipe), keeping the first `cap` bytes.
    while ((n = read(errp[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
        if (n <= 0) continue;
        size_t take = (size_t)n < cap - *out_len ? (size_t)n : cap - *out_len;
        memcpy(out + *out_len, buf, take);
        *out_len += take;
    }
    close(errp[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0) if (errno != EINTR) return -1;
    return status;
}

int cspawn_seccomp_available(void) {
    return prctl(PR_GET_SECCOMP, 0, 0, 0, 0) >= 0 ? 1 : 0;
}

int cspawn_wait(pid_t pid, int timeout_ms, int *status) {
    pid_t r;
    do { r = waitpid(pid, status, WNOHANG); } while (r < 0 && errno == EINTR);
    if (r == pid) return 1;
    if (r < 0) return -1;
    if (timeout_ms == 0) return 0;
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pfd < 0) {
        // Kernels before 5.3: poll in short sleeps.
        int waited = 0;
        while (timeout_ms < 0 || waited < timeout_ms) {
            usleep(2000); waited += 2;
            do { r = waitpid(pid, status, WNOHANG); } while (r < 0 && errno == EINTR);
            if (r == pid) return 1;
            if (r < 0) return -1;
        }
        return 0;
    }
    struct pollfd p = { .fd = pfd, .events = POLLIN };
    int n;
    do { n = poll(&p, 1, timeout_ms); } while (n < 0 && errno == EINTR);
    close(pfd);
    if (n < 0) return -1;
    if (n == 0) return 0;
    do { r = waitpid(pid, status, 0); } while (r < 0 && errno == EINTR);
    return r == pid ? 1 : -1;
}

int cspawn_kill_group(pid_t pgid, int sig) {
    return kill(-pgid, sig);
}

int cspawn_task_pipe(const char *data, size_t len) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    // The whole task must fit in the pipe, so writing it never waits for the agent.
    if (len > 65536 && fcntl(fds[1], F_SETPIPE_SZ, (int)(len + 4096)) < 0) { close(fds[0]); close(fds[1]); return -1; }
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fds[1], data + off, len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { int e = errno; close(fds[0]); close(fds[1]); errno = e; return -1; }
        off += (size_t)n;
    }
    close(fds[1]);
    return fds[0];
}
