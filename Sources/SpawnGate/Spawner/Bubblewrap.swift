#if canImport(Glibc)
import Glibc
#endif

/// The `strict` profile's bubblewrap command line. bwrap makes the namespaces and mounts; it cannot run under
/// Landlock (a Landlock domain forbids mount(2)), so inside `strict` the write fence is the mount namespace itself:
/// the whole root read-only, with only the cwd, a private /tmp and the CLI's `writable:` paths bound writable.
enum Bubblewrap {
    /// Descriptor numbers the agent's bwrap inherits (set by the C shim before exec).
    static let seccompFD = 3
    static let cwdFD = 4

    /// Control files inside the writable cwd that run code later, outside the sandbox: a planted git hook runs at
    /// the operator's next commit, a git config can name any program (core.fsmonitor, core.pager).
    static let controlFiles = [".git/hooks", ".git/config"]

    /// bwrap's options, ending with `--`; the agent's argv follows.
    static func arguments(program: String, cwd: String, tmp: String, gatewayHome: String, writable: [String], protected: [String],
                          network: String) throws(GatewayFailure) -> [String] {
        var a = ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if network == "none" { a.append("--unshare-net") }
        a += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        // A private /tmp first, so the binds below stay reachable when they live under /tmp.
        a += ["--bind", tmp, "/tmp"]
        // The gateway's home holds its identity key and state: the agent does not see it at all (under /tmp it
        // is already out of sight).
        if !under("/tmp", gatewayHome) { a += ["--tmpfs", gatewayHome] }
        a += ["--ro-bind", program, program]
        for w in writable { a += ["--bind", w, w] }
        // The cwd by the descriptor the shim opened after re-checking it, so a path swapped since binds nothing.
        a += ["--bind-fd", String(cwdFD), cwd]
        let git = cwd + "/.git"
        var gitStat = stat()
        let gitType = lstat(git, &gitStat) == 0 ? gitStat.st_mode & S_IFMT : 0
        if gitType == S_IFLNK {
            // The link, not its target, is in the writable cwd: the agent could point it at a .git of its own.
            throw GatewayFailure("\(git) is a symbolic link, which strict cannot keep from being replaced; make it a directory (or a gitdir file), or remove it")
        }
        if gitType == S_IFDIR {
            // .git bound onto itself becomes a mount point, which rename(2) and rmdir(2) refuse (EBUSY): the agent
            // cannot move it aside and put a .git with hooks of its own in its place.
            a += ["--bind", git, git]
        }
        for rel in controlFiles + protected {
            let p = cwd + "/" + rel
            var st = stat()
            guard lstat(p, &st) == 0 else { continue }
            if (st.st_mode & S_IFMT) == S_IFLNK {
                throw GatewayFailure("the protected path \(p) is a symbolic link, which strict cannot keep read-only (the agent could replace the link); make it a regular file or directory, or remove it")
            }
            // Mounted read-only on itself: writes get EROFS, and renaming or deleting a mount point gets EBUSY.
            a += ["--ro-bind", p, p]
        }
        a += ["--chdir", cwd, "--cap-drop", "ALL", "--seccomp", String(seccompFD), "--"]
        return a
    }

    static func under(_ dir: String, _ path: String) -> Bool { path == dir || path.hasPrefix(dir + "/") }
}
