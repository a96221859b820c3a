import Foundation
import Testing
@testable import SpawnGate
#if canImport(Glibc)
import Glibc
#endif

/// A real `spawngate serve` process on a free loopback port, for one test.
final class ServeProcess {
    let process = Process()
    let url: String
    let port: UInt16
    let errLog: String

    /// `prefix` runs serve through another command (`ip netns exec NS`), which execs it in place.
    init(home: Home, _ extra: [String] = [], listen: String = "127.0.0.1:0", prefix: [String] = []) throws {
        errLog = home.root + "/serve-\(UUID().uuidString.prefix(8)).err"
        FileManager.default.createFile(atPath: errLog, contents: nil)
        let command = prefix + [TestSupport.binary, "serve", "--home", home.root, "--listen", listen] + extra
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle(forWritingAtPath: errLog)
        try process.run()
        // The address line is the signal that it accepts connections; EOF means it failed to start.
        var line = Data()
        while !String(decoding: line, as: UTF8.self).contains("http://") || line.last != 10 {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line += chunk
        }
        let text = String(decoding: line, as: UTF8.self)
        guard let range = text.range(of: "http://") else {
            throw GatewayFailure("serve did not start: \(text) \((try? String(contentsOfFile: errLog, encoding: .utf8)) ?? "")")
        }
        url = String(text[range.lowerBound...].prefix { !$0.isWhitespace })
        port = UInt16(url.split(separator: ":").last!)!
    }

    var stderr: String { (try? String(contentsOfFile: errLog, encoding: .utf8)) ?? "" }

    /// A test that forgets to stop its gateway (or stops early on a failed #require) leaves nothing running.
    deinit { kill() }

    /// SIGKILL: the test runner blocks SIGTERM and its children inherit the mask (serve unblocks it, but a
    /// stuck test must not depend on that).
    func kill() {
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    func get(_ path: String, headers: [(String, String)] = []) throws -> HTTPClient.Response {
        try HTTPClient.exchange(.tcp(host: "127.0.0.1", port: port), method: "GET", path: path, headers: headers, timeout: 5)
    }

    func post(_ path: String, _ body: [UInt8]) throws -> HTTPClient.Response {
        try HTTPClient.exchange(.tcp(host: "127.0.0.1", port: port), method: "POST", path: path, body: body, timeout: 5)
    }
}

/// The user's story over real HTTP between real processes: the laptop's `spawngate spawn`, `agents --broker`
/// and `release --broker` against the VPS's `spawngate serve`.
@Suite("Remote spawn through serve")
struct ServeTests {
    /// The decision fixture's two homes, the laptop's peers.yaml pointing at a running serve.
    struct Remote {
        let g: Gateway
        let serve: ServeProcess
        var laptopHome: String { g.dir + "/mac-laptop" }

        init(rule: [String] = ["max_concurrent: 2", "sandbox: standard"], serveArgs: [String] = [], agent: String = "sleep 60") throws {
            g = try DecisionCLITests.live(rule)
            try g.script(agent)
            serve = try ServeProcess(home: g.vps, serveArgs)
            let added = try laptop(try TestSupport.peerAdd("vps-broker", home: g.vps, url: serve.url))
            #expect(added.status == 0, "\(added.stderr)")
        }

        func laptop(_ args: [String], stdin: [UInt8] = []) throws -> TestSupport.Output {
            try TestSupport.spawngate(args + ["--home", laptopHome], stdin: stdin)
        }

        func spawn(_ extra: [String] = [], cwd: String? = nil) throws -> TestSupport.Output {
            try laptop(["spawn", "coder", "claude", "Implement the plan", "--broker", "vps-broker", "--cwd", cwd ?? g.app] + extra)
        }

        /// This broker's agents as the target lists them (running, then exited), and the running ones.
        func listed() throws -> [[String: Any]] {
            let out = try laptop(["agents", "--broker", "vps-broker", "--json"])
            return try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [[String: Any]], "\(out.stdout) \(out.stderr)")
        }
        func running() throws -> [[String: Any]] { try listed().filter { $0["state"] as? String == "running" } }

