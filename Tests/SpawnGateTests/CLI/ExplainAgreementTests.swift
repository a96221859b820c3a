import Foundation
import Testing
@testable import SpawnGate

/// `policy explain` is a traced dry run of the decision pipeline: it must reach the same reason as
/// `check --dry-run` for every reason code a dry run can give.
@Suite("Explain agrees with check --dry-run")
struct ExplainAgreementTests {
    /// Codes no dry run can give, and why.
    static let notInDryRun: [ReasonCode: String] = [
        .auditUnavailable: "a dry run writes nothing, so the audit log cannot fail it",
        .startFailed: "given only after an allowed agent was started, never by the decision",
        .envNotAllowed: "no stage gives it: env is the CLI's list in the policy, not something a request asks for",
        .grantRevoked: "given by the requester before signing: the revocation list is the issuer's, the target never holds it",
        .approvalDenied: "given only when a person settles a held request, never by the decision",
        .approvalExpired: "given only when a held request is settled or swept after its expiry, never by the decision",
    ]

    struct Case: Sendable {
        let expect: ReasonCode
        let rule: [String]
        let policy: @Sendable (String) -> String
        let setup: @Sendable (Gateway) throws -> [UInt8]
        init(_ expect: ReasonCode, rule: [String] = [], policy: @escaping @Sendable (String) -> String = { $0 },
             _ setup: @escaping @Sendable (Gateway) throws -> [UInt8]) {
            self.expect = expect; self.rule = rule; self.policy = policy; self.setup = setup
        }
    }

    static func request(_ g: Gateway, cli: String = "claude", cwd: String? = nil, args: [String]? = nil, to: String = "vps-broker",
                        iat: Int64? = nil, ttl: Int64 = 60) -> SpawnRequest {
        let iat = iat ?? g.clock.now()
        return SpawnRequest(name: "coder", cli: cli, task: "Implement the plan", cwd: cwd ?? g.app, args: args,
                            from: "mac-laptop", to: to, iat: iat, exp: iat + ttl, nonce: Sodium.randomBytes(16))
    }

