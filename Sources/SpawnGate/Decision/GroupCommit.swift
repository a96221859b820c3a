import Foundation

/// Commits decisions arriving from many requests together (group commit). One serial queue does all the writing:
/// each time it runs it takes every decision waiting and records them as one (``DecisionPipeline/commit(_:)``: one
/// transaction, one audit write, one fsync of the log and one of the state store). Callers wait without holding a
/// thread (`await`), so under load the group grows by itself; alone, a decision commits at once with no added delay.
// @unchecked: `waiting`, `draining`, `latest` and the counters are read and written only under `lock`; the group is
// committed on the serial `writer` queue.
public final class GroupCommitter: @unchecked Sendable {
    private typealias Waiter = (pending: DecisionPipeline.Pending, done: @Sendable (DecisionPipeline.Outcome) -> Void)

    private let lock = NSLock()
    private let writer = DispatchQueue(label: "spawngate.commit")
    private var waiting: [Waiter] = []
    private var draining = false
    /// The pipeline of the latest submission: the state store and audit log are the same across reloads, and each
    /// pending decision carries its own policy hash.
    private var latest: DecisionPipeline?
    private var _groups = 0, _decisions = 0

    public init() {}

    /// How many commits ran, and how many decisions they recorded: decisions per commit is the fsyncs saved.
    public var groups: Int { lock.withLock { _groups } }
    public var decisions: Int { lock.withLock { _decisions } }

    /// Commits `pending` together with whatever else is waiting, and returns its outcome once it is durable.
    public func commit(_ pending: DecisionPipeline.Pending, through pipeline: DecisionPipeline) async -> DecisionPipeline.Outcome {
        await withCheckedContinuation { done in submit(pending, through: pipeline) { done.resume(returning: $0) } }
    }

    /// The same for a caller on a thread of its own (tests, benchmarks): blocks until the outcome is durable.
    public func commit(_ pending: DecisionPipeline.Pending, through pipeline: DecisionPipeline) -> DecisionPipeline.Outcome {
        commit([pending], through: pipeline)[0]
    }

    /// Several decisions of one caller (requests pipelined on one connection), waiting together, in order: they
    /// join the same group, so a client with k requests in flight is not k commits behind. Blocks until all are
    /// durable.
    public func commit(_ batch: [DecisionPipeline.Pending], through pipeline: DecisionPipeline) -> [DecisionPipeline.Outcome] {
        let ready = DispatchGroup()
        let results = Slots(count: batch.count)
        let start: Bool = lock.withLock {
            for (i, pending) in batch.enumerated() {
                ready.enter()
                waiting.append((pending, { results.set(i, $0); ready.leave() }))
            }
            latest = pipeline
            defer { draining = true }
            return !draining && !batch.isEmpty
        }
        if start { writer.async { self.drain() } }
        ready.wait()
        return results.all()
    }

    // @unchecked: each slot is written once by the committer under `lock`, read only after the group has left.
    private final class Slots: @unchecked Sendable {
        private let lock = NSLock()
        private var outcomes: [DecisionPipeline.Outcome?]
        init(count: Int) { outcomes = Array(repeating: nil, count: count) }
        func set(_ i: Int, _ o: DecisionPipeline.Outcome) { lock.withLock { outcomes[i] = o } }
        func all() -> [DecisionPipeline.Outcome] { lock.withLock { outcomes.map { $0! } } }
    }

    private func submit(_ pending: DecisionPipeline.Pending, through pipeline: DecisionPipeline,
                        then done: @escaping @Sendable (DecisionPipeline.Outcome) -> Void) {
        let start: Bool = lock.withLock {
            waiting.append((pending, done))
            latest = pipeline
            defer { draining = true }
            return !draining
        }
        if start { writer.async { self.drain() } }
    }

    /// Commits what is waiting, again and again, until nothing is.
    private func drain() {
        while true {
            let (batch, pipeline): ([Waiter], DecisionPipeline?) = lock.withLock {
                let b = waiting
                waiting.removeAll(keepingCapacity: true)
                if b.isEmpty { draining = false }
                return (b, latest)
            }
            guard let pipeline, !batch.isEmpty else { return }
            // The pipeline splits a batch into appends of at most AuditLog.maxLinesPerAppend lines.
            let outcomes = pipeline.commit(batch.map(\.pending))
            lock.withLock { _groups += 1; _decisions += batch.count }
            for (w, o) in zip(batch, outcomes) { w.done(o) }
        }
    }
}
