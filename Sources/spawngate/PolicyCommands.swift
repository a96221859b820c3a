import ArgumentParser
import Foundation
import SpawnGate
import SpawnGateCLI

struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Validate a policy, run its embedded tests, and explain how a request is decided.",
        subcommands: [Check.self, Test.self, Explain.self])

    /// Loads a policy, or prints each diagnostic (one line per problem) and exits with `status`.
    static func load(_ path: String, orExit status: ExitCode = Exit.denied) throws -> Policy {
        switch PolicyLoader.load(path) {
        case .success(let policy): return policy
        case .failure(let e):
            for d in e.diagnostics { printLine(d.description) }
            throw status
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a policy: syntax, schema, meaning, embedded tests, and the CLIs' binaries on this machine.",
            discussion: "Exit 0 when the policy is valid and every embedded test passes; 1 with one line per problem otherwise. Binary problems are warnings here (the file may be written for another machine) and denials at decision time.")
        @OptionGroup var target: PolicyFileArgument

        func run() throws {
            let path = target.path
            let policy = try PolicyCommand.load(path)
            for w in PolicyLinter.warnings(policy) { printLine(w.description) }
            let results = PolicyTestRunner.run(policy)
            let failed = results.filter { !$0.passed }
            for f in failed { printLine(f.line(file: path)) }
            guard failed.isEmpty else { throw Exit.denied }
            print("\(path): ok: \(policy.clis.count) CLI(s), \(policy.rules.count) rule(s), \(results.count) test(s) passed\(policy.acceptRemoteSpawn ? "" : "; remote spawn is disabled (accept_remote_spawn is not true)")")
        }
    }

    struct Test: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the policy's embedded tests, one line per assertion.",
            discussion: "Tests resolve paths as text (no file system), so they give the same answer on every machine. Exit 0 when all pass.")
        @OptionGroup var target: PolicyFileArgument

        func run() throws {
            let path = target.path
            let policy = try PolicyCommand.load(path)
            let results = PolicyTestRunner.run(policy)
            for r in results { printLine(r.line(file: path)) }
            let failed = results.filter { !$0.passed }.count
            print("\(results.count - failed) passed, \(failed) failed")
            if failed > 0 { throw Exit.denied }
        }
    }

    struct Explain: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show how a request is decided: every check and rule in order, with why it matched or not.",
            discussion: """
                Give a signed envelope (FILE, or - for standard input) to explain the whole decision, signature and \
                time window included; or describe a request with --from and --cli (plus --cwd, --arg, --model, --task) \
                to explain the policy alone. Paths are resolved on this machine unless --lexical is given.
                """)
        @OptionGroup var home: HomeOption
        @Argument(help: ArgumentHelp("A signed request envelope, or - for standard input.", valueName: "file")) var envelope: String?
        @Option(help: ArgumentHelp("The policy file (default: the home's policy/policy.yaml).", valueName: "file")) var policy: String?
        @Option(help: ArgumentHelp("The requesting broker.", valueName: "broker")) var from: String?
        @Option(help: ArgumentHelp("The CLI requested.", valueName: "cli")) var cli: String?
        @Option(help: ArgumentHelp("The working directory requested.", valueName: "dir")) var cwd: String?
        @Option(name: .customLong("arg"), parsing: .unconditionalSingleValue, help: ArgumentHelp("One argument; repeat for more.", valueName: "arg")) var args: [String] = []
        @Option(help: ArgumentHelp("The model requested.", valueName: "model")) var model: String?
        @Option(help: ArgumentHelp("The task text.", valueName: "text")) var task: String?
        @Flag(help: "Resolve paths as text, as embedded tests do.") var lexical = false
        @Option(help: ArgumentHelp("Explain as if the request came from this place (an IP address, 'local' or 'workspace'). Default: local.", valueName: "place"))
        var source: String?

        func validate() throws {
            if let source, RequestSource(recorded: source) == nil {
                throw ValidationError("--source must be an IP address, 'local' or 'workspace'; got '\(source)'.")
            }
            if envelope == nil {
                guard from != nil, cli != nil else { throw ValidationError("Give an envelope, or describe a request with at least --from and --cli.") }
            } else if from != nil || cli != nil || cwd != nil || !args.isEmpty || model != nil || task != nil {
                throw ValidationError("Give either an envelope or request flags, not both.")
            }
        }

        func run() throws {
            let home = home.resolved
            let place = source.flatMap { RequestSource(recorded: $0) } ?? .local
            guard let envelope else { return try explainFlags(home, source: place) }
            // A traced dry run of the one decision pipeline: what `check --dry-run` decides, stage by stage.
            let pipeline: DecisionPipeline
            do { pipeline = try DecisionPipeline.open(home: home, policyFile: policy, resolver: lexical ? .lexical : .filesystem) } catch {
                printLine("decision: deny \(ReasonCode.internalError.rawValue): \(error.message)")
                throw Exit.of(.internalError)
            }
            let bytes = try exiting { try Files.readInput(envelope, limit: Envelope.maxSize) }
            let outcome = pipeline.decide(bytes, mode: .dryRun, trace: true, source: place)
            for s in outcome.trace?.steps ?? [] { printLine(s.description) }
            let d = outcome.decision
            if d.pending, let spawn = d.spawn {
                printLine("decision: pending by rule \(d.rule ?? "-"): held for approval before it starts: argv \(spawn.argv), cwd \(spawn.cwd), env \(spawn.env), sandbox \(spawn.sandbox)")
            } else if let spawn = d.spawn {
                printLine("decision: allow by rule \(d.rule ?? "-"): argv \(spawn.argv), cwd \(spawn.cwd), env \(spawn.env), sandbox \(spawn.sandbox)")
            } else {
                printLine("decision: deny \(d.reason.rawValue)\(d.rule.map { " (rule \($0))" } ?? ""): \(d.detail)")
            }
            if outcome.exitCode != 0 { throw Exit.of(d.reason) }
        }

        /// A request described by flags has no signature, window or nonce: the stages that need none are
        /// explained, and the rest is said to be unchecked.
        private func explainFlags(_ home: Home, source: RequestSource) throws {
            let loaded = try PolicyCommand.load(policy ?? home.policyFile, orExit: Exit.cannotDecide)
            let request = PolicyRequest(broker: from!, cli: cli!, cwd: cwd, args: args, model: model, task: task, source: source)
            let engine = PolicyEngine(policy: loaded, resolver: lexical ? .lexical : .filesystem)
            let (result, trace) = DecisionPipeline.explain(request, engine: engine, machine: !lexical)
            for s in trace.steps { printLine(s.description) }
            switch result {
            case .failure(let d):
                printLine("decision: deny \(d.reason.rawValue)\(d.rule.map { " (rule \($0))" } ?? ""): \(d.detail)")
                throw Exit.of(d.reason)
            case .success(let m) where m.rule.approval != nil:
                printLine("signature, window, replay, rate, concurrency: not checked: a request given by flags has none; explain a signed envelope to see the whole decision")
                printLine("decision: pending by rule \(m.rule.name): held for approval before it starts: argv \(m.argv), cwd \(m.cwd), env \(m.env), sandbox \(m.rule.sandbox.rawValue)")
                throw Exit.of(.approvalPending)
            case .success(let m):
                printLine("signature, window, replay, rate, concurrency: not checked: a request given by flags has none; explain a signed envelope to see the whole decision")
                printLine("decision: allow by rule \(m.rule.name): argv \(m.argv), cwd \(m.cwd), env \(m.env), sandbox \(m.rule.sandbox.rawValue)")
            }
        }
    }
}

/// `[FILE]` for the policy commands: the file given, else the home's policy/policy.yaml.
struct PolicyFileArgument: ParsableArguments {
    @OptionGroup var home: HomeOption
    @Argument(help: ArgumentHelp("The policy file (default: the home's policy/policy.yaml).", valueName: "file")) var file: String?

    var path: String { file ?? home.resolved.policyFile }
}
