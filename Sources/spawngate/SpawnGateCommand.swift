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
            answer, or this machine cannot act), 3 pending (held for a person's approval), 64 usage error.
            """,
        version: SpawnGateVersion.current,
        subcommands: [Init.self, Key.self, Sign.self, Verify.self, Check.self, Exec.self, Serve.self, Spawn.self, Agents.self, Release.self, Doctor.self, PeerCommand.self, Hook.self, Audit.self, PolicyCommand.self, Logs.self, Launch.self, HandoffCommand.self, MCPCommand.self, DashboardCommand.self, RelayCommand.self, GrantCommand.self, Approvals.self, Approve.self, Deny.self])

    static func main() async {
        ProcessHardening.apply()
        if let leaf = FastPath.leaf(Array(CommandLine.arguments.dropFirst())) {
            do { try leaf() } catch { exitNow(Exit.forRun(error)) }
            return
        }
        await mainWithExitVocabulary(nil)
    }
}

/// The commands a machine starts as fresh processes many times a second (the hook path's `check` and `hook`, the
/// relay worker's `launch`, `spawn`, `exec`, `verify`) are parsed as their own command, not through the whole
/// tree: building the tree asks the Swift runtime about every command type's conformances, and in a binary this
/// size each first ask scans every conformance record; that was most of a fresh process's 10 ms (perf, issue 27).
/// Only a command line its leaf parses and validates takes this path; anything else (help, a typo, a bad value)
/// goes the whole way, so every message and exit status is the tree's own. A debug build checks each entry against
/// the tree whenever it is taken, so every test that runs one of these commands checks the table.
enum FastPath {
    typealias Leaf = (path: [String], type: any ParsableCommand.Type, run: ([String]) throws -> (() throws -> Void))
    static var leaves: [Leaf] {
        [leaf(["check"], Check.self), leaf(["launch"], Launch.self), leaf(["spawn"], Spawn.self), leaf(["exec"], Exec.self),
         leaf(["verify"], Verify.self), leaf(["hook", "pre-spawn"], Hook.PreSpawn.self), leaf(["hook", "started"], Hook.Started.self),
         leaf(["hook", "exited"], Hook.Exited.self)]
    }
    /// An entry: the words that name `C`, and its parse (which throws for anything it does not take) and run.
    static func leaf<C: ParsableCommand>(_ path: [String], _ type: C.Type) -> Leaf {
        (path, type, { arguments in var c = try C.parse(arguments); return { try c.run() } })
    }
    /// Words that ask argument-parser itself for something (help, version, completion): never taken here.
    static let builtIn: Set<String> = ["-h", "--help", "-help", "help", "--version", "--experimental-dump-help", "--generate-completion-script"]

    /// The parsed command's run, when `arguments` name a leaf here and it parses them; nil to go the whole way.
    static func leaf(_ arguments: [String]) -> (() throws -> Void)? {
        guard !arguments.contains(where: { builtIn.contains($0) || $0.hasPrefix("--generate-completion") }) else { return nil }
        for entry in leaves where arguments.starts(with: entry.path) {
            guard let run = try? entry.run(Array(arguments.dropFirst(entry.path.count))) else { return nil }
            #if DEBUG
            // Every test that runs one of these commands checks the table against the tree (debug builds only).
            let tree = try? SpawnGateCommand.parseAsRoot(arguments)
            precondition(tree.map { ObjectIdentifier(type(of: $0)) == ObjectIdentifier(entry.type) } == true,
                         "FastPath: '\(entry.path.joined(separator: " "))' is not \(entry.type) in the command tree")
            #endif
            return run
        }
        return nil
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
