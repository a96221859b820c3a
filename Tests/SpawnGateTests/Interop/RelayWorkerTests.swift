import Foundation
import Testing
@testable import SpawnGate

#if canImport(Glibc)
import Glibc
#endif

/// The user's story with the real broker: on the laptop `spawngate spawn coder claude "…" --broker vps-broker`; on
/// the VPS the gateway decides and the VPS's real Agent Relay broker (v6 and v14) starts a relay worker, whose
/// program is spawngate's launcher, which starts the approved CLI (the probe, recording what it got) in its sandbox.
// Nested in RealRelayTests (serialized): no two suites of real brokers run at once, so a loaded machine does not
// push a v6 broker past the gateway's 20 s wait for the launcher (seen twice while other suites' brokers ran).
extension RealRelayTests {
@Suite("Sandboxed relay workers through the real broker", .serialized,
       .enabled(if: RealRelay.Version.allInstalled, "the Agent Relay broker binaries are missing from .build-relay/; run `make relay`"))
struct RelayWorkerTests {
    /// Two gateways (laptop, VPS) and the VPS's broker in its project directory, which the VPS's policy allows.
    struct Mesh {
        let relay: RealRelay
        let g: Gateway
        let serve: ServeProcess

        init(_ version: RealRelay.Version, rule: [String], cli: [String] = [], agent: String) throws {
            relay = try RealRelay(version)
            // Outside /tmp, which strict replaces with a private one: the CLI and the probe it becomes must be
            // visible inside the sandbox wherever the repository itself lives.
            g = try Gateway(rule: ["spawner: agent-relay"] + rule, cli: cli, now: SystemClock().now(), base: "/var/tmp")
            let probe = g.dir + "/bin/relay-probe.sh"
            try FileManager.default.copyItem(atPath: RealRelay.probe, toPath: probe)
            chmod(probe, 0o755)
            // The CLI is a script that runs `agent` first, then becomes the probe (which records what it was given).
            try g.script(agent + "\nexec \(probe) \"$@\"")
            let policy = try String(contentsOfFile: g.vps.policyFile, encoding: .utf8)
            try policy.replacingOccurrences(of: "\(g.app)/**", with: "\(relay.project)/**")
                .write(toFile: g.vps.policyFile, atomically: true, encoding: .utf8)
            serve = try ServeProcess(home: g.vps)
            let added = try laptop(try TestSupport.peerAdd("vps-broker", home: g.vps, url: serve.url))
            #expect(added.status == 0, "\(added.stderr)")
        }

        func laptop(_ args: [String]) throws -> TestSupport.Output {
            try TestSupport.spawngate(args + ["--home", g.dir + "/mac-laptop"])
        }

        func spawn() throws -> TestSupport.Output {
            try laptop(["spawn", "coder", "claude", "Implement the plan", "--broker", "vps-broker", "--cwd", relay.project, "--timeout", "60"])
        }

        /// The probe's records: it runs with a scrubbed environment, so under `<cwd>/.probe/pid-N/`.
        func probe() throws -> RealRelay.ProbeRecord {
            try RealRelay.waitFor("the probe's records", within: 20) {
                let dirs = (try? FileManager.default.contentsOfDirectory(atPath: relay.project + "/.probe")) ?? []
                return dirs.first.map { RealRelay.ProbeRecord(dir: relay.project + "/.probe/" + $0) }
            }
        }

        func stop() { serve.kill(); relay.stop(); try? FileManager.default.removeItem(atPath: g.dir) }
    }

