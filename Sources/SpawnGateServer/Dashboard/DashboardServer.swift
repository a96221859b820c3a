import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import SpawnGate

/// `spawngate dashboard`: a page on loopback, served by this process, that shows this broker's peers, its agents on
/// each, its recent decisions and its policy, and starts and releases agents through the same signed path as
/// `spawn --broker` and `release --broker`.
///
/// The boundary (SECURITY.md, "The dashboard"): it listens on a loopback address only; every API call must carry
/// the secret of this start (32 random bytes, in the printed URL's fragment, sent back by the page as a header);
/// the Host header must be exactly the listen address (DNS rebinding); an Origin header must be the page's own
/// origin (cross-site requests); state changes are POSTs with a JSON body. The page loads nothing from elsewhere
/// and a strict Content-Security-Policy allows nothing else.
public struct DashboardServer {
    public struct Options: Sendable {
        public var listen: ListenAddress
        /// Seconds per exchange with a gateway (RemoteGateway's timeout).
        public var timeout: Double = 10
        /// Open connections at once (a browser keeps about six).
        public var maxConnections = 32
        public var headerTimeout: TimeAmount = .seconds(10)
        public var bodyTimeout: TimeAmount = .seconds(10)
        public var idleTimeout: TimeAmount = .seconds(60)
        /// This machine's gateway socket, where held requests are settled (nil: the default places).
        public var socket: String?
        public init(listen: ListenAddress) { self.listen = listen }
    }

    /// The default: a free port on IPv4 loopback.
    public static let defaultListen = ListenAddress(host: "127.0.0.1", port: 0)

    public let home: Home
    public let options: Options
    /// This start's secret (base64url of 32 random bytes): whoever has it can use the dashboard.
    public let secret: String
    public var logger = Logger(label: "spawngate-dashboard")
    /// Called once the listener accepts connections, with the URL to open (the secret in its fragment).
    public var onListening: @Sendable (String) -> Void = { _ in }

    public init(home: Home, options: Options) throws(GatewayFailure) {
        if let problem = Self.loopbackProblem(options.listen) { throw GatewayFailure(problem) }
        self.home = home
        self.options = options
        secret = Base64.urlEncode(Sodium.randomBytes(32))
    }

    /// nil when `address` is an IP literal on loopback (127.0.0.0/8 or ::1); otherwise why the dashboard refuses it.
    /// A name (even `localhost`) is refused too: the Host check compares the literal address a browser sends.
    public static func loopbackProblem(_ address: ListenAddress) -> String? {
        let ip = IPAddress(address.host)
        if ip?.isLoopback == true { return nil }
        let name = ip == nil ? " (give an address, not a name)" : ""
        return "--listen \(address.host):\(address.port): the dashboard listens on loopback only, such as 127.0.0.1:0 or [::1]:8080\(name); it starts and stops agents as this broker, so it must not be reachable from other machines"
    }

    public func run() async throws {
        let bound = BoundAddress()
        var api = DashboardAPI(home: home, timeout: options.timeout, logger: logger)
        api.socket = options.socket
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: DashboardGuard(address: bound, secret: Array(secret.utf8)))
        api.register(router)
        let o = options
        let sources = SourceTable(perSource: o.maxConnections)
        let http1 = HTTPServerBuilder.http1(configuration: .init(
            additionalChannelHandlers: [ConnectionGuard(table: sources, headerTimeout: o.headerTimeout, bodyTimeout: o.bodyTimeout)],
            idleTimeout: o.idleTimeout))
        let listen = o.listen
        let secret = self.secret
        let notify = onListening
        let app = Application(
            router: router, server: http1,
            configuration: .init(address: .hostname(listen.host, port: listen.port),
                                 availableConnectionsDelegate: MaximumAvailableConnections(o.maxConnections)),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? listen.port
                let host = listen.host.contains(":") ? "[\(listen.host)]" : listen.host
                bound.set("\(host):\(port)")
                notify("http://\(host):\(port)/#s=\(secret)")
            },
            logger: logger)
        let group = Lifecycle.group(background: [], listeners: [app], logger: logger)
        try await group.run()
    }
}

/// The listener's `host:port` as a browser writes it in Host (known once the port is bound; port 0 picks one).
// @unchecked: `value` is read and written only under `lock` (Mutex needs macOS 15; the package supports 14).
final class BoundAddress: @unchecked Sendable {
    private let lock = NSLock()
    private var value: String?
    func set(_ authority: String) { lock.withLock { value = authority } }
    var authority: String? { lock.withLock { value } }
}
