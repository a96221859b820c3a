import Foundation
import Testing
@testable import SpawnGate
#if canImport(Glibc)
import Glibc
#endif

/// Grants and approval across real processes (issue 28): `spawn` held by a real `serve`, settled with `approvals`,
/// `approve`, `deny` on its socket and with the dashboard's buttons in headless Chromium; an MCP session of the
/// reference client under a narrow grant, refused locally outside it and checked by the target inside it.
@Suite("Grants and approval across real processes")
struct GrantEndToEndTests {
    typealias Remote = ServeTests.Remote

    /// vps-broker's `serve` with its socket, under a rule that says `approve: required`.
    struct Held {
        let r: Remote
        let socket: String

        init(rule: [String] = ["max_concurrent: 2", "sandbox: standard", "approve: required"]) throws {
            let socket = TestSupport.tempDir("held") + "/gate.sock"
            self.socket = socket
            r = try Remote(rule: rule, serveArgs: ["--socket", socket])
            try Remote.eventually("the socket listens") {
                (try? HTTPClient.exchange(.unix(path: socket), method: "GET", path: "/healthz", timeout: 1)) != nil
            }
        }

        /// A command on the target's machine, as its operator runs it.
        func vps(_ args: [String]) throws -> TestSupport.Output {
            try TestSupport.spawngate(args + ["--home", r.g.vps.root])
        }

        func spawn(_ name: String, _ extra: [String] = []) throws -> TestSupport.Output {
            try r.laptop(["spawn", name, "claude", "Implement the plan", "--broker", "vps-broker", "--cwd", r.g.app] + extra)
        }

        /// The approval id `spawn` printed for a held request.
        static func id(_ out: TestSupport.Output) throws -> String {
            let m = try #require(out.stdout.firstMatch(of: /held by vps-broker for approval as ([0-9a-f]{16})/), "\(out.stdout) \(out.stderr)")
            return String(m.1)
        }

        func approvals() throws -> [[String: Any]] {
            let out = try vps(["approvals", "--json"])
            return try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [[String: Any]], "\(out.stdout) \(out.stderr)")
        }

