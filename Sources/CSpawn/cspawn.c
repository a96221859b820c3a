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
#include <stdio.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>
#include <netinet/in.h>
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

struct child_args { const cspawn_spec *spec; int ep; uid_t uid; gid_t gid; int init_fd, env_fd; char *const *init_argv; };

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t len = (ssize_t)strlen(text), n = write(fd, text, (size_t)len);
    int e = errno;
    close(fd);
    errno = e;
    return n == len ? 0 : -1;
}

// Small decimal formatting without stdio (this runs in a child that shares a multithreaded process's memory).
static char *put_uint(char *p, unsigned long v) {
    char tmp[24]; int i = 0;
    do { tmp[i++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (i) *p++ = tmp[--i];
    return p;
}

// The namespaces' first steps, in the new pid namespace's first process (sharing the gateway's memory): our own
// uid and gid mapped when there is a user namespace, non-dumpable, a private mount tree and the namespace's own
// /proc. 0, or -1 with errno.
static int own_namespace(const struct child_args *args) {
    if (args->spec->new_userns) {
        // Map our own uid and gid only: the agent keeps its identity and gains nothing outside. A non-dumpable
        // process's /proc files belong to root, so a gateway that is not root (itself non-dumpable, which this
        // child inherits) could not write its maps: dumpable only while writing them, as runc does. Nothing of ours
        // can reach this process meanwhile: agents live in pid namespaces of their own, and anything else of the
        // gateway's uid outside them can read the identity key file anyway.
        prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
        char map[64], *p;
        if (write_file("/proc/self/setgroups", "deny") != 0 && errno != ENOENT) return -1;
        p = put_uint(map, args->uid); *p++ = ' '; p = put_uint(p, args->uid); *p++ = ' '; *p++ = '1'; *p = 0;
        if (write_file("/proc/self/uid_map", map) != 0) return -1;
        p = put_uint(map, args->gid); *p++ = ' '; p = put_uint(p, args->gid); *p++ = ' '; *p++ = '1'; *p = 0;
        if (write_file("/proc/self/gid_map", map) != 0) return -1;
    }
    // Not readable or traceable while it holds the gateway's memory (spawngate-init sets it again after exec).
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return -1;
    // A /proc of the agent's own namespace, in a mount namespace of its own: the agent sees its processes (pids
    // as it knows them) and none of the host's, the gateway's command line and descriptors included.
    if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return -1;
    return mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
}

// The agent's init before it is one: pid 1 of the new pid namespace, sharing the gateway's memory (CLONE_VM |
// CLONE_VFORK, as posix_spawn does: the gateway waits, and nothing is copied) until it execs spawngate-init, so
// system calls and writes to its own stack only. It makes what the agent inherits (user mapping, its own /proc,
// the session, stdio, descriptors at fixed numbers) and hands over to that small program, which starts the agent.
static int prepare_main(void *arg) {
    struct child_args *args = arg;
    int ep = args->ep;
    const cspawn_spec *s = args->spec;
    if (own_namespace(args) != 0) report(ep, CSPAWN_NAMESPACE);
    // A relay worker's agent is its launcher's: when the broker kills the launcher, the whole agent goes too.
    if (s->die_with_parent && prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) report(ep, CSPAWN_NAMESPACE);
    // The gateway's cwd descriptor names a mount of its namespace, not of this one (getcwd would say
    // "(unreachable)"): the same directory is opened again here, without following symlinks, and must be the very
    // inode the Landlock rule was made from.
    int cwd_here = cspawn_open_dir(s->cwd);
    struct stat was, now;
    if (cwd_here < 0) report(ep, errno == ELOOP ? CSPAWN_CWD_CHANGED : CSPAWN_CHDIR);
    if (fstat(s->cwd_fd, &was) != 0 || fstat(cwd_here, &now) != 0) report(ep, CSPAWN_CHDIR);
    if (was.st_dev != now.st_dev || was.st_ino != now.st_ino) { errno = ESTALE; report(ep, CSPAWN_CWD_CHANGED); }
    // The gateway's handlers are not ours: default dispositions, every signal still blocked (spawngate-init takes
    // them with sigwaitinfo; exec keeps the mask).
    struct sigaction dfl; memset(&dfl, 0, sizeof dfl); dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < 65; sig++) if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, NULL);
    // A new session and process group, and no terminal unless stdio hands one over.
    if (setsid() < 0) report(ep, CSPAWN_SETSID);
    if (dup2(s->stdin_fd, 0) < 0 || dup2(s->stdout_fd, 1) < 0 || dup2(s->stderr_fd, 2) < 0) report(ep, CSPAWN_STDIO);
    // Descriptors the program inherits go to 3, 4, …, then the error pipe, the cwd, the Landlock ruleset,
    // spawngate-init itself and the agent's environment at the next five numbers (as build_init_argv told it):
    // each first moved above every target slot (so no source is overwritten before it is copied), then into
    // place, where dup2 clears close-on-exec so they survive the exec of spawngate-init.
    if (s->n_pass > 8) { errno = EINVAL; report(ep, CSPAWN_CLOSE_FDS); }
    int base = 3 + s->n_pass, high = base + 5;
    int moved[8];
    int e2 = fcntl(ep, F_DUPFD_CLOEXEC, high);
    if (e2 < 0) report(ep, CSPAWN_CLOSE_FDS);
    ep = e2;
    int ll = s->landlock_fd >= 0 ? fcntl(s->landlock_fd, F_DUPFD_CLOEXEC, high) : -1;
    if (s->landlock_fd >= 0 && ll < 0) report(ep, CSPAWN_CLOSE_FDS);
    int cwd = fcntl(cwd_here, F_DUPFD_CLOEXEC, high);
    int self = fcntl(args->init_fd, F_DUPFD_CLOEXEC, high);
    int env = fcntl(args->env_fd, F_DUPFD_CLOEXEC, high);
    if (cwd < 0 || self < 0 || env < 0) report(ep, CSPAWN_CLOSE_FDS);
    for (int i = 0; i < s->n_pass; i++)
        if ((moved[i] = fcntl(s->pass_fds[i], F_DUPFD_CLOEXEC, high)) < 0) report(ep, CSPAWN_CLOSE_FDS);
    for (int i = 0; i < s->n_pass; i++)
        if (dup2(moved[i], 3 + i) < 0) report(ep, CSPAWN_CLOSE_FDS);
    if (dup2(cwd, base + 1) < 0 || dup2(self, base + 3) < 0 || dup2(env, base + 4) < 0) report(ep, CSPAWN_CLOSE_FDS);
    if (ll >= 0 ? dup2(ll, base + 2) < 0 : (close(base + 2), 0)) report(ep, CSPAWN_CLOSE_FDS);
    if (dup2(ep, base) < 0) report(ep, CSPAWN_CLOSE_FDS);
    ep = base;
    // Every other descriptor: the moved copies and whatever else the gateway had open.
    if (close_from(base + 5, ~0U >> 1) != 0) report(ep, CSPAWN_CLOSE_FDS);
    char *const empty[] = { NULL };
    syscall(SYS_execveat, base + 3, "", args->init_argv, empty, AT_EMPTY_PATH);
    report(ep, CSPAWN_INIT);
    return 127;
}

// spawngate-init, next to the executable that starts agents, opened once: what every agent's init runs.
static int init_fd = -1, init_errno = 0;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static void open_init(void) {
    char path[4096 + 32];
    ssize_t n = readlink("/proc/self/exe", path, 4096);
    if (n <= 0) { init_errno = errno; return; }
    path[n] = 0;
    char *slash = strrchr(path, '/');
    if (!slash) { init_errno = ENOENT; return; }
    strcpy(slash + 1, "spawngate-init");
    init_fd = open(path, O_PATH | O_CLOEXEC);
    if (init_fd < 0) init_errno = errno;
}

int cspawn_init_fd(void) {
    pthread_once(&init_once, open_init);
    if (init_fd < 0) errno = init_errno;
    return init_fd;
}

// The agent's environment for spawngate-init, NUL-separated in a sealed memfd: never in its argv, which anyone
// on the machine can read in /proc, and never its own environment, which its C library would read first.
static int env_memfd(const cspawn_spec *s) {
    int fd = memfd_create("spawngate-agent-env", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return -1;
    for (int i = 0; s->envp[i]; i++) {
        size_t len = strlen(s->envp[i]) + 1, off = 0;
        while (off < len) {
            ssize_t n = write(fd, s->envp[i] + off, len - off);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) { int e = errno; close(fd); errno = e; return -1; }
            off += (size_t)n;
        }
    }
    fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
    return fd;
}