    /// Every process's command line on this machine, for credentials that must appear on none.
    static func commandLines() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }.compactMap { pid in
            FileManager.default.contents(atPath: "/proc/\(pid)/cmdline").map { String(decoding: $0.map { $0 == 0 ? 32 : $0 }, as: UTF8.self) }
        }
    }

    @Test("a relay worker runs the approved argv in its sandbox, with no relay credential", arguments: RealRelay.Version.allCases)
    func aSandboxedRelayWorker(_ version: RealRelay.Version) throws {
        let outside = "/var/tmp/spawngate-relay-outside-\(UUID().uuidString)"
        let m = try Mesh(version, rule: ["sandbox: standard", "max_concurrent: 1"],
                         agent: "(echo x > \(outside)) 2>/dev/null\nnohup sleep 305.5 >/dev/null 2>&1 &")
        defer { m.stop(); unlink(outside) }
        let out = try m.spawn()
        #expect(out.status == 0, "\(out.stdout) \(out.stderr)")
        #expect(out.stdout.contains("started coder on vps-broker as an Agent Relay worker: pid ") && out.stdout.contains("landlock"), "\(out.stdout)")
        let probe = try m.probe()
        _ = try RealRelay.waitFor("the broker to type the task", within: 45) { probe.input.contains("Implement the plan") ? true : nil }
        // The approved argv is the CLI alone (the broker types the task): no bypass flag, no --mcp-config.
        #expect(probe.argv == [], "exactly the approved argv: \(probe.argv ?? ["?"])")
        // TERM and TMPDIR from the launcher; PWD is what /bin/sh (the test's CLI script) exports before the probe.
        #expect(Set(probe.env ?? ["?"]).isSubset(of: ["TERM", "TMPDIR", "PWD"]), "no relay token or broker key in its environment: \(probe.env ?? [])")
        #expect(probe.cwd == m.relay.project)
        #expect(probe.tty == "tty", "the broker's PTY is its terminal")
        #expect(!FileManager.default.fileExists(atPath: outside), "its writes outside the cwd fail")
        // Messages still reach it: the broker types them into the worker's terminal.
        try m.relay.sendDM(from: "tester", to: "coder", text: "hello from the laptop")
        _ = try RealRelay.waitFor("the DM in the worker's terminal", within: 45) { probe.input.contains("hello from the laptop") ? true : nil }
        // doctor on the VPS finds the broker as this version writes itself down.
        let doctor = try TestSupport.run(TestSupport.binary, ["doctor", "--home", m.g.vps.root])
        #expect(doctor.stdout.contains("agent relay") && doctor.stdout.contains(version == .v6 ? "the v6 kind" : "v14 or later")
                && doctor.stdout.contains("its API answers"), "\(doctor.stdout)")
        // Started straight against Relaycast (the stand-in), not behind the relay guard: doctor says it is an open door.
        #expect(doctor.stdout.contains("relay guard: the broker is NOT behind the relay guard"), "\(doctor.stdout)")
        let lines = Self.commandLines()
        for secret in ["rk_live", "at_live", m.relay.apiKey] {
            #expect(!lines.contains { $0.contains(secret) }, "\(secret) on a command line")
        }
        // The VPS lists it; a second one waits for the slot; release ends it and the nohup child it left.
        #expect(try m.spawn().stdout.contains("concurrency_limit"))
        let released = try m.laptop(["release", "coder", "--broker", "vps-broker"])
        #expect(released.status == 0, "\(released.stderr)")
        #expect(TestSupport.gone("sleep 305.5"), "release ended the worker's nohup child")
    }

    /// The gateway removes a worker whose launch failed or timed out; v6 refused the empty body it sent with 400,
    /// so the worker stayed registered. Both versions must accept the removal (of a name they do not know, too).
    @Test("the broker accepts the gateway's removal of a worker", arguments: RealRelay.Version.allCases)
    func removalIsAccepted(_ version: RealRelay.Version) throws {
        let relay = try RealRelay(version)
        defer { relay.stop() }
        let connection = try AgentRelayConnection.find(cwd: relay.project, environment: [:])
        if case .failure(let e) = AgentRelayBackend(connection: connection).remove(name: "nobody-\(getpid())") {
            Issue.record("refused: \(e.message)")
        }
    }

    @Test("a relay worker under strict", arguments: RealRelay.Version.allCases)
    func aStrictRelayWorker(_ version: RealRelay.Version) throws {
        try #require(SandboxSupport.bubblewrapProblem == nil, "bubblewrap cannot make namespaces here")
        let m = try Mesh(version, rule: ["sandbox: strict"], agent: "cat .agent-relay/connection.json .agentworkforce/relay/connection.json > seen.txt 2>/dev/null")
        defer { m.stop() }
        let out = try m.spawn()
        #expect(out.status == 0, "\(out.stdout) \(out.stderr)")
        #expect(out.stdout.contains("bwrap"), "\(out.stdout)")
        let probe = try m.probe()
        _ = try RealRelay.waitFor("the broker to type the task", within: 45) { probe.input.contains("Implement the plan") ? true : nil }
        #expect(probe.argv == [])
        let seen = (try? String(contentsOfFile: m.relay.project + "/seen.txt", encoding: .utf8)) ?? ""
        #expect(!seen.contains(m.relay.apiKey), "the broker's key is hidden from a strict worker: \(seen)")
    }

    /// A CLI that dies at once is reported as failed with its status and last words, not as started (v6 itself
    /// answers 200 for it).
    @Test("a CLI that dies young is start_failed, with its status and output", arguments: RealRelay.Version.allCases)
    func aWorkerThatDiesYoung(_ version: RealRelay.Version) throws {
        let m = try Mesh(version, rule: ["sandbox: standard", "max_concurrent: 1"], agent: "echo 'claude: no API key configured' >&2\nexit 3")
        defer { m.stop() }
        let out = try m.spawn()
        #expect(out.status == 1, "\(out.stdout) \(out.stderr)")
        #expect(out.stdout.contains("start_failed") && out.stdout.contains("exit status 3") && out.stdout.contains("no API key configured"), "\(out.stdout)")
        let agents = try m.laptop(["agents", "--broker", "vps-broker"]).stdout
        #expect(agents.contains("exited 3"), "\(agents)")
        // Its last words are kept with the agent (its terminal was the broker's).
        let logs = try TestSupport.run(TestSupport.binary, ["logs", "coder", "--home", m.g.vps.root])
        #expect((logs.stdout + logs.stderr).contains("no API key configured"), "\(logs.stdout) \(logs.stderr)")
    }
}
}
