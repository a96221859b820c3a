import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The real Agent Relay brokers (v6.0.0, which users run, and v14.0.0, the latest), offline, against the Relaycast
/// stand-in: what `POST /api/spawn` really does to a CLI (argv, environment, cwd, PTY, the typed task), that messages
/// reach its PTY, that `DELETE /api/spawned/{name}` stops it, and that a spawn frame pushed by "Relaycast" starts an
/// agent with no local check at all (the open door `relay guard` must close).
@Suite("Real Agent Relay brokers, offline", .serialized,
       .enabled(if: RealRelay.Version.allInstalled, "the Agent Relay broker binaries are missing from .build-relay/; run `make relay`"))
struct RealRelayTests {
    static let versions = RealRelay.Version.allCases

    /// Starts a broker, runs `body`, then stops everything and checks that no process of the run is left and that
    /// nothing was contacted beyond loopback.
    func withRelay(_ version: RealRelay.Version, _ body: (RealRelay) throws -> Void) throws {
        let relay = try RealRelay(version)
        defer {
            relay.stop()
            #expect(relay.processes().isEmpty, "processes of the run survived stop()")
        }
        try body(relay)
        #expect(relay.nonLoopbackSockets().isEmpty, "the broker holds sockets to a host other than loopback")
        for record in try relay.standinRecords() where record["kind"] as? String == "http" {
            let host = (record["headers"] as? [String: String])?["host"] ?? ""
            #expect(host.hasPrefix("127.0.0.1:"), "a request for another host reached the stand-in: \(host)")
        }
    }

    /// Spawns the probe as `name` and waits until the broker has typed the task into its terminal.
    func spawnProbe(_ relay: RealRelay, name: String, cli: String? = nil, task: String, cwd: String) throws -> (RealRelay.ProbeRecord, RealRelay.HTTPResponse, Double) {
        let started = Date().timeIntervalSince1970
        let answer = try relay.spawn(name: name, cli: cli ?? RealRelay.probe, task: task, cwd: cwd)
        #expect(answer.status == 200, "POST /api/spawn answered \(answer.status): \(answer.text)")
        let record = relay.probe(name)
        _ = try RealRelay.waitFor("\(relay.version) to type the task into \(name)'s terminal", within: 45) {
            record.input.contains(task) ? true : nil
        }
        return (record, answer, started)
    }

    @Test("the broker starts offline and makes only the Relaycast calls we know", arguments: versions)
    func startsOffline(_ version: RealRelay.Version) throws {
        try withRelay(version) { relay in
            let health = try RealRelay.http("GET", relay.url + "/health")
            #expect(health.status == 200)
            let unauthenticated = try RealRelay.http("POST", relay.url + "/api/spawn", json: ["name": "x"])
            #expect(unauthenticated.status == 401)
            let expected: [String]
            switch version {
            case .v6: expected = ["POST /v1/workspaces", "POST /v1/agents", "PUT /v1/workspace/stream", "POST /v1/channels",
                                  "POST /v1/channels/general/join", "WS /v1/ws"]
            case .v14: expected = ["POST /v1/workspaces", "POST /v1/agents", "POST /v1/nodes", "POST /v1/channels",
                                   "POST /v1/channels/general/join", "POST /v1/channels/general/mute", "WS /v1/node/ws",
                                   "WS /v1/node/terminal/ws"]
            }
            let calls = try RealRelay.waitFor("the start-up calls", within: 20) {
                let calls = try relay.relaycastCalls()
                return Set(expected).isSubset(of: calls) ? calls : nil
            }
            print("[real-relay] \(version) start-up calls: \(calls.joined(separator: ", "))")
            if version == .v14 {
                // node.register must have been answered, or v14 reconnects every ~10 s.
                let frames = try relay.standinRecords().filter { $0["kind"] as? String == "ws_in" }
                #expect(frames.contains { ($0["frame"] as? [String: Any])?["type"] as? String == "node.register" })
            }
        }
    }

