#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where a request reached this gateway from. Source binding (a rule's `sources:`, an enrolled key's `from=`)
/// limits the places an enrolled broker's requests are accepted from, so a stolen key is not usable from anywhere.
public enum RequestSource: Sendable, Equatable, CustomStringConvertible {
    /// This machine, not over the network: the hook's Unix socket, `check`, `exec`, a local MCP call.
    case local
    /// The peer address of the TCP connection `serve` took the request on (an IPv4-mapped IPv6 address is IPv4).
    case address(IPAddress)
    /// A workspace message carried by Relaycast (a `relay:NAME` peer): no network address of the sender is known.
    case workspace
    /// A place that could not be read (never expected): no `sources:` entry matches it.
    case unknown(String)

    /// A connection's source as ``init(connection:)`` reads it, or ``unknown(_:)``: never a place it is not.
    public static func of(connection text: String) -> RequestSource {
        RequestSource(connection: text) ?? .unknown(text)
    }

    /// `serve`'s notion of a connection's source: an IP address as text, or "local" for the Unix socket.
    /// Text that is neither is not a place anything may be bound to, so nil.
    public init?(connection text: String) {
        if text == "local" { self = .local; return }
        // The relay guard's mailbox names a workspace message's source "relay:SENDER": no address is known.
        if text.hasPrefix("relay:") { self = .workspace; return }
        guard let a = IPAddress(text) else { return nil }
        self = .address(a)
    }

    /// The text ``description`` wrote (a launch ticket's record).
    public init?(recorded text: String) {
        if text == "workspace" { self = .workspace; return }
        self.init(connection: text)
    }

    public var description: String {
        switch self {
        case .local: "local"
        case .workspace: "workspace"
        case .address(let a): a.description
        case .unknown(let text): "unknown place '\(text.prefix(64))'"
        }
    }
}

/// An IPv4 or IPv6 address, as its bytes (4 or 16).
public struct IPAddress: Sendable, Equatable, CustomStringConvertible {
    public let bytes: [UInt8]

    /// Strict text forms only (inet_pton): dotted quad for IPv4, RFC 4291 text for IPv6; no zone, no brackets.
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, how a dual-stack socket reports an IPv4 peer) becomes IPv4.
    public init?(_ text: String) {
        guard !text.isEmpty, text.utf8.count <= 45, text.allSatisfy({ $0.isASCII }) else { return nil }
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            bytes = withUnsafeBytes(of: &v4) { Array($0) }
            return
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        let b = withUnsafeBytes(of: &v6) { Array($0) }
        bytes = b[0..<10].allSatisfy { $0 == 0 } && b[10] == 0xff && b[11] == 0xff ? Array(b[12...]) : b
    }

    public var description: String {
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        let ok = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buf, socklen_t(buf.count)) } != nil
        return ok ? String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
    }

    public var isLoopback: Bool {
        bytes.count == 4 ? bytes[0] == 127 : bytes == [UInt8](repeating: 0, count: 15) + [1]
    }

    /// Whether a host as written (`--listen`, a URL) is this machine: `localhost` or a loopback address. Parsed,
    /// never matched as text: `127.evil.example` is a name anyone can point anywhere.
    public static func namesLoopback(_ host: String) -> Bool {
        host == "localhost" || IPAddress(host)?.isLoopback == true
    }
}

/// One entry of a `sources:` list: an address, a network in CIDR notation, `local` or `workspace`.
public struct SourcePattern: Sendable, Equatable, CustomStringConvertible {
    enum Kind: Sendable, Equatable {
        case local
        case workspace
        case network(IPAddress, prefix: Int)
    }
    let kind: Kind
    /// As written, for traces and errors.
    public let source: String

    public var description: String { source }

    /// `100.64.0.7`, `100.64.0.0/10`, `fd7a:115c:a1e0::/48`, `local` or `workspace`. A network with bits set after
    /// its prefix (`10.1.2.3/8`) is refused: it usually means the operator meant a different prefix.
    public static func parse(_ text: String) -> Result<SourcePattern, Refusal> {
        switch text {
        case "local": return .success(SourcePattern(kind: .local, source: text))
        case "workspace": return .success(SourcePattern(kind: .workspace, source: text))
        case "*", "any", "0.0.0.0/0", "::/0":
            return .failure(Refusal("'\(text)' would allow every address, which is what leaving sources out already means; name the addresses the broker's requests come from"))
        default: break
        }
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(String(parts[0])) else {
            return .failure(Refusal("'\(text)' is not an IP address, a network like 100.64.0.0/10, 'local' or 'workspace' (host names are not resolved: name the address)"))
        }
        let width = address.bytes.count * 8
        var prefix = width
        if parts.count == 2 {
            let digits = parts[1]
            guard !digits.isEmpty, digits.count <= 3, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let p = Int(digits), p >= 1, p <= width else {
                return .failure(Refusal("'\(text)': the prefix length after '/' must be a number from 1 to \(width)"))
            }
            prefix = p
        }
        guard Self.masked(address.bytes, prefix) == address.bytes else {
            let network = IPAddress(bytes: Self.masked(address.bytes, prefix))
            return .failure(Refusal("'\(text)' has bits set after its /\(prefix) prefix; write \(network)/\(prefix) for the network, or the address alone"))
        }
        return .success(SourcePattern(kind: .network(address, prefix: prefix), source: text))
    }

    public func matches(_ s: RequestSource) -> Bool {
        switch (kind, s) {
        case (.local, .local), (.workspace, .workspace): true
        case (.network(let net, let prefix), .address(let a)):
            a.bytes.count == net.bytes.count && Self.masked(a.bytes, prefix) == net.bytes
        default: false
        }
    }

    static func masked(_ b: [UInt8], _ prefix: Int) -> [UInt8] {
        b.enumerated().map { i, byte in
            let keep = max(0, min(8, prefix - i * 8))
            return keep == 8 ? byte : byte & ~(0xff >> keep)
        }
    }

    /// Parses a comma-separated list (`key add --sources`); every entry must parse.
    public static func parseList(_ text: String) -> Result<[SourcePattern], Refusal> {
        var out: [SourcePattern] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: false).map({ $0.trimmingSpaces }) {
            guard !item.isEmpty else { return .failure(Refusal("an empty entry in '\(text)'; separate addresses with single commas")) }
            switch parse(item) {
            case .success(let p): out.append(p)
            case .failure(let e): return .failure(e)
            }
        }
        return .success(out)
    }
}

extension [SourcePattern] {
    /// True when any entry admits `source`; an empty list admits nothing.
    func admits(_ source: RequestSource) -> Bool { contains { $0.matches(source) } }
    var listed: String { isEmpty ? "nothing (the list is empty)" : map(\.source).joined(separator: ", ") }
}

extension IPAddress {
    init(bytes: [UInt8]) { self.bytes = bytes }
}

private extension Substring {
    var trimmingSpaces: String { String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed()) }
}
