import Foundation
import Testing
@testable import SpawnGate

/// The `spawner: agent-relay` backend through `spawngate exec` when the broker is not what it should be. A
/// STAND-IN (`Tests/Interop/agent_relay_standin.py`) plays a listener that is not Agent Relay's broker; the real
/// broker's own behaviour is tested in `RealRelayTests`.
@Suite("Agent Relay backend: a broker that is not what it claims")
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

    /// connection.json lives in a directory agents may write: a listener of the agent's own, written down as
    /// the broker, would receive the task and the launch ticket. Its pid is not an agent-relay-broker, so it is
    /// refused before anything is sent (the stand-in records every request it gets: none). The worker did not
    /// start: start_failed (exit 1), as serve's receipt says for the same start.
    @Test func aListenerThatIsNotTheBrokerGetsNothing() throws {
        let g = try DecisionCLITests.live(["sandbox: standard", "spawner: agent-relay", "max_concurrent: 1"])
        let planted = try Self.startStandIn(g, key: "br_planted")
        defer { Self.stop(planted) }
        let out = try g.cli(["exec", "-"], stdin: g.envelope())
        #expect(out.status == 1 && out.stderr.contains("\"reason\":\"start_failed\""), "\(out.stderr)")
        #expect(out.stderr.contains("which is not a running agent-relay-broker"), "\(out.stderr)")
        #expect(try Self.received(g).isEmpty, "nothing reached the planted listener")
        #expect(try g.check(g.envelope(), ["--dry-run"]).status == 0, "the slot is free again")
    }

    /// connection.json lives in a directory agents may write: a URL off this machine could be a planted one that
    /// would receive the task, so it is refused before anything is sent.
    @Test func aBrokerURLOffLoopbackIsRefused() throws {
        let g = try DecisionCLITests.live(["sandbox: none", "spawner: agent-relay"])
        try FileManager.default.createDirectory(atPath: g.app + "/.agent-relay", withIntermediateDirectories: true)
        try #"{"url":"http://198.51.100.7:3888","port":3888,"api_key":"k","pid":1}"#.write(toFile: g.app + "/.agent-relay/connection.json", atomically: true, encoding: .utf8)
        let out = try g.cli(["exec", "-"], stdin: g.envelope())
        #expect(out.status == 1 && out.stderr.contains("\"reason\":\"start_failed\""), "\(out.stderr)")
        #expect(out.stderr.contains("not http on this machine's loopback"), "\(out.stderr)")
        #expect(try g.check(g.envelope(), ["--dry-run"]).status == 0)
        unlink(g.app + "/.agent-relay/connection.json")
        let missing = try g.cli(["exec", "-"], stdin: g.envelope())
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("no Agent Relay broker found") && missing.stderr.contains(".agentworkforce/relay/connection.json (v14)"), "\(missing.stderr)")
    }
}
