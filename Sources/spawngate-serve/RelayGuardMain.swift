import ArgumentParser
import Foundation
import Logging
import SpawnGate
import SpawnGateCLI
import SpawnGateServer
#if canImport(Glibc)
import Glibc
#endif

/// `spawngate relay guard`, run by spawngate-serve (which holds the network stack) as `spawngate-serve relay-guard`.
struct RelayGuardMain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spawngate relay guard",
        abstract: "Stand between the local Agent Relay broker and Relaycast: messaging passes, spawns and terminals do not.",
        discussion: """
            Start it first, then start the broker with RELAYCAST_BASE_URL and RELAY_BASE_URL set to the address it \
            prints (and RELAYCAST_WS_URL to the same with ws://). Every HTTP request and WebSocket frame goes to \
            --upstream and back unchanged, except frames that would start an agent (v6 agent.spawn_requested, v14 \
            action.invoke) or open a terminal (v14's terminal socket is never connected upstream), and frame types \
            the guard does not know on those sockets: each is dropped and recorded in the audit log. Spawn requests \
            from peers whose url is relay:NAME arrive as workspace messages to this gateway's mailbox \
            (spawngate-<name>) and are decided by the same pipeline as 'serve'. The mailbox needs the workspace key: \
            RELAY_API_KEY in the environment (recommended), else the key the broker uses, taken only once Relaycast \
            has accepted it through the guard; if two different keys are accepted the mailbox stays offline until \
            the guard is restarted with RELAY_API_KEY. 'spawngate doctor' says which it is.
            Listens on loopback only (default 127.0.0.1:7719); writes relay-guard.json in the home while it runs.
            """,
        version: SpawnGateVersion.current)
    @Option(name: .long, help: ArgumentHelp("The broker's home directory (default: $SPAWNGATE_HOME, else ~/.spawngate).", valueName: "dir"))
    var home: String?
    @Option(help: ArgumentHelp("Relaycast's base URL (https://, certificate verified; http:// only to a loopback stand-in).", valueName: "url"))
    var upstream: String = "https://api.relaycast.dev"
    @Option(help: ArgumentHelp("Loopback address to listen on, e.g. 127.0.0.1:7719 (port 0: any free port).", valueName: "host:port"))
    var listen: String = "127.0.0.1:7719"
    @Option(help: ArgumentHelp("PEM file of the certificate authorities to trust for the upstream, instead of the system's.", valueName: "file"))
    var caFile: String?
    @Option(help: ArgumentHelp("Largest WebSocket message either way, in bytes; a larger one closes that socket.", valueName: "bytes", visibility: .hidden))
    var maxMessage: Int = 1 << 20

    func validate() throws {
        guard (1024...(16 << 20)).contains(maxMessage) else { throw ValidationError("--max-message must be between 1024 and 16777216 bytes") }
    }

    func run() async throws {
        let address: ListenAddress
        switch ListenAddress.parse(listen) {
        case .success(let a): address = a
        case .failure(let e): throw ValidationError(e.message)
        }
        guard IPAddress.namesLoopback(address.host) else {
            throw ValidationError("--listen \(listen): the relay guard serves only the broker on this machine; give a loopback address such as 127.0.0.1:7719")
        }
        let up: RelayUpstream
        switch RelayUpstream.parse(upstream) {
        case .success(let u): up = u
        case .failure(let e): throw ValidationError(e.message)
        }
        if caFile != nil && !up.tls { throw ValidationError("--ca-file applies only to an https:// upstream") }
        var logger = Logger(label: "spawngate-relay-guard")
        logger.logLevel = .notice
        let resolved = Home.resolve(home)
        let gateway: GatewayService
        do { gateway = try GatewayService(home: resolved, logger: logger, metrics: GatewayMetrics()) } catch {
            throw failure(error, doing: "cannot guard")
        }
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&signals, s) }
        pthread_sigmask(SIG_UNBLOCK, &signals, nil)
        var options = RelayGuard.Options(listen: address, upstream: up)
        options.caFile = caFile
        options.maxMessage = maxMessage
        if let key = ProcessInfo.processInfo.environment["RELAY_API_KEY"], key.hasPrefix("rk_") { options.workspaceKey = key }
        do throws(GatewayFailure) { _ = try RelayGuard.tlsConfiguration(caFile: up.tls ? caFile : nil) } catch {
            throw failure(error, doing: "cannot guard")
        }
        var server = RelayGuard(gateway: gateway, options: options)
        let name = gateway.identity.name
        server.onListening = { url in
            do { try RelayGuardFile(url: url, upstream: up.base, pid: getpid(), name: name).save(resolved) } catch {
                Console.error("warning: \((error as? OperatorError)?.message ?? "\(error)"); 'spawn --broker' to relay: peers and 'doctor' will not find this guard")
            }
            Console.write(1, "spawngate \(name): relay guard listening on \(url), forwarding to \(up.base)\n")
        }
        defer {
            if RelayGuardFile.load(resolved)?.pid == getpid() { unlink(RelayGuardFile.path(resolved)) }
        }
        do { try await server.run() } catch { throw failure(error, doing: "cannot guard") }
    }
}
