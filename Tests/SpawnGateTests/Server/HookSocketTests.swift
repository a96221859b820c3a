import Foundation
import Testing
@testable import SpawnGate
#if canImport(Glibc)
import Glibc
#endif

/// `serve --socket` reads HTTP itself (``HookSocket`` in SpawnGateServer): each rule of its strict framing, its
/// deadlines, its per-uid connection share and kept-alive connections, against a real `spawngate serve`.
@Suite("The hook socket's own HTTP reader", .serialized)
struct HookSocketTests {
    struct Socket {
        let g: Gateway
        let serve: ServeProcess
        let path: String

        init(_ extra: [String] = []) throws {
            g = try DecisionCLITests.live(["sandbox: standard"])
            path = g.dir + "/gate.sock"
            serve = try ServeProcess(home: g.vps, ["--socket", path] + extra)
            let p = path
            try ServeTests.Remote.eventually("the socket listens") {
                (try? HTTPClient.exchange(.unix(path: p), method: "GET", path: "/healthz", timeout: 1)) != nil
            }
        }

        func connect() throws -> Int32 {
            let fd = try HTTPClient.connect(.unix(path: path), timeout: 2)
            var tv = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            return fd
        }

        /// Sends `raw` on a new connection and reads until the server closes it (or 5 s pass): everything it said,
        /// and whether it closed.
        func exchangeRaw(_ raw: [UInt8]) throws -> (text: String, closed: Bool) {
            let fd = try connect()
            defer { close(fd) }
            _ = raw.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            var got: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n == 0 { return (String(decoding: got, as: UTF8.self), true) }
                if n < 0 { return (String(decoding: got, as: UTF8.self), errno == ECONNRESET) }
                got += buffer[0..<n]
            }
        }

