import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import ServiceLifecycle
import SpawnGate
import WSClient

/// This gateway's own presence in the Agent Relay workspace: a Relaycast agent named `spawngate-<broker>` (see
/// ``RelayWire``), with its own socket to the upstream. Requests that arrive as direct messages are decided by the
/// one pipeline and started by the one start path (``GatewayService/spawn(body:source:)``, the same call as `serve`'s
/// `POST /v1/spawn`); the signed answer goes back as a direct message. Requests this machine sends to a `relay:`
/// peer go out the same way, and the answer is handed back unchanged to whoever asked (`spawn --broker`), which
/// verifies it.
///
/// It needs the workspace key to register: `RELAY_API_KEY` when the guard starts (the operator's, never replaced),
/// else the key the broker uses, taken from its traffic through the guard only once the upstream has accepted it
/// (``KeySource``). Any local process can talk to the guard, so a key merely presented is never taken, and when two
/// different accepted keys are seen the mailbox goes offline rather than choose (`doctor` says so). Until it has a
/// key it is offline and requests to `relay:` peers fail with a sentence saying so.
final class RelayMailbox: Service, Sendable {
    let gateway: GatewayService
    let upstream: RelayUpstream
    let client: AsyncHTTPClient.HTTPClient
    let tls: TLSConfiguration?
    let maxMessage: Int
    let drops: DropAuditor
    let name: String
    let agentName: String
    private let state: State
    /// The key pair answers to this machine's requests are sealed to (made when the guard starts).
    let reply = RelayWire.ReplyKey.generate()
    /// Requests handled at once; more are answered 429 at once.
    static let maxInFlight = 8
    /// Requests this machine waits on at once.
    static let maxWaiting = 64

    init(gateway: GatewayService, upstream: RelayUpstream, client: AsyncHTTPClient.HTTPClient, tls: TLSConfiguration?, maxMessage: Int,
         workspaceKey: String?, drops: DropAuditor) {
        self.gateway = gateway
        self.upstream = upstream
        self.client = client
        self.tls = tls
        self.maxMessage = maxMessage
        self.drops = drops
        name = gateway.identity.name
        agentName = RelayWire.mailbox(gateway.identity.name)
        state = State(key: workspaceKey)
    }

    var logger: Logger { gateway.logger }

    /// Where the mailbox's workspace key came from; `doctor` reports it (through the guard's health answer).
    enum KeySource: Sendable, Equatable {
        case none
        /// `RELAY_API_KEY` when the guard started: the operator's, never replaced by traffic.
        case configured
        /// From the broker's traffic, after the upstream accepted it (`how` says which exchange).
        case accepted(String)
        /// Two different keys were each accepted by the upstream: whichever is the broker's, the other is someone
        /// else's, so the mailbox uses neither.
        case conflict
    }

    /// A workspace key the upstream has just accepted in the exchange `how` (``Forwarder`` calls this only after a
    /// 2xx answer to a request that needs the key, or with a key the upstream issued).
    func accepted(_ key: String, how: String) async {
        if await state.accept(key, how: how) {
            logger.error("relay guard mailbox \(agentName) is offline: two different workspace keys were accepted by Relaycast through this guard (one is not the broker's); restart the guard with RELAY_API_KEY set to the broker's workspace key")
        }
    }

    var online: Bool { get async { await state.token != nil } }
    var keySource: KeySource { get async { await state.source } }

    // MARK: Service

