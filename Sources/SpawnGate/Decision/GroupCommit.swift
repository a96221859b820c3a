import Foundation

/// Commits decisions arriving on many threads together (group commit): whoever finds no commit running takes every
/// decision waiting and commits them as one (``DecisionPipeline/commit(_:)``: one transaction, one audit write, one
/// fsync of the log and one of the state store), while the others wait for their outcome. Under load the batch
/// grows by itself; alone, a decision commits at once with no added delay.
public final class GroupCommitter: @unchecked Sendable {
    private final class Slot { var outcome: DecisionPipeline.Outcome? }

    private let condition = NSCondition()
    private var waiting: [(DecisionPipeline.Pending, Slot)] = []
    private var committing = false
    private var _groups = 0, _decisions = 0

    public init() {}

    /// How many commits ran, and how many decisions they recorded: decisions per commit is the fsyncs saved.
    public var groups: Int { condition.lock(); defer { condition.unlock() }; return _groups }
    public var decisions: Int { condition.lock(); defer { condition.unlock() }; return _decisions }

    /// Commits `pending` through `pipeline` together with whatever else is waiting, and returns its outcome.
    /// Blocks the calling thread until its decision is durable (or refused): call it off any event loop.
    public func commit(_ pending: DecisionPipeline.Pending, through pipeline: DecisionPipeline) -> DecisionPipeline.Outcome {
        let slot = Slot()
        condition.lock()
        defer { condition.unlock() }
        waiting.append((pending, slot))
        while slot.outcome == nil {
            guard !committing else { condition.wait(); continue }
            committing = true
            let batch = waiting
            waiting.removeAll(keepingCapacity: true)
            condition.unlock()
            // The pipeline splits a batch into appends of at most AuditLog.maxLinesPerAppend lines.
            let outcomes = pipeline.commit(batch.map(\.0))
            condition.lock()
            for ((_, s), o) in zip(batch, outcomes) { s.outcome = o }
            _groups += 1
            _decisions += batch.count
            committing = false
            condition.broadcast()
        }
        return slot.outcome!
    }
}
