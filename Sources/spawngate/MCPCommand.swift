import ArgumentParser
import Foundation
import SpawnGate
#if canImport(Glibc)
import Glibc
#endif

/// `spawngate mcp` runs `spawngate-mcp`, installed next to this binary, with the same arguments, as `serve` runs
/// `spawngate-serve`: the MCP SDK lives only in that executable, so this one (every hook call) starts without it.
struct MCPCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcp",
        abstract: "Run an MCP server on stdio: agent.add (with a broker), agent.list, agent.remove, broker.list, agent.handoff.",
        discussion: """
            Runs spawngate-mcp (installed next to spawngate) with these arguments; 'spawngate mcp --help' lists \
            its options (--home, --timeout, --grant). Every tool call is signed with this broker's key and decided by the \
            target's policy, like 'spawngate spawn --broker'.
            """,
        helpNames: [])
    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("Options of the server: see 'spawngate mcp --help'.", valueName: "options"))
    var arguments: [String] = []

    func run() throws { try execSibling("spawngate-mcp", as: "mcp", arguments) }
}
