import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import ServiceLifecycle
import SpawnGate
import WSClient
#if canImport(Glibc)
import Glibc
#endif

/// Where the guard forwards to: Relaycast (https, certificate verified) or, for tests, a stand-in on loopback.
public struct RelayUpstream: Sendable, Equatable {
    /// `https://host[:port]` or `http://127.0.0.1:port`, without a trailing slash.
    public let base: String
    /// The same with ws:// or wss://.
    public let webSocketBase: String
    public let tls: Bool

    /// Plain http only to loopback: anything else would hand the workspace key and every message to the network.
    public static func parse(_ text: String) -> Result<RelayUpstream, GatewayFailure> {
        guard let u = URLComponents(string: text), let scheme = u.scheme?.lowercased(), let host = u.host, !host.isEmpty,
              u.user == nil, u.query == nil, u.fragment == nil, u.path.isEmpty || u.path == "/" else {
            return .failure(GatewayFailure("--upstream '\(text)' must be Relaycast's base URL, scheme, host and optional port only, like https://api.relaycast.dev"))
        }
        let bare = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        let loopback = IPAddress.namesLoopback(bare)
        switch scheme {
        case "https": break
        case "http" where loopback: break
        case "http":
            return .failure(GatewayFailure("--upstream '\(text)': plain http is allowed only to a loopback upstream (a local stand-in); use https:// for Relaycast, whose certificate the guard verifies"))
        default:
            return .failure(GatewayFailure("--upstream '\(text)' must start with https:// (or http:// to a loopback stand-in)"))
        }
        var base = "\(scheme)://\(host)"
        if let port = u.port { base += ":\(port)" }
        return .success(RelayUpstream(base: base, webSocketBase: (scheme == "https" ? "wss" : "ws") + base.drop { $0 != ":" }, tls: scheme == "https"))
    }
}

/// `spawngate relay guard`: the local Agent Relay broker's Relaycast. HTTP requests and WebSocket frames go to the
/// real upstream and back unchanged, except that no frame that would start an agent or open a terminal reaches the
/// broker (``GuardFilter``); each frame dropped is an audited denial. Spawn requests arrive instead as workspace
/// messages to this gateway's mailbox (``RelayMailbox``), decided by the one pipeline (``GatewayService``) and started
/// through the one start path, exactly as `serve`'s `POST /v1/spawn`.
///
/// One ServiceGroup (``Lifecycle``): the policy watcher, the reaper and the mailbox, then the listener. SIGTERM or
/// SIGINT stops the listener first (its relay calls in flight are still answered through the mailbox), then the
/// mailbox, within ``Lifecycle/budget``; the broker reconnects to whatever it is pointed at next.
public struct RelayGuard {
    public struct Options: Sendable {
        public var listen: ListenAddress
        public var upstream: RelayUpstream
        /// PEM file of the certificate authorities to trust for the upstream instead of the system's (a local CA
        /// in tests, a corporate one in front of Relaycast).
        public var caFile: String?
        /// The workspace key for the mailbox (else learned from the broker's own traffic to Relaycast).
        public var workspaceKey: String?
        /// Largest WebSocket message, either way; a larger one closes that socket (the broker reconnects).
        public var maxMessage = 1 << 20
        /// Largest HTTP request body from the broker, and response body from the upstream.
        public var maxRequestBody = 1 << 20
        public var maxResponseBody = 8 << 20
        /// Audit lines for dropped frames per window; beyond that they are counted and summarised.
        public var auditBurst = 30
        public var auditWindow: Duration = .seconds(10)
        public init(listen: ListenAddress, upstream: RelayUpstream) { self.listen = listen; self.upstream = upstream }
    }

    public let gateway: GatewayService
    public let options: Options
    /// Called with the listener's address once it accepts connections.
    public var onListening: @Sendable (String) -> Void = { _ in }

    public init(gateway: GatewayService, options: Options) {
        self.gateway = gateway
        self.options = options
    }

