import Foundation
import Testing
@testable import SpawnGate

/// The relay launcher's tickets are redeemed only while the key, the policy and the binary still allow the request
/// (shown once, only by a broker's worker: LaunchChannelTests).
@Suite("Launch tickets")
struct LaunchTicketTests {
    /// What changed between the decision and the launch counts: a policy reload that no longer allows the
    /// request, and a revoked key.
    @Test func redeemingChecksAgainWhatCouldHaveChanged() throws {
        let g = try Gateway(rule: ["spawner: agent-relay", "sandbox: standard"])
        let p = try g.pipeline()
        let ticket = LaunchTicket(for: try #require(p.decide(g.envelope()).authorized))
        if case .failure(let e) = p.redeem(ticket) { Issue.record("a fresh ticket redeems: \(e.message)") }

        let policyText = try String(contentsOfFile: g.vps.policyFile, encoding: .utf8)
        try policyText.replacingOccurrences(of: "cwd: [\(g.app)/**]", with: "cwd: [\(g.dir)/elsewhere/**]")
            .write(toFile: g.vps.policyFile, atomically: true, encoding: .utf8)
        guard case .failure(let changed) = try g.pipeline().redeem(ticket) else { Issue.record("the new policy must win"); return }
        #expect(changed.message.contains("no longer allowed"), "\(changed.message)")

        try g.writePolicy(rule: ["spawner: agent-relay", "sandbox: standard"])
        try g.vps.keyStore.revoke(name: "mac-laptop")
        guard case .failure(let revoked) = try g.pipeline().redeem(ticket) else { Issue.record("a revoked key must win"); return }
        #expect(revoked.message.contains("revoked"), "\(revoked.message)")
    }

    /// A ticket is base64url, so it starts with `-` one time in 64. The broker's command line must still hand it to
    /// the launcher as the ticket: as a word of its own it read as an option, the launcher refused ("Missing value
    /// for '--ticket'") and the gateway waited out its whole launch timeout (the flaky relay worker test). The C
    /// launcher takes no options at all; here it reaches its connect, to a socket nobody listens at.
    @Test(arguments: ["-", "--", "_", "A"])
    func everyTicketReachesTheLauncher(_ start: String) throws {
        let home = TestSupport.tempDir("ticket-line")
        defer { try? FileManager.default.removeItem(atPath: home) }
        #expect(try TestSupport.spawngate(["init", "--home", home + "/h", "--name", "vps-broker"]).status == 0)
        let line = AgentService.launcherCommandLine(LaunchChannelTests.launcher, socket: home + "/h/launch-x.sock", ticket: start + String(repeating: "x", count: 41))
        // As the broker runs it: split by a POSIX shell.
        let out = try TestSupport.run("/bin/sh", ["-c", "exec " + line])
        #expect(out.stderr.contains("cannot reach the gateway"), "\(out.stderr)")
        #expect(!out.stderr.contains("usage"), "\(out.stderr)")
    }
}