        /// The target's audit lines for one held request, in order.
        func audited(_ id: String) throws -> [[String: Any]] {
            try r.g.auditLines().filter { $0["approval"] as? String == id }
        }
    }

    /// The story with the CLI: the spawn is held (exit 3, nothing runs), listed, approved once (it starts, and a
    /// second approval changes nothing); another is denied and never starts; each step is one audit line.
    @Test func aHeldSpawnStartsOnlyAfterApproveAndADeniedOneNever() throws {
        let h = try Held()
        defer { h.r.serve.kill() }
        let held = try h.spawn("coder")
        #expect(held.status == 3, "held is neither allowed nor denied: \(held.stdout) \(held.stderr)")
        let id = try Held.id(held)
        #expect(try h.r.listed().isEmpty, "nothing starts before a person approves")
        let listed = try h.approvals()
        #expect(listed.count == 1 && listed.first?["id"] as? String == id && listed.first?["state"] as? String == "pending", "\(listed)")
        #expect(listed.first?["broker"] as? String == "mac-laptop" && listed.first?["rule"] as? String == "laptop-app")

        let approved = try h.vps(["approve", id, "--socket", h.socket])
        #expect(approved.status == 0, "\(approved.stdout) \(approved.stderr) \(h.r.serve.stderr)")
        #expect(approved.stdout.hasPrefix("approved \(id): started, pid "), "\(approved.stdout)")
        let pid = try #require(Int32(approved.stdout.dropFirst("approved \(id): started, pid ".count).prefix { $0.isNumber }))
        let identity = try #require(ProcessIdentity.of(pid: pid), "the approved agent runs")
        let running = try h.r.running()
        #expect(running.count == 1 && running.first?["pid"] as? Int == Int(pid) && (running.first?["request_id"] as? String)?.hasPrefix(id) == true,
                "the requester sees it in its signed list under its request: \(running)")
        let again = try h.vps(["approve", id, "--socket", h.socket])
        #expect(again.status == 1 && again.stderr.contains("no longer waiting: it was approved"), "settled once: \(again.stdout) \(again.stderr)")
        #expect(try h.r.running().count == 1, "a second approval starts nothing")
        #expect(try h.audited(id).map { $0["decision"] as? String } == ["pending", "allow"])
        #expect(try h.audited(id).last?["detail"] as? String ?? "" != "")

        let other = try h.spawn("reviewer")
        let second = try Held.id(other)
        let denied = try h.vps(["deny", second, "--socket", h.socket])
        #expect(denied.status == 0 && denied.stdout.hasPrefix("denied \(second)"), "\(denied.stdout) \(denied.stderr)")
        let late = try h.vps(["approve", second, "--socket", h.socket])
        #expect(late.status == 1, "a denied request cannot be approved afterwards: \(late.stdout)")
        #expect(try h.r.running().count == 1, "the denied request never started")
        #expect(try h.audited(second).map { $0["reason"] as? String } == ["approval_pending", "approval_denied"])
        #expect(try h.approvals().first { $0["id"] as? String == second }?["state"] as? String == "denied")
        _ = identity
    }

    /// `spawn --wait` waits for the approval and reports the agent once the target lists it.
    @Test func spawnWaitsForTheApproval() throws {
        let h = try Held()
        defer { h.r.serve.kill() }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: TestSupport.binary)
        p.arguments = ["spawn", "coder", "claude", "Implement the plan", "--broker", "vps-broker", "--cwd", h.r.g.app,
                       "--wait", "30", "--home", h.r.laptopHome]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) }; p.waitUntilExit() }
        var id: String?
        try Remote.eventually("the request is held") {
            id = try h.approvals().first?["id"] as? String
            return id != nil
        }
        let approved = try h.vps(["approve", try #require(id), "--socket", h.socket])
        #expect(approved.status == 0, "\(approved.stdout) \(approved.stderr)")
        p.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationStatus == 0, "\(text)")
        #expect(text.contains("held by vps-broker for approval as \(id!)") && text.contains("approved: coder runs on vps-broker, pid "), "\(text)")
    }

    /// The dashboard on the target shows the held request and starts it with its Approve button.
    @Test func theDashboardShowsAndApprovesAHeldRequest() throws {
        let h = try Held()
        defer { h.r.serve.kill() }
        let id = try Held.id(try h.spawn("coder"))
        let d = try DashboardProcess(home: h.r.g.vps.root, ["--socket", h.socket])
        defer { d.kill() }
        let row = "#approvals tr[data-approval=\"\(id)\"]"
        let out = try Browser.run(d.url, [
            Browser.wait("(r => r && r.dataset.state === 'pending' && r.querySelector('button.approve'))(document.querySelector('\(row)'))"),
            Browser.eval("document.querySelector('\(row)').textContent"),
            Browser.eval("document.querySelector('\(row) button.approve').click(); true"),
            Browser.wait("document.getElementById('message').textContent.startsWith('approved ') && document.getElementById('message').textContent"),
            Browser.wait("(r => r && r.dataset.state === 'approved' && !r.querySelector('button'))(document.querySelector('\(row)'))"),
        ])
        try #require(out.count == 6, "\(out)")
        let shown = out[1] as? String ?? "\(out[1])"
        #expect(shown.contains("mac-laptop") && shown.contains("coder") && shown.contains("laptop-app") && shown.contains(h.r.g.app), "\(shown)")
        let message = out[3] as? String ?? "\(out[3])"
        #expect(message.hasPrefix("approved \(id): started, pid "), "\(message) \(d.stderr)")
        #expect(out[4] as? Bool == true, "the row shows it approved, without buttons: \(out[4])")
        let problems = ((out[5] as? [String: Any])?["problems"] as? [String]) ?? []
        #expect(problems.isEmpty, "the page logged errors: \(problems)")
        let running = try h.r.running()
        #expect(running.count == 1 && running.first?["name"] as? String == "coder", "\(running)")
        // Approved by the dashboard's user, as the kernel named it on the socket.
        #expect(try h.audited(id).last?["decision"] as? String == "allow")
    }

    /// An MCP session under a narrow grant: each dimension outside it is refused in the session (a tool error
    /// starting with the reason code; nothing reaches the target's audit log), the one request inside it starts
    /// with the grant in its receipt and the target's audit line, its max is spent, and the tools that act on
    /// running agents are refused.
    @Test(arguments: MCPClientLine.allCases)
    func anMCPSessionUnderANarrowGrant(line: MCPClientLine) throws {
        let r = try Remote()
        defer { r.serve.kill() }
        let sub = r.g.app + "/sub"
        try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
        // A second peer the broker may use, which the grant does not name (never reached: refused before signing).
        let (mini, _) = try TestSupport.makeHome("mini-pc", in: r.g.dir)
        let peer = try r.laptop(try TestSupport.peerAdd("mini-pc", home: mini, url: r.serve.url))
        #expect(peer.status == 0, "\(peer.stderr)")
        let added = try r.laptop(["grant", "add", "fixer", "--broker", "vps-broker", "--cli", "claude", "--cwd", sub + "/**",
                                  "--arg-shape=--model opus", "--max", "1", "--ttl", "1h"])
        #expect(added.status == 0, "\(added.stdout) \(added.stderr)")
        let before = try r.g.auditLines().count

        func add(_ extra: [String: Any]) -> [String: Any] {
            MCPClient.call("agent.add", ["name": "coder", "cli": "claude", "task": "Implement the plan", "broker": "vps-broker",
                                         "cwd": sub, "args": ["--model", "opus"]].merging(extra) { $1 })
        }
        let out = try MCPClient.run(home: r.laptopHome, line: line, [
            add(["cli": "codex"]),
            add(["cwd": r.g.app]),
            add(["args": ["--model", "sonnet"]]),
            add(["broker": "mini-pc"]),
            add([:]),
            add(["name": "second"]),
            MCPClient.call("agent.remove", ["name": "coder", "broker": "vps-broker"]),
            MCPClient.call("agent.handoff", ["name": "coder", "broker": "mini-pc"]),
        ], extra: ["--grant", "fixer"])
        try #require(out.count == 8, "\(out)")
        for (i, what) in ["cli", "cwd", "args", "target"].enumerated() {
            let refused = try ToolResult(out[i])
            #expect(refused.isError && refused.text.hasPrefix("grant_exceeded: "), "\(line) \(what): \(refused.text)")
            #expect(refused.text.contains("before anything was signed or sent"), "\(refused.text)")
        }
        let inside = try ToolResult(out[4])
        #expect(!inside.isError && inside.text.hasPrefix("started coder on vps-broker: pid "), "\(line): \(inside.text) \(r.serve.stderr)")
        let grant = try #require(inside.structured["grant"] as? String, "the verified receipt names the grant: \(inside.structured)")
        let spent = try ToolResult(out[5])
        #expect(spent.isError && spent.text.hasPrefix("grant_exceeded: ") && spent.text.contains("its max"), "\(spent.text)")
        for i in [6, 7] {
            let refused = try ToolResult(out[i])
            #expect(refused.isError && refused.text.hasPrefix("grant_exceeded: "), "\(refused.text)")
        }
        // The target saw exactly one request, the one inside the grant, and recorded the grant it was made under.
        let lines = try r.g.auditLines().dropFirst(before)
        #expect(lines.count == 1 && lines.first?["decision"] as? String == "allow" && lines.first?["grant"] as? String == grant, "\(Array(lines))")
        #expect(try r.running().count == 1)
    }
}
