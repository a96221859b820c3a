import Foundation
import Testing
@testable import SpawnGate

/// `approve:` on a rule (issue 28): decided up to the start, held, then started only by a person's approval,
/// never after expiry or a policy that no longer allows it. Every step is an audit line.
@Suite("Approval: held requests")
struct ApprovalTests {
    static func held(_ g: Gateway, _ p: DecisionPipeline) throws -> (DecisionPipeline.Outcome, String) {
        let outcome = p.decide(g.envelope())
        #expect(outcome.reason == .approvalPending, "\(outcome.decision.detail)")
        #expect(outcome.authorized == nil, "nothing starts while it is held")
        #expect(outcome.exitCode == 3)
        return (outcome, try #require(outcome.decision.approval))
    }

    @Test func aHeldRequestStartsOnlyOnceApproved() throws {
        let g = try Gateway(rule: ["approve: required", "max_concurrent: 1"])
        let p = try g.pipeline()
        let (outcome, id) = try Self.held(g, p)
        #expect(id == String(outcome.decision.requestID!.prefix(16)))
        let row = try #require(try p.state.heldRequest(id))
        #expect(row.state == .pending && row.argv == [g.claude, "--", "Implement the plan"])
        #expect(try g.auditLines().last?["decision"] as? String == "pending")

        let approved = try p.settle(id, .approve, by: "alice").get()
        #expect(approved.reason == .allowed, "\(approved.decision.detail)")
        let spawn = try #require(approved.authorized, "approval gives the authorization to start")
        #expect(spawn.request.requestID == outcome.decision.requestID)
        #expect(approved.decision.detail.contains("approved by alice"))
        let lines = try g.auditLines()
        #expect(lines.map { $0["decision"] as? String } == ["pending", "allow"])
        #expect(lines.last?["approval"] as? String == id)
        #expect(try p.state.heldRequest(id)?.state == .approved)
        // Settled once: approving again starts nothing.
        #expect(throws: DecisionPipeline.SettleRefusal.self) { try p.settle(id, .approve, by: "alice").get() }
    }

    @Test func aHeldRequestNeverStartsAfterItsExpiry() throws {
        let g = try Gateway(rule: ["approve: {within: 1m}"])
        let p = try g.pipeline()
        let (_, id) = try Self.held(g, p)
        g.clock.advance(seconds: 61)
        let late = try p.settle(id, .approve, by: "alice").get()
        #expect(late.authorized == nil)
        #expect(late.reason == .approvalExpired, "\(late.decision.detail)")
        // The sweep records the expiry of those nobody settled.
        let (_, other) = try Self.held(g, p)
        g.clock.advance(seconds: 61)
        let swept = p.expireHeld()
        #expect(swept.map(\.reason) == [.approvalExpired])
        #expect(try p.state.heldRequest(other)?.state == .expired)
        #expect(p.expireHeld().isEmpty, "expired once")
        #expect(throws: DecisionPipeline.SettleRefusal.self) { try p.settle(other, .approve, by: "alice").get() }
        #expect(try g.auditLines().map { $0["reason"] as? String } == ["approval_pending", "approval_expired", "approval_pending", "approval_expired"])
    }

    /// A reload that no longer allows it wins: approving then records it as expired and starts nothing.
    @Test func aPolicyReloadThatNoLongerAllowsItWins() throws {
        let g = try Gateway(rule: ["approve: required"])
        let (_, id) = try Self.held(g, try g.pipeline())
        try g.writePolicy(rule: ["approve: required"], cli: [])
        // The same rule now allows only another tree.
        let text = try String(contentsOfFile: g.vps.policyFile, encoding: .utf8).replacingOccurrences(of: "cwd: [\(g.app)/**]", with: "cwd: [\(g.dir)/elsewhere/**]")
        try text.write(toFile: g.vps.policyFile, atomically: true, encoding: .utf8)
        let p = try g.pipeline()
        let outcome = try p.settle(id, .approve, by: "alice").get()
        #expect(outcome.authorized == nil)
        #expect(outcome.reason == .approvalExpired && outcome.decision.detail.contains("no longer allowed"), "\(outcome.decision.detail)")
        #expect(try p.state.heldRequest(id)?.state == .expired)
    }

    /// A revoked key: the held request no longer verifies under the keys enrolled now.
    @Test func aKeyRevokedWhileHeldStopsTheStart() throws {
        let g = try Gateway(rule: ["approve: required"])
        let p = try g.pipeline()
        let (_, id) = try Self.held(g, p)
        try g.vps.keyStore.revoke(name: "mac-laptop")
        let outcome = try p.settle(id, .approve, by: "alice").get()
        #expect(outcome.authorized == nil && outcome.reason == .approvalExpired, "\(outcome.decision.detail)")
    }

    @Test func onlyTheNamedApproversMaySettle() throws {
        let g = try Gateway(rule: ["approve: {by: [alice]}"])
        let p = try g.pipeline()
        let (_, id) = try Self.held(g, p)
        let refused = p.settle(id, .approve, by: "mallory")
        #expect(throws: DecisionPipeline.SettleRefusal.self) { try refused.get() }
        #expect(throws: DecisionPipeline.SettleRefusal.self) { try p.settle(id, .deny, by: "mallory").get() }
        #expect(try p.state.heldRequest(id)?.state == .pending, "a refused settlement changes nothing")
        #expect(try p.settle(id, .approve, by: "alice").get().authorized != nil)
        #expect(throws: DecisionPipeline.SettleRefusal.self) { try p.settle("0123456789abcdef", .approve, by: "alice").get() }
    }

    @Test func aDeniedRequestNeverStarts() throws {
        let g = try Gateway(rule: ["approve: required"])
        let p = try g.pipeline()
        let (_, id) = try Self.held(g, p)
        let denied = try p.settle(id, .deny, by: "alice").get()
        #expect(denied.reason == .approvalDenied && denied.authorized == nil)
        #expect(throws: DecisionPipeline.SettleRefusal.self) { try p.settle(id, .approve, by: "alice").get() }
        #expect(try g.auditLines().map { $0["reason"] as? String } == ["approval_pending", "approval_denied"])
    }

    /// Two approvals at once (two operators, two sockets): exactly one starts it. Many rounds, on threads.
    @Test func concurrentApprovalsStartItOnce() throws {
        let g = try Gateway(rule: ["approve: required"])
        let p = try g.pipeline()
        for _ in 0..<40 {
            let (_, id) = try Self.held(g, p)
            let results = ConcurrentResults()
            DispatchQueue.concurrentPerform(iterations: 4) { i in
                results.add((try? p.settle(id, .approve, by: "op\(i)").get())?.authorized != nil)
            }
            #expect(results.trues == 1, "exactly one approval starts it")
        }
    }

    /// The check that makes the race above safe, where it cannot be raced around: inside the transaction that
    /// records a settlement, a request someone else settled in the meantime is refused.
    @Test func theTransactionRefusesASecondSettlement() throws {
        let g = try Gateway(rule: ["approve: required"])
        let p = try g.pipeline()
        let (_, id) = try Self.held(g, p)
        #expect(try p.settle(id, .approve, by: "alice").get().authorized != nil)
        let nowMs = g.clock.nowMilliseconds()
        for to in [HeldRequest.State.approved, .denied, .expired] {
            let admission = try p.state.write { db in try StateStore.admit([.settleApproval(id: id, to: to, by: "bob")], nowMilliseconds: nowMs, db) }
            #expect(admission.denial?.reason == .approvalExpired, "\(to): \(String(describing: admission.denial))")
        }
    }

    /// Policy tests say `expect: pending` for a rule that holds, and can state a grant.
    @Test func policyTestsStateApprovalAndGrants() throws {
        let g = try Gateway(rule: ["approve: required"])
        let text = try String(contentsOfFile: g.vps.policyFile, encoding: .utf8) + """

            tests:
              - request: {from: mac-laptop, cli: claude, cwd: \(g.app)}
                expect: pending
              - request: {from: mac-laptop, cli: claude, cwd: \(g.app), grant: {cwd: [\(g.app)/sub/**]}}
                expect: grant_exceeded
              - request: {from: mac-laptop, cli: claude, cwd: \(g.app)/sub, grant: {cwd: [\(g.app)/sub/**], clis: [claude]}}
                expect: pending
              - request: {from: mac-laptop, cli: claude, cwd: \(g.app), args: [--model, opus], grant: {args: ["--model sonnet"]}}
                expect: grant_exceeded
            """
        try text.write(toFile: g.vps.policyFile, atomically: true, encoding: .utf8)
        let policy = try PolicyLoader.load(g.vps.policyFile).get()
        let results = PolicyTestRunner.run(policy)
        #expect(results.count == 4 && results.allSatisfy(\.passed), "\(results.map { $0.line(file: "p") })")
        // `expect: allow` on a rule that holds fails, saying what it got.
        let wrong = text.replacingOccurrences(of: "expect: pending", with: "expect: allow")
        try wrong.write(toFile: g.vps.policyFile, atomically: true, encoding: .utf8)
        let failing = PolicyTestRunner.run(try PolicyLoader.load(g.vps.policyFile).get()).filter { !$0.passed }
        #expect(failing.count == 2 && failing[0].line(file: "p").contains("expected allow, got pending"), "\(failing.map { $0.line(file: "p") })")
    }

    /// `policy explain` shows both stages: the grant's, then the hold.
    @Test func explainShowsTheGrantAndTheHold() throws {
        let g = try Gateway(rule: ["approve: required"])
        let held = try GrantTests.issue(g)
        let p = try g.pipeline()
        let outcome = p.decide(GrantTests.envelope(g, held), mode: .dryRun, trace: true)
        #expect(outcome.reason == .approvalPending)
        let stages = outcome.trace?.stages ?? []
        #expect(stages.contains(.grant) && stages.contains(.approval), "\(outcome.trace?.steps.map(\.description) ?? [])")
        #expect(stages.firstIndex(of: .grant)! < stages.firstIndex(of: .approval)!)
        #expect(try p.state.heldRequests(now: g.clock.now()).isEmpty, "a dry run holds nothing")
        #expect(try g.auditLines().isEmpty)
    }

    /// Unknown keys under approve: are errors, with the place.
    @Test func approveIsCheckedWhenThePolicyLoads() throws {
        let g = try Gateway(rule: ["approve: {by: [alice], whithin: 5m}"])
        guard case .failure(let e) = PolicyLoader.load(g.vps.policyFile) else { Issue.record("loaded"); return }
        #expect(e.diagnostics.contains { $0.message.contains("whithin") }, "\(e.diagnostics)")
        try g.writePolicy(rule: ["approve: sometimes"])
        guard case .failure(let e2) = PolicyLoader.load(g.vps.policyFile) else { Issue.record("loaded"); return }
        #expect(e2.diagnostics.contains { $0.message.contains("approve must be 'required'") }, "\(e2.diagnostics)")
    }
}

/// Booleans collected from several threads.
// @unchecked: every access to `values` is under `lock`.
final class ConcurrentResults: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Bool] = []
    func add(_ v: Bool) { lock.withLock { values.append(v) } }
    var trues: Int { lock.withLock { values.filter { $0 }.count } }
}
