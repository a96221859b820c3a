import Foundation
import Testing
@testable import SpawnGate

#if canImport(Glibc)
import Glibc
#endif

extension RealRelayTests {
/// Issue 26: `relay:` peers against what the real Relaycast does and the other tests did not make it do. Two relay
/// guards (mac-laptop asking, vps-broker deciding with a local spawner) and the Relaycast stand-in, which routes per
/// agent token, stamps every event with the agent's sequence number, replays missed events only when asked
/// (`resync`), rate-limits direct messages when told to, and loses sockets and HTTP answers at exact moments.
/// No broker is needed: the transport is between the two mailboxes. Nested in RealRelayTests to run serially.
@Suite("Workspace transport: reconnects, rate limits, sealed metadata, squatted names")
struct WorkspaceTransportTests {
    /// Both sides of the story over the workspace only.
    final class Pair {
        let g: Gateway
        let standin: MailboxKeyTests.StandIn
        let vps: GuardProcess
        let laptop: GuardProcess
        let laptopHome: String
        let key: String

        init(_ label: String) throws {
            g = try Gateway(rule: [], now: SystemClock().now(), base: "/var/tmp")
            standin = try MailboxKeyTests.StandIn(g.dir)
            key = try standin.workspaceKey()
            laptopHome = g.dir + "/mac-laptop"
            vps = try GuardProcess(home: g.vps.root, upstream: standin.url, environment: ["RELAY_API_KEY": key])
            laptop = try GuardProcess(home: laptopHome, upstream: standin.url, environment: ["RELAY_API_KEY": key])
            let added = try TestSupport.spawngate(try TestSupport.peerAdd("vps-broker", home: g.vps, url: "relay:vps-broker") + ["--home", laptopHome])
            guard added.status == 0 else { throw RealRelay.Failure("peer add: \(added.stderr)") }
            try vps.waitForMailbox()
            try laptop.waitForMailbox()
        }

        func stop() {
            #expect(laptop.stop() == 0, "\(laptop.stderr)")
            #expect(vps.stop() == 0, "\(vps.stderr)")
            try? FileManager.default.removeItem(atPath: g.dir)
        }

        /// `spawngate spawn coder claude TASK --broker vps-broker` from the laptop, and how long it took.
        func spawn(_ task: String = "Implement the plan", cwd: String? = nil, timeout: Int = 30) throws -> (TestSupport.Output, Double) {
            let started = Date()
            let out = try TestSupport.spawngate(["spawn", "coder", "claude", task, "--broker", "vps-broker", "--cwd", cwd ?? g.app,
                                                 "--timeout", "\(timeout)", "--home", laptopHome])
            return (out, Date().timeIntervalSince(started))
        }

        /// The vps's decisions on spawn requests (its audit lines with a request id).
        func decisions() -> [[String: Any]] { vps.auditLines().filter { $0["request_id"] as? String != nil && $0["broker"] as? String == "mac-laptop" } }

        func control(_ path: String, _ body: [String: Any]) throws -> [String: Any] {
            let r = try RealRelay.http("POST", standin.url + "/_standin/" + path, json: body)
            guard r.status == 200 else { throw RealRelay.Failure("/_standin/\(path) answered \(r.status): \(r.text)") }
            return r.json as? [String: Any] ?? [:]
        }

        func dms() throws -> [(from: String, to: String, text: String)] {
            let list = try RealRelay.http("GET", standin.url + "/_standin/dms").json as? [[String: Any]] ?? []
            return list.map { ($0["from"] as? String ?? "", $0["to"] as? String ?? "", $0["text"] as? String ?? "") }
        }

        static func stats(_ p: GuardProcess) throws -> [String: Any] { try p.health()["stats"] as? [String: Any] ?? [:] }
    }

    enum Loss: String, CaseIterable, CustomStringConvertible {
        /// The target's socket is cut just before the request reaches it, and stays down 1.5 s.
        case targetSocketBeforeRequest
        /// The requester's socket is cut just before the answer reaches it.
        case requesterSocketBeforeAnswer
        /// The request is delivered, but the requester never hears Relaycast's 201: it sends the same request again
        /// (the target's socket is cut too, so the answer cannot arrive before the retry: the target reads both).
        case requestPostAnswerLost
        /// The answer is delivered, but the target never hears Relaycast's 201: it sends the same answer again.
        case answerPostAnswerLost
        var description: String { rawValue }
    }

