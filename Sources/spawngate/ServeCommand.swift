import ArgumentParser
import Foundation
import SpawnGate
import SpawnGateCLI
#if canImport(Glibc)
import Glibc
#endif

/// `spawngate serve` runs `spawngate-serve`, installed next to this binary, with the same arguments: the network
/// stack lives only in that executable, so this one (every `check`, hook and `spawn`) starts without loading it.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the long-running gateway: HTTP for remote requests, a Unix socket for local hooks.",
        discussion: """
            Runs spawngate-serve (installed next to spawngate) with these arguments; 'spawngate serve --help' \
            lists its options (--home, --listen, --socket).
            """,
        helpNames: [])
    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("Options of the gateway: see 'spawngate serve --help'.", valueName: "options"))
    var arguments: [String] = []

    func run() throws { try execSibling("spawngate-serve", as: "serve", arguments) }
}

/// Replaces this process with `program`, installed next to this binary, with `arguments` (`serve` and `mcp`
/// keep the network stack and the MCP SDK out of the `spawngate` every hook call starts).
func execSibling(_ program: String, as command: String, _ arguments: [String]) throws -> Never {
    let directory = Files.readLink("/proc/self/exe").map { ($0 as NSString).deletingLastPathComponent } ?? "."
    let path = directory + "/" + program
    var argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    execv(path, &argv)
    let why = String(cString: strerror(errno))
    for a in argv { free(a) }
    printError("cannot run \(path) (\(why)): 'spawngate \(command)' is that program; install it next to spawngate (swift build puts both in .build/debug)")
    throw Exit.cannotDecide
}

/// `spawngate relay guard …` runs `spawngate-serve relay-guard …`: the guard needs the network stack.
struct RelayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay",
        abstract: "Agent Relay integration: the guard between the local broker and Relaycast.",
        subcommands: [RelayGuardCommand.self])
}

struct RelayGuardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "guard",
        abstract: "Stand between the local Agent Relay broker and Relaycast: messaging passes, spawns and terminals do not.",
        discussion: """
            Runs spawngate-serve (installed next to spawngate); 'spawngate relay guard --help' lists its options \
            (--home, --upstream, --listen, --ca-file).
            """,
        helpNames: [])
    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("Options of the guard: see 'spawngate relay guard --help'.", valueName: "options"))
    var arguments: [String] = []

    func run() throws { try execSibling("spawngate-serve", as: "relay guard", ["relay-guard"] + arguments) }
}
