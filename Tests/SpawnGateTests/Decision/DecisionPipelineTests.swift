import Foundation
import Testing
@testable import SpawnGate

/// The pipeline in process, against real files and a real SQLite store, with a clock the test moves.
@Suite("Decision pipeline")
struct DecisionPipelineTests {
    @Test func allowIsAuditedAndAuthorizedOnce() throws {
        let g = try Gateway()
        let p = try g.pipeline()
        let env = g.envelope()
        let first = p.decide(env)
        #expect(first.reason == .allowed, "\(first.decision.detail)")
        #expect(first.exitCode == 0)
        let spawn = try #require(first.authorized)
        #expect(spawn.match.argv == [g.claude, "--", "Implement the plan"])
        #expect(first.decision.spawn?.cwd == g.app)
        // T5: the same envelope again is a replay; it is audited too, and authorizes nothing.
        let again = p.decide(env)
        #expect(again.reason == .replay)
        #expect(again.authorized == nil)
        let lines = try g.auditLines()
        #expect(lines.map { $0["reason"] as? String } == ["allowed", "replay"])
        #expect(lines[0]["argv"] as? [String] == [g.claude, "--", "Implement the plan"])
        #expect(try lines[0]["nonce"] as? String == Gateway.nonce(of: env))
        #expect(lines[1]["argv"] is NSNull, "a denied request's argv is not recorded as if it ran")
        #expect(try g.audit.verify(expected: p.state.auditHead()) == .intact(try p.state.auditHead()))
    }

    /// A restarted gateway (a new process: a new store connection and pipeline) still knows the nonce.
    @Test func replayIsRefusedAfterARestart() throws {
        let g = try Gateway()
        let env = g.envelope()
        #expect(try g.pipeline().decide(env).reason == .allowed)
        #expect(try g.pipeline().decide(env).reason == .replay)
    }

    /// `rate: 10/minute, burst: 3`: three at once, then one every 6 s; a restart does not refill the bucket.
    @Test func rateAdmitsTheBurstThenOnePerInterval() throws {
        let g = try Gateway(rule: ["rate: 10/minute", "burst: 3"])
        var p = try g.pipeline()
        #expect((0..<3).map { _ in p.decide(g.envelope()).reason } == [.allowed, .allowed, .allowed])
        let limited = p.decide(g.envelope())
        #expect(limited.reason == .rateLimited)
        #expect(limited.decision.rule == "laptop-app")
        #expect(limited.decision.detail.contains("6 seconds"))
        g.clock.advance(seconds: 5.9)
        #expect(p.decide(g.envelope()).reason == .rateLimited)
        g.clock.advance(seconds: 0.1)
        #expect(p.decide(g.envelope()).reason == .allowed)
        #expect(p.decide(g.envelope()).reason == .rateLimited)
        p = try g.pipeline()  // restart
        #expect(p.decide(g.envelope()).reason == .rateLimited, "a restart must not refill the bucket")
        g.clock.advance(seconds: 6)
        #expect(p.decide(g.envelope()).reason == .allowed)
    }

    /// T22: requests that fail verification or policy never spend the broker's rate budget.
    @Test func refusedRequestsDoNotSpendTheRate() throws {
        let g = try Gateway(rule: ["rate: 1/hour", "burst: 1"])
        let p = try g.pipeline()
        let forger = SigningKey.generate()
        for _ in 0..<50 {
            // Claims the laptop's key id, signed by someone else.
            var forged = try #require(try StrictJSONReader.parse(g.envelope(key: forger)).objectValue)
            forged["kid"] = .string(g.laptop.key.publicKey.fingerprint.description)
            #expect(p.decide(JSONWriter.encode(.object(forged))).reason == .badSignature)
            #expect(p.decide(g.envelope(g.request(cwd: "/etc"))).reason == .cwdNotAllowed)
        }
        #expect(p.decide(g.envelope()).reason == .allowed)
        #expect(p.decide(g.envelope()).reason == .rateLimited)
    }

    /// A request refused by the rate is not consumed: the same envelope is accepted once the bucket refills.
    @Test func aRateLimitedRequestCanBeRetried() throws {
        let g = try Gateway(rule: ["rate: 10/minute", "burst: 1"])
        let p = try g.pipeline()
        #expect(p.decide(g.envelope()).reason == .allowed)
        let env = g.envelope()
        #expect(p.decide(env).reason == .rateLimited)
        g.clock.advance(seconds: 6)
        #expect(p.decide(env).reason == .allowed)
    }

