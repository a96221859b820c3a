import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One blocking HTTP/1.1 exchange: with the local Agent Relay broker, a peer's gateway, or a gateway's Unix socket.
/// Hand-written on purpose: URLSession would load libcurl and its TLS stack into every `spawngate` process,
/// costing the hook path several milliseconds per call. Every wait is bounded: connecting, sending, receiving.
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

    /// Sends one request and reads the whole answer (at most 1 MiB), each step within `timeout` seconds.
    public static func exchange(_ endpoint: Endpoint, method: String, path: String, headers: [(String, String)] = [],
                                body: [UInt8] = [], timeout: Double) throws(Failure) -> Response {
        let fd = try connect(endpoint, timeout: timeout)
        defer { close(fd) }
        setTimeouts(fd, timeout)

        try send(request(endpoint, method: method, path: path, headers: headers, body: body, keepAlive: false), on: fd, to: endpoint, timeout: timeout)
        var raw: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while raw.count <= maxResponse {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { throw .timedOut("no answer from \(endpoint) within \(timeout) s") }
            if n < 0 { throw .unreachable("the connection to \(endpoint) failed: \(errnoText())") }
            if n == 0 { break }
            raw += buffer[0..<n]
        }
        guard raw.count <= maxResponse else { throw .protocolError("the answer from \(endpoint) is over \(maxResponse) bytes") }
        do { return try parse(raw) } catch { throw .protocolError("\(endpoint): \(error.message)") }
    }

    static func request(_ endpoint: Endpoint, method: String, path: String, headers: [(String, String)], body: [UInt8],
                        keepAlive: Bool) -> [UInt8] {
        let hostHeader: String
        switch endpoint { case .tcp: hostHeader = endpoint.description; case .unix: hostHeader = "localhost" }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(hostHeader)\r\n\(keepAlive ? "" : "Connection: close\r\n")Content-Length: \(body.count)\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        return Array((head + "\r\n").utf8) + body
    }

    /// Writes all of `request` to a connected socket (no SIGPIPE; EINTR retried), within the socket's send timeout.
    public static func send(_ request: [UInt8], on fd: Int32, to endpoint: Endpoint, timeout: Double) throws(Failure) {
        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { throw .timedOut("\(endpoint) did not take the request within \(timeout) s") }
            guard n > 0 else { throw .unreachable("cannot send to \(endpoint): \(errnoText())") }
            sent += n
        }
    }

    static func setTimeouts(_ fd: Int32, _ timeout: Double) {
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// A kept-alive HTTP/1.1 connection for a long-running client that asks many times (a resident hook client,
    /// the benchmarks): the same bounded exchange as ``HTTPClient/exchange(_:method:path:headers:body:timeout:)``
    /// without a new connection (and the server's per-connection work) each time. One request at a time; not
    /// shared between threads. Answers must carry Content-Length (the gateway's do); anything else ends the
    /// connection with a protocol error.
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

        private func attempt(_ bytes: [UInt8]) throws(Failure) -> Response {
            if fd < 0 {
                fd = try HTTPClient.connect(endpoint, timeout: timeout)
                HTTPClient.setTimeouts(fd, timeout)
            }
            try HTTPClient.send(bytes, on: fd, to: endpoint, timeout: timeout)
            var headEnd: Int?
            var length = 0, close = false, status = 0
            while true {
                if headEnd == nil, let end = HTTPClient.endOfHead(buffered) {
                    headEnd = end
                    let head: Head
                    do { head = try HTTPClient.head(buffered[..<end]) } catch { throw .protocolError("\(endpoint): \(error.message)") }
                    guard let cl = head.fields["content-length"].flatMap({ Int($0) }), cl >= 0, cl <= maxResponse else {
                        throw .protocolError("\(endpoint): a kept-alive answer needs a Content-Length of at most \(maxResponse) bytes")
                    }
                    (length, status) = (cl, head.status)
                    close = head.fields["connection"]?.lowercased() == "close"
                }
                if let end = headEnd, buffered.count >= end + 4 + length {
                    let body = Array(buffered[(end + 4)..<(end + 4 + length)])
                    buffered.removeFirst(end + 4 + length)
                    if close { drop() }
                    return Response(status: status, body: body)
                }
                guard buffered.count <= maxResponse + 16384 else { throw .protocolError("the answer from \(endpoint) is over \(maxResponse) bytes") }
                var chunk = [UInt8](repeating: 0, count: 16384)
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n < 0 && errno == EINTR { continue }
                if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { throw .timedOut("no answer from \(endpoint) within \(timeout) s") }
                if n < 0 { throw .unreachable("the connection to \(endpoint) failed: \(errnoText())") }
                // Closed before any of the answer: the kept connection had been closed by the server.
                if n == 0 { throw buffered.isEmpty ? .unreachable("\(endpoint) closed the connection") : .protocolError("\(endpoint) closed the connection mid-answer") }
                buffered += chunk[0..<n]
            }
        }
    }

    struct Head { let status: Int; let fields: [String: String] }

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

    /// The status line and header fields (names lowercased) of an answer's head.
    static func head(_ bytes: ArraySlice<UInt8>) throws(GatewayFailure) -> Head {
        let lines = String(decoding: bytes, as: UTF8.self).components(separatedBy: "\r\n")
        let status = lines[0].split(separator: " ")
        guard status.count >= 2, status[0].hasPrefix("HTTP/1."), let code = Int(status[1]) else {
            throw GatewayFailure("the answer is not HTTP (status line '\(lines[0].prefix(80))')")
        }
        var fields: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return Head(status: code, fields: fields)
    }

    /// A connected stream socket, or why not. TCP connects without blocking and waits at most `timeout`, trying
    /// each address the name resolves to.
    static func connect(_ endpoint: Endpoint, timeout: Double) throws(Failure) -> Int32 {
        switch endpoint {
        case .unix(let path):
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw .unreachable("socket path \(path) is too long") }
            withUnsafeMutableBytes(of: &addr.sun_path) { dst in for (i, b) in bytes.enumerated() { dst[i] = b } }
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw .unreachable("cannot open a socket: \(errnoText())") }
            let ok = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
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

    /// Status line, headers, and a body delimited by Content-Length, chunked encoding, or the end of the stream.
    static func parse(_ raw: [UInt8]) throws(GatewayFailure) -> Response {
        guard let end = endOfHead(raw) else {
            throw GatewayFailure("the answer is not HTTP (no end of headers)")
        }
        let h = try head(raw[..<end])
        let (code, fields) = (h.status, h.fields)
        var body = Array(raw[(end + 4)...])
        if fields["transfer-encoding"]?.lowercased() == "chunked" {
            var out: [UInt8] = []
            var i = 0
            while let lineEnd = body[i...].firstIndex(of: 10) {
                let sizeText = String(decoding: body[i..<lineEnd], as: UTF8.self).split(separator: ";")[0].trimmingCharacters(in: .whitespacesAndNewlines)
                guard let size = Int(sizeText, radix: 16) else { throw GatewayFailure("the answer's chunked body is malformed") }
                if size == 0 { break }
                let start = lineEnd + 1
                guard start + size <= body.count else { throw GatewayFailure("the answer's chunked body is truncated") }
                out += body[start..<(start + size)]
                i = start + size + 2
                guard i <= body.count else { break }
            }
            body = out
        } else if let cl = fields["content-length"].flatMap({ Int($0) }), cl <= body.count {
            body = Array(body[..<cl])
        }
        return Response(status: code, body: body)
    }
}
