#ifndef CSPAWN_H
#define CSPAWN_H
#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>

/// RLIMIT_* numbers (Glibc's Swift overlay does not export all of them).
enum {
    CSPAWN_RLIMIT_CPU = RLIMIT_CPU, CSPAWN_RLIMIT_FSIZE = RLIMIT_FSIZE, CSPAWN_RLIMIT_CORE = RLIMIT_CORE,
    CSPAWN_RLIMIT_NPROC = RLIMIT_NPROC, CSPAWN_RLIMIT_NOFILE = RLIMIT_NOFILE, CSPAWN_RLIMIT_AS = RLIMIT_AS
};

/// One resource limit to set in the child (RLIMIT_* number, soft and hard value).
typedef struct { int resource; unsigned long long value; } cspawn_rlimit;

/// Everything the child does between fork and exec, decided by the parent beforehand.
typedef struct {
    const char *path;            ///< absolute program path
    char *const *argv;           ///< NULL-terminated
    char *const *envp;           ///< NULL-terminated; the whole environment
    const char *cwd;             ///< canonical working directory, as approved; re-checked in the child
    int cwd_fd;                  ///< that directory, opened once without following symlinks (cspawn_open_dir): the
                                 ///< Landlock rule, the chdir and the check all use this one object
    int stdin_fd, stdout_fd, stderr_fd;  ///< open descriptors (>= 3) to become 0, 1, 2
    const cspawn_rlimit *rlimits;
    int n_rlimits;
    int landlock_fd;             ///< a Landlock ruleset to enforce, or -1
    const void *filter;          ///< a seccomp BPF program (struct sock_filter[]), or NULL
    unsigned short filter_len;   ///< number of instructions
    const int *pass_fds;         ///< descriptors the program must inherit, placed at 3, 4, … in this order
    int n_pass;
    int cwd_fd_slot;             ///< if >= 0, the cwd descriptor is also left at this number (bwrap's --bind-fd)
    int drop_caps;               ///< drop every capability (bounding set included) before exec
    int new_userns;              ///< the agent's pid namespace needs a user namespace (the gateway is not root)
    int die_with_parent;         ///< the agent ends when the process that started it dies (the relay launcher)
} cspawn_spec;

/// Where the child failed, reported through the CLOEXEC pipe.
enum cspawn_stage {
    CSPAWN_OK = 0, CSPAWN_FORK, CSPAWN_SIGNALS, CSPAWN_SETSID, CSPAWN_STDIO, CSPAWN_CLOSE_FDS, CSPAWN_RLIMIT,
    CSPAWN_CHDIR, CSPAWN_CWD_CHANGED, CSPAWN_NO_NEW_PRIVS, CSPAWN_LANDLOCK, CSPAWN_SECCOMP, CSPAWN_EXEC,
    CSPAWN_NAMESPACE, CSPAWN_CAPS,
    /// spawngate-init (next to the executable) could not be found or run.
    CSPAWN_INIT
};

/// Starts the agent per `spec` inside a pid namespace of its own, whose first process (pid 1 there) is a small
/// init (spawngate-init, exec'd: no copy of this process stays behind) that stays behind: it forwards TERM, INT, HUP, QUIT, USR1, USR2 and WINCH to every process of the namespace,
/// reaps them, and exits with the agent's status once the agent's own process exits, at which point the kernel
/// kills whatever else is left in the namespace. So the agent is one process to watch and to stop (the init), and
/// nothing it starts (setsid, double fork, a daemon) outlives it. Returns 0 and the init's pid (the agent's
/// identity from outside) on success; otherwise -1 with the stage and errno.
int cspawn_start(const cspawn_spec *spec, pid_t *pid, int *stage, int *err);

/// The inodes of the listening TCP sockets (IPv4 and IPv6) on `port`, from the kernel's socket diagnostics
/// (only the listening table is walked: cheap however many connections the machine has). Returns how many were
/// written to `inodes` (at most `cap`), or -1 with errno when the kernel does not answer (then read /proc/net/tcp).
int cspawn_listening_inodes(int port, unsigned long *inodes, int cap);

/// The descriptor of spawngate-init (the agents' init, a small static program next to this executable), opened
/// once; -1 with errno when it is missing.
int cspawn_init_fd(void);

/// Opens the directory `path` (absolute) as an O_PATH descriptor without following any symlink on the way
/// (openat2 RESOLVE_NO_SYMLINKS, else a component walk with O_NOFOLLOW). Returns the fd, or -1 with errno (ELOOP
/// when a component is a symlink, ENOTDIR when it is not a directory).
int cspawn_open_dir(const char *path);

/// Whether this process may give an agent its own pid namespace (with a user namespace when not root): 0 when it
/// can, else the errno of the refusal. Probed by starting and reaping one trivial child.
int cspawn_containment_probe(void);

/// The Landlock ABI version of the running kernel, or a negative errno when Landlock is unavailable.
int cspawn_landlock_abi(void);

/// A Landlock ruleset that handles every write right the kernel knows and allows them only beneath `dir_fd` (an
/// open directory: the cwd, by the descriptor the agent will enter) and beneath `paths` (directories) or on them
/// (files). From ABI 6 it also scopes signals and abstract Unix sockets to the agent's own domain. Returns the
/// ruleset fd, or -1 with errno; `bad_path` names a failing path (n_paths for `dir_fd`).
int cspawn_landlock_ruleset(int dir_fd, const char *const *paths, int n_paths, int *bad_path);

/// The standard profile's seccomp deny-list as a BPF program in a malloc'd buffer (free it). Returns the number
/// of instructions, or -1 with errno.
int cspawn_seccomp_standard(void **program);

/// Runs `path` with stdio on /dev/null except stderr, which is captured (up to `cap` bytes) into `out`, and
/// returns its wait status, or -1 with errno. For probes (is bwrap usable here?), not for agents.
int cspawn_probe(const char *path, char *const *argv, char *out, size_t cap, size_t *out_len);

/// 1 when the kernel accepts seccomp filters (no_new_privs + SECCOMP_MODE_FILTER), else 0.
int cspawn_seccomp_available(void);

/// Waits up to `timeout_ms` (-1: no limit) for the child `pid` to exit, through a pidfd so an exit is seen at
/// once. Returns 1 with the wait status when it exited (and was reaped), 0 on timeout, -1 with errno on error.
int cspawn_wait(pid_t pid, int timeout_ms, int *status);

/// Waits up to `timeout_ms` for process `pid` to exit, without reaping it (a pidfd becomes readable). Returns 1
/// when it has exited, 0 on timeout, -1 with errno (no pidfd support: before Linux 5.3).
int cspawn_await_exit(pid_t pid, int timeout_ms);

/// A pipe already holding `data`, write end closed: the agent's standard input for `task: stdin`. Returns the
/// read end (CLOEXEC), or -1 with errno.
int cspawn_task_pipe(const char *data, size_t len);

/// Makes this process non-dumpable: its memory, environment and descriptors under /proc become readable and
/// traceable only with CAP_SYS_PTRACE, not by an agent running under the same uid.
int cspawn_make_nondumpable(void);

/// renameat2(RENAME_EXCHANGE): swaps two paths atomically (the tests' race against the start path).
int cspawn_rename_exchange(const char *a, const char *b);

/* The peer of a Unix socket, as SO_PEERCRED fills it (struct ucred, which glibc hides behind _GNU_SOURCE). */
typedef struct { int32_t pid; uint32_t uid; uint32_t gid; } cspawn_ucred;

#endif
