import ArgumentParser
import Foundation
import Logging
import MCP
import SpawnGate
import SpawnGateCLI

/// `spawngate mcp`, as its own executable (the MCP SDK lives only here): an MCP server on stdio whose tools sign
/// with this broker's key and send to a target's gateway, through the same library code as `spawngate spawn`,
/// `agents`, `release` and `handoff`. Nothing it answers comes from anywhere but a verified receipt.
@main
struct MCPMain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spawngate mcp",
        abstract: "Run an MCP server on stdio: agent.add (with a broker), agent.list, agent.remove, broker.list, agent.handoff.",
        discussion: """
            Register it with an MCP client as a stdio server whose command is 'spawngate mcp' (with --home if the \
            home is not ~/.spawngate or $SPAWNGATE_HOME). Every call is signed with this broker's key and decided \
            by the target's policy; a denial is a tool error whose text starts with the reason code. Without a \
            broker argument (or with this broker's own name) a call goes to this machine's own gateway, which must \
            then be a peer in peers.yaml under this broker's name (e.g. http://127.0.0.1:7717). Standard output \
            carries the protocol only; diagnostics go to standard error.
            """)
    @Option(name: .long, help: ArgumentHelp("The broker's home directory (default: $SPAWNGATE_HOME, else ~/.spawngate).", valueName: "dir"))
    var home: String?
    @Option(help: ArgumentHelp("Seconds each exchange with a gateway may take (at most 15).", valueName: "seconds"))
    var timeout: Double = 10
    @Option(help: ArgumentHelp("Act under this grant ('spawngate grant add'), narrower than the broker's rights: agent.add outside it is refused before anything is signed, the target checks it too, and agent.remove and agent.handoff are refused.", valueName: "name"))
    var grant: String?

    static func main() async {
        ProcessHardening.apply()
        await mainWithExitVocabulary(nil)
    }

    func validate() throws {
        guard timeout > 0, timeout <= 15 else { throw ValidationError("--timeout must be more than 0 and at most 15 seconds") }
    }

    func run() async throws {
        var configured = GatewayTools(home: Home.resolve(home), timeout: timeout)
        if let grant {
            // A grant that cannot be used now is said at start, not at the first call.
            do { _ = try GrantStore(home: configured.home).load(grant) } catch { throw failure(error, doing: "cannot use grant '\(grant)'") }
            configured.grant = grant
        }
        let tools = configured
        let server = Server(
            name: "spawngate", version: "0.1.0",
            instructions: """
                Start, list and stop AI coding agents on this machine or on other brokers of the mesh. Every call is \
                signed as this broker and decided by the target machine's policy. A denial (a tool error starting \
                with a reason code such as cwd_not_allowed) is the target operator's decision: report it, do not \
                retry with changed arguments to get around it.
                """,
            capabilities: .init(tools: .init(listChanged: false)))
        await server.withMethodHandler(ListTools.self) { _ in ListTools.Result(tools: GatewayTools.definitions) }
        // A tool call normally reaches `tools` from the transport with its arguments as written (ToolCall); one the
        // strict reader refused comes through the SDK, which must not have made any argument binary.
        await server.withMethodHandler(CallTool.self) { params in
            do throws(ToolFailure) {
                return await tools.call(params.name, try params.arguments.map { v throws(ToolFailure) in try Arguments.exactly(v) })
            } catch {
                return GatewayTools.error(error.text)
            }
        }
        var logger = Logger(label: "spawngate-mcp") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = .warning
        let log = logger
        let transport = LineTransport(logger: log)
        do {
            try await server.start(transport: transport)
        } catch {
            throw failure(error, doing: "cannot start the MCP server")
        }
        // Calls are answered concurrently, as the SDK answers requests; the session ends with standard input.
        await withDiscardingTaskGroup { group in
            group.addTask { await server.waitUntilCompleted() }
            for await call in transport.toolCalls {
                group.addTask {
                    let result = await tools.call(call.name, call.arguments)
                    do { try await transport.send(Data(ToolCall.answer(call.id, result))) } catch {
                        log.warning("cannot send the answer to tool call \(call.id): \(error)")
                    }
                }
            }
        }
    }
}
