#if canImport(Glibc)
import Glibc
#endif
import Foundation
import ArgumentParser
import SpawnGate

@main
struct SpawnGateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spawngate",
        abstract: "Signed, policy-checked, audited remote spawning of AI coding agents.",
        discussion: """
            A requesting broker signs a spawn request with its Ed25519 identity key; the target's gateway \
            verifies it against enrolled keys, checks the policy, and only then starts the agent.
            Exit codes of verify/check: 0 allowed, 1 denied, 2 the gateway cannot decide, 64 usage error.
            """,
        subcommands: [Init.self, Key.self, Sign.self, Verify.self, Check.self, Exec.self, Serve.self, Spawn.self, Agents.self, Release.self, Doctor.self, PeerCommand.self, Hook.self, Audit.self, PolicyCommand.self, Logs.self, Launch.self, HandoffCommand.self, MCPCommand.self])

    static func main() async {
        ProcessHardening.apply()
        await main(nil)
    }
}

/// `--home`, shared by every command.
struct HomeOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The broker's home directory (default: $SPAWNGATE_HOME, else ~/.spawngate).", valueName: "dir"))
    var home: String?

    var resolved: Home { Home.resolve(home) }
}

/// Exit statuses shared by the decision commands.
enum Exit {
    static let denied = ExitCode(1)
    static let cannotDecide = ExitCode(2)
}

/// Prints `spawngate: <message>` to stderr.
func printError(_ message: String) { Console.error(message) }

/// Prints one line for people. Lines that quote requests, receipts, file names or the audit log go through here,
/// so controls, bidi overrides and invisible characters are shown escaped, as in the audit log's JSON.
func printLine(_ line: String) { print(TerminalText.escaped(line)) }

func writeAll(_ fd: Int32, _ string: String) { Console.write(fd, string) }

/// Runs an operator action: an ``OperatorError`` prints its sentence and exits 1, a ``GatewayFailure`` exits 2.
func operatorAction(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as OperatorError {
        printError(e.message)
        throw Exit.denied
    } catch let e as GatewayFailure {
        printError(e.message)
        throw Exit.cannotDecide
    }
}
