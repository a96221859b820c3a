import ArgumentParser
import Foundation
import Logging
import SpawnGate
import SpawnGateCLI
import SpawnGateServer
#if canImport(Glibc)
import Glibc
#endif

/// `spawngate serve`, as its own executable: the network stack (NIO, Hummingbird) lives only here, so every other
/// command, the hook and `spawn` included, starts without loading it. `spawngate serve …` execs this binary.
@main
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spawngate serve",
        abstract: "Run the long-running gateway: HTTP for remote requests, a Unix socket for local hooks.",
        discussion: """
            HTTP: POST /v1/spawn (a sealed, signed request; the answer is a signed receipt), GET /v1/agents and \
            POST /v1/release (signed control requests, for the requester's own agents), GET /healthz, GET /metrics \
            (Prometheus). The socket: POST /v1/hook, the input of 'hook pre-spawn', for callers whose uid the \
            policy's hook_users admits (default: this user only).
            Every request goes through the same decision pipeline as 'check'; decisions arriving together are \
            committed together (one transaction, one fsync). Bodies over 64 KiB, slow clients and sources sending \
            unauthenticated junk are cut off before any decision. The policy is reloaded on SIGHUP and when the \
            file changes; a policy that fails to load or to pass its tests is refused and the last good one stays. \
            SIGTERM stops serving: the listeners stop accepting first, and the requests in flight are decided, \
            recorded and answered; an HTTP connection still open after 10 s is closed (a hook connection ends within \
            its header and body deadlines). Agents keep running and are found again at the next start.
            Without --listen or --socket, listens on 127.0.0.1:7717. Port 0 picks a free port; the address is \
            printed on standard output ("listening on …").
            """,
        version: SpawnGateVersion.current)
    @Option(name: .long, help: ArgumentHelp("The broker's home directory (default: $SPAWNGATE_HOME, else ~/.spawngate).", valueName: "dir"))
    var home: String?
    @Option(help: ArgumentHelp("Address to listen on, e.g. 100.101.102.103:7717 (a Tailscale address) or 127.0.0.1:0.", valueName: "host:port"))
    var listen: String?
    @Option(help: ArgumentHelp("Unix socket for local hooks.", valueName: "path")) var socket: String?
    @Option(help: ArgumentHelp("Seconds a client has to send a request's head.", valueName: "seconds", visibility: .hidden))
    var headerTimeout: Double = 5
    @Option(help: ArgumentHelp("Seconds a client has to send a request's body after its head.", valueName: "seconds", visibility: .hidden))
    var bodyTimeout: Double = 10
    @Flag(help: ArgumentHelp("Reload the policy on SIGHUP only, not when the file changes.", visibility: .hidden))
    var noWatch = false
    @Option(help: ArgumentHelp("Seconds a graceful stop may take before the connections left are closed.", valueName: "seconds", visibility: .hidden))
    var shutdownBudget: Double = 10

    static func main() async {
        ProcessHardening.apply()
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "relay-guard" {
            await RelayGuardMain.mainWithExitVocabulary(Array(arguments.dropFirst()))
            return
        }
        await mainWithExitVocabulary(nil)
    }

    func validate() throws {
        guard headerTimeout > 0, headerTimeout <= 300, bodyTimeout > 0, bodyTimeout <= 300 else {
            throw ValidationError("--header-timeout and --body-timeout must be between 0 and 300 seconds")
        }
        guard shutdownBudget > 0, shutdownBudget <= 300 else { throw ValidationError("--shutdown-budget must be between 0 and 300 seconds") }
    }

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
        if let warning = address?.exposureWarning { Console.error("warning: \(warning)") }
        var logger = Logger(label: "spawngate")
        logger.logLevel = .notice
        let gateway: GatewayService
        do { gateway = try GatewayService(home: Home.resolve(home), logger: logger, metrics: GatewayMetrics()) } catch {
            throw failure(error, doing: "cannot serve")
        }
        if let address, let keys = try? gateway.home.keyStore.entries() {
            let listen = address.host.contains(":") ? "[\(address.host)]:\(address.port)" : "\(address.host):\(address.port)"
            for f in SpawnGate.Doctor.sourceBinding(gateway.pipeline.policy, keys: keys, listen: listen) where f.severity == .warn {
                Console.error("warning: \(f.subject) \(f.message)")
            }
        }
        // A daemon must hear TERM, INT and HUP whatever mask it inherited (a test runner's, a supervisor's).
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&signals, s) }
        pthread_sigmask(SIG_UNBLOCK, &signals, nil)
        var options = GatewayServer.Options(listen: address, socket: socket)
        options.headerTimeout = .milliseconds(Int64(headerTimeout * 1000))
        options.bodyTimeout = .milliseconds(Int64(bodyTimeout * 1000))
        options.watchPolicyFile = !noWatch
        options.shutdownBudget = .milliseconds(Int64(shutdownBudget * 1000))
        var server = GatewayServer(gateway: gateway, options: options)
        let name = gateway.identity.name
        server.onListening = { address in Console.write(1, "spawngate \(name): listening on \(address)\n") }
        do { try await server.run() } catch { throw failure(error, doing: "cannot serve") }
    }
}
