import CSpawn
import Foundation
import Logging
import ServiceLifecycle
import SpawnGate
#if canImport(Glibc)
import Glibc
#endif

/// The hooks' Unix socket (`serve --socket`), served by threads of its own instead of the HTTP framework.
///
/// Why not Hummingbird here: a hook decision is about 200 µs of work, and NIO, Hummingbird and the hops between
/// its event loops, Swift's executors and the commit queue cost about three times that per request (perf, issue
/// 19). Here a connection's own thread reads the request, verifies and matches it (both cores work at once),
/// waits for the group commit, and writes the answer; hook requests the client pipelined are decided as one batch
/// (one commit, answers in order, one write). The protocol is the small part of HTTP/1.1 the hook client
/// and the benchmarks speak, strictly: a request line, header fields, a body delimited by Content-Length, kept
/// alive unless the client says `Connection: close`. Anything else is refused with a status that says why, and the
/// connection is closed. The same limits as the TCP listener hold: a head within `headerTimeout` of the connection
/// or of the previous answer, however slowly it trickles; a body within `bodyTimeout` of its head; at most 64 KiB
/// of body; at most `maxConnections` at once and `perUID` for one uid (read from the kernel with SO_PEERCRED when
/// the connection is accepted, before anything is read from it).
// @unchecked: the only mutable fields (per-uid counts, total, stopping) are read and written under `lock`.
final class HookSocket: Service, @unchecked Sendable {
    struct Limits {
        var maxConnections = 256
        var perUID = 16
        var headerTimeout = 5.0
        var bodyTimeout = 10.0
    }

    static let maxHead = 16 * 1024
    static let bodyLimit = HTTPRoutes.bodyLimit

    let path: String
    let gateway: GatewayService
    let limits: Limits
    /// Opened to every local user (the kernel-checked uid still decides each request) when hook_users names others.
    let widen: Bool
    let onListening: @Sendable (String) -> Void

    private let lock = NSLock()
    private var perUID: [UInt32: Int] = [:]
    private var total = 0
    private var stopping = false
    private let threads = DispatchGroup()

    init(path: String, gateway: GatewayService, limits: Limits, widen: Bool, onListening: @escaping @Sendable (String) -> Void) {
        self.path = path; self.gateway = gateway; self.limits = limits; self.widen = widen; self.onListening = onListening
    }

    private var isStopping: Bool { lock.withLock { stopping } }

