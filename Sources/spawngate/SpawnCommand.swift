import ArgumentParser
import Foundation
import SpawnGate
import SpawnGateCLI

/// `--broker TARGET`: a peer from peers.yaml, and this broker's identity to sign with.
struct BrokerOption: ParsableArguments {
    @Option(help: ArgumentHelp("The target broker, as named in peers.yaml ('spawngate peer list').", valueName: "target"))
    var broker: String?
    /// Longer than a target may take to answer a relay worker's start (up to 20 s for the broker to run the
    /// launcher, then the rule's startup check), so a slow start is answered, not abandoned.
    @Option(help: ArgumentHelp("Seconds to wait for the target's gateway.", valueName: "seconds"))
    var timeout: Double = 30

    func validate() throws {
        guard timeout > 0, timeout <= 300 else { throw ValidationError("--timeout must be between 0 and 300 seconds") }
    }

    /// The remote gateway for `target`, or an operator error naming the peers there are.
    func remote(_ home: Home, target: String) throws -> RemoteGateway {
        try RemoteGateway.to(target, home: home, timeout: timeout)
    }
}

/// Anything that is not a verified answer exits 2 (a signed denial the target could not bind to the request, 1),
/// through the same mapping as every command.
func remoteAction<T>(_ body: () throws -> T) throws -> T { try exiting(body) }

struct Spawn: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask another broker's gateway to start an agent, and print its verified receipt.",
        discussion: """
            The request is signed with this broker's key, sealed to the target's key from peers.yaml (the task \
            never crosses the network in clear), and sent to the target's 'spawngate serve'. The answer counts \
            only if it is a receipt signed by that same key for this very request.
            Exit 0: started (receipt verified); 1: denied by the target, or allowed but the agent did not start \
            (start_failed: its exit status and last output are printed; receipt verified); \
            2: no verified answer (peer unknown, unreachable, or a receipt that fails verification), or the target \
            could not decide (its receipt says internal_error or audit_unavailable).
            Example: spawngate spawn coder claude "Implement the plan" --broker vps-broker --cwd /srv/app
            """)
    @OptionGroup var home: HomeOption
    @Argument(help: ArgumentHelp("The agent's name.", valueName: "name")) var name: String
    @Argument(help: ArgumentHelp("The CLI to start, as the target's policy names it (e.g. claude).", valueName: "cli")) var cli: String
    @Argument(help: ArgumentHelp("The task; - reads it from standard input.", valueName: "task")) var task: String?
    @OptionGroup var target: BrokerOption
    @Option(help: ArgumentHelp("The working directory on the target.", valueName: "dir")) var cwd: String?
    @Option(help: ArgumentHelp("The model.", valueName: "model")) var model: String?
    @Option(name: .customLong("arg"), parsing: .unconditionalSingleValue, help: ArgumentHelp("One argument for the CLI; repeat for more.", valueName: "arg")) var args: [String] = []
    @Option(name: .customLong("channel"), help: ArgumentHelp("An Agent Relay channel; repeat for more.", valueName: "channel")) var channels: [String] = []
    @Option(help: ArgumentHelp("An Agent Relay team.", valueName: "team")) var team: String?
    @Flag(help: "Print the verified receipt's payload as JSON.") var json = false

    func validate() throws {
        guard target.broker != nil else { throw ValidationError("spawn needs --broker TARGET: the peer whose gateway starts the agent") }
    }

    func run() throws {
        let home = home.resolved
        let answer = try remoteAction {
            let remote = try target.remote(home, target: target.broker!)
            var text = task
            if task == "-" { text = String(decoding: try Files.readInput("-", limit: Envelope.maxSize), as: UTF8.self) }
            let request = SpawnRequest(name: name, cli: cli, task: text, cwd: cwd, model: model,
                                       args: args.isEmpty ? nil : args, channels: channels.isEmpty ? nil : channels,
                                       team: team, from: "", to: "", iat: 0, exp: 0)
            return try remote.spawn(request)
        }
        let r = answer.receipt
        if json { print(String(decoding: r.payload, as: UTF8.self)) }
        guard r.allowed else {
            if !json {
                if r.reason == .startFailed {
                    printLine("not started on \(target.broker!): \(r.reason.rawValue): \(r.detail)")
                    if let n = r.members["exit_status"]?.safeInteger { printLine("exit status \(n)") }
                    if case .string(let out)? = r.members["output"], !out.isEmpty { printLine("it last wrote:"); for l in out.split(separator: "\n") { printLine("  " + String(l)) } }
                } else {
                    printLine("denied by \(target.broker!): \(r.reason.rawValue): \(r.detail)")
                }
            }
            throw Exit.of(r.reason)
        }
        if !json {
            if let s = r.started {
                let how = r.members["spawner"] == .string("agent-relay") ? " as an Agent Relay worker" : ""
                printLine("started \(name) on \(target.broker!)\(how): pid \(s.pid), sandbox \(sandbox(r)) (\(s.layers.joined(separator: ", ")))")
            }
            printLine("receipt verified with \(target.broker!)'s key (request \(r.requestID ?? "-"), rule \(r.rule ?? "-"))")
        }
    }

    private func sandbox(_ r: VerifiedReceipt) -> String {
        if case .object(let s)? = r.members["spawn"], case .string(let p)? = s["sandbox"] { return p }
        return "?"
    }
}
