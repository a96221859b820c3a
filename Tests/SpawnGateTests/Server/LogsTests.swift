import Foundation
import Testing
@testable import SpawnGate

/// `spawngate logs`: an agent's output here, and on a target as a signed control request for this broker's own
/// agents, bounded and without the target's file paths.
@Suite("Agent output (logs)")
struct LogsTests {
    @Test func localOutputIsTheLastLinesOfEachStream() throws {
        let g = try DecisionCLITests.live(["sandbox: standard"])
        try g.script("for i in 1 2 3 4 5; do echo \"line $i\"; done; echo 'oops' >&2")
        let request = g.dir + "/request.json"
        try DecisionCLITests.write(g.envelope(), request)
        #expect(try g.cli(["exec", "--log", request]).status == 0)
        let out = try g.cli(["logs", "coder", "-n", "2"])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stdout == "line 4\nline 5\n-- standard error:\noops\n", "\(out.stdout)")
        let none = try g.cli(["logs", "nobody"])
        #expect(none.status == 1 && none.stderr.contains("no agent named 'nobody'"), "\(none.stderr)")
        #expect(try g.cli(["logs", "coder", "-n", "0"]).status == 64)
    }

    @Test func remoteOutputIsSignedSealedAndFollowed() throws {
        let r = try ServeTests.Remote(rule: ["sandbox: standard"], agent: """
            echo "first words"
            while [ ! -e go ]; do sleep 0.05; done
            echo "last words"
            """)
        defer { r.serve.kill() }
        #expect(try r.spawn().status == 0)
        let shown = try r.laptop(["logs", "coder", "--broker", "vps-broker"])
        #expect(shown.status == 0, "\(shown.stderr)")
        #expect(shown.stdout.contains("first words"), "\(shown.stdout)")
        #expect(!shown.stdout.contains(r.g.vps.root), "no path of the target")
        // Following: what the agent writes next, then its exit.
        let follower = Process()
        follower.executableURL = URL(fileURLWithPath: TestSupport.binary)
        follower.arguments = ["logs", "coder", "--broker", "vps-broker", "--follow", "--home", r.laptopHome]
        let pipe = Pipe()
        follower.standardOutput = pipe
        try follower.run()
        FileManager.default.createFile(atPath: r.g.app + "/go", contents: nil)
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        follower.waitUntilExit()
        #expect(follower.terminationStatus == 0)
        #expect(text.contains("first words") && text.contains("last words") && text.contains("coder exited with status 0"), "\(text)")
    }

    /// A signed `logs` request sent to the release endpoint stops nothing: each endpoint takes its own operation.
    @Test func aControlRequestOnAnotherEndpointDoesNothing() throws {
        let r = try ServeTests.Remote(rule: ["sandbox: standard"], agent: "exec sleep 60")
        defer { r.serve.kill() }
        let pid = try ServeTests.Remote.pid(try r.spawn())
        let identity = try #require(ProcessIdentity.of(pid: pid))
        let now = SystemClock().now()
        let payload = ControlRequest(op: .logs, name: "coder", from: "mac-laptop", to: "vps-broker", iat: now, exp: now + 60).encoded()
        let envelope = Envelope.seal(payload, with: r.g.laptop.key, domain: .control)
        let vpsKey = try r.g.vps.loadIdentity().key.publicKey
        let answer = try r.serve.post("/v1/release", SealedBody.seal(envelope, to: vpsKey))
        #expect(answer.status == 200)
        let opened = try #require(try? SealedBody.open(answer.body, with: r.g.laptop.key).get())
        let receipt = try #require(try? Receipt.verify(opened, from: vpsKey, requestID: Sodium.sha256(payload).hex, kind: .control).get())
        #expect(receipt.reason == .malformed && receipt.detail.contains("takes 'release' requests"), "\(receipt.detail)")
        #expect(identity.isAlive, "the agent still runs")
        _ = Supervisor.stop(identity, grace: 0)
    }
}