    /// The TLS configuration for the upstream: full verification (chain and host name), TLS 1.2 or later.
    public static func tlsConfiguration(caFile: String?) throws(GatewayFailure) -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .fullVerification
        tls.minimumTLSVersion = .tlsv12
        if let caFile {
            do {
                let roots = try NIOSSLCertificate.fromPEMFile(caFile)
                guard !roots.isEmpty else { throw GatewayFailure("no certificate in it") }
                tls.trustRoots = .certificates(roots)
            } catch {
                throw GatewayFailure("--ca-file \(caFile) cannot be used (\(error)); give a PEM file of the certificate authorities to trust for the upstream")
            }
        }
        return tls
    }

    public func run() async throws {
        let o = options
        let logger = gateway.logger
        let tls = o.upstream.tls ? try Self.tlsConfiguration(caFile: o.caFile) : nil
        let client = AsyncHTTPClient.HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(
            tlsConfiguration: tls, redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(10), read: .seconds(60)), proxy: nil, decompression: .disabled))
        let drops = DropAuditor(gateway: gateway, burst: o.auditBurst, window: o.auditWindow)
        let mailbox = RelayMailbox(gateway: gateway, upstream: o.upstream, client: client, tls: tls, maxMessage: o.maxMessage,
                                   workspaceKey: o.workspaceKey, drops: drops)
        let forwarder = Forwarder(upstream: o.upstream, client: client, mailbox: mailbox, options: o, name: gateway.identity.name)
        let sockets = SocketProxy(upstream: o.upstream, tls: tls, maxMessage: o.maxMessage, drops: drops, logger: logger)
        let notify = onListening
        let listen = o.listen
        let app = Application(
            responder: CallbackResponder<BasicRequestContext> { request, _ in try await forwarder.respond(request) },
            server: .http1WebSocketUpgrade(configuration: .init(http1: .init(idleTimeout: .seconds(120)),
                                                                ws: .init(maxFrameSize: o.maxMessage, closeTimeout: .seconds(5)))) { head, _, _ in
                sockets.upgrade(head)
            },
            configuration: .init(address: .hostname(listen.host, port: listen.port), serverName: nil),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? listen.port
                let host = listen.host.contains(":") ? "[\(listen.host)]" : listen.host
                notify("http://\(host):\(port)")
            },
            logger: logger)
        // The listener last: on SIGTERM it stops first, and its relay calls in flight are still answered through
        // the mailbox, which stops after it (then the reaper and the watcher); within Lifecycle.budget.
        let group = Lifecycle.group(background: [PolicyWatcher(gateway: gateway), Reaper(gateway: gateway), mailbox],
                                    listeners: [app], logger: logger)
        do { try await group.run() } catch {
            try? await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }
}

/// Records dropped frames as denials, at most `burst` lines per window; beyond that they are counted and one line
/// says how many went unrecorded, so a key holder flooding spawn frames cannot fill the disk with fsynced lines.
// @unchecked: the window counters are read and written only under `lock`.
final class DropAuditor: @unchecked Sendable {
    let gateway: GatewayService
    let burst: Int
    let window: Duration
    /// The time, for the window (tests move it instead of sleeping).
    let now: @Sendable () -> ContinuousClock.Instant
    private let lock = NSLock()
    private var windowStart: ContinuousClock.Instant
    private var inWindow = 0
    private var suppressed = 0
    private(set) var total = 0

    init(gateway: GatewayService, burst: Int, window: Duration, now: @escaping @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now }) {
        self.gateway = gateway; self.burst = burst; self.window = window; self.now = now
        windowStart = now()
    }

    func dropped(_ denial: Denial) async {
        let (record, summary): (Bool, Int) = lock.withLock {
            total += 1
            let now = self.now()
            var summary = 0
            if now - windowStart >= window {
                summary = suppressed
                suppressed = 0; inWindow = 0; windowStart = now
            }
            inWindow += 1
            if inWindow > burst { suppressed += 1; return (false, summary) }
            return (true, summary)
        }
        gateway.logger.notice("relay guard dropped a frame", metadata: ["reason": .string(denial.reason.rawValue), "detail": .string(denial.detail)])
        if summary > 0 {
            await gateway.refuse(Denial(.deniedByRule, "\(summary) more frames were dropped by the relay guard without a line each (over \(burst) in \(window)); see the guard's log", rule: denial.rule))
        }
        if record { await gateway.refuse(denial) }
    }
}

/// The WebSocket side: each socket the broker opens is matched by one to the upstream, frames copied both ways,
/// Relaycast's through ``GuardFilter``. The terminal socket is accepted and never connected upstream.
struct SocketProxy: Sendable {
    let upstream: RelayUpstream
    let tls: TLSConfiguration?
    let maxMessage: Int
    let drops: DropAuditor
    let logger: Logger

    /// Request headers the upstream needs to know who connects (the token may also be in the query).
    static let forwardedHeaders: Set<String> = ["authorization", "sec-websocket-protocol", "user-agent", "x-api-key"]

    func upgrade(_ head: HTTPRequest) -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>> {
        let target = head.path ?? "/"
        let path = String(target.prefix { $0 != "?" })
        guard let socket = GuardFilter.Socket(path: path) else {
            let drops = self.drops
            return .upgrade([:]) { _, outbound, _ in
                await drops.dropped(Denial(.deniedByRule, "a WebSocket to \(TerminalText.escaped(String(path.prefix(80)))) was refused: the relay guard connects only the sockets it knows (/v1/ws, /v1/node/ws)", rule: GuardFilter.rule))
                try await outbound.close(.policyViolation, reason: "not a socket the spawngate relay guard connects")
            }
        }
        var headers = HTTPFields()
        var response = HTTPFields()
        for field in head.headerFields where Self.forwardedHeaders.contains(field.name.canonicalName) {
            headers.append(field)
            if field.name.canonicalName == "sec-websocket-protocol", let first = field.value.split(separator: ",").first {
                response[field.name] = first.trimmingCharacters(in: .whitespaces)
            }
        }
        let forwarded = headers
        let proxy = self
        if socket == .terminal {
            return .upgrade(response) { inbound, _, _ in
                // Accepted so the broker does not retry in a loop, and never connected upstream: nothing can reach
                // the broker's terminal through it. Whatever the broker sends is discarded.
                await proxy.drops.dropped(Denial(.deniedByRule, "the broker's remote-terminal socket (/v1/node/terminal/ws) was accepted but not connected to Relaycast: no one can open a terminal on this machine through the workspace", rule: GuardFilter.rule))
                for try await _ in inbound.messages(maxSize: proxy.maxMessage) {}
            }
        }
        return .upgrade(response) { inbound, outbound, _ in
            await proxy.relay(socket, target: target, headers: forwarded, inbound: inbound, outbound: outbound)
        }
    }

    /// Copies one socket pair until either side closes; then closes the other, so the broker reconnects.
    func relay(_ socket: GuardFilter.Socket, target: String, headers: HTTPFields, inbound: WebSocketInboundStream,
               outbound: WebSocketOutboundWriter) async {
        let url = upstream.webSocketBase + target
        // The client verifies the certificate against the URL's host (its SNI name too).
        let configuration = WebSocketClientConfiguration(maxFrameSize: maxMessage, additionalHeaders: headers, closeTimeout: .seconds(5))
        let maxMessage = self.maxMessage
        let drops = self.drops
        do {
            try await cancelWhenGracefulShutdown {
                try await WebSocketClient.connect(url: url, configuration: configuration, tlsConfiguration: tls, logger: logger) { upIn, upOut, _ in
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            // The broker's frames go up unchanged (its own pings, subscriptions, replies, results).
                            for try await message in inbound.messages(maxSize: maxMessage) {
                                switch message {
                                case .text(let s): try await upOut.write(.text(s))
                                case .binary(let b): try await upOut.write(.binary(b))
                                }
                            }
                        }
                        group.addTask {
                            for try await message in upIn.messages(maxSize: maxMessage) {
                                guard case .text(let s) = message else {
                                    await drops.dropped(Denial(.malformed, "a binary frame from Relaycast on the broker's \(socket.rawValue) socket was dropped: Relaycast speaks JSON text, and the guard passes only what it can read", rule: GuardFilter.rule))
                                    continue
                                }
                                switch GuardFilter.judge(Array(s.utf8), on: socket) {
                                case .pass: try await outbound.write(.text(s))
                                case .drop(let denial): await drops.dropped(denial)   // withheld spawngate messages too
                                }
                            }
                        }
                        _ = try await group.next()
                        group.cancelAll()
                        try? await upOut.close(.normalClosure, reason: nil)
                        try? await outbound.close(.goingAway, reason: "upstream closed")
                    }
                }
            }
        } catch {
            logger.notice("relay guard: the broker's \(socket.rawValue) socket ended: \(error)")
        }
        try? await outbound.close(.unexpectedServerError, reason: "the relay guard lost the upstream; reconnect")
    }
}

