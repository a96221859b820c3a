import Foundation
import Testing
@testable import SpawnGate
#if canImport(Glibc)
import Glibc
#endif

/// `spawngate handoff` between two real gateways: the laptop starts `coder` on vps-broker; vps-broker's operator
/// moves it to mini-pc (a second `spawngate serve`, which enrolled vps-broker's key).
@Suite("handoff between two gateways")
struct HandoffTests {
    struct Mesh {
        let r: ServeTests.Remote
        let mini: Home
        let miniServe: ServeProcess
        var g: Gateway { r.g }

        /// `rule` lines go into mini-pc's rule for vps-broker; `cli` is the program mini-pc runs as claude.
        init(rule: [String] = ["cwd: [APP/**]"], cli: String? = nil) throws {
            r = try ServeTests.Remote()
            let g = r.g
            (mini, _) = try TestSupport.makeHome("mini-pc", in: g.dir)
            let vps = try g.vps.loadIdentity()
            try mini.keyStore.enroll(name: "vps-broker", key: vps.key.publicKey, expected: vps.key.publicKey.fingerprint)
            try """
                version: 1
                accept_remote_spawn: true
                clis:
                  claude:
                    path: \(cli ?? g.claude)
                    args: [[], ["--model", "sonnet|opus"]]
                rules:
                  - name: vps-app
                    brokers: [vps-broker]
                    clis: [claude]
                    sandbox: standard
                \(rule.map { "    " + $0.replacingOccurrences(of: "APP", with: g.app) }.joined(separator: "\n"))
                """.write(toFile: mini.policyFile, atomically: true, encoding: .utf8)
            chmod(mini.policyFile, 0o600)
            miniServe = try ServeProcess(home: mini)
            let added = try g.cli(try TestSupport.peerAdd("mini-pc", home: mini, url: miniServe.url))
            #expect(added.status == 0, "\(added.stderr)")
            // A clean git worktree as the agent's cwd.
            try Self.git(g.app, ["init", "-q"])
            try "plan\n".write(toFile: g.app + "/PLAN.md", atomically: true, encoding: .utf8)
            try Self.git(g.app, ["add", "PLAN.md"])
            try Self.git(g.app, ["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "plan"])
        }

        func stop() { r.serve.kill(); miniServe.kill() }

        static func git(_ dir: String, _ args: [String]) throws {
            let out = try TestSupport.run("/usr/bin/git", ["-C", dir] + args)
            try #require(out.status == 0, "git \(args): \(out.stderr)")
        }

        /// The laptop starts coder on vps-broker; returns its pid there.
        func startOnVPS() throws -> Int32 {
            let out = try r.spawn(["--arg", "--model", "--arg", "opus"])
            try #require(out.status == 0, "\(out.stdout) \(out.stderr) \(r.serve.stderr)")
            return try ServeTests.Remote.pid(out)
        }

        func handoff(_ extra: [String] = []) throws -> TestSupport.Output {
            try g.cli(["handoff", "coder", "--broker", "mini-pc"] + extra)
        }

        /// vps-broker's agents on mini-pc, as its signed listing shows them.
        func onMini() throws -> [[String: Any]] {
            let out = try g.cli(["agents", "--broker", "mini-pc", "--json"])
            return try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [[String: Any]], "\(out.stderr)")
        }

        func runningHere() throws -> [AgentRecord] { try AgentService.local(g.vps).running() }
    }

    @Test func movesTheTaskAndStopsTheAgentHere() throws {
        let m = try Mesh()
        defer { m.stop() }
        let pid = try m.startOnVPS()
        let local = try #require(ProcessIdentity.of(pid: pid))
        let out = try m.handoff()
        #expect(out.status == 0, "\(out.stdout) \(out.stderr) \(m.miniServe.stderr)")
        #expect(out.stdout.contains("started coder on mini-pc in \(m.g.app): pid ") && out.stdout.contains("seen running there"), "\(out.stdout)")
        #expect(out.stdout.contains("stopped coder here (pid \(pid))"), "\(out.stdout)")
        #expect(!local.isAlive, "the local agent is gone")
        #expect(try m.runningHere().isEmpty)
        let there = try m.onMini()
        #expect(there.count == 1 && there.first?["name"] as? String == "coder" && there.first?["state"] as? String == "running", "\(there)")
        let remotePid = try #require(there.first?["pid"] as? Int)
        #expect(ProcessIdentity.of(pid: Int32(remotePid)) != nil)

        // The same task and arguments, now requested by vps-broker (as signed by it and verified by mini-pc).
        let store = try StateStore.open(m.mini.stateDB)
        let record = try #require(try store.runningAgents().first)
        let payload = try #require(try store.requestPayload(of: record.requestID))
        let request = try SpawnRequest.parse(payload).get()
        #expect(request.task == "Implement the plan" && request.args == ["--model", "opus"] && request.cwd == m.g.app)
        #expect(request.from == "vps-broker" && request.to == "mini-pc")
        #expect(try m.g.cli(["release", "coder", "--broker", "mini-pc"]).status == 0)
    }