// spawngate-init's arguments (see Sources/spawngate-init/main.c), in one allocation: the pointers, then the text.
static char **build_init_argv(const cspawn_spec *s) {
    int argc = 0;
    while (s->argv[argc]) argc++;
    size_t words = (size_t)(13 + 2 * s->n_rlimits + argc + 1);
    size_t text = 64 * (size_t)(10 + 2 * s->n_rlimits) + (size_t)s->filter_len * 16 + 2;
    char **v = malloc(words * sizeof(char *) + text);
    if (!v) return NULL;
    char *t = (char *)(v + words);
    int k = 0, base = 3 + s->n_pass;
#define NUM(x) do { v[k++] = t; t += sprintf(t, "%lld", (long long)(x)) + 1; } while (0)
    v[k++] = "spawngate-init";
    NUM(base); NUM(base + 1); NUM(s->landlock_fd >= 0 ? base + 2 : -1); NUM(base + 3); NUM(base + 4);
    v[k++] = (char *)s->cwd;
    NUM(s->cwd_fd_slot); NUM(s->drop_caps ? 1 : 0);
    if (s->filter && s->filter_len) {
        v[k++] = t;
        const unsigned char *b = s->filter;
        for (size_t i = 0; i < (size_t)s->filter_len * 8; i++) { *t++ = "0123456789abcdef"[b[i] >> 4]; *t++ = "0123456789abcdef"[b[i] & 15]; }
        *t++ = 0;
    } else {
        v[k++] = "-";
    }
    NUM(s->n_rlimits);
    for (int i = 0; i < s->n_rlimits; i++) { NUM(s->rlimits[i].resource); NUM(s->rlimits[i].value); }
    NUM(argc);
    v[k++] = (char *)s->path;
    for (int i = 0; i < argc; i++) v[k++] = s->argv[i];
    v[k] = NULL;
#undef NUM
    return v;
}

int cspawn_start(const cspawn_spec *s, pid_t *pid_out, int *stage, int *err) {
    *stage = CSPAWN_OK; *err = 0;
    int self = cspawn_init_fd();
    if (self < 0) { *stage = CSPAWN_INIT; *err = errno; return -1; }
    if (s->n_rlimits > 16) { *stage = CSPAWN_RLIMIT; *err = EINVAL; return -1; }
    char **init_argv = build_init_argv(s);
    if (!init_argv) { *stage = CSPAWN_FORK; *err = ENOMEM; return -1; }
    int env_fd = env_memfd(s);
    if (env_fd < 0) { *stage = CSPAWN_FORK; *err = errno; free(init_argv); return -1; }
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) { *stage = CSPAWN_FORK; *err = errno; free(init_argv); close(env_fd); return -1; }
    const size_t stack_size = 256 * 1024;
    void *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) { *stage = CSPAWN_FORK; *err = errno; close(pipefd[0]); close(pipefd[1]); free(init_argv); close(env_fd); return -1; }
    // Every signal blocked until the child has reset the handlers (a handler of ours must never run there), and
    // still blocked in spawngate-init, which takes them with sigwaitinfo.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    struct child_args args = { s, pipefd[1], getuid(), getgid(), self, env_fd, init_argv };
    int flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_VM | CLONE_VFORK | SIGCHLD | (s->new_userns ? CLONE_NEWUSER : 0);
    // Returns once the child has exec'd spawngate-init (or failed): nothing of this process was copied.
    pid_t pid = clone(prepare_main, (char *)stack + stack_size, flags, &args);
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    munmap(stack, stack_size);
    free(init_argv);
    close(env_fd);
    if (pid < 0) { *stage = CSPAWN_NAMESPACE; *err = clone_errno; close(pipefd[0]); close(pipefd[1]); return -1; }
    close(pipefd[1]);
    int msg[2];
    ssize_t n;
    // EOF once spawngate-init and the agent have both closed their ends: the agent at exec, the init right after.
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

