import Foundation
import Testing
@testable import SpawnGate

#if canImport(Glibc)
import Glibc
#endif

extension RealRelayTests {
/// Every surface reaches a `relay:` peer (issue 24): the command line, `spawngate mcp`, the dashboard and
/// `handoff`, each through this home's relay guard and the workspace only, with the real brokers (v6, v14) behind
/// both guards. Each gets the receipt the target signed, verified with its key; before, only `spawn --broker` knew
/// how to reach such a peer. Nested in RealRelayTests so it runs serially with the other real-broker suites.
@Suite("Every surface reaches a relay: peer")
struct RelayPeerSurfaceTests {
    @Test("MCP, dashboard and handoff reach a relay: peer through the workspace", arguments: RealRelay.Version.allCases)
    func everySurfaceReachesARelayPeer(_ version: RealRelay.Version) throws {
        let (g, relay, target) = try RelayGuardTests.vpsBehindItsGuard(version)
        defer { try? FileManager.default.removeItem(atPath: g.dir) }

        // The laptop: a relay guard with the workspace key (no broker, no serve), vps-broker as a relay: peer, and
        // a policy of its own that lets vps-broker hand work over to it (a local stand-in CLI, no relay worker).
        let laptopHome = Home(root: g.dir + "/mac-laptop")
        let laptopApp = g.dir + "/laptop-app"
        try FileManager.default.createDirectory(atPath: laptopApp, withIntermediateDirectories: true)
        let laptopCLI = g.dir + "/bin/laptop-claude"
        try "#!/bin/sh\nexec sleep 60\n".write(toFile: laptopCLI, atomically: true, encoding: .utf8)
        chmod(laptopCLI, 0o755)
        let vpsIdentity = try g.vps.loadIdentity()
        try laptopHome.keyStore.enroll(name: "vps-broker", key: vpsIdentity.key.publicKey, expected: vpsIdentity.key.publicKey.fingerprint)
        try """
            version: 1
            accept_remote_spawn: true
            clis:
              claude:
                path: \(laptopCLI)
                args: [[]]
            rules:
              - name: from-vps
                brokers: [vps-broker]
                clis: [claude]
                cwd: [\(laptopApp)/**]
                sandbox: none
            """.write(toFile: laptopHome.policyFile, atomically: true, encoding: .utf8)
        chmod(laptopHome.policyFile, 0o600)
        let laptop = try GuardProcess(home: laptopHome.root, upstream: relay.standinURL, environment: ["RELAY_API_KEY": try relay.workspaceKey()])
        defer {
            relay.stop()
            #expect(laptop.stop() == 0, "\(laptop.stderr)")
            #expect(target.stop() == 0, "\(target.stderr)")
        }
        #expect(try TestSupport.spawngate(try TestSupport.peerAdd("vps-broker", home: g.vps, url: "relay:vps-broker") + ["--home", laptopHome.root]).status == 0)
        #expect(try TestSupport.spawngate(try TestSupport.peerAdd("mac-laptop", home: laptopHome, url: "relay:mac-laptop") + ["--home", g.vps.root]).status == 0)
        try target.waitForMailbox()
        try laptop.waitForMailbox()

        // spawngate mcp, with PyPI's client of both lines: agent.add, agent.list and agent.remove on the relay: peer.
        for line in MCPClientLine.allCases {
            let name = "coder-mcp-\(line.rawValue)"
            let mcp = try MCPClient.run(home: laptopHome.root, line: line, [
                MCPClient.call("broker.list"),
                MCPClient.call("agent.add", ["name": name, "cli": "claude", "task": "Implement the plan", "cwd": relay.project, "broker": "vps-broker"]),
                MCPClient.call("agent.list", ["broker": "vps-broker"]),
                MCPClient.call("agent.remove", ["name": name, "broker": "vps-broker"]),
            ], extra: ["--timeout", "15"])
            let (listed, added, agents, removed) = (try ToolResult(mcp[0]), try ToolResult(mcp[1]), try ToolResult(mcp[2]), try ToolResult(mcp[3]))
            #expect(!listed.isError && listed.text.contains("vps-broker"), "\(line): \(listed.raw)")
            #expect(!added.isError && added.text.contains("receipt verified"), "\(line): \(added.raw)")
            #expect(!agents.isError && agents.text.contains(name), "\(line): \(agents.raw)")
            #expect(!removed.isError, "\(line): \(removed.raw)")
        }

        // The dashboard: the relay: peer answers in the state, and a spawn and a release through it.
        let d = try DashboardProcess(home: laptopHome.root)
        defer { d.kill() }
        let state = try d.send("GET", "/api/state")
        let row = (state.json["brokers"] as? [[String: Any]])?.first { $0["name"] as? String == "vps-broker" }
        #expect(row?["answers"] as? Bool == true, "\(state.body)")
        let spawned = try d.send("POST", "/api/spawn", body: String(decoding: try JSONSerialization.data(withJSONObject: [
            "broker": "vps-broker", "name": "coder-dash", "cli": "claude", "task": "Implement the plan", "cwd": relay.project]), as: UTF8.self))
        #expect(spawned.status == 200 && spawned.json["ok"] as? Bool == true, "\(spawned.body) \(d.stderr)")
        let released = try d.send("POST", "/api/release", body: #"{"broker":"vps-broker","name":"coder-dash"}"#)
        #expect(released.status == 200 && released.json["ok"] as? Bool == true, "\(released.body)")
        // The page itself, in headless Chromium: the relay: peer in the Spawn dialog's selector, a spawn through it,
        // the agent listed from the peer's signed listing, and its Release button.
        let running = "tr[data-broker=\"vps-broker\"][data-agent=\"coder-page\"][data-state=\"running\"]"
        let page = try Browser.run(d.url, [
            Browser.wait("[...document.querySelectorAll('#spawn-broker option')].some(o => o.value === 'vps-broker')", 40),
            Browser.eval("""
                (() => {
                  document.getElementById('spawn-open').click();
                  const select = document.getElementById('spawn-broker');
                  select.value = 'vps-broker';
                  select.dispatchEvent(new Event('change'));
                  document.getElementById('spawn-name').value = 'coder-page';
                  document.getElementById('spawn-cli').value = 'claude';
                  document.getElementById('spawn-task').value = 'Implement the plan';
                  document.getElementById('spawn-cwd').value = \(String(decoding: try JSONSerialization.data(withJSONObject: [relay.project]), as: UTF8.self))[0];
                  document.getElementById('spawn-submit').click();
                  return select.value;
                })()
                """),
            Browser.wait("(r => r.className !== 'dim' && r.textContent)(document.getElementById('spawn-result'))", 60),
            Browser.wait("(r => r && r.textContent)(document.querySelector('\(running)'))", 60),
            Browser.eval("document.getElementById('spawn-cancel').click(); document.querySelector('\(running) button.release').click(); true"),
            Browser.wait("!document.querySelector('\(running)') && document.getElementById('message').textContent", 60),
        ])
        // Six steps, then the driver's report of console errors (none).
        #expect(page.count == 7 && (page[1] as? String) == "vps-broker", "\(page)")
        #expect(((page.last as? [String: Any])?["problems"] as? [Any])?.isEmpty == true, "\(page)")
        #expect((page[2] as? String)?.hasPrefix("started coder-page on vps-broker: pid ") == true && (page[2] as? String)?.hasSuffix("(receipt verified)") == true, "\(page)")
        #expect(page[5] as? String == "released coder-page on vps-broker (receipt verified)", "\(page)")

        // The command line, then handoff: vps-broker moves the agent the laptop started there back to the laptop,
        // whose guard decides it with its own policy; the relay worker there stops only once the laptop's signed
        // listing shows the new agent running.
        let out = try TestSupport.spawngate(["spawn", "coder", "claude", "Implement the plan", "--broker", "vps-broker", "--cwd", relay.project,
                                             "--timeout", "60", "--home", laptopHome.root])
        #expect(out.status == 0 && out.stdout.contains("receipt verified with vps-broker's key"), "\(out.stdout) \(out.stderr)")
        let moved = try TestSupport.spawngate(["handoff", "coder", "--broker", "mac-laptop", "--cwd", laptopApp, "--force", "--home", g.vps.root])
        #expect(moved.status == 0 && moved.stdout.contains("receipt verified with mac-laptop's key, seen running there"), "\(moved.stdout) \(moved.stderr)")
        let here = try AgentService.local(laptopHome).running()
        #expect(here.contains { $0.name == "coder" && $0.cwd == laptopApp && $0.broker == "vps-broker" }, "\(here)")
        _ = try AgentService.local(laptopHome).release(name: "coder", broker: "vps-broker")
    }
}
}
