import Foundation
import SpawnGate
#if canImport(Glibc)
import Glibc
#endif

extension Bench {
    /// Memory per running agent against the number of agents (issue 27): N agents (`sleep`) under `standard`,
    /// started by the one spawner, each seen from outside as its init (spawngate-init). For each N: the inits'
    /// resident size (Rss, shared pages counted in full for every process) and proportional size (Pss, shared
    /// pages divided among their sharers, so the sum is what they really cost), from /proc/PID/smaps_rollup, and
    /// how much this process (the gateway's side: what starting and holding the agents leaves behind) grew.
    static func agentMemory(_ section: (String) -> Void) throws {
        let dir = NSTemporaryDirectory() + "spawngate-bench-memory-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let home = dir + "/home"
        try FileManager.default.createDirectory(atPath: dir + "/srv/app", withIntermediateDirectories: true)
        _ = try Home.initialize(at: home, name: "vps-broker")
        let laptop = SigningKey.generate()
        try Home(root: home).keyStore.enroll(name: "mac-laptop", key: laptop.publicKey, expected: laptop.publicKey.fingerprint)
        let app = try PathResolver.filesystem.resolve(dir + "/srv/app").get()
        let sleep = access("/usr/bin/sleep", X_OK) == 0 ? "/usr/bin/sleep" : "/bin/sleep"
        let policy = "version: 1\naccept_remote_spawn: true\nclis:\n  sleep: {path: \(sleep), args: [[\"3600\"]]}\nrules:\n"
            + "  - {name: memory, brokers: [mac-laptop], clis: [sleep], cwd: [\(app)], sandbox: standard, rate: 100000/second, burst: 100000}\n"
        try policy.write(toFile: home + "/policy/policy.yaml", atomically: true, encoding: .utf8)
        let pipeline = try DecisionPipeline.open(home: Home(root: home))
        let spawner = LocalSpawner(home: Home(root: home), environment: [:])
        var md = "## Memory per running agent\n\nN agents (`sleep`) under `standard` at once, started by the spawner; each agent is seen from "
        md += "outside as its init, spawngate-init. Rss counts shared pages in full for every process, Pss divides them among "
        md += "the processes sharing them (its sum is what the inits really take); the gateway's growth is this process's "
        md += "resident size with the agents running, less before. Per agent, after the agents have settled.\n\n"
        md += "| agents | init Rss per agent | init Pss per agent | gateway growth per agent |\n|---|---|---|---|\n"
        for n in [1, 10, 50, 100, 200] {
            let before = residentKiB(getpid(), field: "Rss")
            var agents: [SpawnedAgent] = []
            let t = SystemClock().now()
            for _ in 0..<n {
                let e = Envelope.seal(SpawnRequest(name: "bench", cli: "sleep", task: nil, cwd: app, args: ["3600"],
                                                   from: "mac-laptop", to: "vps-broker", iat: t, exp: t + 60).encoded(), with: laptop, domain: .request)
                guard let a = pipeline.decide(e).authorized else { fatalError("memory benchmark request denied") }
                agents.append(try spawner.start(a, output: .inherit))
            }
            usleep(300_000)
            var rss = 0, pss = 0
            for a in agents {
                rss += residentKiB(a.process.pid, field: "Rss")
                pss += residentKiB(a.process.pid, field: "Pss")
            }
            let grew = max(0, residentKiB(getpid(), field: "Rss") - before)
            md += String(format: "| %d | %.0f KiB | %.0f KiB | %.0f KiB |\n", n, Double(rss) / Double(n), Double(pss) / Double(n), Double(grew) / Double(n))
            for a in agents { _ = Supervisor.stop(a.process, grace: 0.05) }
        }
        section(md)
    }

    /// A field of /proc/PID/smaps_rollup, in KiB (0 when unreadable).
    static func residentKiB(_ pid: pid_t, field: String) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0
        }
        return 0
    }
}
