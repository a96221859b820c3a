import Foundation
import Testing
@testable import SpawnGate
#if canImport(Glibc)
import Glibc
#endif

/// Issue 25, class 1: a peer's answer crashes the process that asked. Whoever answers `spawn --broker`, `spawngate
/// mcp`, the dashboard or `serve`'s own calls (or sits on a plain-http path) chooses every byte; each malformed answer
/// must be an error value, and a peer that trickles must not hold the caller past its deadline.
@Suite("Hostile seams: a peer's answer is an error, never a crash")
struct HostilePeerAnswerTests {
    /// Answers that trapped the old reader (negative and overflowing lengths and chunk sizes) and the rest of their
    /// family: each is refused with a sentence, read to the end of the stream or kept alive.
    static let hostile: [(String, String)] = [
        ("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello", "Content-Length '-5'"),
        ("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", "Content-Length '+5'"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nhello", "is not a number of bytes"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "disagree"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", "is not a number of bytes"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nhello", "cut off"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\nhello", "over 1048576 bytes"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nhello\r\n0\r\n\r\n", "chunk size '-1'"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\nhello\r\n0\r\n\r\n", "1 to 8 hex digits"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\nhello\r\n0\r\n\r\n", "over 1048576 bytes"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n", "hex digits"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n", "hex digits"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", "does not end where its size says"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", "not a CRLF"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort", "cut off"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "both Content-Length and Transfer-Encoding"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\nhello", "is not 'chunked'"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "is not 'chunked'"),
        ("HTTP/1.1 -200 OK\r\nContent-Length: 0\r\n\r\n", "not HTTP"),
        ("HTTP/1.1 99999999999999999999 OK\r\n\r\n", "not HTTP"),
        ("HTTP/1.1 2000 OK\r\n\r\n", "not HTTP"),
        ("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "interim"),
        ("HTTP/9.9 200 OK\r\n\r\n", "not HTTP"),
        ("\r\n\r\n", "not HTTP"),
        ("SSH-2.0-OpenSSH_9.2\r\n", "no end of headers"),
        ("", "closed with no answer"),
        ("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", "CR or LF"),
        ("HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", "CR or LF"),
        ("HTTP/1.1 200 OK\r\nX: \u{1}\r\n\r\n", "printable ASCII"),
        ("HTTP/1.1 200 OK\r\n folded\r\n\r\n", "is not 'Name: value'"),
        ("HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello", "is not 'Name: value'"),
        ("HTTP/1.1 200 OK\r\n" + String(repeating: "X-A: b\r\n", count: 101) + "\r\n", "more than 100 header fields"),
        ("HTTP/1.1 200 OK\r\nX-A: " + String(repeating: "a", count: 70_000) + "\r\n\r\n", "head is over"),
    ]

    @Test(arguments: hostile)
    func eachMalformedAnswerIsAnErrorValue(_ raw: String, _ says: String) {
        switch HTTPFraming.response(Array(raw.utf8), atEnd: true, maxBody: HTTPClient.maxResponse) {
        case .refused(let r): #expect(r.message.contains(says), "\(r.message)")
        case let other: Issue.record("framed as \(other)")
        }
    }

    /// The same answers from a real peer over TCP, to a fresh exchange and to a kept-alive connection: a thrown
    /// protocol error (or, for the cut-off ones, the connection's end), and the process still here to say so.
    @Test(arguments: hostile)
    func aRealPeerSendingItIsRefusedByBothClients(_ raw: String, _ says: String) throws {
        for keepAlive in [false, true] {
            let peer = try ScriptedPeer([.send(Array(raw.utf8))])
            do {
                if keepAlive {
                    _ = try HTTPClient.Connection(.tcp(host: "127.0.0.1", port: peer.port), timeout: 5).exchange(method: "GET", path: "/")
                } else {
                    _ = try HTTPClient.exchange(.tcp(host: "127.0.0.1", port: peer.port), method: "GET", path: "/", timeout: 5)
                }
                Issue.record("an answer was accepted from \(raw.prefix(60).debugDescription)")
            } catch {
                switch error {
                case .protocolError(let m): #expect(m.contains(says), "\(m)")
                case .unreachable(let m): #expect(raw.isEmpty, "\(m)")   // nothing at all: the peer closed
                case .timedOut(let m): Issue.record("timed out: \(m)")
                }
            }
            peer.finish()
        }
    }

    /// Well-formed answers still read as before, including a body split across many packets.
    @Test func wellFormedAnswersStillRead() throws {
        let chunked = Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nTrailer-A: b\r\n\r\n".utf8)
        let peer = try ScriptedPeer(chunked.map { .send([$0]) })
        let r = try HTTPClient.exchange(.tcp(host: "127.0.0.1", port: peer.port), method: "GET", path: "/", timeout: 10)
        #expect(r.status == 200 && r.body == Array("{\"a\":1}".utf8))
        peer.finish()
        let empty = HTTPFraming.response(Array("HTTP/1.1 204 No Content\r\n\r\n".utf8), atEnd: false, maxBody: 10)
        #expect(empty == .response(status: 204, body: [], consumed: 27, close: false))
    }

    /// A peer that trickles its answer (one byte at a time, each well inside the timeout) is cut off at the deadline
    /// of the whole exchange. Without that deadline each read had its own timeout and the exchange lasted as long as
    /// the peer liked (here 6 s, with a 1 s timeout), then succeeded.
    @Test func aTricklingPeerIsCutAtTheDeadline() throws {
        let answer = Array("HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n".utf8) + [UInt8](repeating: 0x61, count: 30)
        for keepAlive in [false, true] {
            let peer = try ScriptedPeer(answer.flatMap { [ScriptedPeer.Step.send([$0]), .pause(0.085)] })
            do {
                if keepAlive {
                    _ = try HTTPClient.Connection(.tcp(host: "127.0.0.1", port: peer.port), timeout: 1).exchange(method: "GET", path: "/")
                } else {
                    _ = try HTTPClient.exchange(.tcp(host: "127.0.0.1", port: peer.port), method: "GET", path: "/", timeout: 1)
                }
                Issue.record("the trickled answer was waited for to its end")
            } catch {
                guard case .timedOut(let m) = error else { Issue.record("\(error)"); continue }
                #expect(m.contains("within 1.0 s"), "\(m)")
            }
            peer.finish()
        }
    }
}

/// A one-connection TCP peer on loopback that reads the request, then follows a script of writes and pauses, then
/// closes. Its thread ends when the script does (or when the client has gone).
// @unchecked: the fd and port are written once, before the thread starts.
final class ScriptedPeer: @unchecked Sendable {
    enum Step { case send([UInt8]), pause(Double) }
    let port: UInt16
    private let listener: Int32
    private let done = DispatchSemaphore(value: 0)

    init(_ script: [Step]) throws {
        let (fd, port) = try TestSupport.loopbackListener(backlog: 4)
        listener = fd
        self.port = port
        let done = self.done
        Thread {
            defer { done.signal() }
            let c = accept(fd, nil, nil)
            guard c >= 0 else { return }
            defer { close(c) }
            // The request: read until its head ends (the client sends no body here).
            var request: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 4096)
            while HTTPClient.endOfHead(request) == nil {
                let n = recv(c, &buf, buf.count, 0)
                guard n > 0 else { return }
                request += buf[0..<n]
            }
            for step in script {
                switch step {
                case .send(let bytes):
                    guard bytes.withUnsafeBytes({ Glibc.send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == bytes.count else { return }
                case .pause(let s): usleep(UInt32(s * 1e6))
                }
            }
        }.start()
    }

    /// Waits for the script to end and closes the listener.
    func finish() {
        done.wait()
        close(listener)
    }
}
