/// An allowed spawn as the policy shaped it: the exact argv, the canonical cwd, and the limits of the rule.
public struct PolicyMatch: Sendable {
    public let rule: Rule
    public let cli: CLIEntry
    /// argv[0] is the CLI's absolute path; the rest is exactly what was approved.
    public let argv: [String]
    public let cwd: String
    public let env: [String]
    /// Task text to write to standard input (CLIs with `task: stdin`).
    public let stdinTask: String?
    /// Task text to set in an environment variable (CLIs with `task: env:NAME`).
    public let envTask: (name: String, value: String)?
}

public enum PolicyOutcome: Sendable {
    case allow(PolicyMatch)
    case deny(Denial)
}

/// Evaluates a request against a policy. Pure: no I/O but the path canonicalization the resolver does.
///
/// Order: remote spawn enabled → the key's bound places → cwd resolvable → deny rules (any match denies; a deny rule that cannot be
/// evaluated denies too) → CLI defined → allow rules in file order (first full match) → arguments → task.
public struct PolicyEngine: Sendable {
    /// Reasons the policy stage can give (embedded tests may expect only these).
    public static let policyReasons: [ReasonCode] = ReasonCode.allCases.filter(\.givenByPolicy)

    public let policy: Policy
    public let resolver: PathResolver

    public init(policy: Policy, resolver: PathResolver = .filesystem) {
        self.policy = policy
        self.resolver = resolver
    }

    public func evaluate(_ request: PolicyRequest) -> PolicyOutcome {
        var trace = TraceRecorder(false)
        return evaluate(request, trace: &trace)
    }

    /// The policy stage alone, with its steps. ``DecisionPipeline`` records the same steps in a traced decision.
    public func explain(_ request: PolicyRequest) -> (PolicyOutcome, [TraceStep]) {
        var trace = TraceRecorder(true)
        let outcome = evaluate(request, trace: &trace)
        return (outcome, trace.steps ?? [])
    }