        /// The pid a successful `spawn` printed.
        static func pid(_ out: TestSupport.Output) throws -> Int32 {
            let text = out.stdout
            let r = try #require(text.range(of: "pid "), "\(text) \(out.stderr)")
            return try #require(Int32(text[r.upperBound...].prefix { $0.isNumber }))
        }

        /// Waits (bounded) for a condition that another process makes true.
        static func eventually(_ what: String, _ condition: () throws -> Bool) throws {
            for _ in 0..<300 { if try condition() { return }; usleep(10_000) }
            Issue.record("never happened: \(what)")
        }
    }

    @Test func spawnListAndReleaseAcrossProcesses() throws {
        let r = try Remote()
        defer { r.serve.kill() }
        let out = try r.spawn()
        #expect(out.status == 0, "\(out.stdout) \(out.stderr) \(r.serve.stderr)")
        #expect(out.stdout.contains("started coder on vps-broker: pid ") && out.stdout.contains("sandbox standard"), "\(out.stdout)")
        #expect(out.stdout.contains("receipt verified with vps-broker's key"))
        let pid = try Remote.pid(out)
        let identity = try #require(ProcessIdentity.of(pid: pid), "the agent runs on the target")

        let listed = try r.laptop(["agents", "--broker", "vps-broker", "--json"])
        let agents = try #require(try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]], "\(listed.stderr)")
        #expect(agents.count == 1 && agents.first?["pid"] as? Int == Int(pid) && agents.first?["cwd"] as? String == r.g.app)

        let released = try r.laptop(["release", "coder", "--broker", "vps-broker"])
        #expect(released.status == 0, "\(released.stderr)")
        #expect(released.stdout == "released coder on vps-broker (pid \(pid))\n")
        #expect(!identity.isAlive, "release stopped the remote agent")
        #expect(try r.running().isEmpty, "nothing of this broker runs there any more")
        let exited = try r.listed()
        #expect(exited.count == 1 && exited.first?["state"] as? String == "exited" && exited.first?["exit_status"] as? Int == 128 + Int(SIGTERM),
                "an exited agent stays listed with its status: \(exited)")
        let again = try r.laptop(["release", "coder", "--broker", "vps-broker"])
        #expect(again.status == 1 && again.stderr.contains("no running agent named 'coder'"), "\(again.stderr)")

