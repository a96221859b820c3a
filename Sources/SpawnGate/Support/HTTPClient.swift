import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One blocking HTTP/1.1 exchange: with the local Agent Relay broker, a peer's gateway, or a gateway's Unix socket.
/// Hand-written on purpose: URLSession would load libcurl and its TLS stack into every `spawngate` process,
/// costing the hook path several milliseconds per call. One deadline bounds each whole exchange, and the framing
/// (``HTTPFraming/response(_:atEnd:maxHead:maxBody:)``) is total: a peer's malformed answer is an error, never a trap.
public enum HTTPClient {
    public struct Response: Sendable {
        public let status: Int
        public let body: [UInt8]
    }

    public enum Endpoint: Sendable, CustomStringConvertible {
        case tcp(host: String, port: UInt16)
        case unix(path: String)

        public var description: String {
            switch self {
            case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            case .unix(let path): path
            }
        }
    }

    /// Why an exchange failed, so callers can tell "nobody listens" from "it hangs" from "it talks nonsense".
    public enum Failure: Error, Sendable {
        case unreachable(String)
        case timedOut(String)
        case protocolError(String)

        public var message: String {
            switch self { case .unreachable(let m), .timedOut(let m), .protocolError(let m): m }
        }
    }

    static let maxResponse = 1 << 20

    /// Sends one request and reads its answer (a body of at most 1 MiB), all within `timeout` seconds: connecting,
    /// sending and every byte of the answer share one deadline, so a peer that trickles its answer a byte at a time
    /// cannot hold the caller past it. Any malformed answer is a `.protocolError`, never a crash.
    public static func exchange(_ endpoint: Endpoint, method: String, path: String, headers: [(String, String)] = [],
                                body: [UInt8] = [], timeout: Double) throws(Failure) -> Response {
        let deadline = Deadline(seconds: timeout)
        let fd = try connect(endpoint, timeout: timeout)
        defer { close(fd) }
        try send(request(endpoint, method: method, path: path, headers: headers, body: body, keepAlive: false), on: fd, to: endpoint,
                 until: deadline)
        var raw: [UInt8] = []
        var atEnd = false
        while true {
            switch HTTPFraming.response(raw, atEnd: atEnd, maxBody: maxResponse) {
            case .response(let status, let body, _, _): return Response(status: status, body: body)
            case .refused(let r): throw .protocolError("\(endpoint): \(r.message)")
            case .needMore: break
            }
            // The needMore above guarantees atEnd is false here: a closed stream always frames or refuses.
            atEnd = try receive(fd, into: &raw, from: endpoint, until: deadline)
        }
    }

    /// A point in monotonic time the whole of an exchange must finish by.
    public struct Deadline: Sendable {
        let at: Double
        let seconds: Double
        public init(seconds: Double) { self.seconds = seconds; at = Supervisor.monotonic() + seconds }
        /// Milliseconds left for poll(2), at least 0.
        var pollMilliseconds: Int32 { Int32(max(0, min((at - Supervisor.monotonic()) * 1000, 3_600_000)).rounded(.up)) }
    }

    /// Waits (within the deadline) for `fd` to be ready for `events`.
    static func wait(_ fd: Int32, _ events: Int32, until deadline: Deadline, endpoint: Endpoint, doing: String) throws(Failure) {
        while true {
            var pfd = pollfd(fd: fd, events: Int16(events), revents: 0)
            let ready = poll(&pfd, 1, deadline.pollMilliseconds)
            if ready < 0 && errno == EINTR { continue }
            if ready < 0 { throw .unreachable("the connection to \(endpoint) failed: \(errnoText())") }
            if ready == 0 { throw .timedOut("\(endpoint) did not \(doing) within \(deadline.seconds) s") }
            return
        }
    }