    func run() async throws {
        var backoff: Duration = .milliseconds(250)
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            guard let key = await state.key else {
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(200)) }
                continue
            }
            do {
                let token = try await register(key: key)
                guard await state.connected(token, with: key) else { continue }
                backoff = .milliseconds(250)
                try await cancelWhenGracefulShutdown { try await self.listen(token: token, while: key) }
            } catch {
                let wait = backoff
                if !Task.isShuttingDownGracefully {
                    logger.notice("relay guard mailbox \(agentName) is offline: \(error); retrying in \(wait)")
                }
            }
            await state.disconnected()
            let wait = backoff
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: wait) }
            backoff = min(backoff * 2, .seconds(5))
        }
    }

    struct UpstreamError: Error, CustomStringConvertible { let description: String }

    /// Registers (or re-registers, for a fresh token) the mailbox agent with the workspace key. It joins no
    /// channel: its socket then carries only its own direct messages.
    private func register(key: String) async throws -> String {
        let body = JSONWriter.object([("name", .string(agentName)), ("type", .string("agent")), ("auto_join_general", .bool(false)),
                                      ("metadata", .raw(JSONWriter.object([("spawngate", .bool(true))])))])
        let (status, answer, _) = try await post("/v1/agents", body: body, bearer: key)
        guard (200..<300).contains(status), case .object(let o)? = try? StrictJSONReader.parse(answer),
              case .object(let data)? = o["data"], case .string(let token)? = data["token"] else {
            throw UpstreamError(description: "registering \(agentName) with Relaycast answered HTTP \(status)")
        }
        return token
    }

    private func post(_ path: String, body: [UInt8], bearer: String) async throws -> (Int, [UInt8], HTTPHeaders) {
        var request = HTTPClientRequest(url: upstream.base + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "Authorization", value: "Bearer \(bearer)")
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await client.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), Array(bytes.readableBytesView), response.headers)
    }

    struct KeyChanged: Error, CustomStringConvertible { var description: String { "its workspace key or its token is no longer good" } }

    /// The mailbox's socket for as long as `key` is the key in use (a conflict ends it).
    private func listen(token: String, while key: String) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.listen(token: token) }
            group.addTask {
                // Ends the socket when the key is no longer trusted, or when the token stopped working (someone
                // registered the mailbox's name): the loop then registers again.
                while await self.state.key == key, await self.state.token == token { try await Task.sleep(for: .milliseconds(100)) }
                throw KeyChanged()
            }
            defer { group.cancelAll() }
            _ = try await group.next()
        }
    }

    /// Asked on a first connection: a sequence number past any, so Relaycast replays nothing and says where its
    /// count stands (history from before this guard started is not acted on).
    static let learnSequence: Int64 = 1 << 53 - 1

    /// The mailbox's socket: every workspace event for it; handles ours, ignores the rest. Relaycast replays what
    /// arrived while the socket was away only when asked, so every connection starts by asking for everything
    /// after the last event this process saw (`resync`).
    private func listen(token: String) async throws {
        let url = upstream.webSocketBase + "/v1/ws?token=" + token
        let maxMessage = self.maxMessage
        try await WebSocketClient.connect(url: url, configuration: .init(maxFrameSize: maxMessage, closeTimeout: .seconds(5)),
                                          tlsConfiguration: tls, logger: logger) { inbound, outbound, _ in
            let last = await self.state.lastSeq
            let resync = JSONWriter.object([("type", .string("resync")), ("last_seen_seq", .int(last ?? Self.learnSequence))])
            try await outbound.write(.text(String(decoding: resync, as: UTF8.self)))
            try await withThrowingDiscardingTaskGroup { group in
                for try await message in inbound.messages(maxSize: maxMessage) {
                    guard case .text(let s) = message, let event = Event(s) else { continue }
                    if event.type == "resync_ack" {
                        await self.state.resynced(event)
                        continue
                    }
                    guard await self.state.firstSight(event) else { continue }
                    guard let (sender, text) = event.message, sender != self.agentName else { continue }
                    guard RelayWire.isOurs(text) else {
                        if event.isDirect {
                            await self.drops.dropped(Denial(.deniedByRule, "a direct message to \(self.agentName) from \(Self.shown(sender)) that is not a spawngate message was ignored (this mailbox reads only sealed spawngate requests and answers)", rule: GuardFilter.rule))
                        }
                        continue
                    }
                    switch RelayWire.open(text, identity: self.gateway.identity.key, reply: self.reply) {
                    case .failure(let denial):
                        // Not a valid message: recorded, never acted on. A gateway's mailbox name whose messages
                        // do not open may be held by someone else (doctor says so).
                        await self.state.unverified(from: sender)
                        await self.drops.dropped(Denial(denial.reason, "\(denial.detail) (from \(Self.shown(sender)) through the workspace)"))
                    case .success(.request(let to, let id, let op, let replyKey, let payload)) where to == self.name:
                        switch await self.state.arrived(sender: sender, id: id, payload: payload) {
                        case .new:
                            guard await self.state.startHandling() else {
                                await self.state.forget(sender: sender, id: id)
                                let busy = GatewayAnswer.refused(.tooMany, "\(self.name)'s gateway is handling \(Self.maxInFlight) requests from the workspace already; try again in a moment")
                                group.addTask { await self.reply(to: sender, id: id, answer: busy, replyKey: replyKey) }
                                continue
                            }
                            group.addTask {
                                await self.handle(sender: sender, id: id, op: op, replyKey: replyKey, payload: payload)
                                await self.state.doneHandling()
                            }
                        case .answered(let answer):
                            // A retry of a request already decided: the same answer again, never a second start.
                            group.addTask { await self.reply(to: sender, id: id, answer: answer, replyKey: replyKey, again: true) }
                        case .inProgress:
                            await self.state.count(\.duplicates)   // its answer is on the way
                        case .conflicting:
                            await self.drops.dropped(Denial(.malformed, "a workspace request from \(Self.shown(sender)) reused the id of another request; ignored (ids are never reused for different requests)"))
                        }
                    case .success(.answer(let to, let id, let status, let body)) where to == self.name:
                        if !(await self.state.answer(id, from: sender, status: status, body: body)) {
                            await self.state.unverified(from: sender)
                        }
                    case .success:
                        await self.state.unverified(from: sender)   // sealed to us, addressed to another gateway
                    }
                }
            }
        }
    }

    static func shown(_ name: String) -> String { TerminalText.escaped(String(name.prefix(64))) }

    /// One event on the mailbox's socket, as far as the mailbox reads it.
    struct Event {
        let type: String
        /// The per-agent sequence number Relaycast stamps on every event for an agent.
        let seq: Int64?
        let messageID: String?
        /// (sender, text) of a message event.
        let message: (String, String)?
        let isDirect: Bool
        /// resync_ack: the count Relaycast has reached, and how many events it replayed.
        let currentSeq: Int64?
        let replayed: Int64?

        init?(_ frame: String) {
            guard case .object(let o)? = try? StrictJSONReader.parse(Array(frame.utf8)), case .string(let type)? = o["type"] else { return nil }
            self.type = type
            seq = o["agent_seq"]?.safeInteger
            currentSeq = o["current_seq"]?.safeInteger
            replayed = o["replayed"]?.safeInteger
            isDirect = ["dm.received", "group_dm.received"].contains(type)
            if ["dm.received", "group_dm.received", "message.created"].contains(type), case .object(let m)? = o["message"],
               case .string(let sender)? = m["agent_name"], case .string(let text)? = m["text"] {
                message = (sender, text)
                if case .string(let id)? = m["id"] { messageID = id } else { messageID = nil }
            } else {
                message = nil
                messageID = nil
            }
        }
    }

    /// One request from the workspace, through the same entry as serve's HTTP routes.
    private func handle(sender: String, id: String, op: GatewayOperation, replyKey: [UInt8], payload: [UInt8]) async {
        let source = "relay:" + sender
        let answer: GatewayAnswer
        if op.spendsAllowance, let refused = gateway.admit(source) {
            answer = refused
        } else {
            answer = await gateway.answer(op, input: payload, source: source)
        }
        await state.decided(sender: sender, id: id, payload: payload, answer: answer)
        await reply(to: sender, id: id, answer: answer, replyKey: replyKey)
    }

    /// How long an answer keeps trying to get through (Relaycast down, the rate limit): a requester waits 30 s by
    /// default, and a receipt for an agent that started is worth the wait.
    static let answerPatience: Duration = .seconds(60)

    /// Sends an answer, sealed to the requester's reply key. Answers that are not sealed receipts go to requesters
    /// this gateway cannot identify (unknown keys, junk): those spend the workspace's message budget for anyone
    /// holding the key, so at most ``strangerAnswers`` a minute are sent; the rest are audited, not answered.
    private func reply(to sender: String, id: String, answer: GatewayAnswer, replyKey: [UInt8], again: Bool = false) async {
        let known: Bool
        if case .receipt(let bytes) = answer, case .object(let o)? = try? StrictJSONReader.parse(bytes), o["sealed"] != nil { known = true } else { known = false }
        if !known, !(await state.strangerAllowance()) {
            await drops.dropped(Denial(.rateLimited, "an answer (HTTP \(answer.wireStatus)) to \(Self.shown(sender)) through the workspace was not sent: over \(Self.strangerAnswers) answers a minute to requesters this gateway cannot identify (each costs a workspace message)"))
            return
        }
        // The requester's gateway is the mailbox's broker; anyone else gets the answer under their own name.
        let gatewayName = sender.hasPrefix("spawngate-") ? String(sender.dropFirst("spawngate-".count)) : sender
        guard (try? Home.validateBrokerName(gatewayName)) != nil else { return }
        let body = Array(answer.wireBody.prefix { $0 != 10 })
        let text: String
        switch RelayWire.answer(to: gatewayName, id: id, status: answer.wireStatus, body: body, replyKey: replyKey) {
        case .success(let t): text = t
        case .failure(let d):
            logger.error("relay guard could not answer \(sender) through the workspace: \(d.detail)")
            return
        }
        if again { await state.count(\.duplicates) }
        switch await deliver(to: sender, text: text, patience: Self.answerPatience, waitOutRateLimit: true) {
        case .sent: await state.count(\.answers)
        case .refused(_, let message): logger.error("relay guard could not answer \(sender) through the workspace: \(message)")
        }
    }

    /// Answers a minute to requesters this gateway cannot identify.
    static let strangerAnswers = 12

    enum Delivery: Sendable {
        case sent
        /// Not sent: the HTTP status to give whoever asked, and a sentence.
        case refused(Int, String)
    }

    /// Posts a direct message from the mailbox until Relaycast takes it or `patience` runs out. A lost answer to
    /// a post that did arrive makes a second copy: the same text, so the receiver treats it as the retry it is.
    /// A 401 means the token was replaced: by this mailbox reconnecting (try again with the new one), or by
    /// someone else registering its name (counted for doctor, and the name registered again). Rate-limited posts
    /// fail at once unless `waitOutRateLimit`, and then wait as long as Relaycast says (else a minute, its window).
    private func deliver(to: String, text: String, patience: Duration, waitOutRateLimit: Bool) async -> Delivery {
        let deadline = ContinuousClock.now + patience
        var backoff: Duration = .milliseconds(100)
        var last = "the mailbox is not connected to Relaycast"
        while ContinuousClock.now < deadline, !Task.isCancelled {
            guard let token = await state.token else {
                try? await Task.sleep(for: .milliseconds(100))
                continue
            }
            let body = JSONWriter.object([("to", .string(to)), ("text", .string(text))])
            do {
                let (status, answer, headers) = try await post("/v1/dm", body: body, bearer: token)
                let said = Self.errorMessage(answer)
                switch status {
                case 200..<300:
                    await state.count(\.sent)
                    return .sent
                case 429:
                    await state.count(\.rateLimited)
                    let wait = headers.first(name: "Retry-After").flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }.map { max(1, min($0, 3600)) }
                    await state.rateLimit(retryAfter: wait ?? 60)
                    let retry = wait.map { "try again in \($0) s" } ?? "Relaycast counts per minute: try again in up to 60 s"
                    let message = "Relaycast refused the direct message to \(to): the workspace is over its message rate limit (HTTP 429: \(said)); \(retry)"
                    guard waitOutRateLimit, ContinuousClock.now + .seconds(wait ?? 60) < deadline else { return .refused(429, message) }
                    try? await Task.sleep(for: .seconds(wait ?? 60))
                    continue
                case 401:
                    last = "Relaycast refused the mailbox's token (HTTP 401)"
                    await state.tokenRefused(token)
                case 404:
                    await state.count(\.sendFailures)
                    return .refused(502, "there is no mailbox \(to) in the workspace (Relaycast: \(said)); is 'spawngate relay guard' running there, for a broker of this workspace?")
                case 400..<500:
                    await state.count(\.sendFailures)
                    return .refused(502, "Relaycast refused the direct message to \(to) (HTTP \(status): \(said))")
                default:
                    last = "Relaycast answered HTTP \(status): \(said)"
                }
            } catch {
                last = "\(error)"
            }
            await state.count(\.sendFailures)
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(2))
        }
        return .refused(502, "the message to \(to) could not be sent through the workspace within \(patience): \(last)")
    }

    /// Relaycast's error sentence from an error answer (`{"ok":false,"error":{"code","message"}}`), cut and escaped.
    static func errorMessage(_ body: [UInt8]) -> String {
        if case .object(let o)? = try? StrictJSONReader.parse(body), case .object(let e)? = o["error"] {
            var parts: [String] = []
            if case .string(let c)? = e["code"] { parts.append(c) }
            if case .string(let m)? = e["message"] { parts.append(m) }
            if !parts.isEmpty { return TerminalText.escaped(String(parts.joined(separator: ": ").prefix(300))) }
        }
        return TerminalText.escaped(String(String(decoding: body.prefix(200), as: UTF8.self)))
    }

    // MARK: Requests from this machine

    /// Sends a request to `to`'s gateway (whose identity key is `key`) and waits for its answer: (HTTP status,
    /// body) as the target gave them, or the guard's own error (503 offline, 413 too large for the workspace,
    /// 429 Relaycast's rate limit, 502 not sent, 504 no answer in time).
    func call(to: String, key: PublicKey, op: GatewayOperation, payload: [UInt8], timeout: Double) async -> (Int, [UInt8]) {
        func failed(_ status: Int, _ message: String) -> (Int, [UInt8]) { (status, JSONWriter.object([("error", .string(message))])) }
        guard await state.token != nil else {
            if await state.source == .conflict {
                return failed(503, "this machine's relay guard has taken its mailbox offline: two different workspace keys were accepted by Relaycast through it, so one is not the broker's; restart 'spawngate relay guard' with RELAY_API_KEY set to the broker's workspace key")
            }
            return failed(503, "this machine's relay guard is not connected to Relaycast yet: it needs the workspace key (RELAY_API_KEY when it starts, or a broker behind it that has registered with Relaycast through it) and a reachable upstream")
        }
        let id = RelayWire.newID()
        let text: String
        switch RelayWire.request(to: to, id: id, op: op, replyKey: reply.publicKey, payload: payload, recipient: key) {
        case .success(let t): text = t
        case .failure(let d): return failed(413, d.detail)
        }
        guard await state.expect(id, from: RelayWire.mailbox(to)) else { return failed(503, "this machine's relay guard is waiting on \(Self.maxWaiting) answers already; try again in a moment") }
        await state.count(\.requests)
        let deadline = ContinuousClock.now + .seconds(timeout)
        let answer: (Int, [UInt8])? = await withTaskGroup(of: (Int, [UInt8])?.self) { group in
            group.addTask { await self.state.wait(id) }
            group.addTask {
                switch await self.deliver(to: RelayWire.mailbox(to), text: text, patience: .seconds(timeout), waitOutRateLimit: false) {
                case .sent: try? await Task.sleep(until: deadline, clock: .continuous); return nil
                case .refused(let status, let message): return failed(status, message)
                }
            }
            let first = await group.next() ?? nil
            await state.expire(id)   // ends the waiter if the other task finished first
            group.cancelAll()
            return first
        }
        return answer ?? failed(504, "no answer from \(to)'s gateway through the workspace within \(Int(timeout)) s; is 'spawngate relay guard' running there, in front of a broker of the same workspace?")
    }

    /// What the mailbox has done since the guard started, for `doctor` and `/metrics`.
    struct Stats: Sendable {
        /// Direct messages Relaycast took, and posts that failed (each retry counts).
        var sent = 0, sendFailures = 0
        /// Posts Relaycast refused with 429, and the wait it asked for last (seconds).
        var rateLimited = 0, lastRetryAfter = 0
        /// Requests this machine sent, answers this gateway sent, and retries seen (answered again, or already being
        /// answered) without a second decision.
        var requests = 0, answers = 0, duplicates = 0
        /// Reconnections that asked Relaycast for what was missed, and events it replayed.
        var resyncs = 0, replayed = 0
        /// Times the mailbox's token stopped working without this guard replacing it: someone registered its name.
        var tokenReplaced = 0
        /// Messages that did not verify, by sender (at most 32 names).
        var unverified: [String: Int] = [:]
    }

    var stats: Stats { get async { await state.stats } }

    /// The mailbox's changing state, on one actor.
    actor State {
        private(set) var key: String?
        private(set) var source: KeySource
        private var seen: String?
        private(set) var token: String?
        private var inFlight = 0
        /// Requests this machine sent and waits on, with the mailbox that must answer each.
        private var expected: [String: String] = [:]
        private var waiting: [String: CheckedContinuation<(Int, [UInt8])?, Never>] = [:]
        private var arrivedAnswers: [String: (Int, [UInt8])] = [:]
        /// The last sequence number Relaycast stamped on an event for the mailbox; nil until the first connection
        /// has learned where the count stands.
        private(set) var lastSeq: Int64?
        /// Message ids seen recently: a replay that overlaps what came live is read once.
        private var seenIDs = Set<String>()
        private var seenOrder: [String] = []
        /// Requests from the workspace by "sender id": being decided, or decided with their answer.
        private var handled: [String: Handled] = [:]
        private var handledOrder: [String] = []
        private var strangerTokens = Double(RelayMailbox.strangerAnswers)
        private var strangerRefill = ContinuousClock.now
        private(set) var stats = Stats()

        enum Handled {
            case inProgress(digest: [UInt8])
            case done(digest: [UInt8], answer: GatewayAnswer)
        }
        enum Arrival { case new, inProgress, answered(GatewayAnswer), conflicting }

        static let recentIDs = 1024
        static let handledKept = 512

        init(key: String?) {
            self.key = key
            source = key == nil ? .none : .configured
        }

        /// True when this key makes a conflict (and the mailbox goes offline).
        func accept(_ newKey: String, how: String) -> Bool {
            switch source {
            case .configured, .conflict: return false
            case .none:
                (key, seen, source) = (newKey, newKey, .accepted(how))
                return false
            case .accepted:
                guard newKey != seen else { return false }
                (key, token, source) = (nil, nil, .conflict)
                return true
            }
        }
        /// Keeps a token only if it was registered with the key still in use.
        func connected(_ t: String, with k: String) -> Bool {
            guard key == k else { return false }
            token = t
            return true
        }
        func disconnected() { token = nil }

        /// A post was refused with `t`: if it is still the token in use, someone else has registered the mailbox's
        /// name; dropping it makes the socket's loop register again.
        func tokenRefused(_ t: String) {
            guard token == t else { return }
            stats.tokenReplaced += 1
            token = nil
        }

        func count(_ field: WritableKeyPath<Stats, Int>) { stats[keyPath: field] += 1 }
        func rateLimit(retryAfter: Int) { stats.lastRetryAfter = retryAfter }
        func unverified(from sender: String) {
            if stats.unverified[sender] != nil || stats.unverified.count < 32 { stats.unverified[sender, default: 0] += 1 }
        }

        func resynced(_ event: Event) {
            stats.resyncs += 1
            stats.replayed += Int(event.replayed ?? 0)
            if let c = event.currentSeq, c < RelayMailbox.learnSequence { lastSeq = max(lastSeq ?? 0, c) }
        }

        /// Whether an event is new: its sequence number moves the count on, and its message id was not seen.
        func firstSight(_ event: Event) -> Bool {
            if let s = event.seq { lastSeq = max(lastSeq ?? 0, s) }
            guard let id = event.messageID else { return true }
            guard seenIDs.insert(id).inserted else { return false }
            seenOrder.append(id)
            if seenOrder.count > Self.recentIDs { seenIDs.remove(seenOrder.removeFirst()) }
            return true
        }

        func arrived(sender: String, id: String, payload: [UInt8]) -> Arrival {
            let k = sender + " " + id
            let digest = Sodium.sha256(payload)
            switch handled[k] {
            case .inProgress(let d)?: return d == digest ? .inProgress : .conflicting
            case .done(let d, let answer)?: return d == digest ? .answered(answer) : .conflicting
            case nil:
                handled[k] = .inProgress(digest: digest)
                handledOrder.append(k)
                if handledOrder.count > Self.handledKept { handled.removeValue(forKey: handledOrder.removeFirst()) }
                return .new
            }
        }
        func decided(sender: String, id: String, payload: [UInt8], answer: GatewayAnswer) {
            let k = sender + " " + id
            if handled[k] != nil { handled[k] = .done(digest: Sodium.sha256(payload), answer: answer) }
        }
        func forget(sender: String, id: String) { handled.removeValue(forKey: sender + " " + id) }

        /// One answer to a requester this gateway cannot identify, if the minute's allowance has one left.
        func strangerAllowance() -> Bool {
            let now = ContinuousClock.now
            let perSecond = Double(RelayMailbox.strangerAnswers) / 60
            let elapsed = now - strangerRefill
            strangerRefill = now
            strangerTokens = min(Double(RelayMailbox.strangerAnswers), strangerTokens + perSecond * (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18))
            guard strangerTokens >= 1 else { return false }
            strangerTokens -= 1
            return true
        }

        func startHandling() -> Bool {
            guard inFlight < RelayMailbox.maxInFlight else { return false }
            inFlight += 1
            return true
        }
        func doneHandling() { inFlight -= 1 }

        func expect(_ id: String, from mailbox: String) -> Bool {
            guard expected.count < RelayMailbox.maxWaiting else { return false }
            expected[id] = mailbox
            return true
        }

        /// An answer for a request this machine sent, from the mailbox it was sent to; false for anything else
        /// (an unknown or finished id is ignored, an answer from another mailbox is not trusted).
        func answer(_ id: String, from sender: String, status: Int, body: [UInt8]) -> Bool {
            guard let mailbox = expected[id] else { return true }
            guard mailbox == sender else { return false }
            expected.removeValue(forKey: id)
            if let w = waiting.removeValue(forKey: id) { w.resume(returning: (status, body)) } else { arrivedAnswers[id] = (status, body) }
            return true
        }

        func wait(_ id: String) async -> (Int, [UInt8])? {
            if let a = arrivedAnswers.removeValue(forKey: id) { return a }
            guard expected[id] != nil else { return nil }
            return await withCheckedContinuation { waiting[id] = $0 }
        }

        func expire(_ id: String) {
            expected.removeValue(forKey: id)
            arrivedAnswers.removeValue(forKey: id)
            waiting.removeValue(forKey: id)?.resume(returning: nil)
        }
    }
}
