import Foundation
import Testing
@testable import SpawnGate

/// Attacks T12–T16 against the engine, with real directories and symlinks where paths matter.
@Suite("Policy decisions")
struct PolicyEngineTests {
    static func engine(_ text: String, resolver: PathResolver = .lexical) throws -> PolicyEngine {
        PolicyEngine(policy: try parsePolicy(text).get(), resolver: resolver)
    }

    static func reason(_ e: PolicyEngine, _ q: PolicyRequest) -> ReasonCode {
        switch e.evaluate(q) { case .allow: .allowed; case .deny(let d): d.reason }
    }

    static let claude = """
        version: 1
        accept_remote_spawn: true
        clis:
          claude:
            path: /usr/local/bin/claude
            args:
              - []
              - ["--model", "sonnet|opus"]
              - ["--resume", "*"]
              - ["a b"]
              - ["--flag=v"]
            deny_args: ["--dangerously-skip-permissions", "-d"]
            model_flag: --model
        rules:
          - name: laptop
            brokers: [mac-laptop]
            clis: [claude]
            cwd: [/w/app/**, /w/exact]

        """

    func r(_ args: [String] = [], cwd: String = "/w/app", broker: String = "mac-laptop", model: String? = nil, task: String? = nil) throws -> ReasonCode {
        Self.reason(try Self.engine(Self.claude), PolicyRequest(broker: broker, cli: "claude", cwd: cwd, args: args, model: model, task: task))
    }

    @Test func allowedShapes() throws {
        #expect(try r() == .allowed)
        #expect(try r(["--model", "opus"]) == .allowed)
        #expect(try r(model: "sonnet") == .allowed)
        #expect(try r(["--resume", "abc"]) == .allowed)
    }

    /// T12: smuggling after an allowed prefix, joined vs split arguments, `=` forms, bundled short flags.
    @Test func argumentSmuggling() throws {
        #expect(try r(["--resume", "x", "--dangerously-skip-permissions"]) == .argsNotAllowed)
        #expect(try r(["--resume", "x", "--model"]) == .argsNotAllowed)
        #expect(try r(["--model", "opus", "extra"]) == .argsNotAllowed)
        #expect(try r(["--model", "opus|sonnet"]) == .argsNotAllowed)   // the pattern's '|' is not a literal
        #expect(try r(["--model", "opuss"]) == .argsNotAllowed)
        #expect(try r(["--resume"]) == .argsNotAllowed)
        #expect(try r(["a b"]) == .allowed)
        #expect(try r(["a", "b"]) == .argsNotAllowed)
        #expect(try r(["--flag=v"]) == .allowed)
        #expect(try r(["--flag", "v"]) == .argsNotAllowed)
        #expect(try r(["--dangerously-skip-permissions=1"]) == .argsNotAllowed)
        #expect(try r(["--resume", "-xd"]) == .argsNotAllowed)           // bundled -d
        #expect(try r(["--resume", "-d"]) == .argsNotAllowed)
        #expect(try r(model: "haiku") == .argsNotAllowed)
        #expect(try r(model: "opus --dangerously-skip-permissions") == .argsNotAllowed)
    }

