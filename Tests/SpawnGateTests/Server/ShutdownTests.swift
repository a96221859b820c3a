import Foundation
import Testing
@testable import SpawnGate
import SpawnGateServer
#if canImport(Glibc)
import Glibc
#endif

/// Issue 24, "lifecycle as the anchors do it": listeners start last and stop first, the services behind them
/// after, and a stop has a time budget. Real `spawngate serve` and `relay guard` processes, stopped with SIGTERM
/// as systemd stops them.
@Suite("Lifecycle: stopping under load", .serialized)
struct ShutdownTests {
    /// Waits (bounded) for a process to exit: how long it took, or nil if it was still running after `seconds`.
    static func exited(_ p: Process, within seconds: Double) -> Double? {
        let started = Date()
        while p.isRunning && Date().timeIntervalSince(started) < seconds { usleep(5_000) }
        return p.isRunning ? nil : Date().timeIntervalSince(started)
    }

    /// What one hook request came to, as its client saw it.
    struct Sent {
        let envelope: [UInt8]
        let requestID: String
        /// The decision JSON, when an answer came back (HTTP 200).
        var answer: [String: Any]?
    }

    // @unchecked: `sent` and `answered` are read and written under `lock`.
    final class Tally: @unchecked Sendable {
        private let lock = NSLock()
        private var _sent: [[Sent]]
        private var _answered = 0
        init(_ sent: [[Sent]]) { _sent = sent }
        var sent: [[Sent]] { lock.withLock { _sent } }
        var all: [Sent] { lock.withLock { _sent.flatMap { $0 } } }
        var answered: Int { lock.withLock { _answered } }
        func answer(_ t: Int, _ i: Int, _ json: [String: Any]) { lock.withLock { _sent[t][i].answer = json; _answered += 1 } }
    }

    /// 8 clients send 50 hook decisions each on kept-alive connections; SIGTERM arrives once 100 are answered.
    /// serve exits 0 within its budget; every answer it gave is in the audit log with the same decision and its
    /// nonce is used (after a restart, the same request is refused as `replay`); a request that got no answer was
    /// either never decided (absent from the log, and allowed after the restart) or decided in full (in the log,
    /// and consumed). Never an answer without its audit line, nor a used nonce without one.
    @Test func sigtermUnderLoadLosesNoDecision() throws {
        let s = try HookSocketTests.Socket()
        defer { s.serve.kill() }
        let (threads, each) = (8, 50)
        let tally = Tally(try (0..<threads).map { _ in
            try (0..<each).map { _ in
                let e = s.g.envelope()
                return Sent(envelope: e, requestID: Sodium.sha256(try Envelope.parse(e).get().payload).hex)
            }
        })
        let done = DispatchGroup()
        let path = s.path
        for t in 0..<threads {
            done.enter()
            let mine = tally.sent[t].map(\.envelope)
            Thread {
                defer { done.leave() }
                let connection = HTTPClient.Connection(.unix(path: path), timeout: 5)
                for (i, envelope) in mine.enumerated() {
                    // The first request without an answer ends this client: the gateway is stopping.
                    guard let r = try? connection.exchange(method: "POST", path: "/v1/hook", body: envelope), r.status == 200,
                          let json = try? JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any] else { return }
                    tally.answer(t, i, json)
                }
            }.start()
        }
        let deadline = Date().addingTimeInterval(30)
        while tally.answered < 100 && Date() < deadline { usleep(1_000) }
        try #require(tally.answered >= 100, "the load never got going: \(s.serve.stderr)")
        kill(s.serve.process.processIdentifier, SIGTERM)
        let took = Self.exited(s.serve.process, within: 30)
        #expect(done.wait(timeout: .now() + 30) == .success, "every client finished")
        let stopped = try #require(took, "serve still ran 30 s after SIGTERM: \(s.serve.stderr)")
        #expect(stopped < Double(Lifecycle.budget.components.seconds), "stopped after \(stopped) s")
        #expect(s.serve.process.terminationReason == .exit && s.serve.process.terminationStatus == 0, "\(s.serve.stderr)")

        let all = tally.all
        let answers = all.filter { $0.answer != nil }
        #expect(answers.count < all.count, "SIGTERM arrived under load: some requests were still to be answered")
        #expect(try s.g.cli(["audit", "verify"]).status == 0)
        var logged: [String: String] = [:]
        for line in try s.g.auditLines() {
            if let id = line["request_id"] as? String, let d = line["decision"] as? String { logged[id] = d }
        }
        for a in answers {
            let decision = a.answer?["decision"] as? String
            #expect(decision == "allow" && a.answer?["request_id"] as? String == a.requestID, "\(a.answer ?? [:])")
            #expect(logged[a.requestID] == decision, "answered \(decision ?? "?") for \(a.requestID), but the audit log has \(logged[a.requestID] ?? "no line")")
        }

