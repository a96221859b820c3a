import Foundation
import Testing
@testable import SpawnGate

/// The `spawner: agent-relay` backend through `spawngate exec`, against `Tests/Interop/agent_relay_standin.py`:
/// a STAND-IN for Agent Relay's broker that implements its documented `POST /api/spawn` contract (the real broker
/// cannot run here).
@Suite("Agent Relay backend (against a stand-in broker)")
struct AgentRelayBackendTests {
    /// Starts the stand-in with its state directory inside the project, as `agent-relay up` there would.
    static func startStandIn(_ g: Gateway, key: String) throws -> Process {
        let state = g.app + "/.agent-relay"
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", TestSupport.packageRoot + "/Tests/Interop/agent_relay_standin.py", state, key]
        try p.run()
        for _ in 0..<1000 where !FileManager.default.fileExists(atPath: state + "/connection.json") { usleep(5_000) }
        return p
    }

    /// SIGKILL: the test runner blocks SIGTERM, and its children inherit that mask.
    static func stop(_ p: Process) {
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    static func received(_ g: Gateway) throws -> [[String: Any]] {
        guard let text = try? String(contentsOfFile: g.app + "/.agent-relay/received.jsonl", encoding: .utf8) else { return [] }
        return try text.split(separator: "\n").map { try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
    }

    @Test func anApprovedRequestIsHandedToTheBrokerWithItsKey() throws {
        let g = try DecisionCLITests.live(["sandbox: none", "spawner: agent-relay", "max_concurrent: 1"])
        let broker = try Self.startStandIn(g, key: "br_test-key")
        defer { Self.stop(broker) }
        let out = try g.cli(["exec", "-"], stdin: g.envelope(g.request(args: ["--model", "opus"])))
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stdout.contains("handed coder to the Agent Relay broker") && out.stdout.contains("\"success\": true"), "\(out.stdout)")
        let got = try Self.received(g)
        #expect(got.count == 1)
        let headers = try #require(got.first?["headers"] as? [String: String])
        #expect(headers.first { $0.key.lowercased() == "x-api-key" }?.value == "br_test-key", "\(headers)")
        let body = try #require(try JSONSerialization.jsonObject(with: Data((got[0]["body"] as! String).utf8)) as? [String: Any])
        #expect(body["name"] as? String == "coder")
        #expect(body["cli"] as? String == "claude")
        #expect(body["task"] as? String == "Implement the plan")
        #expect(body["args"] as? [String] == ["--model", "opus"])
        #expect(body["cwd"] as? String == g.app)
        #expect(Set(body.keys) == ["name", "cli", "task", "args", "cwd"])

        // A denied request never reaches the broker.
        let denied = try g.cli(["exec", "-"], stdin: g.envelope(g.request(cwd: "/etc")))
        #expect(denied.status == 1)
        #expect(try Self.received(g).count == 1)
    }

    @Test func aBrokerThatRefusesOrIsDownIsAnErrorAndFreesTheSlot() throws {
        let g = try DecisionCLITests.live(["sandbox: none", "spawner: agent-relay", "max_concurrent: 1"])
        let broker = try Self.startStandIn(g, key: "br_real")
        // The broker rotated its key: connection.json now names an old one.
        let file = g.app + "/.agent-relay/connection.json"
        var conn = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any])
        conn["api_key"] = "br_stale"
        try JSONSerialization.data(withJSONObject: conn).write(to: URL(fileURLWithPath: file))
        let refused = try g.cli(["exec", "-"], stdin: g.envelope())
        #expect(refused.status == 2)
        #expect(refused.stderr.contains("HTTP 401") && refused.stderr.contains("api_key"), "\(refused.stderr)")

        Self.stop(broker)
        conn["api_key"] = "br_real"
        try JSONSerialization.data(withJSONObject: conn).write(to: URL(fileURLWithPath: file))
        let down = try g.cli(["exec", "-"], stdin: g.envelope())
        #expect(down.status == 2)
        #expect(down.stderr.contains("did not answer") && down.stderr.contains("is it running?"), "\(down.stderr)")
        // Neither attempt keeps the rule's only slot.
        #expect(try g.check(g.envelope(), ["--dry-run"]).status == 0)
    }

    /// connection.json lives in a directory agents may write: a URL off this machine could be a planted one that
    /// would receive the task, so it is refused before anything is sent.
    @Test func aBrokerURLOffLoopbackIsRefused() throws {
        let g = try DecisionCLITests.live(["sandbox: none", "spawner: agent-relay"])
        try FileManager.default.createDirectory(atPath: g.app + "/.agent-relay", withIntermediateDirectories: true)
        try #"{"url":"http://198.51.100.7:3888","port":3888,"api_key":"k","pid":1}"#.write(toFile: g.app + "/.agent-relay/connection.json", atomically: true, encoding: .utf8)
        let out = try g.cli(["exec", "-"], stdin: g.envelope())
        #expect(out.status == 2)
        #expect(out.stderr.contains("not http on this machine's loopback"), "\(out.stderr)")
        unlink(g.app + "/.agent-relay/connection.json")
        let missing = try g.cli(["exec", "-"], stdin: g.envelope())
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("no Agent Relay broker") && missing.stderr.contains("agent-relay up"), "\(missing.stderr)")
    }
}