    /// A start that mini-pc denies leaves the agent running here, with the target's signed reason.
    @Test func deniedStartLeavesTheLocalAgentRunning() throws {
        let m = try Mesh(rule: ["cwd: [/nonexistent/**]"])
        defer { m.stop() }
        let pid = try m.startOnVPS()
        let out = try m.handoff()
        #expect(out.status == 1, "\(out.stdout) \(out.stderr)")
        #expect(out.stdout.hasPrefix("not moved to mini-pc: cwd_not_allowed: ") && out.stdout.contains("keeps running here"), "\(out.stdout) \(out.stderr)")
        #expect(ProcessIdentity.of(pid: pid) != nil, "the local agent still runs")
        #expect(try m.runningHere().map(\.name) == ["coder"])
        #expect(try m.onMini().isEmpty)

        // The same through the MCP tool: a tool error starting with the reason code.
        let result = try ToolResult(try MCPClient.run(home: m.g.vps.root, [MCPClient.call("agent.handoff", ["name": "coder", "broker": "mini-pc"])])[0])
        #expect(result.isError && result.text.hasPrefix("cwd_not_allowed: ") && result.text.contains("keeps running here"), "\(result.text)")
        #expect(ProcessIdentity.of(pid: pid) != nil)
    }

    /// A receipt that verifies is not enough: an agent that is not seen running on the target (here a CLI that
    /// exits 0 at once, which the target reports as started) leaves the local one running.
    @Test func agentNotSeenRunningThereLeavesTheLocalAgentRunning() throws {
        let dir = TestSupport.tempDir("quick")
        try "#!/bin/sh\nexit 0\n".write(toFile: dir + "/quick", atomically: true, encoding: .utf8)
        chmod(dir + "/quick", 0o755)
        let m = try Mesh(rule: ["cwd: [APP/**]"], cli: dir + "/quick")
        defer { m.stop() }
        let pid = try m.startOnVPS()
        let out = try m.handoff(["--timeout", "2"])
        #expect(out.status == 1, "\(out.stdout) \(out.stderr)")
        #expect(out.stdout.contains("receipt verified) but is not seen running there") && out.stdout.contains("keeps running here"), "\(out.stdout) \(out.stderr)")
        #expect(ProcessIdentity.of(pid: pid) != nil, "the local agent still runs")
    }

    @Test func uncommittedChangesRefuseWithoutForce() throws {
        let m = try Mesh()
        defer { m.stop() }
        let pid = try m.startOnVPS()
        try "half done\n".write(toFile: m.g.app + "/notes.txt", atomically: true, encoding: .utf8)
        let refused = try m.handoff()
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("has uncommitted changes (?? notes.txt)") && refused.stderr.contains("they do not move") && refused.stderr.contains("never copies a tree"), "\(refused.stderr)")
        let nothingThere = try m.onMini().isEmpty
        #expect(ProcessIdentity.of(pid: pid) != nil && nothingThere, "nothing was sent")

        // Not a git worktree at all: nothing can be said about what would be left behind, so the same.
        try FileManager.default.removeItem(atPath: m.g.app + "/.git")
        let unknown = try m.handoff()
        #expect(unknown.status == 1 && unknown.stderr.contains("is not in a git repository") && unknown.stderr.contains("--force"), "\(unknown.stderr)")

        let forced = try m.handoff(["--force"])
        #expect(forced.status == 0, "\(forced.stdout) \(forced.stderr)")
        #expect(ProcessIdentity.of(pid: pid) == nil, "moved, and stopped here")
        #expect(FileManager.default.fileExists(atPath: m.g.app + "/notes.txt"), "no file was touched")
    }

    /// T60: the cwd is the agent's; its repository's config and attributes are what the agent wrote. The status
    /// check must run none of the commands they name (fsmonitor, a clean filter), which plain `git status` runs.
    @Test func gitCheckRunsNothingTheAgentPlanted() throws {
        let dir = TestSupport.tempDir("git")
        let repo = dir + "/repo"
        try FileManager.default.createDirectory(atPath: repo, withIntermediateDirectories: true)
        try Mesh.git(repo, ["init", "-q"])
        try "data\n".write(toFile: repo + "/file.txt", atomically: true, encoding: .utf8)
        try "* filter=evil\n".write(toFile: repo + "/.gitattributes", atomically: true, encoding: .utf8)
        try Mesh.git(repo, ["add", "."])
        try Mesh.git(repo, ["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "x"])
        // Planted after the commit, as an agent would.
        try Mesh.git(repo, ["config", "core.fsmonitor", "touch \(dir)/fsmonitor-ran; false"])
        try Mesh.git(repo, ["config", "filter.evil.clean", "touch \(dir)/filter-ran; cat"])
        try Mesh.git(repo, ["config", "filter.evil.required", "true"])
        // Make the index's stat data stale so status must read (and so filter) the file.
        var times = [timespec(tv_sec: 1_000_000_000, tv_nsec: 0), timespec(tv_sec: 1_000_000_000, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, repo + "/file.txt", &times, 0) == 0)

        #expect(GitWorktree.status(repo) == .clean)
        #expect(!FileManager.default.fileExists(atPath: dir + "/fsmonitor-ran"), "fsmonitor ran")
        #expect(!FileManager.default.fileExists(atPath: dir + "/filter-ran"), "the clean filter ran")

        // The control: plain git status runs both.
        _ = try TestSupport.run("/usr/bin/git", ["-C", repo, "status", "--porcelain"])
        #expect(FileManager.default.fileExists(atPath: dir + "/fsmonitor-ran") && FileManager.default.fileExists(atPath: dir + "/filter-ran"),
                "the setup would have run them")
    }
}
