/// HTTP/1.1 framing for the two hand-written ends: the hook socket's reader of requests and the client's reader of
/// answers. Pure functions over the bytes received so far, so each is total (every input is a value: more needed, a
/// message, or a refusal) and fuzzed on its own (`Fuzz/FuzzHTTPRequest`, `Fuzz/FuzzHTTPResponse`).
///
/// Strict on purpose: whatever two readers (a proxy and this one, or a hostile peer and this one) could frame
/// differently is refused, never guessed at: CR or LF outside a CRLF, more than one length, a length that is not
/// digits, Transfer-Encoding beside Content-Length, chunk sizes that are not hex digits or too large.
public enum HTTPFraming {
    /// At most this many header fields in a head.
    public static let maxFields = 100

    // MARK: Requests (the hook socket)

    /// A request head as the hook socket accepts it.
    public struct RequestHead: Sendable, Equatable {
        public let method: String
        public let path: String
        public let contentLength: Int?
        public let close: Bool
    }

    /// Why a request or an answer is not accepted: the HTTP status to answer a request with, and a sentence.
    public struct Refusal: Error, Sendable, Equatable {
        public let status: Int
        public let message: String
        public init(_ status: Int, _ message: String) { self.status = status; self.message = message }
    }

    public enum RequestStep: Sendable, Equatable {
        /// The request has not all arrived.
        case needMore
        /// A whole request, and how many bytes of the buffer it took.
        case request(RequestHead, body: [UInt8], consumed: Int)
        /// Refused: answer with its status and close the connection.
        case refused(Refusal)
    }

    /// The next request in `buffer` (kept-alive connections may pipeline): its head at most `maxHead` bytes, its
    /// body at most `maxBody`.
    public static func request(_ buffer: [UInt8], maxHead: Int, maxBody: Int) -> RequestStep {
        guard let end = HTTPClient.endOfHead(buffer) else {
            return buffer.count > maxHead ? .refused(Refusal(431, "the request head is over \(maxHead) bytes")) : .needMore
        }
        guard end <= maxHead else { return .refused(Refusal(431, "the request head is over \(maxHead) bytes")) }
        let head: RequestHead
        switch requestHead(buffer[..<end]) {
        case .failure(let r): return .refused(r)
        case .success(let h): head = h
        }
        let length = head.contentLength ?? 0
        guard length <= maxBody else {
            return .refused(Refusal(413, "the request body is over \(maxBody) bytes; a gateway accepts at most 64 KiB (shorten the task)"))
        }
        let start = end + 4
        guard buffer.count - start >= length else { return .needMore }
        return .request(head, body: Array(buffer[start..<(start + length)]), consumed: start + length)
    }