    /// T43: argparse-style CLIs accept any unambiguous prefix of a long option (`--yes-al` for `--yes-always`),
    /// so deny_args denies every `--x…` that is a prefix of a denied long option, with or without `=value`.
    @Test func abbreviationsOfDeniedLongOptionsAreDenied() throws {
        for abbreviation in ["--d", "--dan", "--dangerously-skip-perm", "--dangerously-skip-permission", "--dang=1", "--d=", "--dangerously-skip-permissions"] {
            #expect(try r(["--resume", abbreviation]) == .argsNotAllowed, "\(abbreviation)")
        }
        // Not prefixes of a denied option: still admitted by the ["--resume", "*"] shape.
        for other in ["--", "--x", "--dx", "--resume-x", "--dangerously-skip-permissionsx", "dangerously"] {
            #expect(try r(["--resume", other]) == .allowed, "\(other)")
        }
        // Glob and alternation patterns: a prefix of anything they match.
        let text = Self.claude.replacingOccurrences(of: #"deny_args: ["--dangerously-skip-permissions", "-d"]"#,
                                                    with: #"deny_args: ["--yes-always|--auto-commits", "--no-verify*"]"#)
        let e = try Self.engine(text)
        for (arg, want) in [("--yes-al", ReasonCode.argsNotAllowed), ("--yes", .argsNotAllowed), ("--auto-c=1", .argsNotAllowed),
                            ("--no-ver", .argsNotAllowed), ("--no-verify-ssl", .argsNotAllowed), ("--yes-alwaysx", .allowed), ("--au-c", .allowed)] {
            #expect(Self.reason(e, PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/w/app", args: ["--resume", arg])) == want, "\(arg)")
        }
    }

    @Test func splitEqualsWhenThePolicySaysSo() throws {
        let text = Self.claude.replacingOccurrences(of: "    model_flag: --model", with: "    model_flag: --model\n    split_equals: true")
        let e = try Self.engine(text)
        #expect(Self.reason(e, PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/w/app", args: ["--model=opus"])) == .allowed)
    }

    /// The task is never an option: it goes after `--`.
    @Test func taskGoesAfterDoubleDash() throws {
        let e = try Self.engine(Self.claude)
        guard case .allow(let m) = e.evaluate(PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/w/app", task: "--dangerously-skip-permissions")) else {
            Issue.record("denied"); return
        }
        #expect(m.argv == ["/usr/local/bin/claude", "--", "--dangerously-skip-permissions"])
        let none = try Self.engine(Self.claude.replacingOccurrences(of: "    model_flag: --model", with: "    model_flag: --model\n    task: none"))
        #expect(Self.reason(none, PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/w/app", task: "x")) == .argsNotAllowed)
        let stdin = try Self.engine(Self.claude.replacingOccurrences(of: "    model_flag: --model", with: "    model_flag: --model\n    task: stdin"))
        guard case .allow(let m2) = stdin.evaluate(PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/w/app", task: "t")) else { Issue.record("denied"); return }
        #expect(m2.argv == ["/usr/local/bin/claude"] && m2.stdinTask == "t")
    }

    /// T13: the request names a CLI, never a path; a bare name or a path is not a defined CLI.
    @Test func pathHijack() throws {
        let e = try Self.engine(Self.claude)
        for cli in ["/tmp/claude", "./claude", "claude ", "Claude", "bash"] {
            #expect(Self.reason(e, PolicyRequest(broker: "mac-laptop", cli: cli, cwd: "/w/app")) == .cliNotAllowed, "\(cli)")
        }
    }

    /// T8: paths and arguments compare as Unicode scalars, not by canonical equivalence: "café" written
    /// precomposed (NFC) and decomposed (NFD) are different strings to the policy, as they are to the file system.
    @Test func unicodeFormsAreNotConflated() throws {
        let nfc = "caf\u{E9}", nfd = "cafe\u{301}"
        #expect(nfc == nfd, "Swift's String == uses canonical equivalence; the engine must not")
        let e = try Self.engine("""
            version: 1
            accept_remote_spawn: true
            clis:
              claude: {path: /usr/local/bin/claude, args: [[], ["--resume", "\(nfc)"]]}
            rules:
              - {name: laptop, brokers: [mac-laptop], clis: [claude], cwd: ["/w/\(nfc)/**"]}
            """)
        #expect(Self.reason(e, PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/w/\(nfc)/x")) == .allowed)
        // Broker names never meet the question: only ASCII names can be enrolled, or written in a policy (T45).
        #expect(throws: OperatorError.self) { try Home.validateBrokerName(nfc) }
        #expect(throws: OperatorError.self) { try Home.validateBrokerName(nfd) }
        #expect(policyErrors(PolicyLoaderTests.base.replacingOccurrences(of: "[mac-laptop]", with: "[\"\(nfc)\"]")).count == 1)
        #expect(Self.reason(e, PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/w/\(nfd)/x")) == .cwdNotAllowed)
        #expect(Self.reason(e, PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/w/\(nfc)/x", args: ["--resume", nfd])) != .allowed)
        #expect(Self.reason(e, PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/w/\(nfc)/x", args: ["--resume", nfc])) == .allowed)
    }

    /// T14 (lexical): `..` escapes, the `-evil` prefix trick, exact vs recursive.
    @Test func cwdLexical() throws {
        #expect(try r(cwd: "/w/app/../../etc") == .cwdNotAllowed)
        #expect(try r(cwd: "/w/app-evil") == .cwdNotAllowed)
        #expect(try r(cwd: "/w/ap") == .cwdNotAllowed)
        #expect(try r(cwd: "/w/app/deep/er") == .allowed)
        #expect(try r(cwd: "/w/exact") == .allowed)
        #expect(try r(cwd: "/w/exact/sub") == .cwdNotAllowed)
        #expect(try r(cwd: "w/app") == .cwdNotAllowed)
        #expect(try r(cwd: "//w///app/./x") == .allowed)
    }

    /// T14 on a real file system: symlinks out of the root, `..` through a symlink, a missing directory.
    @Test func cwdOnTheFileSystem() throws {
        let dir = TestSupport.tempDir("cwd")
        try FileManager.default.createDirectory(atPath: dir + "/w/app/src", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/w/app-evil", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/outside", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: dir + "/w/app/link", withDestinationPath: dir + "/outside")
        try FileManager.default.createSymbolicLink(atPath: dir + "/w/app/rel", withDestinationPath: "../../outside")
        let real = try #require(try? PathResolver.filesystem.resolve(dir).get())
        let e = try Self.engine(Self.claude.replacingOccurrences(of: "[/w/app/**, /w/exact]", with: "[\(real)/w/app/**]"), resolver: .filesystem)
        func reason(_ cwd: String) -> ReasonCode { Self.reason(e, PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: cwd)) }
        #expect(reason(dir + "/w/app/src") == .allowed)
        #expect(reason(dir + "/w/app/link") == .cwdNotAllowed)
        #expect(reason(dir + "/w/app/rel") == .cwdNotAllowed)
        // ".." applies after the symlink, as the kernel does: textually inside the root, really outside it.
        #expect(reason(dir + "/w/app/link/..") == .cwdNotAllowed)
        #expect(reason(dir + "/w/app/link/../w/app") == .allowed)
        #expect(reason(dir + "/w/app-evil") == .cwdNotAllowed)
        #expect(reason(dir + "/w/app/missing") == .cwdNotAllowed)
        #expect(reason(dir + "/w/app/src/../../app/src") == .allowed)
    }

    /// T16: empty lists match nothing.
    @Test func emptyListsMatchNothing() throws {
        let noBrokers = try Self.engine(Self.claude.replacingOccurrences(of: "brokers: [mac-laptop]", with: "brokers: []"))
        #expect(Self.reason(noBrokers, PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/w/app")) == .noMatchingRule)
        let noCwd = try Self.engine(Self.claude.replacingOccurrences(of: "[/w/app/**, /w/exact]", with: "[]"))
        #expect(Self.reason(noCwd, PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/w/app")) == .cwdNotAllowed)
        let noClis = try Self.engine(Self.claude.replacingOccurrences(of: "clis: [claude]", with: "clis: []"))
        #expect(Self.reason(noClis, PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/w/app")) == .cliNotAllowed)
        let noShapes = try Self.engine(Self.claude.replacingOccurrences(of: "    args:\n      - []\n      - [\"--model\", \"sonnet|opus\"]\n      - [\"--resume\", \"*\"]\n      - [\"a b\"]\n      - [\"--flag=v\"]", with: "    args: []"))
        #expect(Self.reason(noShapes, PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/w/app")) == .argsNotAllowed)
    }

    /// F14: deny rules win over allow rules, wherever they are in the file.
    @Test func denyBeatsAllow() throws {
        let text = Self.claude + "  - name: no-secrets\n    effect: deny\n    brokers: [\"*\"]\n    cwd: [/w/app/secrets/**]\n"
        let e = try Self.engine(text)
        guard case .deny(let d) = e.evaluate(PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/w/app/secrets/x")) else { Issue.record("allowed"); return }
        #expect(d.reason == .deniedByRule && d.rule == "no-secrets")
        #expect(Self.reason(e, PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/w/app/src")) == .allowed)
        let everything = try Self.engine(Self.claude + "  - name: lockdown\n    effect: deny\n    brokers: [mac-laptop]\n")
        #expect(Self.reason(everything, PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/w/app")) == .deniedByRule)
    }

    /// T16: a deny rule that cannot be evaluated denies (Cedar would skip it; we fail closed).
    @Test func denyRuleThatCannotBeEvaluatedDenies() throws {
        let text = Self.claude + "  - name: no-etc\n    effect: deny\n    brokers: [\"*\"]\n    cwd: [/etc/**]\n"
        let e = try Self.engine(text, resolver: .filesystem)
        guard case .deny(let d) = e.evaluate(PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/nonexistent/\(UUID())")) else { Issue.record("allowed"); return }
        #expect(d.reason == .deniedByRule && d.rule == "no-etc")
    }

    @Test func remoteSpawnDisabledDeniesEverything() throws {
        for flag in ["accept_remote_spawn: false", ""] {
            let e = try Self.engine(Self.claude.replacingOccurrences(of: "accept_remote_spawn: true", with: flag))
            #expect(Self.reason(e, PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/w/app")) == .remoteSpawnDisabled)
        }
    }

    @Test func mostSpecificReasonWhenNoRuleMatches() throws {
        let e = try Self.engine(Self.claude)
        #expect(Self.reason(e, PolicyRequest(broker: "mini-pc", cli: "claude", cwd: "/w/app")) == .noMatchingRule)
        #expect(Self.reason(e, PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/elsewhere")) == .cwdNotAllowed)
        #expect(Self.reason(e, PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: nil)) == .cwdNotAllowed)
    }

    @Test func firstMatchingAllowRuleDecides() throws {
        let text = Self.claude + "  - name: second\n    brokers: [\"*\"]\n    clis: [claude]\n    cwd: [/w/**]\n    sandbox: strict\n"
        let e = try Self.engine(text)
        guard case .allow(let a) = e.evaluate(PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/w/app")) else { Issue.record("denied"); return }
        #expect(a.rule.name == "laptop" && a.rule.sandbox == .standard)
        guard case .allow(let b) = e.evaluate(PolicyRequest(broker: "mini-pc", cli: "claude", cwd: "/w/other")) else { Issue.record("denied"); return }
        #expect(b.rule.name == "second" && b.rule.sandbox == .strict)
    }

    /// The explain trace names every rule it looked at, in order, and the final decision.
    @Test func explainTrace() throws {
        let text = Self.claude + "  - name: no-tmp\n    effect: deny\n    brokers: [\"*\"]\n    cwd: [/tmp/**]\n"
        let (outcome, steps) = try Self.engine(text).explain(PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: "/w/app", args: ["--model", "opus"]))
        guard case .allow = outcome else { Issue.record("denied"); return }
        #expect(steps.map(\.description) == [
            "cwd: resolved: /w/app",
            "deny rule 'no-tmp' (line 19): skipped: cwd /w/app matches none of [\"/tmp/**\"]",
            "allow rule 'laptop' (line 15): match: broker, cli and cwd match",
            "args of 'claude': match: [\"--model\", \"opus\"] fit [\"--model\", \"sonnet|opus\"]",
            "policy: allow: by rule 'laptop'",
        ])
    }

    @Test func globsNeverBacktrackExponentially() throws {
        let p = try ArgPattern.parse(String(repeating: "*a", count: 40) + "b").get()
        #expect(!p.matches(String(repeating: "a", count: 5000)))
        #expect(try ArgPattern.parse("x\\|y").get().matches("x|y"))
        #expect(try ArgPattern.parse("a?c").get().matches("abc"))
        #expect(try !ArgPattern.parse("a?c").get().matches("ac"))
    }
}
