import ArgumentParser
import Foundation
import Logging
import SpawnGate
import SpawnGateServer
#if canImport(Glibc)
import Glibc
#endif

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the long-running gateway: HTTP for remote requests, a Unix socket for local hooks.",
        discussion: """
            HTTP: POST /v1/spawn (a sealed, signed request; the answer is a signed receipt), GET /v1/agents and \
            POST /v1/release (signed control requests, for the requester's own agents), GET /healthz, GET /metrics \
            (Prometheus). The socket: POST /v1/hook, the input of 'hook pre-spawn', for callers whose uid the \
            policy's hook_users admits (default: this user only).
            Every request goes through the same decision pipeline as 'check'. Bodies over 64 KiB, slow clients \
            and sources sending unauthenticated junk are cut off before any decision. The policy is reloaded on \
            SIGHUP and when the file changes; a policy that fails to load or to pass its tests is refused and the \
            last good one stays. SIGTERM stops serving; agents keep running and are found again at the next start.
            Without --listen or --socket, listens on 127.0.0.1:7717. Port 0 picks a free port; the address is \
            printed on standard output ("listening on …").
            """)
    @OptionGroup var home: HomeOption
    @Option(help: ArgumentHelp("Address to listen on, e.g. 100.101.102.103:7717 (a Tailscale address) or 127.0.0.1:0.", valueName: "host:port"))
    var listen: String?
    @Option(help: ArgumentHelp("Unix socket for local hooks.", valueName: "path")) var socket: String?

    func run() async throws {
        var address: ListenAddress?
        if let listen {
            switch ListenAddress.parse(listen) {
            case .success(let a): address = a
            case .failure(let e): throw ValidationError(e.message)
            }
        } else if socket == nil {
            address = ListenAddress(host: "127.0.0.1", port: 7717)
        }
        if let warning = address?.exposureWarning { printError("warning: \(warning)") }
        var logger = Logger(label: "spawngate")
        logger.logLevel = .notice
        let gateway: Gateway
        do { gateway = try Gateway(home: home.resolved, logger: logger) } catch {
            printError("cannot serve: \(error.message)")
            throw Exit.cannotDecide
        }
        var server = GatewayServer(gateway: gateway, options: .init(listen: address, socket: socket))
        let name = gateway.identity.name
        server.onListening = { where_ in printLine("spawngate \(name): listening on \(where_)") }
        do { try await server.run() } catch let e as GatewayFailure {
            printError("cannot serve: \(e.message)")
            throw Exit.cannotDecide
        } catch {
            printError("cannot serve: \(error)")
            throw Exit.cannotDecide
        }
    }
}

/// One line on standard output, written at once (a test or a supervisor reads it through a pipe).
func printLine(_ text: String) {
    let bytes = Array((text + "\n").utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { Glibc.write(1, $0.baseAddress! + offset, bytes.count - offset) }
        if n <= 0 { if n < 0 && errno == EINTR { continue }; return }
        offset += n
    }
}