    @Test("POST /api/spawn with the probe's path: its cwd, a PTY, no arguments, and the task typed in", arguments: versions)
    func spawnRunsTheCLIInItsCwdWithAPTY(_ version: RealRelay.Version) throws {
        try withRelay(version) { relay in
            let cwd = TestSupport.tempDir("relay-cwd")
            let (record, answer, started) = try spawnProbe(relay, name: "worker1", task: "Implement the plan \(version)", cwd: cwd)
            #expect(record.argv == [], "argv: \(record.argv ?? [])")
            #expect(record.cwd == cwd)
            #expect(record.tty == "tty")
            #expect(record.input.contains("Relay message from broker"))
            let spawned = try RealRelay.http("GET", relay.url + "/api/spawned", headers: ["X-API-Key": relay.apiKey])
            #expect(spawned.text.contains("\"worker1\""))
            if let ready = record.readyAt, let typed = record.lastTypedAt {
                print(String(format: "[real-relay] %@: spawn answered %@; CLI showed its prompt %.2f s after POST, task fully typed after %.2f s",
                             version.rawValue, answer.text, ready - started, typed - started))
            }
        }
    }

    @Test("a `cli` command line is split shell-style and passed on as is", arguments: versions)
    func commandLineCLIIsSplitShellStyle(_ version: RealRelay.Version) throws {
        try withRelay(version) { relay in
            let cwd = TestSupport.tempDir("relay-cwd")
            let (record, _, _) = try spawnProbe(relay, name: "ticketed", cli: "\(RealRelay.probe) --ticket X claude", task: "Ticket task", cwd: cwd)
            #expect(record.argv == ["--ticket", "X", "claude"], "argv: \(record.argv ?? [])")
            #expect(record.cwd == cwd)
        }
    }

    @Test("a program named claude gets the permission bypass and the MCP config (with the agent token) in argv", arguments: versions)
    func aCLINamedClaudeGetsTheBypassFlag(_ version: RealRelay.Version) throws {
        try withRelay(version) { relay in
            let bin = TestSupport.tempDir("relay-bin")
            try FileManager.default.createSymbolicLink(atPath: bin + "/claude", withDestinationPath: RealRelay.probe)
            let (record, _, _) = try spawnProbe(relay, name: "claudish", cli: bin + "/claude", task: "Claude task", cwd: TestSupport.tempDir("relay-cwd"))
            let argv = record.argv ?? []
            #expect(argv.first == "--dangerously-skip-permissions")
            #expect(argv.contains("--mcp-config"))
            #expect(argv.contains { $0.contains("RELAY_AGENT_TOKEN") }, "the agent token is on the command line")
            print("[real-relay] \(version) argv for cli=<dir>/claude: \(argv.map { $0.count > 60 ? String($0.prefix(60)) + "…" : $0 })")
        }
    }

