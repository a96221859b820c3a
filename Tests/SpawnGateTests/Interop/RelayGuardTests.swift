import Foundation
import Testing
@testable import SpawnGate

#if canImport(Glibc)
import Glibc
#endif

extension RealRelayTests {
/// The guard as a process, with the real brokers and the Relaycast stand-in. Nested in RealRelayTests so that it
/// runs serially with it (its traits apply here too): two cores cannot run three suites of real brokers at once
/// and still meet the brokers' start-up windows.
@Suite("Relay guard: real brokers, the workspace, TLS")
struct RelayGuardTests {
    /// vps-broker's side of the workspace story: a relay-worker rule (sandbox standard) for the broker's project, the
    /// probe as `claude`, and the real broker (v6 or v14) behind vps-broker's relay guard, whose policy has reloaded.
    static func vpsBehindItsGuard(_ version: RealRelay.Version) throws -> (Gateway, RealRelay, GuardProcess) {
        let g = try Gateway(rule: ["spawner: agent-relay", "sandbox: standard"], now: SystemClock().now(), base: "/var/tmp")
        let probe = g.dir + "/bin/relay-probe.sh"
        try FileManager.default.copyItem(atPath: RealRelay.probe, toPath: probe)
        chmod(probe, 0o755)
        try g.script("exec \(probe) \"$@\"")
        var vpsGuard: GuardProcess?
        let relay = try RealRelay(version, via: { standin in
            let guardProcess = try GuardProcess(home: g.vps.root, upstream: standin)
            vpsGuard = guardProcess
            return guardProcess.url
        })
        let target = try #require(vpsGuard)
        let policy = try String(contentsOfFile: g.vps.policyFile, encoding: .utf8)
        try policy.replacingOccurrences(of: "\(g.app)/**", with: "\(relay.project)/**").write(toFile: g.vps.policyFile, atomically: true, encoding: .utf8)
        _ = try RealRelay.waitFor("the guard to reload the policy", within: 10) { target.stderr.contains("policy loaded") ? true : nil }
        return (g, relay, target)
    }

