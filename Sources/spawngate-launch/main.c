// spawngate-launch: the program an Agent Relay broker runs as a relay worker's program, in the worker's PTY, for a
// spawn its gateway allowed (`spawner: agent-relay`). Not for people: the gateway writes its command line.
//
//   spawngate-launch SOCKET TICKET
//
// It is small on purpose (issue 27): it decides nothing. It connects to the gateway waiting at SOCKET (a Unix
// socket in the gateway's home, mode 0700, which only the gateway's user can reach), sends its ticket and the
// environment the broker gave the worker, and receives from the gateway the start it prepared: the program and
// arguments, the environment, the sandbox's seccomp program, limits and flags as words, and the approved
// directory and Landlock ruleset as descriptors (SCM_RIGHTS). It starts exactly that with cspawn_start, the
// gateway's own start, with the worker's terminal as the agent's standard input and output, so the agent stays in
// the broker's PTY session and dies with this process. It reports the pid (or the failure) and, once the gateway
// has recorded the agent, execs `spawngate launch --supervise`, which keeps this pid (the agent's parent) and does
// the long part: forwarding Ctrl-C and resizes, copying standard error to the terminal, waiting, reporting the end.
//
// The wire (docs/protocol.md, "The relay launcher"): frames of a 4-byte length (host order) and NUL-separated
// words. Launcher → gateway: TICKET, then the environment. Gateway → launcher: "start", then the fields below,
// with descriptors; or "refuse" and a sentence. Launcher → gateway: three ints {stage, errno, pid}. Gateway →
// launcher: one byte, 'g' (recorded: supervise) or 's' (not recorded: stop it).
#define _GNU_SOURCE
#include "cspawn.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

extern char **environ;

enum { MAX_FRAME = 4 << 20, MAX_FDS = 12, MAX_WORDS = 65536 };

static void die(const char *what, int e) {
    fprintf(stderr, "spawngate-launch: not started: %s%s%s\n", what, e ? ": " : "", e ? strerror(e) : "");
    exit(1);
}

// To the gateway's socket: a gateway gone is an error (EPIPE), not a SIGPIPE that would end the agent with us.
static int write_all(int fd, const void *p, size_t n) {
    const char *b = p;
    while (n) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        b += w; n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *p, size_t n) {
    char *b = p;
    while (n) {
        ssize_t r = read(fd, b, n);
        if (r < 0 && errno == EINTR) continue;
        if (r == 0) { errno = ECONNRESET; return -1; }
        if (r < 0) return -1;
        b += r; n -= (size_t)r;
    }
    return 0;
}

// Connects to the gateway's socket; a path too long for an address is reached through its directory's descriptor.
static int connect_gateway(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof a.sun_path) { errno = ENAMETOOLONG; close(fd); return -1; }
    strcpy(a.sun_path, path);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { int e = errno; close(fd); errno = e; return -1; }
    return fd;
}

