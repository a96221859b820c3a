import Foundation

/// Per-source allowance for requests that do not come from an enrolled key (malformed bodies, bad signatures,
/// unknown or revoked keys) or that an enrolled key's broker would not send (replays, stale or future requests). Every request takes a token on arrival, and gets it back once it proves to come from
/// an enrolled key; a source with none left is answered 429 before its body is read or anything is verified,
/// decided or written to the audit log. Taking first (rather than charging refusals afterwards) keeps concurrent
/// junk within the allowance too. Junk from one address cannot crowd out real brokers at another.
///
/// In memory on purpose: this guards the gateway's own work, not a policy decision, and is lost on restart.
// @unchecked: `buckets` is read and written only under `lock`; the rest is immutable.
public final class PreAuthLimiter: @unchecked Sendable {
    public let burst: Int
    public let refillPerSecond: Double
    /// Sources remembered at most; the least recently charged are forgotten first.
    public let maxSources: Int
    private let now: @Sendable () -> Double
    private let lock = NSLock()
    private var buckets: [String: (tokens: Double, at: Double)] = [:]

    public init(burst: Int = 10, refillPerSecond: Double = 1, maxSources: Int = 10_000,
                now: @escaping @Sendable () -> Double = { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }) {
        self.burst = burst; self.refillPerSecond = refillPerSecond; self.maxSources = maxSources; self.now = now
    }

    private func tokens(_ source: String, at t: Double) -> Double {
        guard let b = buckets[source] else { return Double(burst) }
        return min(Double(burst), b.tokens + (t - b.at) * refillPerSecond)
    }

    /// Takes a token for a request from `source`: nil when it may be heard, else the sentence to answer with.
    public func admit(_ source: String) -> String? {
        let t = now()
        lock.lock(); defer { lock.unlock() }
        let have = tokens(source, at: t)
        guard have >= 1 else {
            return "too many unauthenticated requests from \(source); wait \(Int((1 / refillPerSecond).rounded(.up))) s, and check that this broker's key is enrolled at the target"
        }
        if buckets.count >= maxSources, buckets[source] == nil,
           let oldest = buckets.min(by: { $0.value.at < $1.value.at })?.key {
            buckets[oldest] = nil
        }
        buckets[source] = (have - 1, t)
        return nil
    }

    /// Gives the token back: the request came from an enrolled key.
    public func refund(_ source: String) {
        let t = now()
        lock.lock(); defer { lock.unlock() }
        guard buckets[source] != nil else { return }
        buckets[source] = (min(Double(burst), tokens(source, at: t) + 1), t)
    }
}
