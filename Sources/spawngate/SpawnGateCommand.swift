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
        version: SpawnGateVersion.current,
        subcommands: [Init.self, Key.self, Sign.self, Verify.self, Check.self, Exec.self, Serve.self, Spawn.self, Agents.self, Release.self, Doctor.self, PeerCommand.self, Hook.self, Audit.self, PolicyCommand.self, Logs.self, Launch.self, HandoffCommand.self, MCPCommand.self, DashboardCommand.self, RelayCommand.self])

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

/// Exit statuses, from the library's one vocabulary (``CommandStatus``, ``ReasonCode/exitStatus``).
enum Exit {
    static let denied = ExitCode(CommandStatus.denied.rawValue)
    static let cannotDecide = ExitCode(CommandStatus.cannotDecide.rawValue)
    static func of(_ reason: ReasonCode) -> ExitCode { ExitCode(reason.exitStatus.rawValue) }
}

/// The one way a command turns an error into an exit: prints its sentence and returns the status
/// ``CommandStatus/init(for:)`` gives it, so every command reports the same error with the same status.
func failure(_ error: any Error) -> ExitCode {
    printError(String(describing: error))
    return ExitCode(CommandStatus(for: error).rawValue)
}

/// Runs a command's body and maps the errors of this package (``OperatorError``, ``GatewayFailure``,
/// ``RemoteError``, ``Denial``) through ``failure(_:)``; argument-parser's own errors and exit codes pass through.
func exiting<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as OperatorError { throw failure(e) } catch let e as GatewayFailure { throw failure(e) }
    catch let e as RemoteError { throw failure(e) } catch let e as Denial { throw failure(e) }
}

/// Prints `spawngate: <message>` to stderr.
func printError(_ message: String) { Console.error(message) }

/// Prints one line for people. Lines that quote requests, receipts, file names or the audit log go through here,
/// so controls, bidi overrides and invisible characters are shown escaped, as in the audit log's JSON.
func printLine(_ line: String) { print(TerminalText.escaped(line)) }

func writeAll(_ fd: Int32, _ string: String) { Console.write(fd, string) }

/// Runs an operator action: a refusal exits 1, a machine that cannot do it exits 2 (see ``failure(_:)``).
func operatorAction(_ body: () throws -> Void) throws { try exiting(body) }
