import Foundation
import Testing
import SpawnGate
import SpawnGateServer

@Suite("Listener settings and pre-authentication limits")
struct ListenerTests {
    @Test func exposureWarningOutsideLoopbackAndTailscale() {
        func warn(_ s: String) -> Bool { (try? ListenAddress.parse(s).get())?.exposureWarning != nil }
        #expect(!warn("127.0.0.1:7717") && !warn("[::1]:7717") && !warn("localhost:0"))
        #expect(!warn("100.64.0.1:7717") && !warn("100.127.255.254:1") && !warn("[fd7a:115c:a1e0::1]:7717"))
        #expect(warn("0.0.0.0:7717") && warn("192.168.1.5:7717") && warn("100.128.0.1:7717") && warn("[::]:7717"))
        // A name that starts like a loopback address is a name: it resolves wherever its owner says.
        #expect(warn("127.evil.example:7717"))
    }

    @Test func listenAddressErrorsSayTheShape() {
        for bad in ["7717", "host:", ":7717", "[::1]7717", "h:70000"] {
            guard case .failure(let e) = ListenAddress.parse(bad) else { Issue.record("accepted \(bad)"); continue }
            #expect(e.message.contains("--listen"), "\(e.message)")
        }
    }

    /// Each unauthenticated refusal spends one token of its source only; an empty source is refused until it
    /// refills, and other sources are untouched.
    @Test func preAuthAllowanceIsPerSource() {
        // @unchecked: `t` is read and written only on this test's thread (the limiter calls `now` synchronously).
        final class Clock: @unchecked Sendable { var t = 0.0 }
        let clock = Clock()
        let limiter = PreAuthLimiter(burst: 3, refillPerSecond: 1, now: { clock.t })
        for _ in 0..<3 { #expect(limiter.admit("10.0.0.9") == nil) }
        #expect(limiter.admit("10.0.0.9")?.contains("too many unauthenticated requests from 10.0.0.9") == true)
        #expect(limiter.admit("10.0.0.1") == nil, "another source keeps its allowance")
        clock.t = 1.0
        #expect(limiter.admit("10.0.0.9") == nil, "one token back after a second")
        #expect(limiter.admit("10.0.0.9") != nil)
        limiter.refund("10.0.0.9")
        #expect(limiter.admit("10.0.0.9") == nil, "an authenticated request gives its token back")
    }

    /// The table of sources is bounded: the oldest is forgotten, so junk from many addresses cannot grow it.
    @Test func preAuthTableIsBounded() {
        // @unchecked: `t` is read and written only on this test's thread (the limiter calls `now` synchronously).
        final class Clock: @unchecked Sendable { var t = 0.0 }
        let clock = Clock()
        let limiter = PreAuthLimiter(burst: 1, refillPerSecond: 0.001, maxSources: 2, now: { clock.t })
        _ = limiter.admit("a"); clock.t = 1; _ = limiter.admit("b"); clock.t = 2; _ = limiter.admit("c")
        #expect(limiter.admit("a") == nil, "forgotten, so it starts afresh")
        #expect(limiter.admit("c") != nil)
    }
}
