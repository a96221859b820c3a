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

    @Test("a spawngate workspace message (any version) is withheld from the broker, and recorded")
    func ourMessagesAreWithheld() throws {
        let target = SigningKey.generate()
        let sealed = try RelayWire.request(to: "vps-broker", id: "abcdef0123456789", op: .spawn, replyKey: RelayWire.ReplyKey.generate().publicKey,
                                           payload: Array(#"{"sealed":"x"}"#.utf8), recipient: target.publicKey).get()
        for text in [sealed, "spawngate-v1 request vps-broker abcdef0123456789 spawn {}", "spawngate-v9 anything"] {
            let frame = String(decoding: try JSONSerialization.data(withJSONObject: ["type": "dm.received", "message": ["agent_name": "spawngate-mac-laptop", "text": text]]), as: UTF8.self)
            guard case .drop(let d) = judge(frame, .workspace) else { Issue.record("passed to the broker: \(text.prefix(40))"); continue }
            #expect(d.reason == .deniedByRule && d.detail.contains("withheld") && d.detail.contains("spawngate-mac-laptop"), "\(d.detail)")
            let deliver = String(decoding: try JSONSerialization.data(withJSONObject: ["type": "deliver", "payload": ["type": "dm.received", "data": ["agent_name": "x", "text": text]]]), as: UTF8.self)
            guard case .drop(let n) = judge(deliver, .node) else { Issue.record("delivered to an agent: \(text.prefix(40))"); continue }
            #expect(n.detail.contains("withheld"))
        }
    }

    /// A message text sealed to `key` whose inner bytes are exactly `inner` (for the reader's refusals).
    static func sealedText(_ inner: String, to key: SigningKey) throws -> String {
        let body = SealedBody.seal(Array(inner.utf8), to: key.publicKey)
        guard case .object(let o) = try StrictJSONReader.parse(body), case .string(let box)? = o["sealed"] else { throw Failure("no box") }
        return RelayWire.prefix + box
    }
    struct Failure: Error { let m: String; init(_ m: String) { self.m = m } }

    @Test("workspace messages: sealed round trip, padded sizes, and anything else is malformed")
    func wire() throws {
        let gateway = SigningKey.generate(), other = SigningKey.generate()
        let reply = RelayWire.ReplyKey.generate()
        let text = try RelayWire.request(to: "vps-broker", id: "abcdef0123456789", op: .agents, replyKey: reply.publicKey,
                                         payload: Array("eyJ2IjoxfQ".utf8), recipient: gateway.publicKey).get()
        #expect(try RelayWire.open(text, identity: gateway, reply: RelayWire.ReplyKey.generate()).get()
                == .request(to: "vps-broker", id: "abcdef0123456789", op: .agents, replyKey: reply.publicKey, payload: Array("eyJ2IjoxfQ".utf8)))
        // Only the addressee opens it: another gateway (or an observer with the workspace key) cannot.
        #expect(RelayWire.open(text, identity: other, reply: reply).failure?.detail.contains("does not open") == true)
        let answer = try RelayWire.answer(to: "mac-laptop", id: "abcdef0123456789", status: 200, body: Array(#"{"sealed":"abc"}"#.utf8), replyKey: reply.publicKey).get()
        #expect(try RelayWire.open(answer, identity: other, reply: reply).get() == .answer(to: "mac-laptop", id: "abcdef0123456789", status: 200, body: Array(#"{"sealed":"abc"}"#.utf8)))
        #expect(RelayWire.open(answer, identity: gateway, reply: RelayWire.ReplyKey.generate()).failure != nil)
        // Sizes are padded: a short and a longer request look the same.
        let longer = try RelayWire.request(to: "vps-broker", id: "abcdef0123456789", op: .spawn, replyKey: reply.publicKey,
                                           payload: Array(String(repeating: "y", count: 1500).utf8), recipient: gateway.publicKey).get()
        #expect(longer.utf8.count == text.utf8.count)
        // Too large for the workspace: refused before sending, with the limit named.
        let huge = RelayWire.request(to: "vps-broker", id: "abcdef0123456789", op: .spawn, replyKey: reply.publicKey,
                                     payload: Array(String(repeating: "z", count: RelayWire.maxText).utf8), recipient: gateway.publicKey)
        #expect(huge.failure?.detail.contains("\(RelayWire.maxText) bytes") == true)
        let key = Base64.urlEncode(reply.publicKey)
        let bad: [String] = [
            "spawngate-v1 request vps-broker abcdef0123 spawn {}", "spawngate-v2 ", "spawngate-v2 !!!", "hello",
            try Self.sealedText("not json", to: gateway),
            try Self.sealedText(#"{"kind":"request","to":"vps-broker","id":"abcdef0123","op":"spawn","reply_key":"\#(key)","payload":"{}","extra":1}"#, to: gateway),
            try Self.sealedText(#"{"kind":"request","to":"vps-broker","id":"abcdef0123","op":"exec","reply_key":"\#(key)","payload":"{}"}"#, to: gateway),
            try Self.sealedText(#"{"kind":"request","to":"../x","id":"abcdef0123","op":"spawn","reply_key":"\#(key)","payload":"{}"}"#, to: gateway),
            try Self.sealedText(#"{"kind":"request","to":"vps-broker","id":"ab","op":"spawn","reply_key":"\#(key)","payload":"{}"}"#, to: gateway),
            try Self.sealedText(#"{"kind":"request","to":"vps-broker","id":"abcdef0123","op":"spawn","reply_key":"AAAA","payload":"{}"}"#, to: gateway),
            try Self.sealedText(#"{"kind":"request","to":"vps-broker","id":"abcdef0123","op":"spawn","reply_key":"\#(key)","payload":""}"#, to: gateway),
            try Self.sealedText(#"{"kind":"answer","to":"vps-broker","id":"abcdef0123","status":999,"body":"{}"}"#, to: gateway),
            try Self.sealedText(#"{"kind":"answer","to":"vps-broker","id":"abcdef0123","status":200,"body":"{}","body":"x"}"#, to: gateway),
            try Self.sealedText(#"{"kind":"hello","to":"vps-broker","id":"abcdef0123","status":200,"body":"{}"}"#, to: gateway),
            RelayWire.prefix + String(repeating: "x", count: RelayWire.maxText),
        ]
        for b in bad {
            guard case .failure(let d) = RelayWire.open(b, identity: gateway, reply: reply) else { Issue.record("accepted: \(b.prefix(60))"); continue }
            #expect(d.reason == .malformed)
        }
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
        // @unchecked: `t` is written only between the awaited calls that read it, on this test's task.
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