int cspawn_open_dir(const char *path) {
#ifdef SYS_openat2
    struct { uint64_t flags, mode, resolve; } how = {
        O_PATH | O_DIRECTORY | O_CLOEXEC, 0, 0x04 /* RESOLVE_NO_SYMLINKS */ | 0x02 /* RESOLVE_NO_MAGICLINKS */ };
    int fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
    if (fd >= 0 || errno != ENOSYS) return fd;
#endif
    // Before Linux 5.6: one component at a time, none of them followed if it is a symlink.
    if (path[0] != '/') { errno = EINVAL; return -1; }
    int dir = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    const char *p = path;
    char name[256];
    while (dir >= 0) {
        while (*p == '/') p++;
        if (!*p) return dir;
        size_t len = strcspn(p, "/");
        if (len >= sizeof name) { close(dir); errno = ENAMETOOLONG; return -1; }
        memcpy(name, p, len); name[len] = 0; p += len;
        if (strcmp(name, "..") == 0) { close(dir); errno = EINVAL; return -1; }
        int next = openat(dir, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int e = errno;
        close(dir);
        errno = e;
        dir = next;
    }
    return -1;
}

// The containment probe's child: the namespaces' first steps, exactly as prepare_main takes them, then exit: no
// program is run.
static int probe_main(void *arg) {
    _exit(own_namespace(arg) == 0 ? 0 : 1);
}

int cspawn_containment_probe(void) {
    // spawngate-init must be there (every start execs it), then the namespaces must be ours to make. Nothing is
    // exec'd: making them and mounting /proc is what can be refused, and it costs a tenth of a whole start.
    if (cspawn_init_fd() < 0) return errno ? errno : ENOENT;
    const size_t stack_size = 64 * 1024;
    void *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return errno;
    cspawn_spec spec = { .new_userns = geteuid() != 0 };
    struct child_args args = { &spec, -1, getuid(), getgid(), -1, -1, NULL };
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_VM | CLONE_VFORK | SIGCHLD | (spec.new_userns ? CLONE_NEWUSER : 0);
    pid_t pid = clone(probe_main, (char *)stack + stack_size, flags, &args);
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    munmap(stack, stack_size);
    if (pid < 0) return e ? e : EPERM;
    int status;
    while (waitpid(pid, &status, 0) < 0) if (errno != EINTR) return errno;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : EPERM;
}

int cspawn_landlock_abi(void) {
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    return abi < 0 ? -errno : (int)abi;
}

int cspawn_landlock_ruleset(int dir_fd, const char *const *paths, int n_paths, int *bad_path) {
    *bad_path = -1;
    int abi = cspawn_landlock_abi();
    if (abi < 1) { errno = -abi; return -1; }
    __u64 file_rights = LANDLOCK_ACCESS_FS_WRITE_FILE | (abi >= 3 ? LANDLOCK_ACCESS_FS_TRUNCATE : 0);
    __u64 rights = file_rights | LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
        LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
        LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |
        LANDLOCK_ACCESS_FS_MAKE_SYM | (abi >= 2 ? LANDLOCK_ACCESS_FS_REFER : 0);
    // ABI 6 (Linux 6.12) scopes: the agent can signal, and reach abstract Unix sockets of, only processes of its
    // own Landlock domain. (The struct is spelled out: older kernel headers lack the `scoped` field.)
    struct { __u64 handled_access_fs, handled_access_net, scoped; } attr = { rights, 0, 0 };
    size_t attr_size = 8;
    if (abi >= 6) { attr.scoped = 0x1 /* ABSTRACT_UNIX_SOCKET */ | 0x2 /* SIGNAL */; attr_size = sizeof attr; }
    int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0);
    if (ruleset < 0) return -1;
    for (int i = 0; i <= n_paths; i++) {
        int fd = i < n_paths ? open(paths[i], O_PATH | O_CLOEXEC) : dir_fd;
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) { int e = errno; if (fd >= 0 && fd != dir_fd) close(fd); close(ruleset); *bad_path = i; errno = e; return -1; }
        struct landlock_path_beneath_attr rule = { .allowed_access = S_ISDIR(st.st_mode) ? rights : file_rights, .parent_fd = fd };
        long r = syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0);
        int e = errno;
        if (fd != dir_fd) close(fd);
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
        // A pidfd made from /proc/PID reaches processes outside the agent's pid namespace: no signals, no fds.
        SCMP_SYS(pidfd_send_signal), SCMP_SYS(pidfd_getfd),
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
    int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) { int e = errno; close(null); close(errp[0]); close(errp[1]); errno = e; return -1; }
    char *const env[] = { NULL };
    cspawn_spec spec = { .path = path, .argv = argv, .envp = env, .cwd = "/", .cwd_fd = root, .stdin_fd = null,
                         .stdout_fd = null, .stderr_fd = errp[1], .landlock_fd = -1, .cwd_fd_slot = -1,
                         .new_userns = geteuid() != 0 };
    pid_t pid; int stage, err;
    int rc = cspawn_start(&spec, &pid, &stage, &err);
    close(null); close(errp[1]); close(root);
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

int cspawn_make_nondumpable(void) {
    return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

int cspawn_rename_exchange(const char *a, const char *b) {
    return (int)syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, 2 /* RENAME_EXCHANGE */);
}

int cspawn_await_exit(pid_t pid, int timeout_ms) {
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pfd < 0) return -1;
    struct pollfd p = { .fd = pfd, .events = POLLIN };
    int n;
    do { n = poll(&p, 1, timeout_ms); } while (n < 0 && errno == EINTR);
    close(pfd);
    return n < 0 ? -1 : (n > 0 ? 1 : 0);
}

int cspawn_listening_inodes(int port, unsigned long *inodes, int cap) {
    int count = 0;
    for (int family = AF_INET; ; family = AF_INET6) {
        int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if (fd < 0) return -1;
        struct { struct nlmsghdr nlh; struct inet_diag_req_v2 req; } msg;
        memset(&msg, 0, sizeof msg);
        msg.nlh.nlmsg_len = sizeof msg;
        msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
        msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
        msg.req.sdiag_family = (unsigned char)family;
        msg.req.sdiag_protocol = IPPROTO_TCP;
        msg.req.idiag_states = 1 << 10;   // TCP_LISTEN only: the kernel walks the listening table, not every socket
        struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
        if (sendto(fd, &msg, sizeof msg, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) { close(fd); return -1; }
        long buf[8192 / sizeof(long)];
        int done = 0;
        while (!done) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) { close(fd); return -1; }
            for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
                if (h->nlmsg_type == NLMSG_DONE) { done = 1; break; }
                if (h->nlmsg_type == NLMSG_ERROR) { close(fd); errno = EPROTO; return -1; }
                if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg))) continue;
                struct inet_diag_msg *d = NLMSG_DATA(h);
                if (ntohs(d->id.idiag_sport) == port && count < cap) inodes[count++] = d->idiag_inode;
            }
        }
        close(fd);
        if (family == AF_INET6) break;
    }
    return count;
}