    static let cases: [Case] = [
        Case(.allowed) { g in g.envelope(request(g)) },
        Case(.malformed) { _ in Array("{not json".utf8) },
        Case(.badSignature) { g in
            var forged = try #require(try StrictJSONReader.parse(g.envelope(request(g), key: SigningKey.generate())).objectValue)
            forged["kid"] = .string(g.laptop.key.publicKey.fingerprint.description)
            return JSONWriter.encode(.object(forged))
        },
        Case(.unknownKey) { g in g.envelope(request(g), key: SigningKey.generate()) },
        Case(.revokedKey) { g in try g.vps.keyStore.revoke(name: "mac-laptop"); return g.envelope(request(g)) },
        Case(.wrongAudience) { g in g.envelope(request(g, to: "mini-pc")) },
        Case(.expired) { g in g.envelope(request(g, iat: g.clock.now() - 200)) },
        Case(.notYetValid) { g in g.envelope(request(g, iat: g.clock.now() + 100)) },
        Case(.ttlTooLong) { g in g.envelope(request(g, ttl: 1000)) },
        Case(.replay) { g in
            let env = g.envelope(request(g))
            let first = try g.pipeline().decide(env).reason
            #expect(first == .allowed)
            return env
        },
        Case(.remoteSpawnDisabled, policy: { $0.replacingOccurrences(of: "accept_remote_spawn: true", with: "accept_remote_spawn: false") }) { g in
            g.envelope(request(g))
        },
        Case(.noMatchingRule, policy: { $0.replacingOccurrences(of: "brokers: [mac-laptop, ref-laptop]", with: "brokers: [mini-pc]") }) { g in
            g.envelope(request(g))
        },
        Case(.deniedByRule, policy: { $0 + "\n  - name: not-here\n    effect: deny\n    brokers: [\"*\"]\n    cwd: [/**]\n" }) { g in
            g.envelope(request(g))
        },
        Case(.cliNotAllowed) { g in g.envelope(request(g, cli: "codex")) },
        Case(.argsNotAllowed) { g in g.envelope(request(g, args: ["--dangerous"])) },
        Case(.cwdNotAllowed) { g in g.envelope(request(g, cwd: "/etc")) },
        // Both commands decide as the hook does: from this machine, which the rule's sources do not name.
        Case(.sourceNotAllowed, rule: ["sources: [10.0.0.0/8]"]) { g in g.envelope(request(g)) },
        Case(.rateLimited, rule: ["rate: 1/hour", "burst: 1"]) { g in
            let first = try g.pipeline().decide(g.envelope(request(g))).reason
            #expect(first == .allowed)
            return g.envelope(request(g))
        },
        Case(.concurrencyLimit, rule: ["max_concurrent: 1"]) { g in
            let first = try g.pipeline().decide(g.envelope(request(g))).reason
            #expect(first == .allowed)
            return g.envelope(request(g))
        },
        Case(.grantInvalid) { g in
            let held = try GrantTests.issue(g)
            var other = g.request()
            other.grant = held.token(to: other.to, nonce: Sodium.randomBytes(16))
            return g.envelope(other)
        },
        Case(.grantExpired) { g in
            let held = try GrantTests.store(g).issue(name: "fixer", scope: GrantTests.scope(g), ttl: 60, identity: g.laptop,
                                                     now: g.clock.now() - 3600)
            return GrantTests.envelope(g, held)
        },
        Case(.grantExceeded) { g in
            GrantTests.envelope(g, try GrantTests.issue(g, scope: GrantTests.scope(clis: ["codex"], g)))
        },
        Case(.approvalPending, rule: ["approve: required"]) { g in g.envelope(request(g)) },
        // The state store cannot be opened: neither command can decide.
        Case(.internalError) { g in
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: g.vps.stateDB + suffix) }
            try FileManager.default.createDirectory(atPath: g.vps.stateDB, withIntermediateDirectories: true)
            return g.envelope(request(g))
        },
    ]

    /// The table covers every reason code: a new code fails here until it is given a case or a reason why not.
    @Test func everyReasonCodeIsCovered() {
        let covered = Set(Self.cases.map(\.expect)).union(Self.notInDryRun.keys)
        #expect(covered == Set(ReasonCode.allCases), "missing: \(Set(ReasonCode.allCases).subtracting(covered))")
    }

    @Test(arguments: cases.indices)
    func explainAndDryRunAgree(_ index: Int) throws {
        let c = Self.cases[index]
        // The CLI reads the real clock, so the homes do too.
        let g = try Gateway(rule: c.rule, now: SystemClock().now())
        try g.writePolicy(rule: c.rule)
        let text = try String(contentsOfFile: g.vps.policyFile, encoding: .utf8)
        try c.policy(text).write(toFile: g.vps.policyFile, atomically: true, encoding: .utf8)
        chmod(g.vps.policyFile, 0o600)
        let env = try c.setup(g)
        let before = try g.auditLines().count

        let check = try g.cli(["check", "--dry-run", "-"], stdin: env)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(check.stdout.utf8)) as? [String: Any], "\(check.stdout)\(check.stderr)")
        let explain = try g.cli(["policy", "explain", "-"], stdin: env)
        let last = try #require(explain.stdout.split(separator: "\n").last.map(String.init), "\(explain.stderr)")
        let explained = last.hasPrefix("decision: allow") ? "allowed"
            : last.hasPrefix("decision: pending") ? Substring(ReasonCode.approvalPending.rawValue)
            : last.dropFirst("decision: deny ".count).prefix { $0 != " " && $0 != ":" }

        #expect(json["reason"] as? String == c.expect.rawValue, "check: \(check.stdout)")
        #expect(String(explained) == c.expect.rawValue, "explain: \(explain.stdout)")
        #expect(explain.status == check.status)
        // Neither wrote anything or consumed anything: the allowed envelope is still allowed afterwards.
        #expect(try g.auditLines().count == before)
        if c.expect == .allowed { #expect(try g.check(env).decision["reason"] as? String == "allowed") }
    }

    /// A rule asking for a sandbox layer this machine lacks: a traced dry run and a plain one give the same
    /// internal_error, and the trace ends at the sandbox stage.
    @Test func missingSandboxLayerAgrees() throws {
        let g = try Gateway()
        var p = try g.pipeline()
        p.missingLayers = { _ in ["Landlock"] }
        let env = g.envelope()
        let traced = p.decide(env, mode: .dryRun, trace: true)
        #expect(traced.decision == p.decide(env, mode: .dryRun).decision)
        #expect(traced.reason == .internalError)
        #expect(traced.trace?.steps.last(where: { $0.verdict == "deny" })?.stage == .sandbox)
    }

    /// The trace names every stage a full allow passes, in pipeline order; untraced decisions carry none.
    @Test func traceCoversEveryStageInOrder() throws {
        let g = try Gateway(rule: ["rate: 10/minute", "max_concurrent: 2"])
        let p = try g.pipeline()
        let env = g.envelope()
        let traced = p.decide(env, mode: .dryRun, trace: true)
        #expect(traced.reason == .allowed)
        let stages = try #require(traced.trace).stages
        var seen: [TraceStage] = []
        for s in stages where seen.last != s { seen.append(s) }
        #expect(seen == [.signature, .audience, .window, .policy, .rule, .arguments, .policy, .binary, .sandbox, .replay, .rate, .concurrency, .audit])
        #expect(p.decide(env, mode: .dryRun).trace == nil)
        // A committed decision's trace says it was recorded.
        #expect(p.decide(env, trace: true).trace?.steps.last?.verdict == "recorded")
    }
}