        func hookRequest(_ body: [UInt8], extraHeaders: String = "") -> [UInt8] {
            Array("POST /v1/hook HTTP/1.1\r\nHost: localhost\r\n\(extraHeaders)Content-Length: \(body.count)\r\n\r\n".utf8) + body
        }
    }

    /// A resident client keeps one connection for many requests; requests sent back to back in one write are each
    /// decided and answered in order; `Connection: close` is honoured.
    @Test func keptAliveAndPipelinedRequestsAreEachDecided() throws {
        let s = try Socket()
        defer { s.serve.kill() }
        let connection = HTTPClient.Connection(.unix(path: s.path), timeout: 5)
        var ids: Set<String> = []
        for _ in 0..<5 {
            let r = try connection.exchange(method: "POST", path: "/v1/hook", body: try s.g.envelope())
            let o = try #require(try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any])
            #expect(r.status == 200 && o["decision"] as? String == "allow", "\(o)")
            ids.insert(try #require(o["request_id"] as? String))
        }
        #expect(ids.count == 5)

        let (a, b) = (try s.g.envelope(), try s.g.envelope())
        let (text, closed) = try s.exchangeRaw(s.hookRequest(a) + s.hookRequest(b, extraHeaders: "Connection: close\r\n"))
        let answers = text.components(separatedBy: "HTTP/1.1 200 OK").dropFirst()
        #expect(answers.count == 2 && answers.allSatisfy { $0.contains(#""decision":"allow""#) }, "\(text)")
        #expect(closed, "closed after the answer to a request that said Connection: close")
    }

    /// Hook requests pipelined on one connection are decided together (one group commit) and answered in order:
    /// each answer is its own request's, a request sent twice in the same batch is a replay the second time, and
    /// what follows the batch (another operation, a frame that is refused) is answered after it, in order.
    @Test func pipelinedHookRequestsAreDecidedTogetherAndAnsweredInOrder() throws {
        let s = try Socket()
        defer { s.serve.kill() }
        let connection = HTTPClient.Connection(.unix(path: s.path), timeout: 10)
        let envelopes = try (0..<20).map { _ in try s.g.envelope() }
        let before = try s.g.auditLines().count
        // The gateway's own counts of commits and of the decisions they recorded (published by its reaper).
        func counts() -> (groups: Double, decisions: Double)? {
            guard let r = try? HTTPClient.exchange(.unix(path: s.path), method: "GET", path: "/metrics", timeout: 2) else { return nil }
            let text = String(decoding: r.body, as: UTF8.self)
            func metric(_ name: String) -> Double? {
                text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ").last!) }
            }
            guard let g = metric("spawngate_commit_groups_total"), let d = metric("spawngate_committed_decisions_total") else { return nil }
            return (g, d)
        }
        let c0 = try #require(counts())
        let answers = try connection.exchange(pipelined: (envelopes + [envelopes[3]]).map { (method: "POST", path: "/v1/hook", body: $0) })
        #expect(answers.count == 21)
        for (i, r) in answers.enumerated() {
            let o = try #require(try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any])
            let expected = try Envelope.parse(envelopes[i == 20 ? 3 : i]).get().requestID
            #expect(r.status == 200 && o["request_id"] as? String == expected, "answer \(i) is its own request's: \(o)")
            #expect(o["decision"] as? String == (i == 20 ? "deny" : "allow") && (i < 20 || o["reason"] as? String == "replay"), "\(i): \(o)")
        }
        let lines = try s.g.auditLines()
        #expect(lines.count == before + 21, "every decision audited")
        #expect(lines.suffix(21).map { $0["request_id"] as? String } == (envelopes + [envelopes[3]]).map { try? Envelope.parse($0).get().requestID },
                "audited in the order sent")
        // One connection's batch shares its commits: far fewer than one per request (one at a time made 21).
        var c1 = c0
        try ServeTests.Remote.eventually("the commit counts are published") {
            c1 = counts() ?? c0
            return c1.decisions - c0.decisions >= 21
        }
        #expect(c1.groups - c0.groups <= 3, "\(c1.groups - c0.groups) commits for one pipelined batch of 21")

        // A batch, then another operation and a refused frame, on one connection: answered in that order.
        let (c, d) = (try s.g.envelope(), try s.g.envelope())
        let (text, closed) = try s.exchangeRaw(s.hookRequest(c) + s.hookRequest(d) + Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
                                               + Array("POST /v1/hook HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        let statuses = text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { String($0.prefix(3)) }
        #expect(statuses == ["200", "200", "200", "411"], "\(text.prefix(600))")
        #expect(text.components(separatedBy: #""decision":"allow""#).count - 1 == 2, "\(text.prefix(600))")
        #expect(closed)
        #expect(try s.g.auditLines().count == before + 23)
    }

    /// Framing two readers could read differently, or that would need unbounded work, is refused with a status
    /// that says why, the connection is closed, and nothing reaches the pipeline or the audit log.
    @Test(arguments: [
        ("POST /v1/hook HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "400", "more than one Content-Length"),
        ("POST /v1/hook HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "501", "Transfer-Encoding"),
        ("POST /v1/hook HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello", "400", "not a number"),
        ("POST /v1/hook HTTP/1.1\r\nContent-Length : 5\r\n\r\nhello", "400", "is not 'Name: value'"),
        ("POST /v1/hook HTTP/1.1\r\nX-A: b\nContent-Length: 5\r\n\r\nhello", "400", "CR or LF"),
        ("POST /v1/hook HTTP/1.1\r\nX-A: b\r\n c\r\nContent-Length: 5\r\n\r\nhello", "400", "is not 'Name: value'"),
        ("POST /v1/hook HTTP/1.1\r\nHost: x\r\n\r\nhello", "411", "needs a Content-Length"),
        ("POST /v1/hook HTTP/1.1\r\nContent-Length: 70000\r\n\r\n", "413", "64 KiB"),
        ("POST /v1/hook HTTP/2.0\r\nContent-Length: 5\r\n\r\nhello", "505", "HTTP/1.1"),
        ("POST  /v1/hook HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", "400", "request line"),
        ("POST /v1/hook HTTP/1.1\r\nX-A: caf\u{e9}\r\nContent-Length: 5\r\n\r\nhello", "400", "printable ASCII"),
        ("POST /v1/hook HTTP/1.1\r\nX-A: " + String(repeating: "a", count: 20_000) + "\r\n\r\n", "431", "head is over"),
        ("POST /v1/hook HTTP/1.1\r\n" + String(repeating: "X-A: b\r\n", count: 101) + "Content-Length: 5\r\n\r\nhello", "431", "more than 100 header fields"),
    ])
    func framingIsRefusedBeforeAnythingIsDecided(_ raw: String, _ status: String, _ says: String) throws {
        let s = try Socket()
        defer { s.serve.kill() }
        let before = try s.g.auditLines().count
        let (text, closed) = try s.exchangeRaw(Array(raw.utf8))
        #expect(text.hasPrefix("HTTP/1.1 \(status) "), "\(text.prefix(200))")
        #expect(text.contains(says), "\(text.prefix(300))")
        #expect(closed, "the connection is closed after a framing refusal")
        #expect(try s.g.auditLines().count == before, "nothing was decided or recorded")
    }

    /// A head trickled a byte at a time never goes idle, yet is cut at the header deadline; so is a kept connection
    /// that sends nothing more. Meanwhile other requests are answered.
    @Test func tricklingAndIdleConnectionsAreCutAtTheDeadline() throws {
        let s = try Socket(["--header-timeout", "0.5"])
        defer { s.serve.kill() }
        let fd = try s.connect()
        defer { close(fd) }
        let started = Date()
        var cut: TimeInterval?
        for byte in Array("POST /v1/hook HTTP/1.1\r\nX-Slow: ".utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: 100) {
            var b = byte
            if send(fd, &b, 1, Int32(MSG_NOSIGNAL)) < 0 { cut = Date().timeIntervalSince(started); break }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 100) > 0 { cut = Date().timeIntervalSince(started); break }  // closed (EOF is readable)
        }
        let seconds = try #require(cut, "the trickling connection was never cut")
        // Generous for a loaded machine, still well short of the 13 s the trickle would last uncut.
        #expect(seconds < 8, "cut after \(seconds) s with a 0.5 s header deadline")

        let idle = HTTPClient.Connection(.unix(path: s.path), timeout: 5)
        #expect(try idle.exchange(method: "POST", path: "/v1/hook", body: try s.g.envelope()).status == 200)
        let raw = try s.connect()
        defer { close(raw) }
        _ = s.hookRequest(try s.g.envelope()).withUnsafeBytes { send(raw, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        #expect(recv(raw, &buffer, buffer.count, 0) > 0, "answered")
        let idleStart = Date()
        while recv(raw, &buffer, buffer.count, 0) > 0 {}
        #expect(Date().timeIntervalSince(idleStart) < 8, "a kept connection idle past the header deadline is closed")
    }

    /// One uid holds at most 16 connections at once (the same share as a source address on the TCP listener); the
    /// next is told why and closed, and a slot freed is usable again.
    @Test func oneUIDHoldsAtMostItsShareOfConnections() throws {
        // A long header deadline: on a loaded machine, opening the 16 took over the default 5 s once, and the first
        // ones were closed as idle before the 17th arrived.
        let s = try Socket(["--header-timeout", "60"])
        defer { s.serve.kill() }
        var held = try (0..<16).map { _ in try s.connect() }
        defer { for fd in held { close(fd) } }
        // The server counts a connection once it has accepted it; a request on each makes sure it has.
        for fd in held {
            let r = Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
            _ = r.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            var buffer = [UInt8](repeating: 0, count: 4096)
            #expect(recv(fd, &buffer, buffer.count, 0) > 0)
        }
        let (text, closed) = try s.exchangeRaw(s.hookRequest(try s.g.envelope()))
        #expect(text.hasPrefix("HTTP/1.1 503 ") && text.contains("uid \(getuid()) has 16 connections open"), "\(text.prefix(300))")
        #expect(closed)
        close(held.removeLast())
        try ServeTests.Remote.eventually("a freed slot is usable again") {
            (try? HTTPClient.exchange(.unix(path: s.path), method: "POST", path: "/v1/hook", body: s.g.envelope(), timeout: 2))?.status == 200
        }
    }

    /// SIGTERM with a kept connection open and idle: serve stops promptly and removes its socket.
    @Test func stopsPromptlyWithAnIdleKeptConnection() throws {
        let s = try Socket()
        defer { s.serve.kill() }
        let kept = HTTPClient.Connection(.unix(path: s.path), timeout: 5)
        #expect(try kept.exchange(method: "GET", path: "/healthz").status == 200)
        let started = Date()
        kill(s.serve.process.processIdentifier, SIGTERM)
        while s.serve.process.isRunning && Date().timeIntervalSince(started) < 10 { usleep(20_000) }
        #expect(!s.serve.process.isRunning && Date().timeIntervalSince(started) < 10, "stopped after \(Date().timeIntervalSince(started)) s")
        #expect(access(s.path, F_OK) != 0, "the socket file is removed")
    }
}
