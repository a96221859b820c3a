import CSpawn
#if canImport(Glibc)
import Glibc
#endif

/// Waits for an agent the gateway started, enforcing its maximum runtime on the whole process group.
public enum Supervisor {
    /// Seconds between TERM and KILL when the runtime is up.
    public static let grace: Double = 5

    static func monotonic() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Waits until the agent exits. After `maxRuntime` seconds the group gets SIGTERM, then SIGKILL `grace`
    /// seconds later, so children that ignore TERM die too. When the agent exits, whatever it left running in its
    /// group is killed. Returns the status as a shell reports it (128 + signal when killed).
    public static func wait(_ agent: SpawnedAgent, maxRuntime: Int64?, grace: Double = Supervisor.grace) -> Int32 {
        let start = monotonic()
        var termSent: Double?
        var status: Int32 = 0
        while true {
            let r = waitpid(agent.pid, &status, WNOHANG)
            if r == agent.pid { break }
            if r < 0 && errno != EINTR { status = 0; break }
            let now = monotonic()
            if let maxRuntime, termSent == nil, now - start >= Double(maxRuntime) {
                _ = cspawn_kill_group(agent.pid, SIGTERM)
                termSent = now
            }
            if let t = termSent, now - t >= grace {
                _ = cspawn_kill_group(agent.pid, SIGKILL)
            }
            usleep(10_000)
        }
        // The agent is gone; nothing it started in its group outlives it.
        _ = cspawn_kill_group(agent.pid, SIGKILL)
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }
}
