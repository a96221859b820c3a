import Foundation
import Testing
@testable import SpawnGate
@testable import SpawnGateServer
import Logging

/// What the guard does to each frame, without processes.
@Suite("Relay guard: frames and workspace messages")
struct GuardFilterTests {
    func judge(_ json: String, _ socket: GuardFilter.Socket) -> GuardFilter.Verdict { GuardFilter.judge(Array(json.utf8), on: socket) }

    func reason(_ v: GuardFilter.Verdict) -> ReasonCode? {
        if case .drop(let d) = v { return d.reason }
        return nil
    }

    @Test("spawn and action frames are dropped, with who and what in the detail")
    func spawnFramesAreDropped() {
        let v6 = judge(#"{"type":"agent.spawn_requested","agent":{"name":"intruder","cli":"claude","task":"x"}}"#, .workspace)
        guard case .drop(let d) = v6 else { Issue.record("passed: \(v6)"); return }
        #expect(d.reason == .deniedByRule && d.rule == "relay-guard" && d.detail.contains("name intruder, cli claude"))
        #expect(reason(judge(#"{"type":"action.invoke","action":"spawn:claude","input":{"name":"i"}}"#, .node)) == .deniedByRule)
        #expect(reason(judge(#"{"type":"action.invoke","action":"release","input":{"name":"i"}}"#, .node)) == .deniedByRule)
        #expect(reason(judge(#"{"type":"command.invoked","command":"x"}"#, .workspace)) == .deniedByRule)
        #expect(reason(judge(#"{"type":"reply","ok":true}"#, .terminal)) == .deniedByRule, "nothing passes on the terminal socket")
    }

    @Test("unknown types fail closed; messaging and plumbing pass")
    func unknownTypesFailClosed() {
        #expect(reason(judge(#"{"type":"agent.teleport_requested"}"#, .workspace)) == .deniedByRule)
        #expect(reason(judge(#"{"type":"node.exec"}"#, .node)) == .deniedByRule)
        #expect(reason(judge(#"{"type":"dm.received"}"#, .node)) == .deniedByRule, "a workspace type is not a node type")
        for t in ["message.created", "dm.received", "thread.reply", "agent.online", "pong", "channel.created", "agent.release_requested"] {
            #expect(judge(#"{"type":"\#(t)","message":{"text":"hi","agent_name":"a"}}"#, .workspace) == .pass, "\(t)")
        }
        #expect(judge(#"{"type":"reply","v":1,"id":"r1","ok":true,"data":{}}"#, .node) == .pass)
        #expect(judge(#"{"type":"deliver","payload":{"type":"dm.received","data":{"text":"hi"}}}"#, .node) == .pass)
        #expect(reason(judge(#"{"type":"deliver","payload":{"type":"agent.spawn_requested","data":{}}}"#, .node)) == .deniedByRule,
                "a delivery must carry a message")
    }

    @Test("frames two parsers could read differently are malformed")
    func ambiguousFramesAreMalformed() {
        #expect(reason(judge(#"{"type":"message.created","type":"agent.spawn_requested"}"#, .workspace)) == .malformed)
        #expect(reason(judge("not json", .workspace)) == .malformed)
        #expect(reason(judge(#"["type"]"#, .node)) == .malformed)
        #expect(reason(judge(#"{"type":7}"#, .workspace)) == .malformed)
        #expect(reason(judge(#"{"type":"message.created"} trailing"#, .workspace)) == .malformed)
    }

    @Test("a spawngate workspace message is the mailbox's, never the broker's")
    func ourMessagesAreIntercepted() {
        let text = RelayWire.format(.request(to: "vps-broker", id: "abcdef0123456789", op: .spawn, payload: Array(#"{"sealed":"x"}"#.utf8)))
        let frame = String(decoding: try! JSONSerialization.data(withJSONObject: ["type": "dm.received", "message": ["agent_name": "spawngate-mac-laptop", "text": text]]), as: UTF8.self)
        #expect(judge(frame, .workspace) == .ours)
        let deliver = String(decoding: try! JSONSerialization.data(withJSONObject: ["type": "deliver", "payload": ["type": "dm.received", "data": ["text": text]]]), as: UTF8.self)
        #expect(judge(deliver, .node) == .ours)
    }

    @Test("workspace messages: round trip, and anything else is malformed")
    func wire() throws {
        let m = RelayWire.Message.request(to: "vps-broker", id: "abcdef0123456789", op: .agents, payload: Array("eyJ2IjoxfQ".utf8))
        #expect(try RelayWire.parse(RelayWire.format(m)).get() == m)
        let a = RelayWire.Message.answer(to: "mac-laptop", id: "abcdef0123456789", status: 200, body: Array(#"{"sealed":"abc"}"#.utf8))
        #expect(try RelayWire.parse(RelayWire.format(a)).get() == a)
        for bad in ["spawngate-v1 ", "spawngate-v1 request vps-broker abcdef0123 spawn", "spawngate-v1 request ../x abcdef0123 spawn {}",
                    "spawngate-v1 request vps-broker ab spawn {}", "spawngate-v1 request vps-broker abcdef0123 exec {}",
                    "spawngate-v1 answer vps-broker abcdef0123 999 {}", "spawngate-v1 hello vps-broker abcdef0123 1 {}",
                    "spawngate-v1 request vps-broker abcdef0123 spawn {\n}", "hello"] {
            guard case .failure(let d) = RelayWire.parse(bad) else { Issue.record("accepted: \(bad)"); continue }
            #expect(d.reason == .malformed)
        }
        #expect(RelayWire.parse("spawngate-v1 request vps-broker abcdef0123 spawn " + String(repeating: "x", count: RelayWire.maxText)).failure?.reason == .malformed)
    }

    @Test("the upstream: https anywhere, plain http only to loopback")
    func upstreams() {
        #expect((try? RelayUpstream.parse("https://api.relaycast.dev").get())?.webSocketBase == "wss://api.relaycast.dev")
        #expect((try? RelayUpstream.parse("http://127.0.0.1:8080").get())?.webSocketBase == "ws://127.0.0.1:8080")
        for bad in ["http://api.relaycast.dev", "http://100.64.0.2:80", "ftp://127.0.0.1", "https://x/path", "https://u:p@x", "nonsense",
                    "http://127.evil.example", "http://localhost.evil.example"] {
            #expect((try? RelayUpstream.parse(bad).get()) == nil, "\(bad)")
        }
    }
}

/// The audit cap on dropped frames: a key holder flooding spawn frames cannot turn each into an fsynced line.
@Suite("Relay guard: audit lines for dropped frames are bounded")
struct DropAuditorTests {
    @Test("at most `burst` lines per window, then one line counting the rest")
    func floodIsSummarised() async throws {
        let dir = TestSupport.tempDir("drops")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (home, _) = try TestSupport.makeHome("vps-broker", in: dir)
        let gateway = try SpawnGate.GatewayService(home: home, logger: .init(label: "test"))
        final class Clock: @unchecked Sendable { var t = ContinuousClock.now }
        let clock = Clock()
        let auditor = DropAuditor(gateway: gateway, burst: 3, window: .seconds(10), now: { clock.t })
        let spawn = Denial(.deniedByRule, "an agent.spawn_requested event was dropped", rule: "relay-guard")
        for _ in 0..<50 { await auditor.dropped(spawn) }
        func lines() throws -> [String] { try String(contentsOfFile: home.auditLog, encoding: .utf8).split(separator: "\n").map(String.init) }
        #expect(try lines().count == 3, "only the burst is written")
        clock.t = clock.t.advanced(by: .seconds(11))
        await auditor.dropped(spawn)
        let after = try lines()
        #expect(after.count == 5, "the summary and the next drop")
        #expect(after[3].contains("47 more frames were dropped by the relay guard without a line each"), "\(after[3])")
        #expect(auditor.total == 51)
    }
}

extension Result {
    var failure: Failure? { if case .failure(let f) = self { return f }; return nil }
}

