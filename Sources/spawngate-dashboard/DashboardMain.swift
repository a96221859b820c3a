import ArgumentParser
import Foundation
import Logging
import SpawnGate
import SpawnGateCLI
import SpawnGateServer
#if canImport(Glibc)
import Glibc
#endif

/// `spawngate dashboard`, as its own executable like `spawngate serve` (the network stack stays out of `spawngate`).
@main
struct Dashboard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spawngate dashboard",
        abstract: "Serve a local web page: brokers, a Spawn Agent dialog with a broker selector, live agents, decisions, the policy.",
        discussion: """
            The first line on standard output is the URL to open, with this start's secret in its fragment \
            (http://127.0.0.1:PORT/#s=…); without the secret the page can do nothing. It listens on loopback only \
            (default 127.0.0.1 on a free port), answers only requests whose Host is that address and whose Origin, \
            if any, is the page's own, and loads nothing from other machines. Every spawn and release from the \
            page is signed with this broker's key and decided by the chosen broker's gateway, exactly like \
            'spawngate spawn --broker' and 'release --broker'. Agents on this machine go through its own gateway, \
            which must be a peer under this broker's own name. SIGTERM or Ctrl-C stops it.
            """,
        version: SpawnGateVersion.current)
    @Option(name: .long, help: ArgumentHelp("The broker's home directory (default: $SPAWNGATE_HOME, else ~/.spawngate).", valueName: "dir"))
    var home: String?
    @Option(help: ArgumentHelp("Loopback address to listen on (default 127.0.0.1:0, a free port).", valueName: "host:port"))
    var listen: String?
    @Option(help: ArgumentHelp("Seconds each exchange with a gateway may take.", valueName: "seconds"))
    var timeout: Double = 30
    @Option(help: ArgumentHelp("This machine's gateway socket, where held requests are approved or denied (default: <home>/hook.sock, else /run/spawngate/hook.sock).", valueName: "path"))
    var socket: String?

    static func main() async {
        ProcessHardening.apply()
        await mainWithExitVocabulary(nil)
    }

    func validate() throws {
        guard timeout > 0, timeout <= 300 else { throw ValidationError("--timeout must be between 0 and 300 seconds") }
        if let listen {
            switch ListenAddress.parse(listen) {
            case .failure(let e): throw ValidationError(e.message)
            case .success(let a): if let problem = DashboardServer.loopbackProblem(a) { throw ValidationError(problem) }
            }
        }
    }

    func run() async throws {
        let address = listen.flatMap { try? ListenAddress.parse($0).get() } ?? DashboardServer.defaultListen
        let home = Home.resolve(home)
        let identity: Identity
        do { identity = try home.loadIdentity() } catch { throw failure(error, doing: "cannot start the dashboard") }
        var options = DashboardServer.Options(listen: address)
        options.timeout = timeout
        options.socket = socket
        var server: DashboardServer
        do { server = try DashboardServer(home: home, options: options) } catch { throw failure(error, doing: "cannot start the dashboard") }
        var logger = Logger(label: "spawngate-dashboard")
        logger.logLevel = .notice
        server.logger = logger
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in [SIGTERM, SIGINT] { sigaddset(&signals, s) }
        pthread_sigmask(SIG_UNBLOCK, &signals, nil)
        server.onListening = { url in
            Console.write(1, url + "\n")
            Console.error("dashboard of \(identity.name): open the URL above in a browser on this machine; it holds this start's secret, so do not share it. Ctrl-C stops the dashboard.")
        }
        do { try await server.run() } catch { throw failure(error, doing: "cannot serve the dashboard") }
    }
}