    /// Appends what arrives to `raw` (bounded: more than the largest answer is a protocol error); true when the
    /// peer has closed its side.
    static func receive(_ fd: Int32, into raw: inout [UInt8], from endpoint: Endpoint, until deadline: Deadline) throws(Failure) -> Bool {
        guard raw.count <= maxResponse + 64 * 1024 else { throw .protocolError("the answer from \(endpoint) is over \(maxResponse) bytes") }
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            try wait(fd, POLLIN, until: deadline, endpoint: endpoint, doing: "answer")
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) { continue }
            if n < 0 { throw .unreachable("the connection to \(endpoint) failed: \(errnoText())") }
            if n == 0 { return true }
            raw += chunk[0..<n]
            return false
        }
    }

    static func request(_ endpoint: Endpoint, method: String, path: String, headers: [(String, String)], body: [UInt8],
                        keepAlive: Bool) -> [UInt8] {
        let hostHeader: String
        switch endpoint { case .tcp: hostHeader = endpoint.description; case .unix: hostHeader = "localhost" }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(hostHeader)\r\n\(keepAlive ? "" : "Connection: close\r\n")Content-Length: \(body.count)\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        return Array((head + "\r\n").utf8) + body
    }

    /// Writes all of `request` to a connected socket (no SIGPIPE; EINTR retried) within `timeout` seconds.
    public static func send(_ request: [UInt8], on fd: Int32, to endpoint: Endpoint, timeout: Double) throws(Failure) {
        try send(request, on: fd, to: endpoint, until: Deadline(seconds: timeout))
    }

    static func send(_ request: [UInt8], on fd: Int32, to endpoint: Endpoint, until deadline: Deadline) throws(Failure) {
        var sent = 0
        while sent < request.count {
            try wait(fd, POLLOUT, until: deadline, endpoint: endpoint, doing: "take the request")
            let n = request[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) { continue }
            guard n > 0 else { throw .unreachable("cannot send to \(endpoint): \(errnoText())") }
            sent += n
        }
    }

    /// A kept-alive HTTP/1.1 connection for a long-running client that asks many times (a resident hook client,
    /// the benchmarks): the same bounded exchange as ``HTTPClient/exchange(_:method:path:headers:body:timeout:)``
    /// without a new connection (and the server's per-connection work) each time. One request at a time; not
    /// shared between threads. An answer framed by the end of the stream (no length) ends the connection after it.
    public final class Connection {
        public let endpoint: Endpoint
        let timeout: Double
        private var fd: Int32 = -1
        private var buffered: [UInt8] = []

        public init(_ endpoint: Endpoint, timeout: Double) {
            self.endpoint = endpoint
            self.timeout = timeout
        }

        deinit { if fd >= 0 { close(fd) } }

        /// Sends one request and reads its answer. A kept connection the server has closed meanwhile (idle, or at
        /// its connection cap) is opened again once and the request sent on the new one; a request can therefore
        /// reach the gateway twice only if it was cut after being read, and the gateway answers the second
        /// `replay`, never decides it twice.
        public func exchange(method: String, path: String, headers: [(String, String)] = [], body: [UInt8] = []) throws(Failure) -> Response {
            let bytes = HTTPClient.request(endpoint, method: method, path: path, headers: headers, body: body, keepAlive: true)
            let reused = fd >= 0
            do { return try attempt(bytes) } catch {
                drop()
                guard reused, case .unreachable = error else { throw error }
                return try attempt(bytes)
            }
        }

        private func drop() { if fd >= 0 { close(fd); fd = -1 }; buffered = [] }

        /// Sends several requests at once (HTTP/1.1 pipelining: a resident hook client with many decisions to ask)
        /// and reads their answers, in order. Not sent again on a closed connection: one that ends before every
        /// answer arrived fails the whole batch, and the gateway answers any request it had decided `replay`.
        public func exchange(pipelined requests: [(method: String, path: String, body: [UInt8])]) throws(Failure) -> [Response] {
            let deadline = Deadline(seconds: timeout)
            if fd < 0 { fd = try HTTPClient.connect(endpoint, timeout: timeout) }
            var bytes: [UInt8] = []
            for r in requests { bytes += HTTPClient.request(endpoint, method: r.method, path: r.path, headers: [], body: r.body, keepAlive: true) }
            do throws(Failure) { try HTTPClient.send(bytes, on: fd, to: endpoint, until: deadline) } catch { drop(); throw error }
            var answers: [Response] = []
            var atEnd = false
            while answers.count < requests.count {
                switch HTTPFraming.response(buffered, atEnd: atEnd, maxBody: maxResponse) {
                case .response(let status, let body, let consumed, let close):
                    buffered.removeFirst(consumed)
                    answers.append(Response(status: status, body: body))
                    if (close || atEnd) && answers.count < requests.count {
                        drop()
                        throw .protocolError("\(endpoint) closed the connection after \(answers.count) of \(requests.count) pipelined answers")
                    }
                    if close || atEnd { drop() }
                    continue
                case .refused(let r): drop(); throw .protocolError("\(endpoint): \(r.message)")
                case .needMore: break
                }
                do throws(Failure) { atEnd = try HTTPClient.receive(fd, into: &buffered, from: endpoint, until: deadline) } catch { drop(); throw error }
            }
            return answers
        }

        private func attempt(_ bytes: [UInt8]) throws(Failure) -> Response {
            let deadline = Deadline(seconds: timeout)
            if fd < 0 { fd = try HTTPClient.connect(endpoint, timeout: timeout) }
            try HTTPClient.send(bytes, on: fd, to: endpoint, until: deadline)
            var atEnd = false
            while true {
                switch HTTPFraming.response(buffered, atEnd: atEnd, maxBody: maxResponse) {
                case .response(let status, let body, let consumed, let close):
                    buffered.removeFirst(consumed)
                    if close || atEnd { drop() }
                    return Response(status: status, body: body)
                case .refused(let r): throw .protocolError("\(endpoint): \(r.message)")
                case .needMore: break
                }
                atEnd = try HTTPClient.receive(fd, into: &buffered, from: endpoint, until: deadline)
                // Closed before any of the answer: the kept connection had been closed by the server.
                if atEnd && buffered.isEmpty { throw .unreachable("\(endpoint) closed the connection") }
            }
        }
    }

    /// Where the blank line (CRLF CRLF) that ends an HTTP head starts, searching from `start`; nil when it has not
    /// arrived yet. Shared by this client and the hook socket's reader.
    public static func endOfHead(_ buffer: [UInt8], from start: Int = 0) -> Int? {
        var i = max(start, 0)
        while i + 3 < buffer.count {
            if buffer[i] == 13, buffer[i + 1] == 10, buffer[i + 2] == 13, buffer[i + 3] == 10 { return i }
            i += 1
        }
        return nil
    }

    /// A connected stream socket, or why not. TCP connects without blocking and waits at most `timeout`, trying
    /// each address the name resolves to.
    static func connect(_ endpoint: Endpoint, timeout: Double) throws(Failure) -> Int32 {
        switch endpoint {
        case .unix(let path):
            guard let addr = UnixSocketAddress(path) else { throw .unreachable("socket path \(path) is too long") }
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw .unreachable("cannot open a socket: \(errnoText())") }
            let ok = addr.with { Glibc.connect(fd, $0, $1) }
            guard ok == 0 else {
                let why = errnoText()
                close(fd)
                throw .unreachable("cannot connect to \(path): \(why); is 'spawngate serve --socket \(path)' running?")
            }
            return fd
        case .tcp(let host, let port):
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            hints.ai_flags = AI_NUMERICSERV
            var list: UnsafeMutablePointer<addrinfo>?
            let rc = getaddrinfo(host, String(port), &hints, &list)
            guard rc == 0, let first = list else {
                throw .unreachable("cannot resolve \(host): \(String(cString: gai_strerror(rc)))")
            }
            defer { freeaddrinfo(list) }
            var lastError = "no address"
            var timedOut = false
            var cursor: UnsafeMutablePointer<addrinfo>? = first
            while let ai = cursor {
                cursor = ai.pointee.ai_next
                let fd = socket(ai.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
                guard fd >= 0 else { lastError = errnoText(); continue }
                if Glibc.connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) != 0 && errno != EINPROGRESS {
                    lastError = errnoText(); close(fd); continue
                }
                var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                var ready: Int32
                repeat { ready = poll(&pfd, 1, Int32(timeout * 1000)) } while ready < 0 && errno == EINTR
                if ready == 0 { timedOut = true; lastError = "no connection within \(timeout) s"; close(fd); continue }
                var soError: Int32 = 0
                var len = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &len)
                guard soError == 0 else { lastError = String(cString: strerror(soError)); close(fd); continue }
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~Int32(O_NONBLOCK))
                return fd
            }
            if timedOut { throw .timedOut("cannot connect to \(endpoint): \(lastError)") }
            throw .unreachable("cannot connect to \(endpoint): \(lastError)")
        }
    }

    /// A whole answer as read to the end of the stream: status, and a body delimited by Content-Length, chunked
    /// encoding, or the end of the stream.
    static func parse(_ raw: [UInt8]) throws(GatewayFailure) -> Response {
        switch HTTPFraming.response(raw, atEnd: true, maxBody: maxResponse) {
        case .response(let status, let body, _, _): return Response(status: status, body: body)
        case .refused(let r): throw GatewayFailure(r.message)
        case .needMore: throw GatewayFailure("the answer is incomplete")
        }
    }
}
