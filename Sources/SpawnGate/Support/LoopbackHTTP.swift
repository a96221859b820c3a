import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One blocking HTTP/1.1 exchange with a server on this machine's loopback (the local Agent Relay broker).
/// Hand-written on purpose: URLSession would load libcurl and its TLS stack into every `spawngate` process,
/// costing the hook path several milliseconds per call, for a request that never leaves the machine.
enum LoopbackHTTP {
    struct Response: Sendable {
        let status: Int
        let body: [UInt8]
    }

    static let maxResponse = 1 << 20

    static func post(host: String, port: UInt16, path: String, headers: [(String, String)], body: [UInt8],
                     timeout: Double) throws(GatewayFailure) -> Response {
        let fd: Int32
        var storage = sockaddr_storage()
        var length: socklen_t
        if host == "::1" || host == "[::1]" {
            fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = port.bigEndian
            a.sin6_addr = in6addr_loopback
            withUnsafeBytes(of: a) { src in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: src) } }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        } else {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = port.bigEndian
            a.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
            withUnsafeBytes(of: a) { src in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: src) } }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        }
        guard fd >= 0 else { throw GatewayFailure("cannot open a socket: \(errnoText())") }
        defer { close(fd) }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, length) }
        }
        guard connected == 0 else { throw GatewayFailure("cannot connect to \(host):\(port): \(errnoText())") }

        var head = "POST \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: close\r\nContent-Length: \(body.count)\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        let request = Array((head + "\r\n").utf8) + body
        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw GatewayFailure("cannot send to \(host):\(port): \(errnoText())") }
            sent += n
        }
        var raw: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while raw.count <= maxResponse {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw GatewayFailure("no answer from \(host):\(port) within \(timeout) s: \(errnoText())") }
            if n == 0 { break }
            raw += buffer[0..<n]
        }
        guard raw.count <= maxResponse else { throw GatewayFailure("the answer from \(host):\(port) is over \(maxResponse) bytes") }
        return try parse(raw)
    }

    /// Status line, headers, and a body delimited by Content-Length, chunked encoding, or the end of the stream.
    static func parse(_ raw: [UInt8]) throws(GatewayFailure) -> Response {
        let crlf2: [UInt8] = [13, 10, 13, 10]
        guard let end = raw.indices.first(where: { raw[$0...].starts(with: crlf2) }) else {
            throw GatewayFailure("the answer is not HTTP (no end of headers)")
        }
        let lines = String(decoding: raw[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let status = lines[0].split(separator: " ")
        guard status.count >= 2, status[0].hasPrefix("HTTP/1."), let code = Int(status[1]) else {
            throw GatewayFailure("the answer is not HTTP (status line '\(lines[0].prefix(80))')")
        }
        var fields: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
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