    /// The user's story over the workspace only: the VPS runs its broker behind its relay guard and no `serve`
    /// (no HTTP port); the laptop runs a relay guard (with the workspace key) and `spawn --broker vps-broker` to
    /// a peer whose url is `relay:vps-broker`. The VPS decides through the one pipeline and starts a sandboxed relay
    /// worker through the one start path; the receipt comes back the same way and verifies. A replay of the
    /// captured request, and a message that is not a sealed request, are audited denials.
    @Test("spawn --broker to a relay: peer starts a relay worker through the workspace only", arguments: RealRelay.Version.allCases)
    func remoteSpawnOverTheWorkspace(_ version: RealRelay.Version) throws {
        let (g, relay, target) = try Self.vpsBehindItsGuard(version)
        defer { try? FileManager.default.removeItem(atPath: g.dir) }
        let laptopHome = g.dir + "/mac-laptop"
        let laptop = try GuardProcess(home: laptopHome, upstream: relay.standinURL, environment: ["RELAY_API_KEY": try relay.workspaceKey()])
        defer {
            relay.stop()
            #expect(laptop.stop() == 0, "\(laptop.stderr)")
            #expect(target.stop() == 0, "\(target.stderr)")
        }
        let added = try TestSupport.spawngate(try TestSupport.peerAdd("vps-broker", home: g.vps, url: "relay:vps-broker") + ["--home", laptopHome])
        #expect(added.status == 0, "\(added.stderr)")
        try target.waitForMailbox()
        try laptop.waitForMailbox()

        let out = try TestSupport.spawngate(["spawn", "coder", "claude", "Implement the plan", "--broker", "vps-broker", "--cwd", relay.project,
                                             "--timeout", "60", "--home", laptopHome])
        #expect(out.status == 0, "\(out.stdout) \(out.stderr)")
        #expect(out.stdout.contains("started coder on vps-broker as an Agent Relay worker: pid ") && out.stdout.contains("landlock"), "\(out.stdout)")
        #expect(out.stdout.contains("receipt verified with vps-broker's key"), "\(out.stdout)")
        let record = try RealRelay.waitFor("the probe's records", within: 20) {
            ((try? FileManager.default.contentsOfDirectory(atPath: relay.project + "/.probe")) ?? []).first.map { RealRelay.ProbeRecord(dir: relay.project + "/.probe/" + $0) }
        }
        _ = try RealRelay.waitFor("the broker to type the task", within: 45) { record.input.contains("Implement the plan") ? true : nil }
        #expect(record.argv == [], "exactly the approved argv: \(record.argv ?? ["?"])")

        // Only the workspace carried it: the request and the answer are direct messages between the two mailboxes,
        // each one sealed box.
        let dms = try relay.directMessages()
        let request = try #require(dms.first { $0.to == "spawngate-vps-broker" && $0.from == "spawngate-mac-laptop" && $0.text.hasPrefix("spawngate-v2 ") })
        #expect(dms.contains { $0.to == "spawngate-mac-laptop" && $0.from == "spawngate-vps-broker" && $0.text.hasPrefix("spawngate-v2 ") })
        #expect(!request.text.contains("Implement the plan") && !request.text.contains("spawn "), "the request is sealed to the target's key")
        if version == .v6 {
            // The broker's workspace stream carries every DM: the guard withholds spawngate's and records it.
            try target.waitForAudit("denied_by_rule", containing: "withheld from the broker")
        }

        // The captured message posted again by its sender (a retry): the same answer again, no second decision.
        try relay.postMessage(from: "spawngate-mac-laptop", to: "spawngate-vps-broker", text: request.text)
        _ = try RealRelay.waitFor("the retry to be answered again", within: 20) {
            ((try target.health()["stats"] as? [String: Any])?["duplicates"] as? Int ?? 0) >= 1 ? true : nil
        }
        // Posted by someone else with the workspace key: a new request as far as the mailbox knows, and the
        // pipeline refuses the replayed envelope; nothing new starts.
        try relay.postMessage(from: "mallory", to: "spawngate-vps-broker", text: request.text)
        try target.waitForAudit("replay", containing: "was already accepted")
        // Messages that are not valid sealed requests: audited denials, and the guard carries on.
        try relay.postMessage(from: "mallory", to: "spawngate-vps-broker", text: "spawngate-v2 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        try target.waitForAudit("malformed", containing: "does not open")
        try relay.postMessage(from: "mallory", to: "spawngate-vps-broker", text: "spawngate-v1 request vps-broker abcdef0123456789 spawn {}")
        try target.waitForAudit("malformed", containing: "another version")
        #expect(target.running && laptop.running)
        let spawned = try RealRelay.http("GET", relay.url + "/api/spawned", headers: ["X-API-Key": relay.apiKey])
        #expect(spawned.text.components(separatedBy: "\"coder\"").count == 2, "one worker only: \(spawned.text)")

        // doctor on the VPS: the broker is behind this home's guard.
        let doctor = try TestSupport.run(TestSupport.binary, ["doctor", "--home", g.vps.root])
        #expect(doctor.stdout.contains("relay guard: the broker is behind this home's relay guard"), "\(doctor.stdout)")
    }

    /// Builds a certificate authority and server certificates with openssl, in `dir`.
    static func makeCertificates(in dir: String) throws {
        let script = """
            set -e
            cd "$1"
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=spawngate-test-ca 2>/dev/null
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout other-ca.key -out other-ca.pem -days 2 -subj /CN=other-ca 2>/dev/null
            for n in localhost wrong.example; do
              openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $n.key -out $n.csr -subj /CN=$n 2>/dev/null
              printf 'subjectAltName=DNS:%s\\n' $n > $n.ext
              openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $n.pem -days 2 -extfile $n.ext 2>/dev/null
            done
            """
        let out = try TestSupport.run("/bin/sh", ["-c", script, "sh", dir])
        guard out.status == 0 else { throw RealRelay.Failure("openssl failed: \(out.stderr)") }
    }

    /// Starts the stand-in with TLS, serving `cert`; answers its https://localhost:PORT URL and pid.
    static func tlsStandin(_ dir: String, cert: String) throws -> (String, pid_t) {
        let out = dir + "/standin-\(cert)"
        let pid = try RealRelay.start(["/usr/bin/env", "python3", RealRelay.interop + "/relaycast_standin.py", "--tls-cert", "\(dir)/\(cert).pem",
                                       "--tls-key", "\(dir)/\(cert).key"], environment: ProcessInfo.processInfo.environment, cwd: dir, output: out)
        let url = try RealRelay.waitFor("the TLS stand-in", within: 20) {
            (try? String(contentsOfFile: out + ".out", encoding: .utf8)).flatMap { $0.split(separator: "\n").first }
                .flatMap { $0.hasPrefix("listening on ") ? String($0.dropFirst("listening on ".count)) : nil }
        }
        return (url, pid)
    }

    @Test("TLS to the upstream: the test's CA and name are accepted (HTTP and the mailbox's WebSocket); another CA or another name is refused")
    func tlsUpstream() throws {
        let dir = TestSupport.tempDir("guard-tls")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.makeCertificates(in: dir)
        let (home, _) = try TestSupport.makeHome("vps-broker", in: dir)
        let (good, goodPid) = try Self.tlsStandin(dir, cert: "localhost")
        defer { RealRelay.kill(goodPid, within: 5) }
        let port = good.split(separator: ":").last!
        let (_, wrongPid) = try Self.tlsStandin(dir, cert: "wrong.example")
        defer { RealRelay.kill(wrongPid, within: 5) }
        let wrongURL = try RealRelay.waitFor("the wrong-name stand-in's URL", within: 5) {
            (try? String(contentsOfFile: dir + "/standin-wrong.example.out", encoding: .utf8)).flatMap { $0.split(separator: "\n").first }
                .map { String($0.dropFirst("listening on ".count)) }
        }

        // The right CA: requests pass, the workspace key is learned from the answer, and the mailbox's wss:// connects.
        let trusted = try GuardProcess(home: home.root, upstream: good, caFile: dir + "/ca.pem")
        let health = try RealRelay.http("GET", trusted.url + "/v1/health")
        #expect(health.status == 200, "\(health.text) \(trusted.stderr)")
        let ws = try RealRelay.http("POST", trusted.url + "/v1/workspaces", json: ["name": "tls"])
        #expect(ws.status == 201, "\(ws.text)")
        try trusted.waitForMailbox()
        #expect(trusted.stop() == 0)

        // Another CA (the system's roots, or one the operator did not name): refused, with a sentence.
        let otherCA = try GuardProcess(home: home.root, upstream: good, caFile: dir + "/other-ca.pem")
        let refused = try RealRelay.http("GET", otherCA.url + "/v1/health")
        #expect(refused.status == 502 && refused.text.contains("TLS"), "\(refused.status) \(refused.text)")
        #expect(otherCA.stop() == 0)
        let system = try GuardProcess(home: home.root, upstream: good)
        #expect(try RealRelay.http("GET", system.url + "/v1/health").status == 502)
        #expect(system.stop() == 0)

        // The right CA, but a certificate for another name than the one dialled: refused.
        let wrongName = try GuardProcess(home: home.root, upstream: wrongURL, caFile: dir + "/ca.pem")
        let mismatch = try RealRelay.http("GET", wrongName.url + "/v1/health")
        #expect(mismatch.status == 502 && mismatch.text.contains("TLS"), "\(mismatch.status) \(mismatch.text)")
        #expect(wrongName.stop() == 0)
        _ = port

        // Plain http to anything but loopback is refused before it starts.
        let plain = try TestSupport.spawngate(["relay", "guard", "--home", home.root, "--upstream", "http://relaycast.example", "--listen", "127.0.0.1:0"])
        #expect(plain.status == 64 && plain.stderr.contains("plain http is allowed only to a loopback upstream"), "\(plain.stderr)")
        let exposed = try TestSupport.spawngate(["relay", "guard", "--home", home.root, "--listen", "0.0.0.0:0"])
        #expect(exposed.status == 64 && exposed.stderr.contains("loopback"), "\(exposed.stderr)")
    }

    /// The upstream going away and coming back, a frame over the cap, and the broker reconnecting through it all;
    /// then SIGTERM ends the guard cleanly.
    @Test("the guard survives the upstream going away, an oversized frame, and the broker reconnecting")
    func resilience() throws {
        let dir = TestSupport.tempDir("guard-resilience")
        let (home, _) = try TestSupport.makeHome("vps-broker", in: dir)
        var guardProcess: GuardProcess?
        let relay = try RealRelay(.v6, via: { standin in
            let g = try GuardProcess(home: home.root, upstream: standin, extraArgs: ["--max-message", "65536"])
            guardProcess = g
            return g.url
        })
        let g = try #require(guardProcess)
        defer { relay.stop(); g.stop(); try? FileManager.default.removeItem(atPath: dir) }
        // The broker's own sockets (the guard's mailbox, which learned the key from the broker, has one too).
        func wsOpens() throws -> Int {
            try relay.standinRecords().filter {
                $0["kind"] as? String == "ws_open" && $0["socket_kind"] as? String == "ws" && $0["agent"] as? String != "spawngate-vps-broker"
            }.count
        }
        _ = try RealRelay.waitFor("the broker's socket through the guard", within: 30) { try wsOpens() >= 1 ? true : nil }

        // A frame over the cap: that socket is closed (nothing buffered past the cap), the broker reconnects.
        let before = try wsOpens()
        _ = try relay.push(["type": "message.created", "channel": "general",
                            "message": ["id": "m1", "agent_name": "x", "text": String(repeating: "x", count: 200_000)]], kind: "ws")
        _ = try RealRelay.waitFor("the broker to reconnect after the oversized frame", within: 60) { try wsOpens() > before ? true : nil }
        #expect(g.running)

        // The upstream goes away: the guard answers 502 with a sentence and keeps running; it comes back on the
        // same port and the broker's socket reconnects through the guard.
        relay.stopStandin()
        let down = try RealRelay.http("GET", g.url + "/v1/health", timeout: 15)
        #expect(down.status == 502 && down.text.contains("could not reach"), "\(down.text)")
        #expect(g.running)
        let logBefore = (try? String(contentsOfFile: relay.standinLog, encoding: .utf8))?.components(separatedBy: "\"ws_open\"").count ?? 0
        try relay.startStandin()
        _ = try RealRelay.waitFor("the broker's socket back through the guard", within: 90) {
            ((try? String(contentsOfFile: relay.standinLog, encoding: .utf8))?.components(separatedBy: "\"ws_open\"").count ?? 0) > logBefore ? true : nil
        }
        #expect(try RealRelay.http("GET", g.url + "/v1/health").status == 200)

        // SIGTERM: a graceful exit, and the guard's file is gone.
        let started = Date()
        #expect(g.stop(within: 15) == 0, "\(g.stderr)")
        print(String(format: "[relay-guard] graceful shutdown with the broker connected took %.2f s", Date().timeIntervalSince(started)))
        #expect(!FileManager.default.fileExists(atPath: home.root + "/relay-guard.json"))
    }
}
}
