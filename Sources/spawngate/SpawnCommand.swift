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
            Exit 0: started (receipt verified); 3: held on the target for a person's approval (its id is printed; \
            with --wait, 0 once it runs); 1: denied by the target, or by the grant here, or allowed but the agent did not start \
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
    @Option(help: ArgumentHelp("Ask under this grant ('spawngate grant list'): refused here, unsigned, when the request is outside it.", valueName: "name")) var grant: String?
    @Option(help: ArgumentHelp("When the target holds the request for approval, wait this long for it to start (checking its signed agent list).", valueName: "seconds")) var wait: Double = 0

    func validate() throws {
        guard target.broker != nil else { throw ValidationError("spawn needs --broker TARGET: the peer whose gateway starts the agent") }
    }

    func run() throws {
        let home = home.resolved
        let exchanged: (RemoteGateway, RemoteGateway.Answer) = try remoteAction {
            let remote = try target.remote(home, target: target.broker!)
            var text = task
            if task == "-" { text = String(decoding: try Files.readInput("-", limit: Envelope.maxSize), as: UTF8.self) }
            let request = SpawnRequest(name: name, cli: cli, task: text, cwd: cwd, model: model,
                                       args: args.isEmpty ? nil : args, channels: channels.isEmpty ? nil : channels,
                                       team: team, from: "", to: "", iat: 0, exp: 0)
            var held: GrantStore.Held?
            if let grant {
                let store = GrantStore(home: home)
                let g = try store.load(grant)
                if let d = try store.admit(g, request: request, target: target.broker!, now: SystemClock().now()) {
                    printLine("refused here under grant \(grant): \(d.reason.rawValue): \(d.detail) (nothing was signed or sent)")
                    throw Exit.of(d.reason)
                }
                held = g
            }
            return (remote, try remote.spawn(request, grant: held))
        }
        let (remote, answer) = exchanged
        let r = answer.receipt
        if json { print(String(decoding: r.payload, as: UTF8.self)) }
        if r.pending {
            if !json { printLine("held by \(target.broker!) for approval as \(r.approval ?? "?"): \(r.detail)") }
            guard wait > 0, let rid = r.requestID else { throw Exit.of(r.reason) }
            let deadline = Date().addingTimeInterval(wait)
            while Date() < deadline {
                Thread.sleep(forTimeInterval: 1)
                let listed = try? remote.agents()
                if let entry = listed?.1.first(where: { if case .object(let o) = $0 { o["request_id"] == .string(rid) } else { false } }),
                   case .object(let o) = entry {
                    let pid = o["pid"].map { "\($0)" } ?? "?"
                    if !json { printLine("approved: \(name) runs on \(target.broker!), pid \(pid) (seen in its signed agent list)") }
                    return
                }
            }
            if !json { printLine("not started within \(Int(wait)) s; 'spawngate agents --broker \(target.broker!)' shows it once approved") }
            throw Exit.of(r.reason)
        }
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
            printLine("receipt verified with \(target.broker!)'s key (request \(r.requestID ?? "-"), rule \(r.rule ?? "-")\(r.grant.map { ", grant \($0)" } ?? ""))")
        }
    }

    private func sandbox(_ r: VerifiedReceipt) -> String {
        if case .object(let s)? = r.members["spawn"], case .string(let p)? = s["sandbox"] { return p }
        return "?"
    }
}
