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
    const char *cwd;             ///< canonical working directory; re-checked in the child
    int stdin_fd, stdout_fd, stderr_fd;  ///< open descriptors (>= 3) to become 0, 1, 2
    const cspawn_rlimit *rlimits;
    int n_rlimits;
    int landlock_fd;             ///< a Landlock ruleset to enforce, or -1
    const void *filter;          ///< a seccomp BPF program (struct sock_filter[]), or NULL
    unsigned short filter_len;   ///< number of instructions
    const int *pass_fds;         ///< descriptors the program must inherit, placed at 3, 4, … in this order
    int n_pass;
    int cwd_fd_slot;             ///< if >= 0, an O_PATH descriptor of the re-checked cwd is left at this number
} cspawn_spec;

/// Where the child failed, reported through the CLOEXEC pipe.
enum cspawn_stage {
    CSPAWN_OK = 0, CSPAWN_FORK, CSPAWN_SIGNALS, CSPAWN_SETSID, CSPAWN_STDIO, CSPAWN_CLOSE_FDS, CSPAWN_RLIMIT,
    CSPAWN_CHDIR, CSPAWN_CWD_CHANGED, CSPAWN_NO_NEW_PRIVS, CSPAWN_LANDLOCK, CSPAWN_SECCOMP, CSPAWN_EXEC
};

/// Forks and execs per `spec`. Returns 0 and the pid on success; otherwise -1 with the stage and errno.
int cspawn_start(const cspawn_spec *spec, pid_t *pid, int *stage, int *err);

/// The Landlock ABI version of the running kernel, or a negative errno when Landlock is unavailable.
int cspawn_landlock_abi(void);

/// A Landlock ruleset that handles every write right the kernel knows and allows them only beneath `paths`
/// (directories) or on them (files). Returns the ruleset fd, or -1 with errno; `bad_path` names a failing path.
int cspawn_landlock_ruleset(const char *const *paths, int n_paths, int *bad_path);

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

/// Start time of a process (field 22 of /proc/PID/stat) is read in Swift; this sends a signal to a process group.
int cspawn_kill_group(pid_t pgid, int sig);

/// A pipe already holding `data`, write end closed: the agent's standard input for `task: stdin`. Returns the
/// read end (CLOEXEC), or -1 with errno.
int cspawn_task_pipe(const char *data, size_t len);

/* The peer of a Unix socket, as SO_PEERCRED fills it (struct ucred, which glibc hides behind _GNU_SOURCE). */
typedef struct { int32_t pid; uint32_t uid; uint32_t gid; } cspawn_ucred;

#endif
