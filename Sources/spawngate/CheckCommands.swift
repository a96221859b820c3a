import ArgumentParser
import SpawnGate
import SpawnGateCLI

/// Prints an outcome's decision JSON and exits with its status (0 allow, 1 deny, 2 cannot decide, 3 held for approval).
func finish(_ outcome: DecisionPipeline.Outcome) throws {
    print(outcome.decision.json)
    if outcome.exitCode == 2 { printError(outcome.decision.detail) }
    if outcome.exitCode != 0 { throw Exit.of(outcome.decision.reason) }
}

/// The pipeline of the home, or the `internal_error` decision (printed, exit 2) when it cannot be opened.
func openPipeline(_ home: HomeOption) throws -> DecisionPipeline {
    do {
        return try DecisionPipeline.open(home: home.resolved)
    } catch {
        try finish(.init(cannotOpen: error))
        throw Exit.cannotDecide
    }
}

extension DecisionPipeline.Outcome {
    init(cannotOpen error: GatewayFailure) {
        self.init(decision: Decision(reason: .internalError, detail: error.message, requestID: nil, broker: nil, fingerprint: nil), authorized: nil)
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decide a request: signature, audience, window, policy, replay, rate, concurrency; record it.",
        discussion: """
            Prints the decision JSON. Exit 0 allowed, 1 denied, 2 the gateway cannot decide (state store or \
            audit log unusable, broken policy). Every decision is appended to audit.log before it is printed. \
            An allowed request whose rule sets max_concurrent holds a lease until the broker reports its process \
            ('hook started'), reports its end ('hook exited'), or max_runtime (else one hour) passes.
            """)
    @OptionGroup var home: HomeOption
    @Argument(help: ArgumentHelp("The envelope file, or - for standard input.", valueName: "file")) var file: String?
    @Flag(help: "Decide against the current state without consuming the nonce, a rate token or a lease, and without writing the audit log.")
    var dryRun = false
    @Option(help: ArgumentHelp("With --dry-run: decide as if the request came from this place (an IP address, 'local' or 'workspace'), to try sources: bindings. Default: local.", valueName: "place"))
    var source: String?

    func validate() throws {
        if let source {
            guard dryRun else { throw ValidationError("--source needs --dry-run: a recorded decision's source is where it really came from (here: local).") }
            guard RequestSource(recorded: source) != nil else { throw ValidationError("--source must be an IP address, 'local' or 'workspace'; got '\(source)'.") }
        }
    }

    func run() throws {
        let pipeline = try openPipeline(home)
        let input = try exiting { try Files.readInput(file, limit: Envelope.maxSize) }
        let from = source.flatMap { RequestSource(recorded: $0) } ?? .local
        try finish(pipeline.decide(input, mode: dryRun ? .dryRun : .commit, source: from))
    }
}

struct Hook: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The contract a broker calls around a spawn it performs itself (see docs/hook.md).",
        subcommands: [PreSpawn.self, Started.self, Exited.self])

    struct PreSpawn: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "pre-spawn",
            abstract: "Decide the spawn request on standard input; print the decision JSON.",
            discussion: """
                Input: an envelope, or {"envelope": {…}, "spawn": {name, cli, task, cwd, model, args, channels, team}} \
                where the broker's spawn fields must equal the signed ones (any difference is denied as malformed). \
                Exit 0 spawn, anything else do not spawn. Start exactly the decision's spawn.argv in spawn.cwd.
                """)
        @OptionGroup var home: HomeOption

        func run() throws {
            let pipeline = try openPipeline(home)
            let input = try exiting { try Files.readInput("-", limit: HookInput.maxSize) }
            try finish(pipeline.decideHook(input))
        }
    }

    struct Started: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Bind an allowed request's concurrency lease to the process the broker started for it.",
            discussion: "The lease then ends when that process exits (checked by pid and start time, so a reused pid does not keep it).")
        @OptionGroup var home: HomeOption
        @Option(help: ArgumentHelp("The request_id from the decision.", valueName: "id")) var request: String
        @Option(help: ArgumentHelp("The pid of the agent process.", valueName: "pid")) var pid: Int32

        func run() throws {
            try operatorAction {
                guard let process = ProcessIdentity.of(pid: pid) else {
                    throw OperatorError("no process \(pid) is running; the lease keeps its expiry")
                }
                let state = try StateStore.open(home.resolved.stateDB)
                guard try state.bindLease(requestID: request, to: process) else {
                    throw OperatorError("no lease is held for request \(request) (its rule sets no max_concurrent, or it already ended)")
                }
            }
        }
    }

    struct Exited: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "End an allowed request's concurrency lease: its agent has exited.")
        @OptionGroup var home: HomeOption
        @Option(help: ArgumentHelp("The request_id from the decision.", valueName: "id")) var request: String

        func run() throws {
            try operatorAction {
                let state = try StateStore.open(home.resolved.stateDB)
                guard try state.releaseLease(requestID: request) else {
                    throw OperatorError("no lease is held for request \(request) (its rule sets no max_concurrent, or it already ended)")
                }
            }
        }
    }
}