    /// A reconnect or a lost HTTP answer in the middle of a spawn: the receipt still comes back and verifies, and the
    /// target decides and starts exactly once. Without the resync the first two time out (the event was only
    /// buffered); without the answer cache the third decides twice (a `replay` line after the start).
    @Test("a reconnect or a lost post in the middle of a spawn loses nothing and starts once", arguments: Loss.allCases)
    func nothingLostAcrossAReconnect(_ loss: Loss) throws {
        let pair = try Pair("transport-\(loss)")
        defer { pair.stop() }
        switch loss {
        case .targetSocketBeforeRequest:
            _ = try pair.control("sever", ["agent": "spawngate-vps-broker", "ms": 1500, "before_dm_from": "spawngate-mac-laptop"])
        case .requesterSocketBeforeAnswer:
            _ = try pair.control("sever", ["agent": "spawngate-mac-laptop", "ms": 1500, "before_dm_from": "spawngate-vps-broker"])
        case .requestPostAnswerLost:
            _ = try pair.control("lose_next_dm_answer", ["from": "spawngate-mac-laptop"])
            _ = try pair.control("sever", ["agent": "spawngate-vps-broker", "ms": 1500, "before_dm_from": "spawngate-mac-laptop"])
        case .answerPostAnswerLost:
            _ = try pair.control("lose_next_dm_answer", ["from": "spawngate-vps-broker"])
        }
        let (out, seconds) = try pair.spawn()
        #expect(out.status == 0, "\(out.stdout) \(out.stderr)")
        #expect(out.stdout.contains("receipt verified with vps-broker's key"), "\(out.stdout)")
        let decisions = pair.decisions()
        #expect(decisions.count == 1, "decided exactly once: \(decisions)")
        #expect(decisions.first?["decision"] as? String == "allow", "\(decisions)")
        if loss == .answerPostAnswerLost {
            _ = try RealRelay.waitFor("the answer's second post", within: 10) { (try Pair.stats(pair.vps)["answers"] as? Int ?? 0) >= 1 ? true : nil }
        }
        let vps = try Pair.stats(pair.vps), laptop = try Pair.stats(pair.laptop)
        switch loss {
        case .targetSocketBeforeRequest: #expect((vps["replayed"] as? Int ?? 0) >= 1, "the target asked for what it missed: \(vps)")
        case .requesterSocketBeforeAnswer: #expect((laptop["replayed"] as? Int ?? 0) >= 1, "the requester asked for what it missed: \(laptop)")
        case .requestPostAnswerLost: #expect((vps["duplicates"] as? Int ?? 0) >= 1, "the retry was answered, not decided again: \(vps)")
        case .answerPostAnswerLost: #expect((vps["answers"] as? Int ?? 0) >= 1 && (vps["send_failures"] as? Int ?? 0) >= 1, "\(vps)")
        }
        print(String(format: "[workspace] %@: spawn answered in %.2f s; vps %@; laptop %@", loss.rawValue, seconds, "\(vps)", "\(laptop)"))
    }

    /// Relaycast's 429: every spawn over the limit ends at once with a sentence naming the rate limit and when to try
    /// again, never a timeout; doctor and the guard's /metrics count the refusals.
    @Test("a 429 storm gives clear errors at once, with a retry-after; doctor and /metrics count them", arguments: [false, true])
    func rateLimitStorm(_ retryAfter: Bool) throws {
        let pair = try Pair("transport-429")
        defer { pair.stop() }
        _ = try pair.control("limits", ["dm_per_minute": 2, "retry_after": retryAfter])
        let (first, _) = try pair.spawn()
        #expect(first.status == 0, "the first spawn fits the budget (a request and its answer): \(first.stderr)")
        for _ in 0..<5 {
            let (out, seconds) = try pair.spawn(timeout: 20)
            #expect(out.status == 2, "\(out.stdout) \(out.stderr)")
            #expect(out.stderr.contains("rate limit") && out.stderr.contains("HTTP 429"), "\(out.stderr)")
            #expect(out.stderr.contains(retryAfter ? "try again in " : "try again in up to 60 s"), "\(out.stderr)")
            #expect(seconds < 10, "refused at once, not after the timeout: \(seconds) s")
        }
        #expect(pair.decisions().count == 1, "nothing over the limit reached the target")
        let metrics = try RealRelay.http("GET", pair.laptop.url + "/_spawngate/metrics").text
        #expect(metrics.contains("spawngate_mailbox_rate_limited_total 5"), "\(metrics)")
        let doctor = try TestSupport.run(TestSupport.binary, ["doctor", "--home", pair.laptopHome])
        #expect(doctor.stdout.contains("Relaycast refused 5 of spawngate-mac-laptop's messages with HTTP 429"), "\(doctor.stdout)")
    }

