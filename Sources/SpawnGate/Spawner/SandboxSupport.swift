import CSpawn

/// What this machine can enforce, probed once: a profile whose layer is missing is refused, never downgraded.
public enum SandboxSupport {
    /// The running kernel's Landlock ABI version, or nil when Landlock is unavailable.
    public static let landlockABI: Int? = {
        let abi = cspawn_landlock_abi()
        return abi >= 1 ? Int(abi) : nil
    }()

    public static let seccomp: Bool = cspawn_seccomp_available() == 1

    /// The layers a profile needs that this machine lacks, each with the reason.
    public static func missing(for profile: SandboxProfile) -> [String] {
        var out: [String] = []
        if profile != .none {
            if landlockABI == nil { out.append("Landlock (the kernel has no Landlock; it needs Linux 5.13+ with CONFIG_SECURITY_LANDLOCK and lsm=landlock)") }
            if !seccomp { out.append("seccomp (the kernel refuses seccomp filters)") }
        }
        if profile == .strict {
            // Refused rather than run as `standard`: a profile never silently means less than it says.
            out.append("bubblewrap namespaces and read-only control files (not built in this version; use 'standard')")
        }
        return out
    }

    /// Names of the layers a profile puts in force, for decisions and receipts.
    public static func layers(for profile: SandboxProfile) -> [String] {
        var out = ["clean-env", "new-session", "no-inherited-fds", "rlimits", "no_new_privs", "cwd-recheck"]
        if profile != .none {
            out += ["landlock-abi\(landlockABI ?? 0)", "seccomp"]
        }
        return out
    }
}