    func evaluate(_ q: PolicyRequest, trace: inout TraceRecorder) -> PolicyOutcome {
        func note(_ stage: TraceStage, _ subject: @autoclosure () -> String, _ verdict: String, _ why: @autoclosure () -> String) {
            trace.note(stage, subject(), verdict, why())
        }
        func ruleLabel(_ r: Rule) -> String { "\(r.effect.rawValue) rule '\(r.name)' (line \(r.line))" }

        guard policy.acceptRemoteSpawn else {
            note(.policy, "accept_remote_spawn", "deny", "is false or missing, so every request is refused")
            return .deny(Denial(.remoteSpawnDisabled, "this broker does not accept remote spawns (accept_remote_spawn is not true)"))
        }
        // A key bound to places (`from=` in keys/) is refused everywhere else, whatever the rules say.
        if let bound = q.keySources, let source = q.source {
            guard bound.admits(source) else {
                note(.source, "key of '\(q.broker)'", "deny", "bound to \(bound.listed); the request came from \(source)")
                return .deny(Denial(.sourceNotAllowed, "\(q.broker)'s key is accepted only from \(bound.listed), and this request came from \(source)"))
            }
            note(.source, "key of '\(q.broker)'", "ok", "bound to \(bound.listed); the request came from \(source)")
        }
        guard let requested = q.cwd else {
            note(.policy, "cwd", "deny", "the request names no working directory")
            return .deny(Denial(.cwdNotAllowed, "the request names no working directory; every spawn needs one the policy allows"))
        }
        let resolved = resolver.resolve(requested)
        if trace.on {
            switch resolved {
            case .success(let c): note(.policy, "cwd", "resolved", c == requested ? "\(c)" : "\(requested) is \(c)")
            case .failure(let why): note(.policy, "cwd", "unresolvable", why.description)
            }
        }

        for i in policy.denyIndex.candidates(q.broker) {
            let r = policy.rules[i]
            guard r.appliesTo(cli: q.cli) else { note(.rule, ruleLabel(r), "skipped", "does not name cli '\(q.cli)'"); continue }
            // A deny rule with sources applies only to requests from there. At a ticket's redemption the source is
            // not known, and a deny rule that cannot be evaluated denies.
            if let places = r.sources {
                guard let source = q.source else {
                    note(.rule, ruleLabel(r), "deny", "cannot be evaluated (the request's source is not known here), and a deny rule that cannot be evaluated denies")
                    return .deny(Denial(.deniedByRule, "deny rule '\(r.name)' could not be evaluated because the request's source is not known, so it denies", rule: r.name))
                }
                guard places.admits(source) else {
                    note(.rule, ruleLabel(r), "skipped", "the request came from \(source), not from \(places.listed)")
                    continue
                }
            }
            if let pats = r.cwd {
                guard case .success(let path) = resolved else {
                    note(.rule, ruleLabel(r), "deny", "cannot be evaluated (the cwd cannot be resolved), and a deny rule that cannot be evaluated denies")
                    return .deny(Denial(.deniedByRule, "deny rule '\(r.name)' could not be evaluated because the cwd cannot be resolved, so it denies", rule: r.name))
                }
                guard let hit = pats.first(where: { $0.matches(canonical: path) }) else {
                    note(.rule, ruleLabel(r), "skipped", "cwd \(path) matches none of \(pats.map(\.source))")
                    continue
                }
                note(.rule, ruleLabel(r), "deny", "broker, cli and cwd (\(hit.source)) match")
            } else {
                note(.rule, ruleLabel(r), "deny", "broker and cli match")
            }
            return .deny(Denial(.deniedByRule, "denied by rule '\(r.name)'", rule: r.name))
        }

        let cwd: String
        switch resolved {
        case .success(let c): cwd = c
        case .failure(let why): return .deny(Denial(.cwdNotAllowed, "working directory \(why); it must be an existing directory"))
        }
        guard let cli = policy.clis[q.cli] else {
            note(.rule, "cli '\(q.cli)'", "deny", "is not defined under clis:")
            return .deny(Denial(.cliNotAllowed, "no CLI named '\(q.cli)' is defined in this policy"))
        }

        // The most specific reason why no allow rule matched: naming the broker beats nothing,
        // naming the CLI too beats naming only the broker.
        var best = Denial(.noMatchingRule, "no rule allows broker '\(q.broker)' to spawn anything here")
        var bestRank = 0
        var matched: Rule?
        for i in policy.allowIndex.candidates(q.broker) {
            let r = policy.rules[i]
            guard r.appliesTo(cli: q.cli) else {
                note(.rule, ruleLabel(r), "no match", "does not allow cli '\(q.cli)'")
                if bestRank < 1 { best = Denial(.cliNotAllowed, "no rule allows \(q.broker) to start '\(q.cli)'", rule: r.name); bestRank = 1 }
                continue
            }
            let pats = r.cwd ?? []
            guard pats.contains(where: { $0.matches(canonical: cwd) }) else {
                note(.rule, ruleLabel(r), "no match", "cwd \(cwd) is not under \(pats.isEmpty ? "any directory (the list is empty)" : pats.map(\.source).joined(separator: ", "))")
                if bestRank < 2 { best = Denial(.cwdNotAllowed, "\(cwd) is not a working directory rule '\(r.name)' allows", rule: r.name); bestRank = 2 }
                continue
            }
            if let places = r.sources, let source = q.source, !places.admits(source) {
                note(.rule, ruleLabel(r), "no match", "the request came from \(source), and the rule takes requests only from \(places.listed)")
                if bestRank < 3 {
                    best = Denial(.sourceNotAllowed, "rule '\(r.name)' takes \(q.broker)'s requests only from \(places.listed), and this one came from \(source)", rule: r.name)
                    bestRank = 3
                }
                continue
            }
            note(.rule, ruleLabel(r), "match", r.sources == nil ? "broker, cli and cwd match" : "broker, cli, cwd and source match")
            matched = r
            break
        }
        guard let rule = matched else {
            if policy.allowIndex.candidates(q.broker).isEmpty { note(.rule, "allow rules", "none", "no allow rule names broker '\(q.broker)'") }
            return .deny(best)
        }

        var args = q.args
        if let model = q.model {
            guard let flag = cli.modelFlag else {
                note(.arguments, "model", "deny", "'\(cli.name)' has no model_flag, so a request may not choose a model")
                return .deny(Denial(.argsNotAllowed, "'\(cli.name)' takes no model in this policy (no model_flag)", rule: rule.name))
            }
            args = [flag, model] + args
        }
        for a in args {
            for d in cli.denyArgs where Self.denied(a, by: d) {
                note(.arguments, "deny_args of '\(cli.name)'", "deny", "argument '\(a)' matches '\(d.source)'")
                return .deny(Denial(.argsNotAllowed, "argument '\(a)' is forbidden for \(cli.name) by deny_args '\(d.source)'", rule: rule.name))
            }
        }
        let matchArgs = cli.splitEquals ? args.flatMap(Self.splitEquals) : args
        guard let shape = cli.args.first(where: { s in s.count == matchArgs.count && zip(s, matchArgs).allSatisfy { $0.matches($1) } }) else {
            note(.arguments, "args of '\(cli.name)'", "deny", "\(matchArgs) fit none of the allowed shapes \(cli.args.map { $0.map(\.source) })")
            return .deny(Denial(.argsNotAllowed, "arguments \(matchArgs) fit none of the argument shapes allowed for \(cli.name) (line \(cli.line))", rule: rule.name))
        }
        note(.arguments, "args of '\(cli.name)'", "match", "\(matchArgs) fit \(shape.map(\.source))")

        var argv = [cli.path] + args
        var stdinTask: String?, envTask: (String, String)?
        // A relay worker's task is typed into its terminal by the broker, like any Agent Relay worker's: the CLI's
        // `task:` placement does not apply, so it is given the task once, not twice.
        if let task = q.task, rule.spawner == .local {
            switch cli.task {
            case .afterDoubleDash: argv += ["--", task]
            case .stdin: stdinTask = task
            case .environment(let name): envTask = (name, task)
            case .none:
                note(.arguments, "task", "deny", "'\(cli.name)' takes no task")
                return .deny(Denial(.argsNotAllowed, "'\(cli.name)' takes no task text in this policy (task: none)", rule: rule.name))
            }
        }
        note(.policy, "policy", "allow", "by rule '\(rule.name)'")
        return .allow(PolicyMatch(rule: rule, cli: cli, argv: argv, cwd: cwd, env: cli.env, stdinTask: stdinTask, envTask: envTask))
    }