    /// Everyone holding the workspace key reads every direct message. What they read of spawngate's: two mailbox
    /// names and boxes of padded sizes; no task, no cwd, no CLI, no decision, no reason, no key, for an allowed spawn,
    /// a denied one (the signed deny receipt), and a stranger's answer alike.
    @Test("an observer with the workspace key reads no request or receipt content")
    func observerLearnsNothing() throws {
        let pair = try Pair("transport-observer")
        defer { pair.stop() }
        let (allowed, _) = try pair.spawn("Implement the secret plan")
        #expect(allowed.status == 0, "\(allowed.stderr)")
        let outside = TestSupport.tempDir("outside", base: "/var/tmp")
        let (denied, _) = try pair.spawn("Read the other secret", cwd: outside)
        #expect(denied.status == 1 && denied.stdout.contains("cwd_not_allowed"), "a signed denial came back: \(denied.stdout) \(denied.stderr)")
        // A stranger's request (anyone can seal one to the vps's public key): its answer, an unsigned refusal, is
        // sealed to the stranger's reply key too.
        let stranger = try RelayWire.request(to: "vps-broker", id: "stranger0001", op: .spawn, replyKey: RelayWire.ReplyKey.generate().publicKey,
                                             payload: Array(#"{"sealed":"AAAA"}"#.utf8), recipient: pair.g.vps.loadIdentity().key.publicKey).get()
        try pair.standin.postMessage(from: "mallory", to: "spawngate-vps-broker", text: stranger)
        _ = try RealRelay.waitFor("the stranger's answer", within: 10) { try pair.dms().contains { $0.to == "mallory" } ? true : nil }
        let dms = try pair.dms().filter { $0.from.hasPrefix("spawngate-") }
        #expect(dms.count == 5, "two requests and three answers: \(dms.map { ($0.from, $0.to) })")
        let secrets = ["secret", "claude", "plan", "cwd_not_allowed", "allow", "deny", "receipt", "spawn", "mac-laptop", "vps-broker", outside, pair.g.app,
                       pair.g.laptop.key.publicKey.fingerprint.description, "sealed"]
        for dm in dms {
            #expect(dm.text.hasPrefix("spawngate-v2 "))
            let box = String(dm.text.dropFirst("spawngate-v2 ".count))
            #expect(box.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }, "one base64url box")
            for s in secrets where box.contains(s) { Issue.record("'\(s)' is readable in a workspace message") }
            // An observer's own gateway key opens none of them.
            #expect(RelayWire.open(dm.text, identity: SigningKey.generate(), reply: RelayWire.ReplyKey.generate()).failure != nil)
        }
        // Sizes are padded: the answers look alike (allowed, denied, a stranger's refusal), and so do the requests.
        let sizes = Set(dms.map { $0.text.utf8.count })
        #expect(sizes.count <= 2, "padded sizes: \(sizes)")
    }

    /// A request too large for the workspace is refused on the requesting machine, with the limit in the sentence,
    /// and nothing is sent.
    @Test("a request over the workspace's message limit is refused before sending")
    func oversizedRequest() throws {
        let pair = try Pair("transport-size")
        defer { pair.stop() }
        let (fits, _) = try pair.spawn(String(repeating: "y", count: 24_000))
        #expect(fits.status == 0, "a task of 24,000 bytes fits: \(fits.stderr.prefix(600))")
        let before = try pair.dms().count
        let (out, _) = try pair.spawn(String(repeating: "x", count: 40_000))
        #expect(out.status == 2, "\(out.stdout) \(out.stderr.prefix(600))")
        #expect(out.stderr.contains("\(RelayWire.maxText) bytes") && out.stderr.contains("shorten the task"), "\(out.stderr.prefix(600))")
        #expect(try pair.dms().count == before, "nothing was sent")
    }

    /// Anyone with the key can register any name. A mailbox name held by someone else is detected by what it sends
    /// (nothing verifies) and by this mailbox's own token being replaced; doctor says both; nothing is trusted.
    @Test("a squatted mailbox name is detected, reported by doctor, and never trusted")
    func squattedNames() throws {
        let pair = try Pair("transport-squat")
        defer { pair.stop() }
        // Mallory answers for a gateway whose name she holds: her "answers" do not open with the laptop's reply key.
        for _ in 0..<3 {
            try pair.standin.postMessage(from: "spawngate-ghost", to: "spawngate-mac-laptop",
                                         text: "spawngate-v2 " + Base64.urlEncode(Sodium.randomBytes(300)))
        }
        _ = try RealRelay.waitFor("the laptop to count them", within: 10) {
            ((try Pair.stats(pair.laptop)["unverified"] as? [String: Any])?["spawngate-ghost"] as? Int ?? 0) >= 3 ? true : nil
        }
        // Mallory registers the laptop's own mailbox name: its token is replaced; the next send notices, registers
        // again, and the spawn still goes through.
        let taken = try RealRelay.http("POST", pair.standin.url + "/v1/agents", json: ["name": "spawngate-mac-laptop", "type": "agent"],
                                       headers: ["Authorization": "Bearer \(pair.key)"])
        #expect((200..<300).contains(taken.status))
        let (out, _) = try pair.spawn()
        #expect(out.status == 0, "\(out.stdout) \(out.stderr)")
        #expect((try Pair.stats(pair.laptop)["token_replaced"] as? Int ?? 0) >= 1)
        let doctor = try TestSupport.run(TestSupport.binary, ["doctor", "--home", pair.laptopHome])
        #expect(doctor.stdout.contains("3 workspace messages from spawngate-ghost did not verify") && doctor.stdout.contains("may hold the mailbox name spawngate-ghost"), "\(doctor.stdout)")
        #expect(doctor.stdout.contains("spawngate-mac-laptop's token was replaced"), "\(doctor.stdout)")
        #expect(pair.laptop.auditLines().contains { ($0["detail"] as? String ?? "").contains("does not open") && ($0["detail"] as? String ?? "").contains("spawngate-ghost") })
    }

    /// Requests anyone can seal to the vps's public key: answered (unsigned refusals, each a workspace message from
    /// the shared budget) at most 12 a minute; the rest are audited, not answered.
    @Test("answers to requesters the gateway cannot identify are bounded")
    func strangersAreAnsweredAtABoundedRate() throws {
        let pair = try Pair("transport-strangers")
        defer { pair.stop() }
        let reply = RelayWire.ReplyKey.generate()
        for i in 0..<30 {
            let text = try RelayWire.request(to: "vps-broker", id: String(format: "mallory%08d", i), op: .spawn, replyKey: reply.publicKey,
                                             payload: Array(#"{"sealed":"AAAA"}"#.utf8), recipient: pair.g.vps.loadIdentity().key.publicKey).get()
            try pair.standin.postMessage(from: "mallory", to: "spawngate-vps-broker", text: text)
        }
        try pair.vps.waitForAudit("rate_limited", containing: "answers a minute to requesters this gateway cannot identify")
        _ = try RealRelay.waitFor("all 30 to be read", within: 20) {
            pair.vps.auditLines().filter { ($0["detail"] as? String ?? "").contains("mallory") }.count >= 30 - 13 ? true : nil
        }
        let answers = try pair.dms().filter { $0.from == "spawngate-vps-broker" && $0.to == "mallory" }
        #expect(answers.count >= 1 && answers.count <= 13, "\(answers.count) answers to mallory")
        // The answers she did get are sealed to her reply key: a denial the gateway could not seal to her (it does
        // not know who she is), bound to no request.
        if let first = answers.first, case .success(.answer(_, _, let status, let body)) = RelayWire.open(first.text, identity: SigningKey.generate(), reply: reply) {
            #expect(status == 200 && !String(decoding: body, as: UTF8.self).contains("sealed"))
        } else { Issue.record("mallory cannot open her answer") }
    }
}
}

extension MailboxKeyTests.StandIn {
    /// Posts `text` to `to` as the agent `from` (registered on the fly), through the control API.
    func postMessage(from: String, to: String, text: String) throws {
        let r = try RealRelay.http("POST", url + "/_standin/message", json: ["from": from, "to": to, "text": text])
        guard r.status == 200 else { throw RealRelay.Failure("/_standin/message answered \(r.status): \(r.text)") }
    }
}