    @Test func dryRunConsumesNothingAndWritesNothing() throws {
        let g = try Gateway(rule: ["rate: 10/minute", "burst: 1", "max_concurrent: 1"])
        let p = try g.pipeline()
        let env = g.envelope()
        for _ in 0..<3 {
            let dry = p.decide(env, mode: .dryRun)
            #expect(dry.reason == .allowed)
            #expect(dry.authorized == nil, "a dry run authorizes nothing")
        }
        #expect(try g.auditLines().isEmpty)
        #expect(p.decide(env).reason == .allowed)
        #expect(p.decide(env, mode: .dryRun).reason == .replay)
        #expect(p.decide(g.envelope(), mode: .dryRun).reason == .rateLimited)
    }

    @Test func concurrencyLeasesEndByReportExitOrExpiry() throws {
        let g = try Gateway(rule: ["max_concurrent: 2", "max_runtime: 10m"])
        let p = try g.pipeline()
        let a = try #require(p.decide(g.envelope()).authorized)
        let b = try #require(p.decide(g.envelope()).authorized)
        let third = p.decide(g.envelope())
        #expect(third.reason == .concurrencyLimit)
        #expect(third.decision.detail.contains("max_concurrent 2"))

        // `hook exited`: the slot is free at once.
        #expect(try p.state.releaseLease(requestID: try #require(a.leaseID)))
        let c = try #require(p.decide(g.envelope()).authorized)

        // A lease bound to a process ends when that process dies (T: leaked slots after a crash).
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/sleep")
        child.arguments = ["60"]
        try child.run()
        let identity = try #require(ProcessIdentity.of(pid: child.processIdentifier))
        #expect(try p.state.bindLease(requestID: try #require(c.leaseID), to: identity))
        #expect(p.decide(g.envelope()).reason == .concurrencyLimit, "a live bound process holds its slot")
        // SIGKILL: the test runner's blocked-signal mask is inherited, so SIGTERM may never arrive.
        kill(child.processIdentifier, SIGKILL)
        child.waitUntilExit()
        #expect(p.decide(g.envelope()).reason == .allowed, "a dead process's slot is freed")

        // Unbound leases (b and the last one) expire at max_runtime.
        #expect(p.decide(g.envelope()).reason == .concurrencyLimit)
        g.clock.advance(seconds: 600)
        #expect(p.decide(g.envelope()).reason == .allowed)
        _ = b
    }

    /// The hook's second opinion: the broker's own spawn fields must equal the signed ones.
    @Test func hookSpawnFieldsMustEqualTheSignedOnes() throws {
        let g = try Gateway()
        let p = try g.pipeline()
        let r = g.request(args: ["--model", "opus"])
        let same: [String: JSONValue] = ["name": .string("coder"), "cli": .string("claude"), "task": .string("Implement the plan"),
                                         "cwd": .string(g.app), "args": .array([.string("--model"), .string("opus")])]
        #expect(p.decide(g.envelope(r), mode: .dryRun, brokerSpawn: same).reason == .allowed)
        for (key, value) in [("cwd", JSONValue.string("/")), ("task", .string("rm -rf ~")), ("cli", .string("codex")),
                             ("args", .array([.string("--dangerously-skip-permissions")])), ("model", .string("opus")),
                             ("shadow_of", .string("x")), ("args", .array([]))] {
            var spawn = same
            spawn[key] = value
            let o = p.decide(g.envelope(r), mode: .dryRun, brokerSpawn: spawn)
            #expect(o.reason == .malformed, "\(key) = \(value)")
            #expect(o.decision.detail.contains("\"\(key)\""))
        }
        var missingTask = same
        missingTask["task"] = nil
        #expect(p.decide(g.envelope(r), mode: .dryRun, brokerSpawn: missingTask).reason == .malformed)
    }

