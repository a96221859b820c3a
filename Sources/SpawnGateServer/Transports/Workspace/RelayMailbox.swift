import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
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

    /// Registers (or re-registers, for a fresh token) the mailbox agent with the workspace key.
    private func register(key: String) async throws -> String {
        let body = JSONWriter.object([("name", .string(agentName)), ("type", .string("agent")),
                                      ("metadata", .raw(JSONWriter.object([("spawngate", .bool(true))])))])
        let (status, answer) = try await post("/v1/agents", body: body, bearer: key)
        guard (200..<300).contains(status), case .object(let o)? = try? StrictJSONReader.parse(answer),
              case .object(let data)? = o["data"], case .string(let token)? = data["token"] else {
            throw UpstreamError(description: "registering \(agentName) with Relaycast answered HTTP \(status)")
        }
        return token
    }

    private func post(_ path: String, body: [UInt8], bearer: String) async throws -> (Int, [UInt8]) {
        var request = HTTPClientRequest(url: upstream.base + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "Authorization", value: "Bearer \(bearer)")
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await client.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), Array(bytes.readableBytesView))
    }

    struct KeyChanged: Error, CustomStringConvertible { var description: String { "its workspace key is no longer trusted" } }

    /// The mailbox's socket for as long as `key` is the key in use (a conflict ends it).
    private func listen(token: String, while key: String) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.listen(token: token) }
            group.addTask {
                while await self.state.key == key { try await Task.sleep(for: .milliseconds(100)) }
                throw KeyChanged()
            }
            defer { group.cancelAll() }
            _ = try await group.next()
        }
    }

    /// The mailbox's socket: every workspace event for it; handles ours, ignores the rest.
    private func listen(token: String) async throws {
        let url = upstream.webSocketBase + "/v1/ws?token=" + token
        let maxMessage = self.maxMessage
        try await WebSocketClient.connect(url: url, configuration: .init(maxFrameSize: maxMessage, closeTimeout: .seconds(5)),
                                          tlsConfiguration: tls, logger: logger) { inbound, _, _ in
            try await withThrowingDiscardingTaskGroup { group in
                for try await message in inbound.messages(maxSize: maxMessage) {
                    guard case .text(let s) = message, let (sender, text) = Self.directMessage(s), RelayWire.isOurs(text) else { continue }
                    switch RelayWire.parse(text) {
                    case .failure(let denial):
                        // Not a valid request: recorded, never acted on (it may have been meant for another gateway,
                        // which is why only its shape, never its content, is trusted to say so).
                        await self.drops.dropped(Denial(denial.reason, "\(denial.detail) (from \(TerminalText.escaped(String(sender.prefix(64)))) through the workspace)"))
                    case .success(.request(let to, let id, let op, let payload)) where to == self.name:
                        guard await self.state.startHandling() else {
                            await self.reply(to: sender, id: id, status: 429, body: JSONWriter.object([("error", .string("\(self.name)'s gateway is handling \(Self.maxInFlight) requests from the workspace already; try again in a moment"))]))
                            continue
                        }
                        group.addTask {
                            await self.handle(sender: sender, id: id, op: op, payload: payload)
                            await self.state.doneHandling()
                        }
                    case .success(.answer(let to, let id, let status, let body)) where to == self.name:
                        await self.state.answer(id, status: status, body: body)
                    case .success:
                        continue   // for another gateway in the workspace
                    }
                }
            }
        }
    }

    /// The sender and text of a direct (or channel) message event, if `frame` is one.
    static func directMessage(_ frame: String) -> (String, String)? {
        guard case .object(let o)? = try? StrictJSONReader.parse(Array(frame.utf8)), case .string(let type)? = o["type"],
              ["dm.received", "group_dm.received", "message.created"].contains(type),
              case .object(let m)? = o["message"], case .string(let sender)? = m["agent_name"], case .string(let text)? = m["text"] else { return nil }
        return (sender, text)
    }

    /// One request from the workspace, through the same entry as serve's HTTP routes.
    private func handle(sender: String, id: String, op: GatewayOperation, payload: [UInt8]) async {
        let source = "relay:" + sender
        let answer: GatewayAnswer
        if op.spendsAllowance, let refused = gateway.admit(source) {
            answer = refused
        } else {
            answer = await gateway.answer(op, input: payload, source: source)
        }
        await reply(to: sender, id: id, status: answer.wireStatus, body: answer.wireBody)
    }

    private func reply(to sender: String, id: String, status: Int, body: [UInt8]) async {
        // The requester's gateway is the mailbox's broker; anyone else gets the answer under their own name.
        let gatewayName = sender.hasPrefix("spawngate-") ? String(sender.dropFirst("spawngate-".count)) : sender
        let trimmed = Array(body.prefix { $0 != 10 })
        guard (try? Home.validateBrokerName(gatewayName)) != nil else { return }
        let text = RelayWire.format(.answer(to: gatewayName, id: id, status: status, body: trimmed))
        do { try await sendDM(to: sender, text: text) } catch {
            logger.error("relay guard could not answer \(sender) through the workspace: \(error)")
        }
    }

    private func sendDM(to: String, text: String) async throws {
        guard let token = await state.token else { throw UpstreamError(description: "the mailbox is not connected to Relaycast") }
        let (status, answer) = try await post("/v1/dm", body: JSONWriter.object([("to", .string(to)), ("text", .string(text))]), bearer: token)
        guard (200..<300).contains(status) else {
            throw UpstreamError(description: "Relaycast answered HTTP \(status) to a direct message for \(to): \(String(decoding: answer.prefix(200), as: UTF8.self))")
        }
    }

    // MARK: Requests from this machine

    /// Sends a request to `to`'s gateway and waits for its answer: (HTTP status, body) as the target gave them, or
    /// the guard's own error (503 offline, 502 not sent, 504 no answer in time).
    func call(to: String, op: GatewayOperation, payload: [UInt8], timeout: Double) async -> (Int, [UInt8]) {
        func failed(_ status: Int, _ message: String) -> (Int, [UInt8]) { (status, JSONWriter.object([("error", .string(message))])) }
        guard await state.token != nil else {
            if await state.source == .conflict {
                return failed(503, "this machine's relay guard has taken its mailbox offline: two different workspace keys were accepted by Relaycast through it, so one is not the broker's; restart 'spawngate relay guard' with RELAY_API_KEY set to the broker's workspace key")
            }
            return failed(503, "this machine's relay guard is not connected to Relaycast yet: it needs the workspace key (RELAY_API_KEY when it starts, or a broker behind it that has registered with Relaycast through it) and a reachable upstream")
        }
        let id = RelayWire.newID()
        guard await state.expect(id) else { return failed(503, "this machine's relay guard is waiting on \(Self.maxWaiting) answers already; try again in a moment") }
        let text = RelayWire.format(.request(to: to, id: id, op: op, payload: payload))
        do { try await sendDM(to: RelayWire.mailbox(to), text: text) } catch {
            await state.expire(id)
            return failed(502, "the request could not be sent through the workspace: \(error)")
        }
        let answer: (Int, [UInt8])? = await withTaskGroup(of: (Int, [UInt8])?.self) { group in
            group.addTask { await self.state.wait(id) }
            group.addTask { try? await Task.sleep(for: .seconds(timeout)); return nil }
            let first = await group.next() ?? nil
            await state.expire(id)   // ends the waiter if the timer won
            group.cancelAll()
            return first
        }
        return answer ?? failed(504, "no answer from \(to)'s gateway through the workspace within \(Int(timeout)) s; is 'spawngate relay guard' running there, in front of a broker of the same workspace?")
    }

    /// The mailbox's changing state, on one actor.
    actor State {
        private(set) var key: String?
        private(set) var source: KeySource
        private var seen: String?
        private(set) var token: String?
        private var inFlight = 0
        private var expected = Set<String>()
        private var waiting: [String: CheckedContinuation<(Int, [UInt8])?, Never>] = [:]
        private var arrived: [String: (Int, [UInt8])] = [:]

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

        func startHandling() -> Bool {
            guard inFlight < RelayMailbox.maxInFlight else { return false }
            inFlight += 1
            return true
        }
        func doneHandling() { inFlight -= 1 }

        func expect(_ id: String) -> Bool {
            guard expected.count < RelayMailbox.maxWaiting else { return false }
            expected.insert(id)
            return true
        }

        /// An answer for a request this machine sent; anything else (a replayed or unknown id) is ignored.
        func answer(_ id: String, status: Int, body: [UInt8]) {
            guard expected.remove(id) != nil else { return }
            if let w = waiting.removeValue(forKey: id) { w.resume(returning: (status, body)) } else { arrived[id] = (status, body) }
        }

        func wait(_ id: String) async -> (Int, [UInt8])? {
            if let a = arrived.removeValue(forKey: id) { return a }
            guard expected.contains(id) else { return nil }
            return await withCheckedContinuation { waiting[id] = $0 }
        }

        func expire(_ id: String) {
            expected.remove(id)
            arrived.removeValue(forKey: id)
            waiting.removeValue(forKey: id)?.resume(returning: nil)
        }
    }
}