    /// One space between the three parts of the request line, HTTP/1.1 or 1.0, field names of token characters with
    /// no space before the colon, no obsolete line folding, at most one Content-Length and only digits in it, no
    /// Transfer-Encoding.
    public static func requestHead(_ bytes: ArraySlice<UInt8>) -> Result<RequestHead, Refusal> {
        func refuse(_ status: Int, _ m: String) -> Result<RequestHead, Refusal> { .failure(Refusal(status, m)) }
        let lines: [ArraySlice<UInt8>]
        switch splitLines(bytes, allowObsText: false, what: "request") {
        case .failure(let r): return .failure(r)
        case .success(let l): lines = l
        }
        let parts = lines[0].split(separator: 32, omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[0].allSatisfy(isTokenByte), parts[1].first == UInt8(ascii: "/") else {
            return refuse(400, "the request line is not 'METHOD /path HTTP/1.1'")
        }
        let version = String(decoding: parts[2], as: UTF8.self)
        guard version == "HTTP/1.1" || version == "HTTP/1.0" else {
            return refuse(505, "only HTTP/1.1 (or 1.0) is spoken here, not '\(version.prefix(20))'")
        }
        var length: Int?
        var close = version == "HTTP/1.0"
        for line in lines.dropFirst() {
            let field: (name: String, value: ArraySlice<UInt8>)
            switch headerField(line, of: "request's") {
            case .failure(let r): return .failure(r)
            case .success(let f): field = f
            }
            switch field.name {
            case "content-length":
                guard length == nil else { return refuse(400, "the request has more than one Content-Length") }
                guard let n = decimal(field.value, maxDigits: 9) else {
                    return refuse(400, "Content-Length '\(shown(field.value))' is not a number of bytes")
                }
                length = n
            case "transfer-encoding":
                return refuse(501, "Transfer-Encoding is not accepted here; send the body with a Content-Length")
            case "connection":
                if hasToken(field.value, "close") { close = true }
            default: break
            }
        }
        let method = String(decoding: parts[0], as: UTF8.self), path = String(decoding: parts[1], as: UTF8.self)
        if method == "POST", length == nil { return refuse(411, "a POST needs a Content-Length") }
        return .success(RequestHead(method: method, path: path, contentLength: length, close: close))
    }

    // MARK: Answers (the client)

    public enum ResponseStep: Sendable, Equatable {
        case needMore
        /// A whole answer, how many bytes it took, and whether the connection must not be used again (the peer
        /// said `Connection: close`, or the body ran to the end of the stream).
        case response(status: Int, body: [UInt8], consumed: Int, close: Bool)
        case refused(Refusal)
    }

    /// The answer at the start of `buffer`. `atEnd`: the peer has closed its side, so nothing more will come (a body
    /// with no length then ends here, and anything else incomplete is truncated). Bodies of at most `maxBody` bytes,
    /// heads of at most `maxHead`.
    public static func response(_ buffer: [UInt8], atEnd: Bool, maxHead: Int = 64 * 1024, maxBody: Int) -> ResponseStep {
        func refuse(_ m: String) -> ResponseStep { .refused(Refusal(502, m)) }
        guard let end = HTTPClient.endOfHead(buffer) else {
            if buffer.count > maxHead { return refuse("the answer's head is over \(maxHead) bytes") }
            if atEnd { return refuse(buffer.isEmpty ? "the connection closed with no answer" : "the answer is not HTTP (no end of headers)") }
            return .needMore
        }
        guard end <= maxHead else { return refuse("the answer's head is over \(maxHead) bytes") }
        let lines: [ArraySlice<UInt8>]
        switch splitLines(buffer[..<end], allowObsText: true, what: "answer") {
        case .failure(let r): return .refused(Refusal(502, r.message))
        case .success(let l): lines = l
        }
        // "HTTP/1.1 200 OK": a version, three digits, and a reason phrase (possibly empty).
        let statusLine = lines[0]
        let parts = statusLine.split(separator: 32, maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].elementsEqual("HTTP/1.1".utf8) || parts[0].elementsEqual("HTTP/1.0".utf8),
              parts[1].count == 3, let status = decimal(parts[1], maxDigits: 3), (100...599).contains(status) else {
            return refuse("the answer is not HTTP (status line '\(shown(statusLine, 80))')")
        }
        // This client never sends Expect or an upgrade, so an interim answer is not one it can take.
        guard status >= 200 else { return refuse("the answer is an interim \(status), which this client never asks for") }
        var length: Int?
        var chunked = false
        var close = parts[0].elementsEqual("HTTP/1.0".utf8)
        for line in lines.dropFirst() {
            let field: (name: String, value: ArraySlice<UInt8>)
            switch headerField(line, of: "answer's") {
            case .failure(let r): return .refused(Refusal(502, r.message))
            case .success(let f): field = f
            }
            switch field.name {
            case "content-length":
                guard let n = decimal(field.value, maxDigits: 10) else {
                    return refuse("the answer's Content-Length '\(shown(field.value))' is not a number of bytes")
                }
                guard length == nil || length == n else { return refuse("the answer has two Content-Length fields that disagree") }
                length = n
            case "transfer-encoding":
                guard !chunked, asciiLowercased(field.value) == "chunked" else {
                    return refuse("the answer's Transfer-Encoding '\(shown(field.value))' is not 'chunked'")
                }
                chunked = true
            case "connection":
                if hasToken(field.value, "close") { close = true }
            default: break
            }
        }
        if chunked && length != nil { return refuse("the answer has both Content-Length and Transfer-Encoding") }
        let start = end + 4
        if status == 204 || status == 304 {
            return .response(status: status, body: [], consumed: start, close: close)
        }
        if let length {
            guard length <= maxBody else { return refuse("the answer's body is over \(maxBody) bytes") }
            guard buffer.count - start >= length else {
                return atEnd ? refuse("the answer was cut off: \(buffer.count - start) of its \(length) bytes arrived") : .needMore
            }
            return .response(status: status, body: Array(buffer[start..<(start + length)]), consumed: start + length, close: close)
        }
        if chunked {
            switch dechunk(buffer, from: start, maxBody: maxBody) {
            case .needMore: return atEnd ? refuse("the answer's chunked body was cut off") : .needMore
            case .refused(let m): return refuse(m)
            case .done(let body, let consumed): return .response(status: status, body: body, consumed: consumed, close: close)
            }
        }
        // No length: the body is whatever comes until the peer closes.
        guard buffer.count - start <= maxBody else { return refuse("the answer's body is over \(maxBody) bytes") }
        guard atEnd else { return .needMore }
        return .response(status: status, body: Array(buffer[start...]), consumed: buffer.count, close: true)
    }

    enum Dechunked { case needMore, refused(String), done([UInt8], Int) }

    /// A chunked body from `start`: `SIZE[;ext] CRLF data CRLF`, ..., `0 CRLF`, trailer lines, CRLF. Sizes are at
    /// most 8 hex digits and the sum at most `maxBody`, so no arithmetic can overflow.
    static func dechunk(_ b: [UInt8], from start: Int, maxBody: Int) -> Dechunked {
        var out: [UInt8] = []
        var i = start
        func line(from: Int) -> Int? {
            var j = from
            while j + 1 < b.count {
                if b[j] == 13 && b[j + 1] == 10 { return j }
                if b[j] == 13 || b[j] == 10 { return -1 }
                j += 1
            }
            if j < b.count, b[j] == 10 { return -1 }
            return nil
        }
        while true {
            guard let eol = line(from: i) else { return b.count - i > 1024 ? .refused("a chunk size line is over 1024 bytes") : .needMore }
            guard eol >= 0 else { return .refused("the answer's chunked body has a CR or LF that is not a CRLF") }
            guard eol - i <= 1024 else { return .refused("a chunk size line is over 1024 bytes") }
            let sizeLine = b[i..<eol]
            let digits = sizeLine.prefix { $0 != UInt8(ascii: ";") }
            guard !digits.isEmpty, digits.count <= 8, let size = hex(digits) else {
                return .refused("the answer's chunk size '\(shown(sizeLine))' is not 1 to 8 hex digits")
            }
            i = eol + 2
            if size == 0 {
                // Trailer fields, each ignored, until the empty line.
                var trailers = 0
                while true {
                    guard let end = line(from: i) else { return .needMore }
                    guard end >= 0 else { return .refused("the answer's trailer has a CR or LF that is not a CRLF") }
                    if end == i { return .done(out, end + 2) }
                    trailers += 1
                    guard trailers <= maxFields, end - i <= 8192 else { return .refused("the answer's trailer is too large") }
                    i = end + 2
                }
            }
            guard size <= maxBody - out.count else { return .refused("the answer's body is over \(maxBody) bytes") }
            guard b.count - i >= size + 2 else { return .needMore }
            guard b[i + size] == 13, b[i + size + 1] == 10 else { return .refused("a chunk of the answer does not end where its size says") }
            out += b[i..<(i + size)]
            i += size + 2
        }
    }

    // MARK: Shared pieces

    /// Lines at CRLF (a CR or LF alone is a line end to some readers and not to others); printable ASCII and tab,
    /// and in answers also bytes above 127 (reason phrases and values some servers send in UTF-8).
    static func splitLines(_ bytes: ArraySlice<UInt8>, allowObsText: Bool, what: String) -> Result<[ArraySlice<UInt8>], Refusal> {
        var lines: [ArraySlice<UInt8>] = []
        var start = bytes.startIndex, i = bytes.startIndex
        while i < bytes.endIndex {
            let b = bytes[i]
            if b == 13 || b == 10 {
                guard b == 13, i + 1 < bytes.endIndex, bytes[i + 1] == 10 else {
                    return .failure(Refusal(400, "the \(what) head has a CR or LF that is not part of a CRLF line end"))
                }
                lines.append(bytes[start..<i])
                guard lines.count <= maxFields + 1 else { return .failure(Refusal(431, "the \(what) has more than \(maxFields) header fields")) }
                i += 2
                start = i
                continue
            }
            guard b == 9 || (32...126).contains(b) || (allowObsText && b >= 128) else {
                return .failure(Refusal(400, "the \(what) head has bytes that are not printable ASCII"))
            }
            i += 1
        }
        lines.append(bytes[start..<bytes.endIndex])
        guard lines.count <= maxFields + 1 else { return .failure(Refusal(431, "the \(what) has more than \(maxFields) header fields")) }
        return .success(lines)
    }

    /// `Name: value` with a token name, no space before the colon, the value trimmed of spaces and tabs; the name
    /// lowercased.
    static func headerField(_ line: ArraySlice<UInt8>, of what: String) -> Result<(name: String, value: ArraySlice<UInt8>), Refusal> {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon != line.startIndex, line[..<colon].allSatisfy(isTokenByte) else {
            return .failure(Refusal(400, "the \(what) header line '\(shown(line, 40))' is not 'Name: value'"))
        }
        var value = line[(colon + 1)...]
        while let f = value.first, f == 32 || f == 9 { value = value.dropFirst() }
        while let l = value.last, l == 32 || l == 9 { value = value.dropLast() }
        return .success((asciiLowercased(line[..<colon]), value))
    }

    /// Digits only (no sign, no space), at most `maxDigits` of them, so the value always fits.
    static func decimal(_ bytes: ArraySlice<UInt8>, maxDigits: Int) -> Int? {
        guard !bytes.isEmpty, bytes.count <= maxDigits, bytes.allSatisfy({ (48...57).contains($0) }) else { return nil }
        return bytes.reduce(0) { $0 * 10 + Int($1 - 48) }
    }

    static func hex(_ bytes: ArraySlice<UInt8>) -> Int? {
        var v = 0
        for b in bytes {
            switch b {
            case 48...57: v = v * 16 + Int(b - 48)
            case 65...70: v = v * 16 + Int(b - 55)
            case 97...102: v = v * 16 + Int(b - 87)
            default: return nil
            }
        }
        return v
    }

    /// Whether a comma-separated field value lists `token` (ASCII, compared without case).
    static func hasToken(_ value: ArraySlice<UInt8>, _ token: String) -> Bool {
        value.split(separator: UInt8(ascii: ",")).contains { item in
            var t = item[...]
            while let f = t.first, f == 32 || f == 9 { t = t.dropFirst() }
            while let l = t.last, l == 32 || l == 9 { t = t.dropLast() }
            return asciiLowercased(t) == token
        }
    }

    static func asciiLowercased(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes.map { (65...90).contains($0) ? $0 + 32 : $0 }, as: UTF8.self)
    }

    /// A prefix of untrusted bytes for a message: printable ASCII kept, the rest as '?'.
    static func shown(_ bytes: ArraySlice<UInt8>, _ limit: Int = 20) -> String {
        String(decoding: bytes.prefix(limit).map { (32...126).contains($0) ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
    }

    /// RFC 9110's token characters, which a field name (and a method) is made of.
    public static func isTokenByte(_ b: UInt8) -> Bool {
        switch b {
        case 48...57, 65...90, 97...122: true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
             UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"): true
        default: false
        }
    }
}