    @Test("the spawned CLI gets the broker's tokens in its environment", arguments: versions)
    func tokensAreInTheEnvironment(_ version: RealRelay.Version) throws {
        try withRelay(version) { relay in
            let (record, _, _) = try spawnProbe(relay, name: "envy", task: "Env task", cwd: TestSupport.tempDir("relay-cwd"))
            let names = Set(record.env ?? [])
            for name in ["RELAY_API_KEY", "RELAY_AGENT_TOKEN", "RELAY_AGENT_NAME", "RELAY_AGENT_TYPE", "RELAY_WORKSPACE_ID",
                         "RELAY_WORKSPACES_JSON", "RELAY_BASE_URL"] {
                #expect(names.contains(name), "\(name) missing from \(names.sorted())")
            }
            // The whole broker environment is inherited: v6 even hands the broker's own API key to the CLI.
            #expect(names.contains("RELAY_BROKER_API_KEY") == (version == .v6))
            if version == .v14 { #expect(names.contains("RELAY_WORKSPACE_KEY") && names.contains("AGENT_RELAY_WORKSPACE_KEY")) }
            print("[real-relay] \(version) environment names: \(names.sorted().joined(separator: " "))")
        }
    }

    @Test("a direct message posted to the agent through Relaycast reaches its PTY", arguments: versions)
    func aMessageReachesThePTY(_ version: RealRelay.Version) throws {
        try withRelay(version) { relay in
            let (record, _, _) = try spawnProbe(relay, name: "listener", task: "Wait for mail", cwd: TestSupport.tempDir("relay-cwd"))
            let started = Date()
            try relay.sendDM(from: "tester", to: "listener", text: "hello from tester \(version)")
            _ = try RealRelay.waitFor("the DM in listener's terminal", within: 30) {
                record.input.contains("hello from tester \(version)") ? true : nil
            }
            print(String(format: "[real-relay] %@: DM posted to Relaycast → typed into the agent's terminal (no guard) in %.3f s",
                         version.rawValue, Date().timeIntervalSince(started)))
            #expect(record.input.contains("Relay message from tester"))
        }
    }

    @Test("DELETE /api/spawned/{name} stops the CLI", arguments: versions)
    func releaseStopsTheCLI(_ version: RealRelay.Version) throws {
        try withRelay(version) { relay in
            let (record, _, _) = try spawnProbe(relay, name: "doomed", task: "Soon gone", cwd: TestSupport.tempDir("relay-cwd"))
            let pid = try #require(record.pid)
            #expect(kill(pid, 0) == 0)
            let answer = try relay.release("doomed")
            #expect(answer.status == 200, "DELETE answered \(answer.status): \(answer.text)")
            _ = try RealRelay.waitFor("the probe (pid \(pid)) to exit", within: 15) {
                relay.processes().contains(pid) ? nil : true
            }
            let calls = try relay.relaycastCalls()
            #expect(calls.contains("POST /v1/agents/release"))
        }
    }

    /// The open door: a frame from "Relaycast" starts any program, in the broker's own cwd, with no local check.
    @Test("a spawn frame pushed through Relaycast starts an agent (v6 agent.spawn_requested, v14 action.invoke)", arguments: versions)
    func aPushedSpawnFrameStartsAnAgent(_ version: RealRelay.Version) throws {
        try withRelay(version) { relay in
            let frame: [String: Any]
            let kind: String
            switch version {
            case .v6:
                frame = ["type": "agent.spawn_requested",
                         "agent": ["name": "intruder", "cli": RealRelay.probe, "task": "Pushed task", "channel": NSNull(), "already_existed": false]]
                kind = "ws"
            case .v14:
                frame = ["type": "action.invoke", "v": 1, "invocation_id": "inv_intruder", "action": "spawn:claude",
                         "input": ["name": "intruder", "cli": RealRelay.probe, "task": "Pushed task"]]
                kind = "node"
            }
            let reached = try relay.push(frame, kind: kind)
            #expect(!reached.isEmpty, "no \(kind) socket connected")
            let record = relay.probe("intruder")
            _ = try RealRelay.waitFor("the pushed agent's task in its terminal", within: 45) {
                record.input.contains("Pushed task") ? true : nil
            }
            #expect(record.cwd == relay.project, "runs in the broker's cwd")
            #expect(record.tty == "tty")
            if version == .v14 {
                let results = try RealRelay.waitFor("action.result", within: 20) {
                    try relay.standinRecords().first { (($0["frame"] as? [String: Any])?["type"] as? String) == "action.result" }
                }
                let output = (results["frame"] as? [String: Any])?["output"] as? [String: Any]
                #expect(output?["spawned"] as? Bool == true)
            }
        }
    }

    /// The same push as the open door above, with the broker behind `spawngate relay guard`: the frame reaches the
    /// guard's socket to the broker and no further; it is an audited denial, and nothing starts. Messages still flow
    /// both ways through the guard (a DM into an agent's terminal; the broker's own send out to Relaycast), an
    /// unknown frame type on the control socket is dropped (fail closed), and v14's terminal socket never reaches
    /// the upstream.
    @Test("behind the relay guard, the same pushed spawn frame starts nothing and is audited; messages still flow", arguments: versions)
    func aPushedSpawnFrameIsDroppedByTheGuard(_ version: RealRelay.Version) throws {
        let dir = TestSupport.tempDir("guarded")
        let (home, _) = try TestSupport.makeHome("vps-broker", in: dir)
        var guardProcess: GuardProcess?
        let relay = try RealRelay(version, via: { standin in
            let g = try GuardProcess(home: home.root, upstream: standin)
            guardProcess = g
            return g.url
        })
        let g = try #require(guardProcess)
        defer {
            relay.stop()
            #expect(g.stop() == 0, "the guard exits 0 on SIGTERM: \(g.stderr)")
            #expect(relay.processes().isEmpty, "processes of the run survived stop()")
        }
        let kind = version == .v6 ? "ws" : "node"
        let frame: [String: Any] = version == .v6
            ? ["type": "agent.spawn_requested", "agent": ["name": "intruder", "cli": RealRelay.probe, "task": "Pushed task", "channel": NSNull(), "already_existed": false]]
            : ["type": "action.invoke", "v": 1, "invocation_id": "inv_intruder", "action": "spawn:claude",
               "input": ["name": "intruder", "cli": RealRelay.probe, "task": "Pushed task"]]
        _ = try RealRelay.waitFor("the broker's \(kind) socket through the guard", within: 30) { try relay.push(["type": "pong"], kind: kind).isEmpty ? nil : true }
        let reached = try relay.push(frame, kind: kind)
        #expect(!reached.isEmpty, "the stand-in reached the guard's upstream socket")
        let line = try g.waitForAudit("denied_by_rule", containing: version == .v6 ? "agent.spawn_requested" : "action.invoke 'spawn:claude'")
        #expect(line["decision"] as? String == "deny" && line["rule"] as? String == "relay-guard", "\(line)")
        // Relaycast's own spawn API (POST /v1/agents/spawn, any workspace-key holder) is dropped the same way.
        let key = try relay.workspaceKey()
        _ = try RealRelay.http("POST", relay.standinURL + "/v1/agents/spawn", json: ["name": "cloudy", "cli": RealRelay.probe, "task": "Cloud task"],
                               headers: ["Authorization": "Bearer \(key)"])
        if version == .v6 { try g.waitForAudit("denied_by_rule", containing: "name cloudy") }
        // A frame type the guard does not know, on the control socket: dropped (fail closed), audited.
        _ = try relay.push(["type": "agent.teleport_requested", "agent": ["name": "x"]], kind: kind)
        try g.waitForAudit("denied_by_rule", containing: "'agent.teleport_requested'")
        if version == .v14 {
            try g.waitForAudit("denied_by_rule", containing: "remote-terminal socket")
            let sockets = try RealRelay.http("GET", relay.standinURL + "/_standin/sockets").json as? [[String: Any]] ?? []
            #expect(!sockets.contains { $0["kind"] as? String == "terminal" }, "no terminal socket reaches Relaycast: \(sockets)")
        }
        // The frames were dropped before the broker: once their lines are written, nothing of theirs can start.
        let spawned = try RealRelay.http("GET", relay.url + "/api/spawned", headers: ["X-API-Key": relay.apiKey])
        #expect(!spawned.text.contains("intruder") && !spawned.text.contains("cloudy"), "\(spawned.text)")
        #expect(!FileManager.default.fileExists(atPath: relay.probe("intruder").dir), "the pushed agent never ran")
        #expect(!FileManager.default.fileExists(atPath: relay.probe("cloudy").dir), "the cloud-spawned agent never ran")

        // Messages in: a DM reaches a local agent's terminal through the guard.
        let (record, _, _) = try spawnProbe(relay, name: "listener", task: "Wait for mail", cwd: TestSupport.tempDir("relay-cwd"))
        let started = Date()
        try relay.sendDM(from: "tester", to: "listener", text: "hello through the guard \(version)")
        _ = try RealRelay.waitFor("the DM in listener's terminal", within: 30) {
            record.input.contains("hello through the guard \(version)") ? true : nil
        }
        print(String(format: "[relay-guard] %@: DM posted to Relaycast → typed into the agent's terminal through the guard in %.3f s",
                     version.rawValue, Date().timeIntervalSince(started)))
        // And a channel message (v6 reads it from its workspace stream, v14 gets a deliver frame on its node socket).
        try relay.postChannelMessage(from: "tester", channel: "general", text: "hello channel through the guard \(version)")
        _ = try RealRelay.waitFor("the channel message in listener's terminal", within: 30) {
            record.input.contains("hello channel through the guard \(version)") ? true : nil
        }
        // Messages out: the broker's own send goes up through the guard to Relaycast.
        let sent = try RealRelay.http("POST", relay.url + "/api/send", json: ["to": "tester", "text": "hello out \(version)"], headers: ["X-API-Key": relay.apiKey])
        #expect((200..<300).contains(sent.status), "POST /api/send answered \(sent.status): \(sent.text)")
        _ = try RealRelay.waitFor("the broker's message at Relaycast", within: 30) {
            try relay.directMessages().contains { $0.text.contains("hello out \(version)") } ? true : nil
        }
        #expect(relay.nonLoopbackSockets().isEmpty, "the broker holds sockets to a host other than loopback")
    }

    /// Relaycast's own spawn API fans `agent.spawn_requested` out to every broker online: v6 acts on it; v14 has no
    /// workspace socket open, so nothing reaches it this way.
    @Test("POST /v1/agents/spawn with the workspace key reaches v6 and not v14", arguments: versions)
    func theCloudSpawnAPI(_ version: RealRelay.Version) throws {
        try withRelay(version) { relay in
            let ws = try RealRelay.http("POST", relay.standinURL + "/v1/workspaces", json: ["name": "anyone"])
            let key = try #require(((ws.json as? [String: Any])?["data"] as? [String: Any])?["api_key"] as? String)
            let answer = try RealRelay.http("POST", relay.standinURL + "/v1/agents/spawn",
                                            json: ["name": "cloudy", "cli": RealRelay.probe, "task": "Cloud task"],
                                            headers: ["Authorization": "Bearer \(key)"])
            let sent = ((answer.json as? [String: Any])?["data"] as? [String: Any])?["sent_to_sockets"] as? Int
            switch version {
            case .v6:
                #expect(sent == 1)
                let record = relay.probe("cloudy")
                _ = try RealRelay.waitFor("the cloud-spawned agent's task", within: 45) { record.input.contains("Cloud task") ? true : nil }
                #expect(record.cwd == relay.project)
            case .v14:
                #expect(sent == 0)
            }
        }
    }

    /// A CLI that dies at once, and one that does not exist. What the broker answers: v6 says success either way (the
    /// worker silently leaves /api/spawned); v14 says 500 for a missing program, but a program that starts and exits
    /// at once races its startup check (200 here). Either way the agent leaves /api/spawned.
    @Test("a CLI that dies at once, or does not exist", arguments: versions)
    func aCLIThatDiesYoung(_ version: RealRelay.Version) throws {
        try withRelay(version) { relay in
            let cwd = TestSupport.tempDir("relay-cwd")
            let mayfly = try relay.spawn(name: "mayfly", cli: "\(RealRelay.probe) --probe-exit=3", task: "Never typed", cwd: cwd)
            let record = relay.probe("mayfly")
            _ = try RealRelay.waitFor("the probe's records", within: 20) { record.argv }
            #expect(record.argv == ["--probe-exit=3"])
            #expect([200, 500].contains(mayfly.status), "\(mayfly.text)")
            let missing = try relay.spawn(name: "ghost", cli: "/nonexistent/agent-cli", task: "Never typed", cwd: cwd)
            #expect(missing.status == (version == .v6 ? 200 : 500), "\(missing.text)")
            print("[real-relay] \(version) dying CLI: \(mayfly.status) \(mayfly.text); missing CLI: \(missing.status) \(missing.text)")
            _ = try RealRelay.waitFor("both to leave /api/spawned", within: 20) {
                let list = try RealRelay.http("GET", relay.url + "/api/spawned", headers: ["X-API-Key": relay.apiKey])
                return list.text.contains("\"mayfly\"") || list.text.contains("\"ghost\"") ? nil : true
            }
        }
    }
}
