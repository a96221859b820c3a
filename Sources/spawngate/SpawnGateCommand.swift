#if canImport(Glibc)
import Glibc
#endif
import Foundation
import ArgumentParser
import SpawnGate
import SpawnGateCLI

@main
struct SpawnGateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spawngate",
        abstract: "Signed, policy-checked, audited remote spawning of AI coding agents.",
        discussion: """
            A requesting broker signs a spawn request with its Ed25519 identity key; the target's gateway \
            verifies it against enrolled keys, checks the policy, and only then starts the agent.
            Exit codes of every command: 0 allowed or done, 1 denied or refused, 2 cannot decide (no verified \
            answer, or this machine cannot act), 64 usage error.
            """,
        version: SpawnGateVersion.current,
        subcommands: [Init.self, Key.self, Sign.self, Verify.self, Check.self, Exec.self, Serve.self, Spawn.self, Agents.self, Release.self, Doctor.self, PeerCommand.self, Hook.self, Audit.self, PolicyCommand.self, Logs.self, Launch.self, HandoffCommand.self, MCPCommand.self, DashboardCommand.self, RelayCommand.self, GrantCommand.self, Approvals.self, Approve.self, Deny.self])

    static func main() async {
        ProcessHardening.apply()
        await mainWithExitVocabulary(nil)
    }
}

/// `--home`, shared by every command.
struct HomeOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The broker's home directory (default: $SPAWNGATE_HOME, else ~/.spawngate).", valueName: "dir"))
    var home: String?

    var resolved: Home { Home.resolve(home) }
}

/// Prints `spawngate: <message>` to stderr.
func printError(_ message: String) { Console.error(message) }

/// Prints one line for people. Lines that quote requests, receipts, file names or the audit log go through here,
/// so controls, bidi overrides and invisible characters are shown escaped, as in the audit log's JSON.
func printLine(_ line: String) { print(TerminalText.escaped(line)) }

func writeAll(_ fd: Int32, _ string: String) { Console.write(fd, string) }

/// Runs an operator action: a refusal exits 1, a machine that cannot do it exits 2 (see ``failure(_:doing:)``).
func operatorAction(_ body: () throws -> Void) throws { try exiting(body) }
