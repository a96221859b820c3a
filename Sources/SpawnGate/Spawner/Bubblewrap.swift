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

    /// Agent Relay's secrets beside a project: the broker's connection file (its local API key) and the MCP
    /// config it writes (the workspace key). An agent that reads them can ask the broker for an unsandboxed agent.
    static let relayDirectories = [".agent-relay", ".agentworkforce"]
    static let relayFiles = [".mcp.json"]

    /// bwrap's options, ending with `--`; the agent's argv follows.
    static func arguments(program: String, cwd: String, tmp: String, gatewayHome: String, writable: [String], protected: [String],
                          network: NetworkAccess, home: String? = nil, environment: [String: String] = [:]) throws(GatewayFailure) -> [String] {
        var a = ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if network == .none { a.append("--unshare-net") }
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
        for rel in protected {
            let p = cwd + "/" + rel
            var st = stat()
            guard lstat(p, &st) == 0 else { continue }
            if (st.st_mode & S_IFMT) == S_IFLNK {
                throw GatewayFailure("the protected path \(p) is a symbolic link, which strict cannot keep read-only (the agent could replace the link); make it a regular file or directory, or remove it")
            }
            // Mounted read-only on itself: writes get EROFS, and renaming or deleting a mount point gets EBUSY.
            a += ["--ro-bind", p, p]
        }
        // Every place git takes code to run from, for the repository of the cwd (see GitControlPaths).
        let control = GitControlPaths.find(cwd: cwd, writable: [cwd] + writable, home: home, environment: environment)
        if let link = control.symlinks.first {
            throw GatewayFailure("\(link) is a symbolic link that git reads for hooks or configuration, inside a place the agent may write, so strict cannot keep it from being replaced; make it a regular file or directory, or remove it")
        }
        if let path = control.missing.first {
            throw GatewayFailure("git would read \(path) (a hooks directory or an included config named in the repository's configuration), which does not exist inside a place the agent may write: the agent could create it and have it run at the operator's next git command; create it, or remove the setting that names it")
        }
        for p in control.readOnly { a += ["--ro-bind", p, p] }
        // Missing ones the agent could create: empty and read-only inside the sandbox (outside, bwrap leaves an
        // empty file or directory, as git itself would have).
        for p in control.emptyFiles { a += ["--ro-bind", "/dev/null", p] }
        for d in control.emptyDirectories { a += ["--tmpfs", d, "--remount-ro", d] }
        // No `.git` in the cwd: an empty read-only one inside the sandbox, so the agent cannot make one (git init)
        // that the operator's next git command here would use. Outside, bwrap leaves an empty `.git` directory,
        // which git passes over.
        if control.blockNewGit { a += ["--tmpfs", control.cwdGit, "--remount-ro", control.cwdGit] }
        // Agent Relay's keys in the cwd and every directory above it.
        var dir = cwd
        while true {
            for name in relayDirectories where GitControlPaths.lstatType(dir + "/" + name) == S_IFDIR {
                a += ["--tmpfs", dir + "/" + name, "--remount-ro", dir + "/" + name]
            }
            for name in relayFiles where GitControlPaths.lstatType(dir + "/" + name) == S_IFREG {
                a += ["--ro-bind", "/dev/null", dir + "/" + name]
            }
            if dir == "/" { break }
            let up = dir.lastIndex(of: "/").map { String(dir[..<$0]) } ?? "/"
            dir = up.isEmpty ? "/" : up
        }
        a += ["--chdir", cwd, "--cap-drop", "ALL", "--seccomp", String(seccompFD), "--"]
        return a
    }

    static func under(_ dir: String, _ path: String) -> Bool { path == dir || path.hasPrefix(dir + "/") }
}
