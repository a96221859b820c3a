import Foundation
import Testing
@testable import SpawnGate

/// Issue 25, class 5: a bad agent name is `malformed` at every entry point, never `internal_error`. The name
/// names a directory (`agents/NAME`) and an Agent Relay worker, so it was allowed by the policy and then failed
/// to start, which the gateway reported as its own fault.
@Suite("Hostile seams: a bad agent name is malformed")
struct AgentNameTests {
    static let bad = ["../etc", "a/b", "a b", ".hidden", "-rf", "coder\u{1b}[2J", "é", String(repeating: "a", count: 65)]

    /// The pipeline `check`, `exec`, `serve` and the hook share: each bad name is refused as malformed before any
    /// policy, nonce or rate is looked at, for a spawn and for the control requests that name an agent.
    @Test func thePipelineRefusesEachBadNameAsMalformed() throws {
        let g = try Gateway()
        let p = try g.pipeline()
        for name in Self.bad {
            var q = g.request()
            q.name = name
            let outcome = p.decide(g.envelope(q))
            #expect(outcome.reason == .malformed && outcome.decision.detail.contains("is not a valid agent name"), "\(name): \(outcome.decision.detail)")
            #expect(outcome.authorized == nil)
            for op in [ControlRequest.Operation.release, .logs] {
                let now = g.clock.now()
                let payload = ControlRequest(op: op, name: name, from: "mac-laptop", to: "vps-broker", iat: now, exp: now + 60).encoded()
                let control = p.decideControl(Envelope.seal(payload, with: g.laptop.key, domain: .control))
                #expect(control.decision.reason == .malformed && control.control == nil, "\(op) \(name): \(control.decision.detail)")
            }
        }
        // A name of any length is repeated at most 64 characters long.
        var huge = g.request()
        huge.name = String(repeating: "x/", count: 5000)
        let refused = p.decide(g.envelope(huge)).decision.detail
        #expect(refused.count < 300, "\(refused.count) characters")
        #expect(p.decide(g.envelope()).reason == .allowed, "a good name is still allowed")
    }

    /// Through a real gateway, as `spawn`, `release` and `logs --broker` send them: a signed refusal, `malformed`,
    /// exit 1. Before, a spawn was allowed, failed to make the agent's directory, and came back `internal_error`.
    @Test func aGatewayAnswersMalformedToEachEntryPoint() throws {
        let r = try ServeTests.Remote(rule: ["sandbox: standard"])
        defer { r.serve.kill() }
        for name in ["../etc", "a b"] {
            let spawned = try r.laptop(["spawn", name, "claude", "task", "--broker", "vps-broker", "--cwd", r.g.app])
            #expect(spawned.status == 1 && spawned.stdout.contains("malformed: payload field \"name\""), "\(spawned.stdout) \(spawned.stderr)")
            let released = try r.laptop(["release", name, "--broker", "vps-broker"])
            #expect(released.status == 1 && (released.stdout + released.stderr).contains("malformed"), "\(released.stdout) \(released.stderr)")
            let logs = try r.laptop(["logs", name, "--broker", "vps-broker"])
            #expect(logs.status == 1 && logs.stderr.contains("malformed"), "\(logs.stderr)")
        }
        let reasons = try r.g.auditLines().compactMap { $0["reason"] as? String }
        #expect(!reasons.contains("internal_error") && !reasons.contains("allowed"), "\(reasons)")
        #expect(!FileManager.default.fileExists(atPath: r.g.vps.root + "/agents/a b"))
    }

    /// The MCP server's `agent.add` (the dashboard's spawn sends the same request): a tool error that starts with
    /// the reason code.
    @Test func mcpAgentAddWithABadNameIsMalformed() throws {
        let r = try ServeTests.Remote(rule: ["sandbox: standard"])
        defer { r.serve.kill() }
        let out = try MCPClient.run(home: r.laptopHome, [
            MCPClient.call("agent.add", ["name": "../etc", "cli": "claude", "broker": "vps-broker", "cwd": r.g.app]),
        ])
        let result = try ToolResult(out[0])
        #expect(result.isError && result.text.hasPrefix("malformed: "), "\(result.text)")
    }
}
