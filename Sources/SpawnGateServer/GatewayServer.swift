import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import SpawnGate
#if canImport(Glibc)
import Glibc
#endif

/// `spawngate serve`: one ServiceGroup (``Lifecycle``) of the policy watcher and the reaper, then the listeners: the
/// HTTP listener and the hooks' Unix socket (``HookSocket``). SIGTERM or SIGINT stops the listeners first (no new
/// connection; the requests in flight are decided, committed, audited and answered), then the reaper and the
/// watcher, and exits, within ``Options/shutdownBudget``; agents keep running and the next start finds them in
/// state.db (the ones gone are forgotten and their slots freed).
public struct GatewayServer {
    public struct Options: Sendable {
        public var listen: ListenAddress?
        public var socket: String?
        public var maxConnections = 256
        public var perSourceConnections = 16
        public var headerTimeout: TimeAmount = .seconds(5)
        public var bodyTimeout: TimeAmount = .seconds(10)
        public var idleTimeout: TimeAmount = .seconds(30)
        /// Also reload when the policy file changes, not only on SIGHUP.
        public var watchPolicyFile = true
        /// How long a graceful shutdown may take before the group is cancelled (``Lifecycle/budget``).
        public var shutdownBudget = Lifecycle.budget
        public init(listen: ListenAddress?, socket: String?) { self.listen = listen; self.socket = socket }
    }

    public let gateway: GatewayService
    public let options: Options
    /// Called with each listener's address once it accepts connections (`http://127.0.0.1:7717`, `unix:/path`).
    public var onListening: @Sendable (String) -> Void = { _ in }

    public init(gateway: GatewayService, options: Options) {
        self.gateway = gateway
        self.options = options
    }

    public func run() async throws {
        let logger = gateway.logger
        let sources = SourceTable(perSource: options.perSourceConnections)
        let o = options
        let http1 = HTTPServerBuilder.http1(configuration: .init(
            additionalChannelHandlers: [ConnectionGuard(table: sources, headerTimeout: o.headerTimeout, bodyTimeout: o.bodyTimeout)],
            idleTimeout: o.idleTimeout))
        var listeners: [any Service] = []
        if let listen = options.listen {
            let notify = onListening
            listeners.append(Application(
                router: HTTPRoutes.network(gateway), server: http1,
                configuration: .init(address: .hostname(listen.host, port: listen.port),
                                     availableConnectionsDelegate: MaximumAvailableConnections(o.maxConnections)),
                onServerRunning: { channel in
                    let port = channel.localAddress?.port ?? listen.port
                    let host = listen.host.contains(":") ? "[\(listen.host)]" : listen.host
                    notify("http://\(host):\(port)")
                },
                logger: logger))
        }
        if let path = options.socket {
            try Self.claimSocketPath(path)
            // Opened to others only when hook_users names them (the kernel-checked uid still decides each request).
            let widen = (gateway.pipeline.policy.hookUsers ?? []).contains { $0 != getuid() }
            let limits = HookSocket.Limits(maxConnections: o.maxConnections, perUID: o.perSourceConnections,
                                           headerTimeout: Double(o.headerTimeout.nanoseconds) / 1e9,
                                           bodyTimeout: Double(o.bodyTimeout.nanoseconds) / 1e9)
            listeners.append(HookSocket(path: path, gateway: gateway, limits: limits, widen: widen, onListening: onListening))
        }
        // Listeners last: they stop first on SIGTERM, while the reaper and the watcher still run.
        let group = Lifecycle.group(background: [PolicyWatcher(gateway: gateway, watchFile: o.watchPolicyFile), Reaper(gateway: gateway)],
                                    listeners: listeners, budget: o.shutdownBudget, logger: logger)
        try await group.run()
        if let path = options.socket { unlink(path) }
    }

    /// A socket file left by a gateway that is gone is removed; one a running gateway answers on is not taken over.
    static func claimSocketPath(_ path: String) throws(GatewayFailure) {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        guard (st.st_mode & S_IFMT) == S_IFSOCK else {
            throw GatewayFailure("\(path) exists and is not a socket; choose another --socket path or remove it")
        }
        if (try? HTTPClient.exchange(.unix(path: path), method: GatewayOperation.health.method, path: GatewayOperation.health.path, timeout: 1)) != nil {
            throw GatewayFailure("another gateway is already serving on \(path); stop it first, or choose another --socket path")
        }
        unlink(path)
    }
}