    /// `--flag=v` → `--flag`, `v`; anything else unchanged.
    static func splitEquals(_ a: String) -> [String] {
        guard a.hasPrefix("--"), let eq = a.firstIndex(of: "=") else { return [a] }
        return [String(a[..<eq]), String(a[a.index(after: eq)...])]
    }

    /// A deny pattern also catches the option hidden in `--flag=value`, a short option bundled into `-abc`, and an
    /// abbreviation of a long option: argparse-style CLIs take any unambiguous prefix (`--yes-al` for
    /// `--yes-always`), so every `--x…` that is a prefix of a denied long option, with or without `=value`, is
    /// denied, ambiguous or not (a CLI that would refuse it as ambiguous loses nothing).
    static func denied(_ arg: String, by pattern: ArgPattern) -> Bool {
        if pattern.matches(arg) { return true }
        if arg.hasPrefix("--"), let eq = arg.firstIndex(of: "="), pattern.matches(String(arg[..<eq])) { return true }
        if arg.hasPrefix("--") {
            let option = String(arg.prefix { $0 != "=" })
            if option.unicodeScalars.count >= 3, pattern.deniesLongOption(abbreviatedAs: option) { return true }
        }
        if let lit = pattern.literal, lit.count == 2, lit.hasPrefix("-"), lit != "--",
           arg.hasPrefix("-"), !arg.hasPrefix("--"), arg.count > 2 {
            // Up to the first non-letter the bundle is flags; after it, a value (`-ofile`) that we leave alone.
            let flags = arg.dropFirst().prefix(while: { $0.isLetter })
            return flags.contains(lit.last!)
        }
        return false
    }
}
