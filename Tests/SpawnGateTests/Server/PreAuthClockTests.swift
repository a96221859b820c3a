import Foundation
import Testing
@testable import SpawnGate
@testable import SpawnGateServer

/// The pre-authentication allowances (burst 10, then one a second) counted exactly, on a clock the test moves:
/// what `junkFromOneSourceDoesNotStarveAnother` and `unadmittedUIDIsBoundedBeforeTheAuditLog` asserted against
/// real elapsed time, which a slow machine stretched.
@Suite("Pre-authentication allowances on the injected clock")
struct PreAuthClockTests {
    /// Junk spawn bodies from one source: exactly the burst is heard and audited while time stands still, one
    /// more after a second; the rest are answered 429 with nothing decided or written.
    @Test func junkSpendsExactlyTheAllowance() async throws {
        let p = try EnrollmentTests.InProcess()
        let junk = Array(#"{"sealed":"AAAA"}"#.utf8)
        func send() async -> Int {
            if let refused = p.gateway.admit("10.0.0.2") { return refused.wireStatus }
            return await p.gateway.spawn(body: junk, source: "10.0.0.2").wireStatus
        }
        func audited() throws -> Int { try p.g.auditLines().filter { $0["reason"] as? String == "malformed" }.count }
        var statuses: [Int] = []
        for _ in 0..<1000 { statuses.append(await send()) }
        #expect(statuses.filter { $0 == 200 }.count == 10 && statuses.filter { $0 == 429 }.count == 990)
        #expect(try audited() == 10)
        p.clock.advance(0.5)
        #expect(await send() == 429)
        p.clock.advance(0.5)
        #expect(await send() == 200)
        #expect(try audited() == 11, "one more a second later")
        #expect(await send() == 429)
        // Another source has its own allowance.
        #expect(p.gateway.admit("10.0.0.3") == nil)
    }

    /// A uid the policy does not admit on the hook socket: exactly 10 refusals are recorded while time stands
    /// still, then 429 with nothing written; one more a second later.
    @Test func anUnadmittedUIDSpendsExactlyTheAllowance() async throws {
        let p = try EnrollmentTests.InProcess(["sandbox: standard"])
        var policy = try String(contentsOfFile: p.g.vps.policyFile, encoding: .utf8)
        policy = policy.replacingOccurrences(of: "accept_remote_spawn: true", with: "accept_remote_spawn: true\nhook_users: [\"\(getuid() + 4242)\"]")
        try policy.write(toFile: p.g.vps.policyFile, atomically: true, encoding: .utf8)
        _ = try p.gateway.reload().get()
        func send() async -> Int { await p.gateway.hook(body: p.g.envelope(), uid: getuid(), pid: getpid()).status }
        func audited() throws -> Int {
            try p.g.auditLines().filter { ($0["detail"] as? String)?.contains("may not use this gateway's socket") == true }.count
        }
        var statuses: [Int] = []
        for _ in 0..<60 { statuses.append(await send()) }
        #expect(statuses == Array(repeating: 403, count: 10) + Array(repeating: 429, count: 50), "\(statuses)")
        #expect(try audited() == 10)
        p.clock.advance(0.5)
        #expect(await send() == 429)
        p.clock.advance(0.5)
        #expect(await send() == 403)
        #expect(try audited() == 11, "one more a second later")
    }
}
