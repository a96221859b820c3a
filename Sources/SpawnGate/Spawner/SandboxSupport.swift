import CSpawn
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What this machine can enforce, probed once: a profile whose layer is missing is refused, never downgraded.
public enum SandboxSupport {
    /// The running kernel's Landlock ABI version, or nil when Landlock is unavailable.
    public static let landlockABI: Int? = {
        let abi = cspawn_landlock_abi()
        return abi >= 1 ? Int(abi) : nil
    }()

    public static let seccomp: Bool = cspawn_seccomp_available() == 1

    /// Why a layer is missing and what to do, worded once for refusals and for `doctor`.
    static let landlockMissing = "Landlock (the kernel has no Landlock; it needs Linux 5.13+ with CONFIG_SECURITY_LANDLOCK and landlock in the lsm= boot list)"
    static let seccompMissing = "seccomp (the kernel refuses seccomp filters; in a container, run it without a seccomp profile that blocks seccomp(2))"

    /// bubblewrap, looked up in fixed root-owned places only: `strict` never runs a `bwrap` found through PATH.
    public static let bubblewrapPath: String? = ["/usr/bin/bwrap", "/usr/local/bin/bwrap"].first { access($0, X_OK) == 0 }

    /// Whether bubblewrap can make the namespaces `strict` uses on this machine: nil when it can, else why not
    /// and what to do. Probed on first use by running bwrap once with `strict`'s namespaces (about 5 ms).
    public static let bubblewrapProblem: String? = {
        guard let bwrap = bubblewrapPath else {
            return "bubblewrap is not installed (install the 'bubblewrap' package: apt-get install bubblewrap)"
        }
        guard access("/bin/true", X_OK) == 0 else { return "cannot probe bubblewrap: /bin/true is missing" }
        let args = [bwrap, "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net",
                    "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--cap-drop", "ALL", "--", "/bin/true"]
        var out = [CChar](repeating: 0, count: 1024)
        var len = 0
        let status = withCStrings(args) { argv in cspawn_probe(bwrap, argv, &out, out.count - 1, &len) }
        if status == 0 { return nil }
        let said = String(decoding: out[0..<len].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let why = said.isEmpty ? (status < 0 ? String(cString: strerror(errno)) : "exit status \(status)") : said
        var fix = "check that unprivileged user namespaces are allowed"
        if said.contains("uid map") || said.contains("Permission denied") || said.contains("Operation not permitted") {
            fix = "unprivileged user namespaces are blocked: on Ubuntu 24.04 set kernel.apparmor_restrict_unprivileged_userns=0 or give bwrap an AppArmor profile; in a container, run it with a seccomp profile that allows unshare/clone of namespaces"
        }
        return "bubblewrap cannot create the sandbox's namespaces here (\(why)); \(fix)"
    }()

    static let containmentFix = "the gateway needs CLONE_NEWPID and CLONE_NEWNS and to mount /proc there (root, or unprivileged user namespaces: on Ubuntu 24.04 set kernel.apparmor_restrict_unprivileged_userns=0; in a container, allow unshare/clone of namespaces)"

    /// Whether agents can be contained here: every agent runs in a pid namespace of its own under a small init, so
    /// that nothing it starts outlives it or escapes its concurrency slot, `release` and `max_runtime`. Nil when
    /// they can, else why not and what to do. Probed once per process by making the namespaces in a child that
    /// mounts its /proc and exits (0.2 ms; it used to start a whole contained /bin/true, 1.2 ms and more).
    public static let containmentProblem: String? = {
        #if os(Linux)
        if cspawn_init_fd() < 0 {
            let dir = ((Files.readLink("/proc/self/exe") ?? "?") as NSString).deletingLastPathComponent
            return "spawngate-init, every agent's init, next to this program in \(dir) (\(String(cString: strerror(errno)))); install it with the gateway ('make install' puts them together)"
        }
        let e = cspawn_containment_probe()
        return e == 0 ? nil : "a pid namespace for each agent (\(String(cString: strerror(e)))); \(containmentFix)"
        #else
        return "a pid namespace for each agent (only Linux has them)"
        #endif
    }()

    /// This process's pid namespace, read once: the gateway never changes its own (agents get theirs by clone).
    static let ownPidNamespace = Files.readLink("/proc/self/ns/pid")

    /// Whether process `pid` runs in this process's pid namespace. Unknown (pid 0, gone, unreadable): false.
    public static func sharesPidNamespace(with pid: Int32) -> Bool {
        #if os(Linux)
        guard pid > 0, let ours = ownPidNamespace, let theirs = Files.readLink("/proc/\(pid)/ns/pid") else { return false }
        return ours == theirs
        #else
        return pid > 0
        #endif
    }

    /// The layers a profile needs that this machine lacks, each with the reason and the fix.
    public static func missing(for profile: SandboxProfile) -> [String] {
        missing(for: profile, landlockABI: landlockABI, seccomp: seccomp,
                bubblewrapProblem: profile == .strict ? bubblewrapProblem : nil, containmentProblem: containmentProblem)
    }

    /// `strict` does not use Landlock: bwrap's mounts are its write fence (a Landlock domain forbids mount(2)).
    /// Containment (``containmentProblem``) is needed by every profile, `none` included: limits hold for all.
    static func missing(for profile: SandboxProfile, landlockABI: Int?, seccomp: Bool, bubblewrapProblem: String?,
                        containmentProblem: String? = nil) -> [String] {
        var out: [String] = []
        #if !os(Linux)
        if profile != .none { return ["a sandbox for this operating system (only Linux is supported; see SECURITY.md)"] }
        #endif
        if let containmentProblem { out.append(containmentProblem) }
        if profile == .standard, landlockABI == nil {
            out.append(landlockMissing)
        }
        if profile != .none, !seccomp {
            out.append(seccompMissing)
        }
        if profile == .strict, let bubblewrapProblem { out.append(bubblewrapProblem) }
        return out
    }

    /// Names of the layers a profile puts in force, for decisions and receipts.
    public static func layers(for profile: SandboxProfile, network: NetworkAccess = .shared) -> [String] {
        var out = ["clean-env", "pidns-init", "private-proc", "new-session", "no-inherited-fds", "rlimits", "no_new_privs", "cwd-by-fd"]
        switch profile {
        case .none: break
        case .standard:
            out += ["landlock-abi\(landlockABI ?? 0)"] + ((landlockABI ?? 0) >= 6 ? ["landlock-scope"] : [])
            out += (geteuid() == 0 ? ["no-capabilities"] : []) + ["seccomp"]
        case .strict:
            out += ["bwrap", "userns", "pidns", "ipcns", "utsns"] + (network == .none ? ["netns"] : [])
            out += ["ro-root", "private-tmp", "private-dev", "hidden-gateway-home", "ro-control-files", "seccomp"]
        }
        return out
    }
}
