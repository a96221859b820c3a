import CSpawn
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What every spawngate process sets before it does anything else.
public enum ProcessHardening {
    public static func apply() {
        // A file-size limit must make the audit append fail with EFBIG (and the decision deny), not kill us.
        signal(SIGXFSZ, SIG_IGN)
        #if os(Linux)
        // An agent runs under the gateway's uid: without this it could read the gateway's environment (every API
        // key, not only those the policy passes on) and memory through /proc/PID/environ and /proc/PID/mem.
        _ = cspawn_make_nondumpable()
        #endif
    }
}
