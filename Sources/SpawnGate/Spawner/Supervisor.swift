import CSpawn
#if canImport(Glibc)
import Glibc
#endif

/// Waits for and stops agents the gateway started. An agent is seen from outside as its init (pid 1 of the
/// agent's own pid namespace, see `cspawn_start`): the init forwards TERM to every process of the namespace, and
/// when the init dies, by SIGKILL or because the agent's own process exited, the kernel kills all of them.
public enum Supervisor {
    /// Seconds between TERM and KILL when the runtime is up.
    public static let grace: Double = 5

    /// Seconds on the monotonic clock, for deadlines (never the wall clock, which can step).
    public static func monotonic() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Waits until the agent exits. After `maxRuntime` seconds every process of the agent gets SIGTERM, then
    /// SIGKILL `grace` seconds later, so children that ignore TERM die too. When the agent exits, nothing it
    /// started is left running. Returns the status as a shell reports it (128 + signal when killed).
    public static func wait(_ agent: SpawnedAgent, maxRuntime: Int64?, grace: Double = Supervisor.grace) -> Int32 {
        enum Phase { case running, termSent(at: Double), killSent }
        func milliseconds(_ seconds: Double) -> Int32 { Int32(min(max(0, seconds * 1000), 86_400_000).rounded(.up)) }
        let start = monotonic()
        var phase = Phase.running
        var status: Int32 = 0
        while true {
            // Sleep until the agent exits or the next deadline (TERM, then KILL) comes, whichever is first.
            let now = monotonic()
            let timeout: Int32
            switch phase {
            case .running: timeout = maxRuntime.map { milliseconds(Double($0) - (now - start)) } ?? -1
            case .termSent(let t): timeout = milliseconds(grace - (now - t))
            case .killSent: timeout = -1
            }
            let r = cspawn_wait(agent.pid, timeout, &status)
            if r == 1 { break }
            if r < 0 { status = 0; break }
            let later = monotonic()
            switch phase {
            case .running:
                if let maxRuntime, later - start >= Double(maxRuntime) {
                    _ = kill(agent.pid, SIGTERM)
                    phase = .termSent(at: later)
                }
            case .termSent(let t):
                if later - t >= grace {
                    _ = kill(agent.pid, SIGKILL)
                    phase = .killSent
                }
            case .killSent: break
            }
        }
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }

    /// Stops an agent another process may be waiting for: SIGTERM to all of it, SIGKILL if it is still alive
    /// after `grace` seconds. The identity (pid and start time) is checked before each signal, so a recycled pid
    /// is never signalled. Returns false when the agent was already gone.
    public static func stop(_ process: ProcessIdentity, grace: Double = Supervisor.grace) -> Bool {
        guard process.isAlive else { return false }
        _ = kill(process.pid, SIGTERM)
        let deadline = monotonic() + grace
        while process.isAlive && monotonic() < deadline { usleep(20_000) }
        // The init, and with it the whole namespace: whatever ignored TERM.
        if process.isAlive { _ = kill(process.pid, SIGKILL) }
        while process.isAlive && monotonic() < deadline + 5 { usleep(10_000) }
        return true
    }
}
