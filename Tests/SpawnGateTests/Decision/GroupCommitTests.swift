import Foundation
import Testing
@testable import SpawnGate
import GRDB

/// Group commit: many decisions in one transaction and one audit write. Each decision in a group must see the
/// effects of the ones before it (a nonce, a token, a lease), exactly as if they had been committed one by one.
@Suite struct GroupCommitTests {
    /// The same request twice in one group: the second is a replay, and both are audited.
    @Test func aReplayInsideOneGroupIsRefused() throws {
        let g = try Gateway()
        let p = try g.pipeline()
        let env = g.envelope()
        let outcomes = p.commit([p.prepare(env), p.prepare(env), p.prepare(g.envelope())])
        #expect(outcomes.map(\.reason) == [.allowed, .replay, .allowed])
        #expect(outcomes[0].authorized != nil && outcomes[1].authorized == nil)
        #expect(try g.auditLines().map { $0["reason"] as? String } == ["allowed", "replay", "allowed"])
        let head = try p.state.auditHead()
        #expect(head.lines == 3)
        #expect(try g.audit.verify(expected: head) == .intact(head))
    }

    /// A group spends the rate and the concurrency limit in order.
    @Test func rateAndConcurrencyAreSpentInOrderWithinAGroup() throws {
        let g = try Gateway(rule: ["rate: 1/hour", "burst: 2"])
        let p = try g.pipeline()
        #expect(p.commit((0..<3).map { _ in p.prepare(g.envelope()) }).map(\.reason) == [.allowed, .allowed, .rateLimited])

        let c = try Gateway(rule: ["max_concurrent: 1"])
        let q = try c.pipeline()
        #expect(q.commit((0..<2).map { _ in q.prepare(c.envelope()) }).map(\.reason) == [.allowed, .concurrencyLimit])
    }

    /// More decisions than one append may carry are split into several appends; the chain stays whole.
    @Test func aLargeBatchIsSplitIntoBoundedAppends() throws {
        let g = try Gateway()
        let p = try g.pipeline()
        let n = AuditLog.maxLinesPerAppend * 2 + 5
        let outcomes = p.commit((0..<n).map { _ in p.prepare(g.envelope()) })
        #expect(outcomes.allSatisfy { $0.reason == .allowed })
        let head = try p.state.auditHead()
        #expect(head.lines == n)
        #expect(try g.audit.verify(expected: head) == .intact(head))
    }

    /// Threads racing the same request through the committer: exactly one is allowed, however they are grouped.
    /// Distinct requests from the same threads are all allowed and all audited, in one unbroken chain.
    @Test func concurrentDecisionsThroughTheCommitter() throws {
        let g = try Gateway()
        let p = try g.pipeline()
        let committer = GroupCommitter()
        let same = g.envelope()
        let threads = 16, each = 8
        let distinct = (0..<threads * each).map { _ in g.envelope() }
        let results = Locked([ReasonCode]())
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            var mine: [ReasonCode] = [committer.commit(p.prepare(same), through: p).reason]
            for k in 0..<each { mine.append(committer.commit(p.prepare(distinct[t * each + k]), through: p).reason) }
            results.withLock { $0 += mine }
        }
        let all = results.withLock { $0 }
        #expect(all.filter { $0 == .allowed }.count == threads * each + 1)
        #expect(all.filter { $0 == .replay }.count == threads - 1)
        #expect(committer.decisions == threads * (each + 1))
        let head = try p.state.auditHead()
        #expect(head.lines == threads * (each + 1))
        #expect(try g.audit.verify(expected: head) == .intact(head))
    }

    /// A group whose lines cannot be written allows nothing, and leaves no effect behind.
    @Test func aGroupThatCannotBeAuditedAllowsNothing() throws {
        let g = try Gateway()
        let p = try g.pipeline()
        #expect(p.decide(g.envelope()).reason == .allowed)
        // The log is replaced behind the gateway's back: it no longer ends where the state store says.
        try "{}\n".write(toFile: g.vps.auditLog, atomically: true, encoding: .utf8)
        let envs = (0..<3).map { _ in g.envelope() }
        #expect(p.commit(envs.map { p.prepare($0) }).allSatisfy { $0.reason == .auditUnavailable && $0.authorized == nil })
        let count = try p.state.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM nonce") }
        #expect(count == 1, "only the first decision's nonce is kept")
    }

    /// The process died after a group's lines were fsynced and before its state committed: the next decision
    /// takes every line in and none of those nonces is accepted again.
    @Test func aGroupWhoseCommitWasLostIsNeverGrantedTwice() throws {
        let g = try Gateway()
        let p = try g.pipeline()
        #expect(p.decide(g.envelope()).reason == .allowed)
        let head = try p.state.auditHead()
        let envs = (0..<3).map { _ in g.envelope() }
        #expect(p.commit(envs.map { p.prepare($0) }).allSatisfy { $0.reason == .allowed })
        let nonces = try envs.map { try Gateway.nonce(of: $0) }
        try p.state.write { db in
            try StateStore.setAuditHead(head, db)
            for n in nonces { try db.execute(sql: "DELETE FROM nonce WHERE nonce = ?", arguments: [n]) }
        }
        #expect(p.commit(envs.map { p.prepare($0) }).map(\.reason) == [.replay, .replay, .replay])
        let now = try p.state.auditHead()
        #expect(now.lines == 7)
        #expect(try g.audit.verify(expected: now) == .intact(now))
    }
}

/// A value shared between test threads.
// @unchecked: `value` is read and written only under `lock`.
final class Locked<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ value: T) { self.value = value }
    func withLock<R>(_ body: (inout T) -> R) -> R { lock.lock(); defer { lock.unlock() }; return body(&value) }
}