    @Test func hookInputShapes() throws {
        let g = try Gateway()
        let env = g.envelope()
        guard case .success(let bare) = HookInput.parse(env) else { Issue.record("bare envelope refused"); return }
        #expect(bare.envelope == env && bare.spawn == nil)
        let wrapped = Array("{\"envelope\":\(String(decoding: env, as: UTF8.self)),\"spawn\":{\"name\":\"coder\"}}".utf8)
        guard case .success(let w) = HookInput.parse(wrapped) else { Issue.record("wrapped form refused"); return }
        #expect(w.spawn == ["name": .string("coder")])
        #expect(try g.pipeline().decide(w.envelope, mode: .dryRun).reason == .allowed, "the re-encoded envelope still verifies")
        // An endless or huge input is refused before it is parsed.
        guard case .failure(let big) = HookInput.parse([UInt8](repeating: 0x20, count: HookInput.maxSize + 1)) else {
            Issue.record("oversized hook input accepted"); return
        }
        #expect(big.reason == .malformed)
        for bad in ["{\"envelope\":\(String(decoding: env, as: UTF8.self))}", "{\"envelope\":\"x\",\"spawn\":{}}",
                    "{\"envelope\":{},\"spawn\":{},\"extra\":1}"] {
            guard case .failure(let d) = HookInput.parse(Array(bad.utf8)) else { Issue.record("accepted \(bad)"); continue }
            #expect(d.reason == .malformed)
        }
    }

    /// The binary is checked when deciding, not only when the policy loaded: a binary made writable by others
    /// since (T: swapped binary) is refused.
    @Test func binaryTamperedAfterLoadIsRefused() throws {
        let g = try Gateway()
        let p = try g.pipeline()
        chmod(g.claude, 0o777)
        let o = p.decide(g.envelope())
        #expect(o.reason == .cliNotAllowed)
        #expect(o.authorized == nil)
    }

    @Test func missingOrCorruptStateStoreCannotDecide() throws {
        let g = try Gateway()
        try FileManager.default.removeItem(atPath: g.vps.stateDB)
        #expect(throws: GatewayFailure.self) { try g.pipeline() }
        #expect(!FileManager.default.fileExists(atPath: g.vps.stateDB), "a missing store is never silently recreated")
        try Data("this is not a database, just some bytes that are long enough to be a header".utf8).write(to: URL(fileURLWithPath: g.vps.stateDB))
        chmod(g.vps.stateDB, 0o600)
        let error = try #require(throws: GatewayFailure.self) { try g.pipeline() }
        #expect(error.message.contains("cannot be read"))
    }

    /// A truncated log stops decisions (nothing is appended to a chain that no longer ends where it should), and
    /// the refused request is not consumed.
    @Test func truncatedAuditLogMeansAuditUnavailable() throws {
        let g = try Gateway()
        let p = try g.pipeline()
        #expect(p.decide(g.envelope()).reason == .allowed)
        #expect(p.decide(g.envelope()).reason == .allowed)
        let text = try String(contentsOfFile: g.vps.auditLog, encoding: .utf8)
        try String(text.split(separator: "\n")[0] + "\n").write(toFile: g.vps.auditLog, atomically: false, encoding: .utf8)
        let env = g.envelope()
        let o = p.decide(env)
        #expect(o.reason == .auditUnavailable)
        #expect(o.exitCode == 2)
        #expect(o.decision.detail.contains("truncated"))
        _ = try p.state.rotateAudit(g.audit, time: g.clock.now())
        #expect(p.decide(env).reason == .allowed, "the refused request was not consumed")
        #expect(try g.audit.verify(expected: p.state.auditHead()) == .intact(try p.state.auditHead()))
    }

    /// The process died after its allow line was fsynced and before its state committed: the next decision
    /// takes the line in and never accepts that nonce again.
    @Test func anAuditedAllowWhoseCommitWasLostIsNeverGrantedTwice() throws {
        let g = try Gateway()
        let p = try g.pipeline()
        #expect(p.decide(g.envelope()).reason == .allowed)
        let head = try p.state.auditHead()
        let env = g.envelope()
        // Simulate the crash window: decide, then put the state store's head back as it was before the commit.
        #expect(p.decide(env).reason == .allowed)
        try p.state.write { db in
            try StateStore.setAuditHead(head, db)
            try db.execute(sql: "DELETE FROM nonce WHERE nonce = ?",
                           arguments: [try Gateway.nonce(of: env)])
        }
        #expect(p.decide(env).reason == .replay)
        #expect(try g.audit.verify(expected: p.state.auditHead()) == .intact(try p.state.auditHead()))
    }
}

extension JSONValue {
    var objectValue: [String: JSONValue]? { if case .object(let o) = self { return o }; return nil }
}
