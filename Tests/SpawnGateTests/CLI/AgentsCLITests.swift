import Foundation
import Testing
@testable import SpawnGate

/// `agents` and `release` against agents that real `spawngate exec` processes started.
@Suite("Agents and release")
struct AgentsCLITests {
    /// Starts `spawngate exec --log` on a fresh envelope in the background and waits until `agents` lists it.
    static func startAgent(_ g: Gateway) throws -> (exec: Process, agent: [String: Any]) {
        let file = g.dir + "/req-\(UUID().uuidString).json"
        try DecisionCLITests.write(g.envelope(), file)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: TestSupport.binary)
        p.arguments = ["exec", "--log", "--home", g.vps.root, file]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        // Waits for a state change, not for time: the agent is listed once exec has recorded it.
        for _ in 0..<500 {
            if let first = try listed(g).first { return (p, first) }
            usleep(10_000)
        }
        p.terminate()
        throw GatewayFailure("exec never listed its agent")
    }

    static func listed(_ g: Gateway) throws -> [[String: Any]] {
        let out = try g.cli(["agents", "--json"])
        return try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [[String: Any]], "\(out.stdout) \(out.stderr)")
    }

    /// The listing names the agent's broker, CLI, cwd, process and profile; `release` stops its whole group, with
    /// SIGKILL when it ignores SIGTERM, and frees its concurrency slot.
    @Test func listAndReleaseAnAgentThatIgnoresTerm() throws {
        let g = try DecisionCLITests.live(["max_concurrent: 1", "sandbox: standard"])
        try g.script("""
            sh -c 'trap "" TERM; exec sleep 60.125' &
            trap "" TERM
            sleep 60
            """)
        let (exec, agent) = try Self.startAgent(g)
        #expect(agent["name"] as? String == "coder")
        #expect(agent["broker"] as? String == "mac-laptop")
        #expect(agent["cli"] as? String == "claude")
        #expect(agent["cwd"] as? String == g.app)
        #expect(agent["sandbox"] as? String == "standard")
        let pid = try #require(agent["pid"] as? Int)
        #expect(ProcessIdentity.of(pid: Int32(pid)) != nil)
        let table = try g.cli(["agents"]).stdout
        #expect(table.hasPrefix("NAME") && table.contains("coder") && table.contains(String(pid)), "\(table)")
        #expect(try g.check(g.envelope()).decision["reason"] as? String == "concurrency_limit", "the running agent holds the slot")

        let released = try g.cli(["release", "coder", "--grace", "0.3"])
        #expect(released.status == 0, "\(released.stderr)")
        #expect(released.stdout == "released coder (pid \(pid))\n")
        exec.waitUntilExit()
        #expect(exec.terminationStatus == 128 + SIGKILL, "TERM was ignored, so KILL ended it")
        #expect(TestSupport.gone("sleep 60.125"), "the whole agent is gone")
        let after = try g.cli(["agents"]).stdout
        #expect(after.contains("coder") && after.contains("exited 137"), "listed as exited, killed: \(after)")
        #expect(try Self.listed(g).allSatisfy { $0["state"] as? String == "exited" })
        #expect(try g.check(g.envelope()).status == 0, "the slot is free again")

        let again = try g.cli(["release", "coder"])
        #expect(again.status == 1)
        #expect(again.stderr.contains("no running agent is named 'coder'"), "\(again.stderr)")
    }

    /// The gateway process dies (SIGKILL) while its agent runs: the agent keeps running and is still listed and
    /// releasable; once the agent is gone too, the next listing forgets it and frees its slot.
    @Test func agentsOutliveAGatewayCrashAndAreReconciledLater() throws {
        let g = try DecisionCLITests.live(["max_concurrent: 1", "sandbox: none"])
        try g.script("exec sleep 60")
        let (exec, agent) = try Self.startAgent(g)
        kill(exec.processIdentifier, SIGKILL)
        exec.waitUntilExit()
        let pid = Int32(try #require(agent["pid"] as? Int))
        #expect(try Self.listed(g).count == 1, "the agent outlives the gateway process")
        #expect(try g.check(g.envelope()).decision["reason"] as? String == "concurrency_limit")

        kill(-pid, SIGKILL)
        for _ in 0..<500 where ProcessIdentity.of(pid: pid) != nil { usleep(10_000) }
        let gone = try Self.listed(g)
        #expect(gone.count == 1 && gone[0]["state"] as? String == "exited" && gone[0]["exit_status"] is NSNull,
                "a dead agent is marked exited, its status unknown (no gateway watched it): \(gone)")
        #expect(try g.check(g.envelope()).status == 0, "and its slot freed")
    }
}