    func run() async throws {
        let listener = try bind()
        onListening("unix:\(path)")
        threads.enter()
        let acceptor = Thread { [self] in acceptLoop(listener); threads.leave() }
        acceptor.stackSize = 256 * 1024
        acceptor.start()
        // Until SIGTERM or SIGINT (or the group is cancelled): then stop accepting, let each connection finish the
        // request it is answering, and wait for every thread.
        try? await gracefulShutdown()
        lock.withLock { stopping = true }
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            threads.notify(queue: .global()) { done.resume() }
        }
        close(listener)
    }

    /// Binds and listens at `path`, mode 0600 (0666 with `widen`).
    private func bind() throws(GatewayFailure) -> Int32 {
        guard let addr = UnixSocketAddress(path) else {
            throw GatewayFailure("the socket path \(path) is too long (at most \(UnixSocketAddress.maxPathBytes) bytes); choose a shorter --socket path")
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw GatewayFailure("cannot open a socket: \(errnoText())") }
        // 0600 from the moment it exists: the umask applies at bind.
        let old = umask(0o177)
        let bound = addr.with { Glibc.bind(fd, $0, $1) }
        umask(old)
        guard bound == 0, listen(fd, 512) == 0 else {
            let why = errnoText()
            close(fd)
            throw GatewayFailure("cannot listen on \(path): \(why); check the directory exists and is writable")
        }
        if widen { chmod(path, 0o666) }
        // Non-blocking, so a connection that goes away between poll and accept cannot hold the accept loop (and a
        // graceful stop) until the next one arrives; accepted sockets do not inherit the flag.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        return fd
    }

    private func acceptLoop(_ listener: Int32) {
        while !isStopping {
            var pfd = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 250) > 0 else { continue }
            let fd = accept(listener, nil, nil)
            guard fd >= 0 else { continue }
            // The spawner closes every other descriptor in the agent anyway; this keeps the socket out of any exec.
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            var cred = cspawn_ucred(pid: 0, uid: UInt32.max, gid: UInt32.max)
            var len = socklen_t(MemoryLayout<cspawn_ucred>.size)
            guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 else {
                refuse(fd, 403, "the caller's credentials could not be read; refused")
                continue
            }
            let (uid, pid) = (cred.uid, cred.pid)
            if let full = admit(uid) {
                refuse(fd, 503, full)
                continue
            }
            threads.enter()
            let t = Thread { [self] in
                serve(fd, uid: uid, pid: pid)
                close(fd)
                lock.withLock {
                    total -= 1
                    let n = (perUID[uid] ?? 1) - 1
                    perUID[uid] = n > 0 ? n : nil
                }
                threads.leave()
            }
            t.stackSize = 512 * 1024
            t.start()
        }
    }

    /// Counts a connection from `uid`, or says why not.
    private func admit(_ uid: UInt32) -> String? {
        lock.withLock {
            guard total < limits.maxConnections else {
                return "the gateway has \(limits.maxConnections) connections open, its limit; try again shortly"
            }
            guard perUID[uid, default: 0] < limits.perUID else {
                return "uid \(uid) has \(limits.perUID) connections open to this socket, its limit; close one, or try again shortly"
            }
            total += 1
            perUID[uid, default: 0] += 1
            return nil
        }
    }

    private func refuse(_ fd: Int32, _ status: Int, _ message: String) {
        var tv = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        _ = write(fd, answer(Reply(error: status, message), close: true))
        close(fd)
    }

    // MARK: One connection

    /// Requests on one connection, one at a time, until the client closes, says `Connection: close`, breaks a rule
    /// or misses a deadline, or the gateway stops.
    private func serve(_ fd: Int32, uid: UInt32, pid: Int32) {
        var tv = timeval(tv_sec: Int(limits.bodyTimeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var buffer: [UInt8] = []
        buffer.reserveCapacity(4096)
        while true {
            // The head must end before the header deadline, however the bytes trickle; then the body before its own.
            let headDeadline = Supervisor.monotonic() + limits.headerTimeout
            var bodyDeadline: Double?
            var step = HTTPFraming.request(buffer, maxHead: Self.maxHead, maxBody: Self.bodyLimit)
            while step == .needMore {
                if bodyDeadline == nil, HTTPClient.endOfHead(buffer) != nil { bodyDeadline = Supervisor.monotonic() + limits.bodyTimeout }
                // Between requests, a stopping gateway closes the connection; within one, it answers first.
                guard fill(fd, &buffer, until: bodyDeadline ?? headDeadline, idle: buffer.isEmpty) else { return }
                step = HTTPFraming.request(buffer, maxHead: Self.maxHead, maxBody: Self.bodyLimit)
            }
            switch step {
            case .needMore: return
            case .refused(let refusal):
                _ = write(fd, answer(Reply(error: refusal.status, refusal.message), close: true))
                return
            case .request(let head, let body, let consumed):
                buffer.removeFirst(consumed)
                // Hook requests the client pipelined (already here, whole) are decided together: one group
                // commit for all of them, and their answers in order in one write.
                var batch = [(head, body)]
                while Self.isHook(batch.last!.0), !batch.last!.0.close, batch.count < Self.maxPipelined,
                      case .request(let h, let b, let c) = HTTPFraming.request(buffer, maxHead: Self.maxHead, maxBody: Self.bodyLimit),
                      Self.isHook(h) {
                    buffer.removeFirst(c)
                    batch.append((h, b))
                }
                if batch.count == 1 {
                    let reply = route(head, body: body, uid: uid, pid: pid)
                    guard write(fd, answer(reply, close: head.close)), !head.close else { return }
                } else {
                    let answers = gateway.hookBlocking(bodies: batch.map(\.1), uid: uid, pid: pid)
                    var out: [UInt8] = []
                    for ((h, _), a) in zip(batch, answers) {
                        out += answer(Reply(status: a.status, json: Array(a.decision.json.utf8) + [10]), close: h.close)
                    }
                    guard write(fd, out), !batch.last!.0.close else { return }
                }
            }
        }
    }

    /// At most this many pipelined hook requests are decided as one batch; the rest wait for the next.
    static let maxPipelined = 32

    /// A request `route` would answer with a hook decision.
    static func isHook(_ head: HTTPFraming.RequestHead) -> Bool {
        GatewayOperation(path: head.path) == .hook && head.method == GatewayOperation.hook.method
    }

    /// What goes back on the socket: the gateway's answer, or this transport's own refusal (framing, routing,
    /// connection caps), which has statuses of its own.
    struct Reply {
        let status: Int
        let contentType: String
        let body: [UInt8]
        init(_ a: GatewayAnswer) { status = a.wireStatus; contentType = a.contentType; body = a.wireBody }
        init(status: Int, json: [UInt8]) { self.status = status; contentType = "application/json"; body = json }
        init(error status: Int, _ message: String) {
            self.status = status; contentType = "application/json"
            body = JSONWriter.object([("error", .string(message))]) + [10]
        }
    }

    /// The operations of ``GatewayOperation`` answered here, routed from the table.
    private func route(_ head: HTTPFraming.RequestHead, body: [UInt8], uid: UInt32, pid: Int32) -> Reply {
        guard let op = GatewayOperation(path: head.path), op.onHookSocket else {
            let here = GatewayOperation.allCases.filter(\.onHookSocket).map { "\($0.method) \($0.path)" }.joined(separator: ", ")
            return Reply(error: 404, "no \(head.path) on the hook socket: it answers \(here)")
        }
        guard head.method == op.method else { return Reply(error: 405, "\(head.method) is not allowed on \(head.path)") }
        switch op {
        case .hook:
            let (status, decision) = gateway.hookBlocking(body: body, uid: uid, pid: pid)
            // The hook's decision JSON, with the status that says whether the caller may ask (403, 429) at all.
            return Reply(status: status, json: Array(decision.json.utf8) + [10])
        case .settle:
            let (status, json) = gateway.settleBlocking(body: body, uid: uid, pid: pid)
            return Reply(status: status, json: json)
        case .health: return Reply(gateway.health)
        case .metrics: return Reply(gateway.metricsText)
        default: return Reply(error: 404, "no \(head.path) on the hook socket")
        }
    }

    /// Reads what is there into `buffer`, waiting at most until `deadline` (in slices, so a stopping gateway is
    /// noticed). False when the connection is over: closed, failed, too slow, or idle while the gateway stops.
    private func fill(_ fd: Int32, _ buffer: inout [UInt8], until deadline: Double, idle: Bool) -> Bool {
        while true {
            let left = deadline - Supervisor.monotonic()
            guard left > 0 else { return false }
            if idle && isStopping { return false }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, Int32(min(left, 0.25) * 1000) + 1)
            if ready < 0 && errno == EINTR { continue }
            guard ready >= 0 else { return false }
            if ready == 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 16 * 1024)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            guard n > 0 else { return false }
            buffer += chunk[0..<n]
            return true
        }
    }

    private func answer(_ a: Reply, close: Bool) -> [UInt8] {
        let reason = [200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
                      411: "Length Required", 413: "Content Too Large", 429: "Too Many Requests",
                      431: "Request Header Fields Too Large", 501: "Not Implemented", 503: "Service Unavailable",
                      505: "HTTP Version Not Supported"][a.status] ?? "Status"
        let head = "HTTP/1.1 \(a.status) \(reason)\r\nContent-Type: \(a.contentType)\r\nContent-Length: \(a.body.count)\r\n"
            + (close ? "Connection: close\r\n" : "") + "\r\n"
        return Array(head.utf8) + a.body
    }

    /// Writes all of `bytes` (within the send timeout set at accept); false if the connection failed.
    private func write(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        (try? HTTPClient.send(bytes, on: fd, to: .unix(path: path), timeout: limits.bodyTimeout)) != nil
    }
}

private func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }
