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
            its options (--home, --timeout). Every tool call is signed with this broker's key and decided by the \
            target's policy, like 'spawngate spawn --broker'.
            """,
        helpNames: [])
    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("Options of the server: see 'spawngate mcp --help'.", valueName: "options"))
    var arguments: [String] = []

    func run() throws {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        let directory = n > 0 ? (String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) as NSString).deletingLastPathComponent : "."
        let server = directory + "/spawngate-mcp"
        var argv: [UnsafeMutablePointer<CChar>?] = ([server] + arguments).map { strdup($0) } + [nil]
        execv(server, &argv)
        let why = String(cString: strerror(errno))
        for a in argv { free(a) }
        printError("cannot run \(server) (\(why)): 'spawngate mcp' is that program; install it next to spawngate (swift build puts both in .build/debug)")
        throw Exit.cannotDecide
    }
}