/// The HTTP side: every request to the upstream and back, bounded in size; `/_spawngate/` is the guard's own.
struct Forwarder: Sendable {
    let upstream: RelayUpstream
    let client: AsyncHTTPClient.HTTPClient
    let mailbox: RelayMailbox
    let options: RelayGuard.Options
    let name: String

    /// Exchanges in which Relaycast accepts only a valid workspace key (registering an agent or a node, opening the
    /// workspace stream): a 2xx answer there proves the key presented is one.
    static let keyAccepted: [String: String] = [
        "POST /v1/agents": "accepted by Relaycast when the broker registered an agent",
        "POST /v1/nodes": "accepted by Relaycast when the broker registered its node",
        "PUT /v1/workspace/stream": "accepted by Relaycast when the broker opened the workspace stream",
    ]

    static let hopByHop: Set<String> = ["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                                         "transfer-encoding", "upgrade", "host", "content-length", "proxy-connection"]

    func respond(_ request: Request) async throws -> Response {
        let path = request.uri.path
        if path.hasPrefix("/_spawngate/") { return try await local(request, path: path) }
        if request.headers.contains(where: { $0.name.canonicalName == "upgrade" }) {
            return Self.error(404, "the relay guard connects only the WebSockets /v1/ws and /v1/node/ws")
        }
        let body: ByteBuffer
        do { body = try await request.body.collect(upTo: options.maxRequestBody) } catch {
            return Self.error(413, "the request body is over \(options.maxRequestBody) bytes; the relay guard forwards at most that")
        }
        var outgoing = HTTPClientRequest(url: upstream.base + (request.uri.string.hasPrefix("/") ? request.uri.string : "/" + request.uri.string))
        outgoing.method = .init(rawValue: request.method.rawValue)
        for field in request.headers where !Self.hopByHop.contains(field.name.canonicalName) {
            outgoing.headers.add(name: field.name.rawName, value: field.value)
        }
        // A workspace key presented by whoever connects proves nothing (any local process can connect first); it
        // is taken only below, once the upstream has accepted it.
        let presented = request.headers[.authorization].flatMap { $0.hasPrefix("Bearer rk_") ? String($0.dropFirst(7)) : nil }
        if body.readableBytes > 0 || request.method == .post || request.method == .put || request.method == .patch {
            outgoing.body = .bytes(body)
        }
        let answer: HTTPClientResponse
        let bytes: ByteBuffer
        do {
            answer = try await client.execute(outgoing, timeout: .seconds(60))
            bytes = try await answer.body.collect(upTo: options.maxResponseBody)
        } catch let e as NIOSSLError {
            return Self.error(502, "the relay guard refused the upstream's TLS certificate or handshake (\(e)); check --upstream and --ca-file")
        } catch let e as BoringSSLError {
            return Self.error(502, "the relay guard refused the upstream's TLS certificate (\(e)); check --upstream and --ca-file")
        } catch let e as NIOSSLExtraError {
            return Self.error(502, "the relay guard refused the upstream's TLS certificate (\(e)); check that --upstream names the host its certificate is for")
        } catch {
            return Self.error(502, "the relay guard could not reach \(upstream.base) (\(error)); it retries on the next request")
        }
        if (200..<300).contains(Int(answer.status.code)) {
            if request.method == .post, path == "/v1/workspaces",
               case .object(let o)? = try? StrictJSONReader.parse(Array(bytes.readableBytesView)),
               case .object(let data)? = o["data"], case .string(let key)? = data["api_key"], key.hasPrefix("rk_") {
                await mailbox.accepted(key, how: "issued by Relaycast when the broker created its workspace")
            } else if let presented, let how = Self.keyAccepted[request.method.rawValue + " " + path] {
                await mailbox.accepted(presented, how: how)
            }
        }
        var headers = HTTPFields()
        for h in answer.headers where !Self.hopByHop.contains(h.name.lowercased()) {
            if let n = HTTPField.Name(h.name) { headers.append(HTTPField(name: n, value: h.value)) }
        }
        return Response(status: .init(code: Int(answer.status.code)), headers: headers, body: .init(byteBuffer: bytes))
    }

    /// `GET /_spawngate/v1/health`, `GET /_spawngate/metrics`; `POST /_spawngate/v1/relay?to=NAME&op=OP&timeout=S&key=K` (a request for a `relay:`
    /// peer, sent through the workspace; the answer is the target's, unchanged).
    private func local(_ request: Request, path: String) async throws -> Response {
        switch (request.method, path) {
        case (.get, "/_spawngate/v1/health"):
            let online = await mailbox.online
            let key: String
            switch await mailbox.keySource {
            case .none: key = "none yet"
            case .configured: key = "configured (RELAY_API_KEY)"
            case .accepted(let how): key = "from the broker's traffic, \(how)"
            case .conflict: key = "conflict"
            }
            let stats = await mailbox.stats
            let unverified = stats.unverified.sorted { $0.key < $1.key }.map { ($0.key, JSONWriter.Value.int(Int64($0.value))) }
            let counts: [(String, JSONWriter.Value)] = [
                ("sent", .int(Int64(stats.sent))), ("send_failures", .int(Int64(stats.sendFailures))),
                ("rate_limited", .int(Int64(stats.rateLimited))), ("last_retry_after", .int(Int64(stats.lastRetryAfter))),
                ("requests", .int(Int64(stats.requests))), ("answers", .int(Int64(stats.answers))), ("duplicates", .int(Int64(stats.duplicates))),
                ("resyncs", .int(Int64(stats.resyncs))), ("replayed", .int(Int64(stats.replayed))),
                ("token_replaced", .int(Int64(stats.tokenReplaced))), ("unverified", .raw(JSONWriter.object(unverified))),
                ("withheld", .int(Int64(mailbox.drops.total))),
            ]
            return Self.json(200, JSONWriter.object([("guard", .string("spawngate relay guard")), ("name", .string(name)),
                                                    ("upstream", .string(upstream.base)), ("mailbox", .string(online ? "online" : "offline")),
                                                    ("mailbox_name", .string(mailbox.agentName)),
                                                    ("workspace_key", .string(key)), ("stats", .raw(JSONWriter.object(counts)))]))
        case (.get, "/_spawngate/metrics"):
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: await MailboxMetrics.text(mailbox.stats, withheld: mailbox.drops.total))))
        case (.post, "/_spawngate/v1/relay"):
            let q = request.uri.queryParameters
            guard let to = q["to"].map(String.init), (try? Home.validateBrokerName(to)) != nil,
                  let op = q["op"].flatMap({ GatewayOperation(rawValue: String($0)) }), op.throughWorkspace,
                  let key = q["key"].flatMap({ Base64.urlDecode(String($0)) }).flatMap({ try? PublicKey(validating: $0) }) else {
                return Self.error(400, "POST /_spawngate/v1/relay needs to=BROKER, op=spawn|release|agents|logs and key=<the peer's public key, base64url>")
            }
            let timeout = min(max(q["timeout"].flatMap { Double(String($0)) } ?? 30, 1), 300)
            let body: ByteBuffer
            do { body = try await request.body.collect(upTo: SealedBody.maxSize) } catch {
                return Self.error(413, "the request is over \(SealedBody.maxSize) bytes; a gateway accepts at most 64 KiB (shorten the task)")
            }
            let (status, answer) = await mailbox.call(to: to, key: key, op: op, payload: Array(body.readableBytesView), timeout: timeout)
            return Self.json(status, answer)
        default:
            return Self.error(404, "the relay guard's own API is GET /_spawngate/v1/health, GET /_spawngate/metrics and POST /_spawngate/v1/relay")
        }
    }

    static func json(_ status: Int, _ body: [UInt8]) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    static func error(_ status: Int, _ message: String) -> Response {
        json(status, JSONWriter.object([("error", .string(message))]) + [10])
    }
}