        // After a restart, each request once more: what was decided is used, what was not is decided now.
        let again = try ServeProcess(home: s.g.vps, ["--socket", s.path])
        defer { again.kill() }
        try ServeTests.Remote.eventually("the socket listens again") {
            (try? HTTPClient.exchange(.unix(path: s.path), method: "GET", path: "/healthz", timeout: 1)) != nil
        }
        let connection = HTTPClient.Connection(.unix(path: s.path), timeout: 5)
        var replays = 0
        for request in all {
            let r = try connection.exchange(method: "POST", path: "/v1/hook", body: request.envelope)
            let reason = (try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any])?["reason"] as? String
            if request.answer != nil || logged[request.requestID] != nil {
                #expect(reason == "replay", "\(request.requestID) was decided before the stop (\(logged[request.requestID] ?? "answered")), yet now: \(reason ?? "?")")
                replays += 1
            } else {
                #expect(reason == "allowed", "\(request.requestID) is in no audit line, yet its nonce was used: \(reason ?? "?")")
            }
        }
        print("shutdown under load: \(answers.count) of \(all.count) answered before the stop, \(replays - answers.count) decided but not answered, stopped in \(stopped) s")
    }

    /// A client that sends half a request and stalls cannot hold a stopping gateway past its budget: the graceful
    /// stop is escalated to cancellation, which closes it (here a 1 s budget against a 60 s body deadline).
    @Test func aStalledClientDoesNotHoldTheStopPastTheBudget() throws {
        let g = try DecisionCLITests.live()
        let serve = try ServeProcess(home: g.vps, ["--body-timeout", "60", "--shutdown-budget", "1"])
        defer { serve.kill() }
        let fd = try HTTPClient.connect(.tcp(host: "127.0.0.1", port: serve.port), timeout: 5)
        defer { close(fd) }
        try HTTPClient.send(Array("POST /v1/spawn HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"sealed\":".utf8), on: fd,
                            to: .tcp(host: "127.0.0.1", port: serve.port), timeout: 5)
        // The head is read (the body deadline runs) once a request on another connection is answered after it.
        #expect(try serve.get("/healthz").status == 200)
        kill(serve.process.processIdentifier, SIGTERM)
        let took = Self.exited(serve.process, within: 30)
        let stopped = try #require(took, "serve still ran 30 s after SIGTERM, held by the stalled client")
        #expect(stopped < 8, "stopped after \(stopped) s with a 1 s budget")
        #expect(serve.process.terminationReason == .exit && serve.process.terminationStatus == 0, "\(serve.stderr)")
    }

    /// The relay guard's listener stops before its mailbox: a `spawn --broker` to a `relay:` peer that is in flight
    /// when this machine's guard gets SIGTERM still gets its verified receipt, which comes back through the mailbox.
    /// (With the mailbox stopped first, the answer had nowhere to arrive: the call failed and the guard waited for
    /// it until cancelled.)
    @Test func aRelayCallInFlightIsAnsweredWhileTheGuardStops() throws {
        let marker = "sleep 61.\(Int.random(in: 100...999))"
        let g = try DecisionCLITests.live(["sandbox: standard", "startup_check: 3s"])
        try g.script("exec \(marker)")
        defer { for pid in TestSupport.pids(withCommandLine: marker) { kill(pid, SIGKILL) } }
        let dir = TestSupport.tempDir("relay-stop")
        let standin = try MailboxKeyTests.StandIn(dir)
        let key = try standin.workspaceKey()
        let target = try GuardProcess(home: g.vps.root, upstream: standin.url, environment: ["RELAY_API_KEY": key])
        defer { target.stop() }
        let requester = try GuardProcess(home: g.dir + "/mac-laptop", upstream: standin.url, environment: ["RELAY_API_KEY": key])
        defer { requester.stop() }
        try target.waitForMailbox()
        try requester.waitForMailbox()
        let laptop = g.dir + "/mac-laptop"
        #expect(try TestSupport.spawngate(try TestSupport.peerAdd("vps-broker", home: g.vps, url: "relay:vps-broker") + ["--home", laptop]).status == 0)

        let spawn = Process()
        spawn.executableURL = URL(fileURLWithPath: TestSupport.binary)
        spawn.arguments = ["spawn", "coder", "claude", "Implement the plan", "--broker", "vps-broker", "--cwd", g.app, "--home", laptop]
        let out = Pipe(), err = Pipe()
        (spawn.standardOutput, spawn.standardError) = (out, err)
        try spawn.run()
        // The target has decided (its audit line) and is in the agent's 3 s startup check: the call is in flight.
        let decided = Date().addingTimeInterval(30)
        while spawn.isRunning && Date() < decided && !target.auditLines().contains(where: { $0["reason"] as? String == "allowed" }) { usleep(10_000) }
        try #require(spawn.isRunning && target.auditLines().contains { $0["reason"] as? String == "allowed" },
                     "the spawn is in flight at the target: \(String(decoding: err.fileHandleForReading.availableData, as: UTF8.self)) \(target.stderr)")
        let status = requester.stop(within: 30)
        #expect(status == 0, "the requester's guard exited \(status.map(String.init) ?? "only when killed"): \(requester.stderr)")
        #expect(Self.exited(spawn, within: 30) != nil, "spawn finished")
        let said = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            + String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(spawn.terminationStatus == 0 && said.contains("started coder on vps-broker") && said.contains("receipt verified"), "\(said) \(requester.stderr)")
        // Stopped while the target's guard, its parent, still runs to collect it.
        #expect(try TestSupport.spawngate(["release", "coder", "--home", g.vps.root]).status == 0)
    }
}