// Reads one frame, with any descriptors sent on its first bytes. Returns the body (malloc'd, NUL-terminated
// after `len`) or NULL with errno.
static char *read_frame(int fd, uint32_t *len, int *fds, int *nfds) {
    char cbuf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    uint32_t n = 0;
    struct iovec iov = { &n, sizeof n };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf };
    ssize_t r;
    do { r = recvmsg(fd, &m, MSG_CMSG_CLOEXEC | MSG_WAITALL); } while (r < 0 && errno == EINTR);
    *nfds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < k && *nfds < MAX_FDS; i++) memcpy(&fds[(*nfds)++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
    if (r != (ssize_t)sizeof n) { errno = r < 0 ? errno : ECONNRESET; return NULL; }
    if ((m.msg_flags & MSG_CTRUNC) || n > MAX_FRAME) { errno = EMSGSIZE; return NULL; }
    char *body = malloc((size_t)n + 1);
    if (!body) return NULL;
    if (read_all(fd, body, n) != 0) { free(body); return NULL; }
    body[n] = 0;
    *len = n;
    return body;
}

// Splits a frame into its NUL-terminated words (the frame ends with a NUL).
static int split_words(char *body, uint32_t len, char **words, int cap) {
    int k = 0;
    if (len == 0 || body[len - 1] != 0) return -1;
    for (uint32_t i = 0; i < len && k < cap; ) { words[k++] = body + i; i += (uint32_t)strlen(body + i) + 1; }
    return k;
}

static int number(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int hexbyte(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; }

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: spawngate-launch SOCKET TICKET (run by an Agent Relay broker for its gateway, not by hand)\n");
        return 64;
    }
    // The ticket and the descriptors the gateway sends are not for the agents running under this uid.
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    // Until the supervisor takes them over, keys typed in the terminal must neither kill this process (and with it
    // the agent) nor run a handler: ignored, which exec keeps.
    const int forwarded[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH, SIGUSR1, SIGUSR2 };
    for (size_t i = 0; i < sizeof forwarded / sizeof *forwarded; i++) signal(forwarded[i], SIG_IGN);

    int gw = connect_gateway(argv[1]);
    if (gw < 0) die("cannot reach the gateway that asked for this worker (its launch socket is gone: it stopped waiting, or restarted)", errno);
    // Whatever is at the socket answers within this or not at all: a silent peer must not hold the worker forever.
    struct timeval limit = { 30, 0 };
    setsockopt(gw, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);

    // Hello: the ticket, then the environment the broker gave this worker (the policy's variables come from it).
    size_t hello_len = strlen(argv[2]) + 1;
    for (char **e = environ; *e; e++) hello_len += strlen(*e) + 1;
    if (hello_len > MAX_FRAME) die("the worker's environment is too large", E2BIG);
    char *hello = malloc(4 + hello_len), *p = hello + 4;
    if (!hello) die("out of memory", ENOMEM);
    uint32_t hl = (uint32_t)hello_len;
    memcpy(hello, &hl, 4);
    p = stpcpy(p, argv[2]) + 1;
    for (char **e = environ; *e; e++) p = stpcpy(p, *e) + 1;
    if (write_all(gw, hello, 4 + hello_len) != 0) die("cannot write to the gateway", errno);
    free(hello);

    int fds[MAX_FDS], nfds = 0;
    uint32_t len = 0;
    char *body = read_frame(gw, &len, fds, &nfds);
    if (!body) die("the gateway's answer was cut short or malformed", errno);
    static char *w[MAX_WORDS];
    int nw = split_words(body, len, w, MAX_WORDS);
    if (nw >= 2 && strcmp(w[0], "refuse") == 0) {
        fprintf(stderr, "not started: %s\n", w[1]);
        return 1;
    }
    // start PATH CWD CWDSLOT DROPCAPS NEWUSERNS LANDLOCK STDIN NPASS FILTER NRLIMITS [RES VALUE]... NARGV ARGV...
    //       NENV ENV... NSUP SUPERVISOR-ARGV...   (descriptors: cwd, [landlock], [stdin], pass...)
    long long slot, caps, userns, ll, in, npass, nlim, nargv, nenv, nsup;
    int k = 10;
    if (nw < 11 || strcmp(w[0], "start") != 0 || number(w[3], -1, 64, &slot) || number(w[4], 0, 1, &caps) ||
        number(w[5], 0, 1, &userns) || number(w[6], 0, 1, &ll) || number(w[7], 0, 1, &in) || number(w[8], 0, 8, &npass) ||
        number(w[10], 0, 16, &nlim) || 1 + ll + in + npass != nfds)
        die("the gateway's start is malformed", EPROTO);
    cspawn_rlimit limits[16];
    for (int i = 0; i < nlim; i++) {
        long long r, v;
        if (k + 2 >= nw || number(w[k + 1], 0, 64, &r) || number(w[k + 2], 0, 0x7fffffffffffffffLL, &v)) die("the gateway's start is malformed", EPROTO);
        limits[i].resource = (int)r; limits[i].value = (unsigned long long)v;
        k += 2;
    }
    if (++k >= nw || number(w[k], 1, MAX_WORDS, &nargv) || k + nargv + 1 >= nw) die("the gateway's start is malformed", EPROTO);
    char **agent_argv = &w[k + 1];
    k += (int)nargv + 1;
    if (number(w[k], 0, MAX_WORDS, &nenv) || k + nenv + 1 >= nw) die("the gateway's start is malformed", EPROTO);
    char **agent_env = &w[k + 1];
    k += (int)nenv + 1;
    if (number(w[k], 1, 64, &nsup) || k + nsup + 1 != nw) die("the gateway's start is malformed", EPROTO);
    char **sup = &w[k + 1];
    // The argv and environment arrays are NULL-terminated in place: each word after them is overwritten by NULL
    // only once it has been read (the count, then the next section's count).
    char *sup_argv[64 + 3];
    for (int i = 0; i < nsup; i++) sup_argv[i] = sup[i];
    agent_argv[nargv] = NULL;
    agent_env[nenv] = NULL;

    // The seccomp program, as hex: 8 bytes an instruction.
    unsigned char *filter = NULL;
    size_t flen = strlen(w[9]);
    if (strcmp(w[9], "-") != 0) {
        if (flen == 0 || flen % 16 || flen / 16 > 4096) die("the gateway's seccomp program is malformed", EPROTO);
        filter = malloc(flen / 2);
        if (!filter) die("out of memory", ENOMEM);
        for (size_t i = 0; i < flen / 2; i++) {
            int hi = hexbyte(w[9][2 * i]), lo = hexbyte(w[9][2 * i + 1]);
            if (hi < 0 || lo < 0) die("the gateway's seccomp program is malformed", EPROTO);
            filter[i] = (unsigned char)(hi << 4 | lo);
        }
    }

    // Standard error goes through a pipe the supervisor copies to the terminal, keeping the last lines for the
    // report of a CLI that dies young.
    int errpipe[2];
    if (pipe2(errpipe, O_CLOEXEC) != 0) die("cannot make a pipe", errno);
    int d = 0;
    cspawn_spec s;
    memset(&s, 0, sizeof s);
    s.path = w[1];
    s.cwd = w[2];
    s.cwd_fd = fds[d++];
    s.landlock_fd = ll ? fds[d++] : -1;
    s.stdin_fd = in ? fds[d++] : fcntl(0, F_DUPFD_CLOEXEC, 3);
    s.stdout_fd = fcntl(1, F_DUPFD_CLOEXEC, 3);
    s.stderr_fd = errpipe[1];
    s.pass_fds = &fds[d];
    s.n_pass = (int)npass;
    s.cwd_fd_slot = (int)slot;
    s.drop_caps = (int)caps;
    s.new_userns = (int)userns;
    s.die_with_parent = 1;
    s.rlimits = limits;
    s.n_rlimits = (int)nlim;
    s.filter = filter;
    s.filter_len = (unsigned short)(flen / 16);
    s.argv = agent_argv;
    s.envp = agent_env;
    if (s.stdin_fd < 0 || s.stdout_fd < 0) die("cannot pass the terminal to the agent", errno);

    int result[3] = { 0, 0, 0 };
    pid_t pid = 0;
    if (cspawn_start(&s, &pid, &result[0], &result[1]) == 0) result[2] = (int)pid;
    close(errpipe[1]);
    for (int i = 0; i < nfds; i++) close(fds[i]);
    if (write_all(gw, result, sizeof result) != 0 && pid > 0) { kill(pid, SIGKILL); die("the gateway stopped waiting", errno); }
    if (pid <= 0) {
        // The gateway explains the stage to the requester; the worker's terminal gets the same sentence.
        char why[4096];
        uint32_t n = 0;
        if (read_all(gw, &n, 4) == 0 && n < sizeof why && read_all(gw, why, n) == 0) { why[n] = 0; fprintf(stderr, "not started: %s\n", why); }
        return 1;
    }
    char go = 0;
    if (read_all(gw, &go, 1) != 0 || go != 'g') {
        // Not recorded: an agent nobody can list or release does not keep running.
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        die("the gateway could not record the agent, so it was stopped", 0);
    }
    // The supervisor inherits the pipe's read end and the connection (its report wakes a gateway still watching).
    int fl;
    if ((fl = fcntl(errpipe[0], F_GETFD)) < 0 || fcntl(errpipe[0], F_SETFD, fl & ~FD_CLOEXEC) != 0 ||
        (fl = fcntl(gw, F_GETFD)) < 0 || fcntl(gw, F_SETFD, fl & ~FD_CLOEXEC) != 0) {
        kill(pid, SIGKILL);
        die("cannot hand the agent to its supervisor", errno);
    }
    char errarg[32], gwarg[32];
    snprintf(errarg, sizeof errarg, "--stderr-fd=%d", errpipe[0]);
    snprintf(gwarg, sizeof gwarg, "--report-fd=%d", gw);
    sup_argv[nsup] = errarg;
    sup_argv[nsup + 1] = gwarg;
    sup_argv[nsup + 2] = NULL;
    execve(sup_argv[0], sup_argv, environ);
    int e = errno;
    kill(pid, SIGKILL);
    die("cannot run the supervisor (spawngate, next to this program)", e);
}
