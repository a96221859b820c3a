import Foundation
import Testing
@testable import SpawnGate

/// Issue 25, class 3: a credential taken from whoever speaks first. Any local process can talk to the relay guard,
/// so the workspace key its mailbox registers with comes only from the operator (`RELAY_API_KEY`) or from traffic
/// the upstream accepted; two accepted keys take the mailbox offline instead of choosing. Against the Relaycast
/// stand-in (no broker is needed: the guard cannot tell a broker's requests from anyone else's, which is the point).
@Suite("Hostile seams: the mailbox's workspace key is never taken from whoever speaks first")
struct MailboxKeyTests {
    /// The stand-in alone, on loopback, stopped at the end.
    final class StandIn {
        let url: String
        let pid: pid_t
        init(_ dir: String) throws {
            let p = try RealRelay.start(["/usr/bin/env", "python3", RealRelay.interop + "/relaycast_standin.py", "--log", dir + "/standin.jsonl"],
                                        environment: ProcessInfo.processInfo.environment, cwd: dir, output: dir + "/standin")
            pid = p
            do {
                url = try RealRelay.waitFor("the stand-in's first line", within: 20) {
                    guard let text = try? String(contentsOfFile: dir + "/standin.out", encoding: .utf8),
                          let line = text.split(separator: "\n").first, line.hasPrefix("listening on ") else { return nil }
                    return String(line.dropFirst("listening on ".count))
                }
            } catch {
                RealRelay.kill(p, within: 5)
                throw error
            }
        }
        deinit { RealRelay.kill(pid, within: 5) }

        /// The workspace's key, as the upstream issues it (not through the guard).
        func workspaceKey() throws -> String {
            try #require(((try RealRelay.http("POST", url + "/v1/workspaces", json: ["name": "w"]).json as? [String: Any])?["data"] as? [String: Any])?["api_key"] as? String)
        }
        /// A second key the upstream accepts: someone else's valid key.
        func otherKey() throws -> String {
            try #require((try RealRelay.http("POST", url + "/_standin/keys", json: [String: Any]()).json as? [String: Any])?["api_key"] as? String)
        }
    }

    static func register(_ name: String, key: String, through guardURL: String) throws -> Int {
        try RealRelay.http("POST", guardURL + "/v1/agents", json: ["name": name, "type": "agent"], headers: ["Authorization": "Bearer \(key)"]).status
    }

    static func setUp(_ label: String, environment: [String: String] = [:]) throws -> (StandIn, GuardProcess, String) {
        let dir = TestSupport.tempDir(label)
        let standin = try StandIn(dir)
        _ = try TestSupport.makeHome("vps-broker", in: dir)
        var env = environment
        if env["RELAY_API_KEY"] == "standin" { env["RELAY_API_KEY"] = try standin.workspaceKey() }
        let guardProcess = try GuardProcess(home: dir + "/vps-broker", upstream: standin.url, environment: env)
        return (standin, guardProcess, dir)
    }

    /// A key presented first by another local process, and refused by the upstream, is not taken: the broker's key,
    /// once Relaycast accepts it, is. (Taken at first sight, the stranger's key locked the mailbox out for good.)
    @Test func aKeyMerelyPresentedIsNeverTaken() throws {
        let (standin, guardProcess, _) = try Self.setUp("mailbox-first")
        defer { guardProcess.stop() }
        #expect(try Self.register("mallory", key: "rk_live_mallory", through: guardProcess.url) == 401)
        _ = try? RealRelay.http("GET", guardProcess.url + "/v1/agents", headers: ["Authorization": "Bearer rk_live_mallory2"])
        let before = try guardProcess.health()
        #expect(before["mailbox"] as? String == "offline" && before["workspace_key"] as? String == "none yet", "\(before)")

        let key = try standin.workspaceKey()
        #expect(try Self.register("vps-broker", key: key, through: guardProcess.url) == 201)
        try guardProcess.waitForMailbox()
        #expect((try guardProcess.health()["workspace_key"] as? String)?.contains("accepted by Relaycast when the broker registered an agent") == true)
    }

    /// Two keys each accepted by the upstream, in either order (a stranger with a valid key of their own speaking
    /// first, or after the broker): the mailbox uses neither, says why, and refuses to carry requests.
    @Test(arguments: [true, false])
    func twoAcceptedKeysTakeTheMailboxOffline(strangerFirst: Bool) throws {
        let (standin, guardProcess, _) = try Self.setUp("mailbox-two")
        defer { guardProcess.stop() }
        let (broker, stranger) = (try standin.workspaceKey(), try standin.otherKey())
        for (name, key) in strangerFirst ? [("mallory", stranger), ("vps-broker", broker)] : [("vps-broker", broker), ("mallory", stranger)] {
            #expect(try Self.register(name, key: key, through: guardProcess.url) == 201)
        }
        let health = try RealRelay.waitFor("the mailbox to go offline", within: 10) {
            let h = try guardProcess.health()
            return h["mailbox"] as? String == "offline" && h["workspace_key"] as? String == "conflict" ? h : nil
        }
        #expect(health["workspace_key"] as? String == "conflict")
        let call = try RealRelay.http("POST", guardProcess.url + "/_spawngate/v1/relay?to=mac-laptop&op=agents&timeout=1&key=\(Base64.urlEncode(SigningKey.generate().publicKey.bytes))", json: [String: Any]())
        #expect(call.status == 503 && call.text.contains("two different workspace keys"), "\(call.text)")
        #expect(guardProcess.stderr.contains("RELAY_API_KEY"), "the guard's log says what to do")
    }

    /// The operator's key is never replaced by traffic, however valid.
    @Test func theOperatorsKeyIsNeverReplaced() throws {
        let (standin, guardProcess, _) = try Self.setUp("mailbox-configured", environment: ["RELAY_API_KEY": "standin"])
        defer { guardProcess.stop() }
        try guardProcess.waitForMailbox()
        #expect(try Self.register("mallory", key: try standin.otherKey(), through: guardProcess.url) == 201)
        #expect(try Self.register("mallory2", key: "rk_live_unknown", through: guardProcess.url) == 401)
        let health = try guardProcess.health()
        #expect(health["mailbox"] as? String == "online" && health["workspace_key"] as? String == "configured (RELAY_API_KEY)", "\(health)")
    }
}
