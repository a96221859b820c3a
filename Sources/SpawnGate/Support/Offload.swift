import Foundation

/// Runs blocking work (sockets, SQLite, git) on a thread of its own, never on the cooperative pool that runs the
/// MCP message loop and the dashboard's HTTP handlers, and gives up waiting after a deadline. The caller awaits a
/// continuation, so no unstructured task is made; work given up on finishes on its thread (each of its steps has a timeout) and keeps its slot
/// until then, so at most `limit` threads ever run.
// @unchecked: `running` is read and written only under `lock`.
public final class Offload: @unchecked Sendable {
    public enum Outcome<T: Sendable>: Sendable { case done(T), timedOut, busy(String) }

    private let lock = NSLock()
    private var running = 0
    public let limit: Int

    public init(limit: Int) { self.limit = limit }

    public func run<T: Sendable>(deadline seconds: Double, _ work: @escaping @Sendable () -> T) async -> Outcome<T> {
        let admitted: Bool = lock.withLock {
            guard running < limit else { return false }
            running += 1
            return true
        }
        guard admitted else { return .busy("\(limit) calls to gateways are still in flight; try again when one has finished") }
        return await withCheckedContinuation { (continuation: CheckedContinuation<Outcome<T>, Never>) in
            let once = Once(continuation)
            let thread = Thread { [self] in
                let value = work()
                lock.withLock { running -= 1 }
                once.resume(.done(value))
            }
            thread.stackSize = 1 << 20
            thread.start()
            DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { once.resume(.timedOut) }
        }
    }

    /// Resumes a continuation exactly once: whichever of the work and the deadline comes first.
    // @unchecked: `continuation` is taken (and cleared) only under `lock`, so it is resumed once.
    private final class Once<T: Sendable>: @unchecked Sendable {
        private let lock = NSLock()
        private var continuation: CheckedContinuation<Outcome<T>, Never>?
        init(_ c: CheckedContinuation<Outcome<T>, Never>) { continuation = c }
        func resume(_ value: Outcome<T>) {
            let c: CheckedContinuation<Outcome<T>, Never>? = lock.withLock { defer { continuation = nil }; return continuation }
            c?.resume(returning: value)
        }
    }
}