        // Both the start and the release were audited before they acted, by the same chain `audit verify` checks.
        let lines = try r.g.auditLines()
        #expect(lines.contains { ($0["detail"] as? String)?.hasPrefix("allowed by rule 'laptop-app'") == true })
        #expect(lines.contains { ($0["detail"] as? String) == "release of agent 'coder' by mac-laptop" })
        #expect(try r.g.cli(["audit", "verify"]).status == 0)
    }

    @Test func denialsCarryTheTargetsSignedReason() throws {
        let r = try Remote()
        defer { r.serve.kill() }
        let denied = try r.spawn(cwd: "/etc")
        #expect(denied.status == 1)
        #expect(denied.stdout.hasPrefix("denied by vps-broker: cwd_not_allowed: "), "\(denied.stdout) \(denied.stderr)")
        let json = try r.laptop(["spawn", "coder", "claude", "--broker", "vps-broker", "--cwd", "/etc", "--json"])
        let receipt = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(receipt["reason"] as? String == "cwd_not_allowed" && receipt["request_id"] is String)
    }

    @Test func clientErrorsSayWhatToDo() throws {
        let r = try Remote()
        let unknown = try r.laptop(["spawn", "coder", "claude", "--broker", "mini-pc"])
        #expect(unknown.status == 2 && unknown.stderr.contains("no peer named 'mini-pc'") && unknown.stderr.contains("known: vps-broker"), "\(unknown.stderr)")
        r.serve.kill()
        let down = try r.spawn()
        #expect(down.status == 2 && down.stderr.contains("vps-broker (\(r.serve.url)) is unreachable") && down.stderr.contains("Connection refused"), "\(down.stderr)")
    }

    /// peers.yaml holding another key for the target: the body is sealed to that key, so the target cannot read
    /// it, and its signed refusal does not verify with the key the laptop trusts. Nothing is believed.
    @Test func receiptFromAnotherKeyIsNotTrusted() throws {
        let r = try Remote()
        defer { r.serve.kill() }
        let other = try SigningKey.generate()
        let peers = r.laptopHome + "/peers.yaml"
        let text = try String(contentsOfFile: peers, encoding: .utf8)
        let real = try String(contentsOfFile: r.g.vps.root + "/identity.pub", encoding: .utf8).split(separator: " ")[1]
        try text.replacingOccurrences(of: String(real), with: String(other.publicKey.line(comment: "x").split(separator: " ")[1]))
            .write(toFile: peers, atomically: true, encoding: .utf8)
        let out = try r.spawn()
        #expect(out.status == 2, "\(out.stdout)")
        #expect(out.stderr.contains("the receipt from vps-broker failed verification"), "\(out.stderr)")
        #expect(try r.g.auditLines().last?["reason"] as? String == "malformed", "the target could not open the body")
    }

    @Test func unenrolledAndRevokedBrokersAreRefused() throws {
        let r = try Remote()
        defer { r.serve.kill() }
        // A third broker the VPS never enrolled, with the VPS as its peer.
        let (intruder, _) = try TestSupport.makeHome("intruder", in: r.g.dir)
        _ = try TestSupport.spawngate(try TestSupport.peerAdd("vps-broker", home: r.g.vps, url: r.serve.url) + ["--home", intruder.root])
        let out = try TestSupport.spawngate(["spawn", "coder", "claude", "--broker", "vps-broker", "--cwd", r.g.app, "--home", intruder.root])
        #expect(out.status == 1 && out.stdout.contains("unknown_key"), "\(out.stdout) \(out.stderr)")

        // The key store cache sees a revocation at the very next request.
        #expect(try r.spawn().status == 0)
        #expect(try r.g.cli(["key", "revoke", "mac-laptop"]).status == 0)
        let revoked = try r.spawn()
        #expect(revoked.status == 1 && revoked.stdout.contains("revoked_key"), "\(revoked.stdout) \(revoked.stderr)")
    }

    /// The exact bytes of an accepted request, sent again: the nonce was spent, the replay gets a signed refusal.
    @Test func replayedBodyIsRefused() throws {
        let r = try Remote()
        defer { r.serve.kill() }
        let body = SealedBody.seal(r.g.envelope(), to: try r.g.vps.loadIdentity().key.publicKey)
        let first = try r.serve.post("/v1/spawn", body)
        let second = try r.serve.post("/v1/spawn", body)
        func reason(_ resp: HTTPClient.Response) throws -> String? {
            let env = try SealedBody.open(resp.body, with: r.g.laptop.key).get()
            let payload = try Envelope.parse(env).get().payload
            guard case .object(let o) = try StrictJSONReader.parse(payload), case .string(let s)? = o["reason"] else { return nil }
            return s
        }
        #expect(first.status == 200 && second.status == 200)
        #expect(try reason(first) == "allowed")
        #expect(try reason(second) == "replay")
        // Resending a captured request spends the sender's pre-authentication allowance like junk does.
        let statuses = try (0..<12).map { _ in try r.serve.post("/v1/spawn", body).status }
        #expect(statuses.contains(429), "\(statuses)")
    }

    /// A gateway that cannot decide (its audit log is a directory) names its own files in the detail; that text
    /// goes to its log, never on the wire: an unknown key's plain receipt and a known key's sealed one carry a
    /// fixed sentence with the request id, and the log has the full text under that id. (T47)
    @Test func internalFailureTextStaysOffTheWire() throws {
        let r = try Remote()
        defer { r.serve.kill() }
        try FileManager.default.createDirectory(atPath: r.g.vps.auditLog, withIntermediateDirectories: false)
        let vpsKey = try r.g.vps.loadIdentity().key.publicKey
        func payload(_ receipt: [UInt8]) throws -> [String: Any] {
            let bytes = try Envelope.parse(receipt).get().payload
            return try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        }
        // From a key the VPS never enrolled: the receipt goes back plain.
        let stranger = SigningKey.generate()
        let plain = try r.serve.post("/v1/spawn", SealedBody.seal(r.g.envelope(key: stranger), to: vpsKey))
        #expect(plain.status == 200)
        let p1 = try payload(plain.body)
        // From the enrolled laptop: sealed to it.
        let sealed = try r.serve.post("/v1/spawn", SealedBody.seal(r.g.envelope(), to: vpsKey))
        #expect(sealed.status == 200)
        let p2 = try payload(try SealedBody.open(sealed.body, with: r.g.laptop.key).get())
        for p in [p1, p2] {
            let detail = try #require(p["detail"] as? String)
            let id = try #require(p["request_id"] as? String)
            #expect(p["reason"] as? String == "audit_unavailable", "\(p)")
            #expect(detail == "the gateway could not decide; its operator can find request \(id) in the log", "\(detail)")
            #expect(!detail.contains(r.g.dir), "no path of the target's on the wire")
            try ServeTests.Remote.eventually("the full text in the gateway's log") {
                r.serve.stderr.split(separator: "\n").contains { $0.contains(id) && $0.contains(r.g.vps.auditLog) }
            }
        }
        // A body that does not even open: a fixed sentence too, with a reference the log also has.
        let junk = try payload(try r.serve.post("/v1/spawn", Array("junk".utf8)).body)
        let detail = try #require(junk["detail"] as? String)
        #expect(!detail.contains(r.g.dir) && detail.contains("its operator can find request ref-"), "\(detail)")
    }

    @Test func oversizedBodiesAreRefusedBeforeReading() throws {
        let r = try Remote()
        defer { r.serve.kill() }
        let before = try r.g.auditLines().count
        // Declared too large: refused on the header, the body is never sent.
        let fd = try #require(try? HTTPClient.connect(.tcp(host: "127.0.0.1", port: r.serve.port), timeout: 2))
        defer { close(fd) }
        let head = Array("POST /v1/spawn HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n".utf8)
        _ = head.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        #expect(n > 0 && String(decoding: buffer[0..<max(n, 0)], as: UTF8.self).hasPrefix("HTTP/1.1 413"))
        // Sent too large (no length declared up front by the framework's own check): cut at 64 KiB.
        let big = try r.serve.post("/v1/spawn", [UInt8](repeating: UInt8(ascii: "a"), count: 65 * 1024))
        #expect(big.status == 413 && String(decoding: big.body, as: UTF8.self).contains("64 KiB"))
        #expect(try r.g.auditLines().count == before, "nothing was decided or recorded")
    }

    /// A client trickling its request head is cut off at the header deadline, although it never goes idle, and
    /// meanwhile other requests are served.
    @Test func slowClientIsCutOffAtTheHeaderDeadline() throws {
        let r = try Remote(serveArgs: ["--header-timeout", "0.5"])
        defer { r.serve.kill() }
        let (slow, out) = try TestSupport.startProbe("slow_client.py", ["127.0.0.1", String(r.serve.port), "0.1", "10"])
        #expect(try r.spawn().status == 0, "served while the slow client holds a connection")
        slow.waitUntilExit()
        let result = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let seconds = try #require(Double(result), "the connection was never closed: \(result)")
        // A real serve process's deadline, timed by the probe: no clock can be injected into either, so the bound
        // is generous. Without a header deadline the trickle would go on until the probe gives up at 10 s.
        #expect(seconds < 8, "closed after \(seconds) s, with a 0.5 s header deadline")
    }

    /// 1,000 unauthenticated requests from 127.0.0.2: once its allowance is spent they are refused with 429 before
    /// anything is verified or audited, and a real request from 127.0.0.1 is decided and started meanwhile.
    /// Nothing here depends on how long the flood took: the allowance's exact count, on the injected clock, is
    /// `PreAuthClockTests.junkSpendsExactlyTheAllowance`.
    @Test func junkFromOneSourceDoesNotStarveAnother() throws {
        let r = try Remote()
        defer { r.serve.kill() }
        let (flood, out) = try TestSupport.startProbe("junk_flood.py", ["127.0.0.1", String(r.serve.port), "127.0.0.2", "1000"])
        let valid = try r.spawn()
        flood.waitUntilExit()
        #expect(valid.status == 0, "\(valid.stdout) \(valid.stderr)")
        let counts = try #require(try JSONSerialization.jsonObject(with: out.fileHandleForReading.readDataToEndOfFile()) as? [String: Int])
        // 1,000 back to back outrun an allowance that refills one a second, unless they took over 990 s.
        #expect((counts["429"] ?? 0) > 0, "\(counts)")
        let junkAudited = try r.g.auditLines().filter { $0["reason"] as? String == "malformed" }.count
        #expect(junkAudited == counts["200"] ?? 0, "each junk request that was heard was audited, and none refused with 429 was: \(junkAudited), \(counts)")
    }

    @Test func policyReloadKeepsTheLastGoodPolicy() throws {
        let r = try Remote(serveArgs: ["--no-watch"])
        defer { r.serve.kill() }
        func hash() throws -> String {
            let o = try StrictJSONReader.parse(try r.serve.get("/healthz").body)
            guard case .object(let m) = o, case .string(let h)? = m["policy"] else { return "" }
            return h
        }
        let good = try hash()
        // A broken policy is refused at SIGHUP; the gateway keeps deciding with the last good one.
        try "version: 1\naccept_remote_spawn: yes please\n".write(toFile: r.g.vps.policyFile, atomically: true, encoding: .utf8)
        kill(r.serve.process.processIdentifier, SIGHUP)
        try Remote.eventually("the refused reload is logged") { r.serve.stderr.contains("policy not reloaded") }
        #expect(try hash() == good)
        #expect(try r.spawn().status == 0)
        // A good one replaces it at the next SIGHUP.
        try r.g.writePolicy(rule: ["sandbox: standard"])
        kill(r.serve.process.processIdentifier, SIGHUP)
        try Remote.eventually("the new policy is in force") { try hash() != good }
        #expect(try r.spawn(cwd: r.g.dir).status == 1)
    }

    @Test func policyFileChangeIsPickedUpWithoutSignal() throws {
        let r = try Remote()
        defer { r.serve.kill() }
        #expect(try r.spawn().status == 0)
        try r.g.writePolicy(rule: ["sandbox: standard"], cli: [])
        try "version: 1\naccept_remote_spawn: false\n".write(toFile: r.g.vps.policyFile, atomically: true, encoding: .utf8)
        try Remote.eventually("the watcher reloads") { r.serve.stderr.contains("policy file changed") && r.serve.stderr.contains("policy loaded") }
        let out = try r.spawn()
        #expect(out.status == 1 && out.stdout.contains("remote_spawn_disabled"), "\(out.stdout)")
    }

    /// SIGTERM stops the gateway, not its agents; the next gateway finds them and can release them.
    @Test func gracefulStopLeavesAgentsRunning() throws {
        let r = try Remote()
        let pid = try Remote.pid(try r.spawn())
        let identity = try #require(ProcessIdentity.of(pid: pid))
        kill(r.serve.process.processIdentifier, SIGTERM)
        r.serve.process.waitUntilExit()
        #expect(r.serve.process.terminationStatus == 0, "\(r.serve.stderr)")
        #expect(identity.isAlive, "the agent outlives the gateway")

        let next = try ServeProcess(home: r.g.vps)
        defer { next.kill(); _ = Supervisor.stop(identity, grace: 0) }
        _ = try r.laptop(try TestSupport.peerAdd("vps-broker", home: r.g.vps, url: next.url))
        let listed = try r.laptop(["agents", "--broker", "vps-broker"])
        #expect(listed.stdout.contains(String(pid)), "\(listed.stdout) \(listed.stderr)")
        #expect(try r.laptop(["release", "coder", "--broker", "vps-broker"]).status == 0)
        #expect(!identity.isAlive)
    }

    @Test func metricsAndHealth() throws {
        let r = try Remote()
        defer { r.serve.kill() }
        _ = try r.spawn()
        _ = try r.spawn(cwd: "/etc")
        let text = String(decoding: try r.serve.get("/metrics").body, as: UTF8.self)
        #expect(text.contains(#"spawngate_decisions_total{reason="allowed"} 1"#), "\(text)")
        #expect(text.contains(#"spawngate_decisions_total{reason="cwd_not_allowed"} 1"#))
        #expect(text.contains("spawngate_spawn_request_seconds_count 2"))
        #expect(text.contains("spawngate_live_agents 1"))
        #expect(String(decoding: try r.serve.get("/healthz").body, as: UTF8.self).contains(#""broker":"vps-broker""#))
    }

    /// The Unix socket decides hook input for callers the policy admits by uid, read from the kernel.
    @Test func socketAdmitsOnlyHookUsers() throws {
        let g = try DecisionCLITests.live(["sandbox: standard"])
        let socket = g.dir + "/gate.sock"
        let serve = try ServeProcess(home: g.vps, ["--socket", socket])
        defer { serve.kill() }
        var st = stat()
        // The address line seen is the HTTP listener's; the socket's may come a moment later.
        try ServeTests.Remote.eventually("the socket listens") { (try? HTTPClient.exchange(.unix(path: socket), method: "GET", path: "/healthz", timeout: 1)) != nil }
        #expect(stat(socket, &st) == 0 && st.st_mode & 0o777 == 0o600, "only this user can connect by default")
        let allowed = try HTTPClient.exchange(.unix(path: socket), method: "POST", path: "/v1/hook", body: g.envelope(), timeout: 5)
        #expect(allowed.status == 200 && String(decoding: allowed.body, as: UTF8.self).contains(#""decision":"allow""#))

        let me = getuid()
        var policy = try String(contentsOfFile: g.vps.policyFile, encoding: .utf8)
        policy = policy.replacingOccurrences(of: "accept_remote_spawn: true", with: "accept_remote_spawn: true\nhook_users: [\"\(me + 4242)\"]")
        try policy.write(toFile: g.vps.policyFile, atomically: true, encoding: .utf8)
        try ServeTests.Remote.eventually("the reload") { serve.stderr.contains("policy loaded") }
        let refused = try HTTPClient.exchange(.unix(path: socket), method: "POST", path: "/v1/hook", body: g.envelope(), timeout: 5)
        #expect(refused.status == 403 && String(decoding: refused.body, as: UTF8.self).contains("uid \(me) may not use this gateway's socket"))
    }

    /// A uid the policy does not admit cannot fill the disk: each of its refusals is an fsynced audit line, so it
    /// spends a pre-authentication allowance (burst 10, then 1/s) and then gets 429 with nothing recorded. (T40)
    @Test func unadmittedUIDIsBoundedBeforeTheAuditLog() throws {
        let g = try DecisionCLITests.live(["sandbox: standard"])
        var policy = try String(contentsOfFile: g.vps.policyFile, encoding: .utf8)
        policy = policy.replacingOccurrences(of: "accept_remote_spawn: true", with: "accept_remote_spawn: true\nhook_users: [\"\(getuid() + 4242)\"]")
        try policy.write(toFile: g.vps.policyFile, atomically: true, encoding: .utf8)
        let socket = g.dir + "/gate.sock"
        let serve = try ServeProcess(home: g.vps, ["--socket", socket])
        defer { serve.kill() }
        try ServeTests.Remote.eventually("the socket listens") { (try? HTTPClient.exchange(.unix(path: socket), method: "GET", path: "/healthz", timeout: 1)) != nil }
        let statuses = try (0..<60).map { _ in
            try HTTPClient.exchange(.unix(path: socket), method: "POST", path: "/v1/hook", body: g.envelope(), timeout: 5).status
        }
        let audited = try g.auditLines().filter { ($0["detail"] as? String)?.contains("may not use this gateway's socket") == true }.count
        #expect(statuses.filter { $0 == 403 }.count == audited, "every refusal that was decided was recorded: \(statuses)")
        #expect(statuses.allSatisfy { $0 == 403 || $0 == 429 }, "\(statuses)")
        // 60 back to back outrun an allowance of 10 that refills one a second, unless they took over 50 s. The
        // exact count, on the injected clock: `PreAuthClockTests.anUnadmittedUIDSpendsExactlyTheAllowance`.
        #expect(statuses.contains(429), "\(statuses)")
    }
}
