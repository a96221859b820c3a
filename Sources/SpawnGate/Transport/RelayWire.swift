import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Remote requests carried over the Agent Relay workspace (a peer whose url is `relay:NAME`): the same bytes
/// `spawn --broker` posts over HTTP (a sealed envelope, or a signed control request), sent as a direct message
/// through Relaycast from this gateway's mailbox agent to the target's, and the signed answer back the same way.
///
/// A message is one line of text:
///
///     spawngate-v1 request <to> <id> <op> <payload>
///     spawngate-v1 answer <to> <id> <status> <body>
///
/// `to` is the gateway the message is for (its broker name), `id` a random correlation id, `op` one of `spawn`,
/// `release`, `agents`, `logs`, and `payload`/`body` the HTTP body (or, for `agents` and `logs`, the
/// `Spawngate-Request` header's base64url value). Nothing here is trusted: the target verifies the envelope as it
/// would over HTTP, and the requester verifies the receipt against the peer's key and its own request id.
public enum RelayWire {
    public static let prefix = "spawngate-v1 "
    /// Longest message text accepted: a sealed body at most, plus the words before it.
    public static let maxText = SealedBody.maxSize + 512

    /// The operations a workspace message can carry: those of ``GatewayOperation`` that travel through the
    /// workspace, by their names.
    public typealias Operation = GatewayOperation

    public enum Message: Sendable, Equatable {
        case request(to: String, id: String, op: Operation, payload: [UInt8])
        case answer(to: String, id: String, status: Int, body: [UInt8])
    }

    /// The Relaycast agent name of `broker`'s gateway mailbox.
    public static func mailbox(_ broker: String) -> String { "spawngate-" + broker }

    public static func newID() -> String { Sodium.randomBytes(12).hex }

    public static func format(_ m: Message) -> String {
        switch m {
        case .request(let to, let id, let op, let payload):
            return prefix + "request \(to) \(id) \(op.rawValue) " + String(decoding: payload, as: UTF8.self)
        case .answer(let to, let id, let status, let body):
            return prefix + "answer \(to) \(id) \(status) " + String(decoding: body, as: UTF8.self)
        }
    }

    /// Whether a message's text is meant for spawngate (and so never for an agent's terminal).
    public static func isOurs(_ text: String) -> Bool { text.hasPrefix(prefix) }

    /// Reads a message; nil (with the reason) for anything that is not one of ours in the exact form above.
    public static func parse(_ text: String) -> Result<Message, Denial> {
        func malformed(_ why: String) -> Result<Message, Denial> { .failure(Denial(.malformed, "a workspace message for spawngate \(why)")) }
        guard text.utf8.count <= maxText else { return malformed("is longer than \(maxText) bytes") }
        guard text.hasPrefix(prefix) else { return malformed("does not start with '\(prefix)'") }
        let words = text.dropFirst(prefix.count).split(separator: " ", maxSplits: 4, omittingEmptySubsequences: false)
        guard words.count == 5, !words[4].isEmpty else { return malformed("must be '<kind> <to> <id> <op|status> <payload>'") }
        let to = String(words[1]), id = String(words[2])
        guard (try? Home.validateBrokerName(to)) != nil else { return malformed("names no valid broker") }
        guard id.count >= 8, id.count <= 64, id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) else {
            return malformed("has no valid id")
        }
        guard words[4].unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F }) else { return malformed("carries a payload that is not one line of text") }
        let payload = Array(words[4].utf8)
        switch words[0] {
        case "request":
            guard let op = GatewayOperation(rawValue: String(words[3])), op.throughWorkspace else { return malformed("names an unknown operation") }
            return .success(.request(to: to, id: id, op: op, payload: payload))
        case "answer":
            guard let status = Int(words[3]), (100...599).contains(status) else { return malformed("has no valid status") }
            return .success(.answer(to: to, id: id, status: status, body: payload))
        default:
            return malformed("is neither a request nor an answer")
        }
    }
}

/// What a running `spawngate relay guard` writes into its home, so `spawn --broker` (for `relay:` peers) and
/// `doctor` find it: `relay-guard.json`, `{"url":…,"upstream":…,"pid":…,"name":…}`.
public struct RelayGuardFile: Sendable, Equatable {
    public let url: String
    public let upstream: String
    public let pid: Int32
    public let name: String

    public init(url: String, upstream: String, pid: Int32, name: String) {
        self.url = url; self.upstream = upstream; self.pid = pid; self.name = name
    }

    public static func path(_ home: Home) -> String { home.root + "/relay-guard.json" }

    public func save(_ home: Home) throws(OperatorError) {
        let json = JSONWriter.object([("url", .string(url)), ("upstream", .string(upstream)), ("pid", .int(Int64(pid))), ("name", .string(name))])
        try Files.writeAtomically(Self.path(home), json + [10], mode: 0o600)
    }

    /// The file of a guard that is still running, else nil.
    public static func load(_ home: Home) -> RelayGuardFile? {
        guard let bytes = try? Files.read(path(home), limit: 4096), case .object(let o)? = try? StrictJSONReader.parse(bytes),
              case .string(let url)? = o["url"], case .string(let upstream)? = o["upstream"], case .string(let name)? = o["name"],
              let pid = o["pid"]?.safeInteger.map({ Int32(truncatingIfNeeded: $0) }), pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return nil }
        return RelayGuardFile(url: url, upstream: upstream, pid: pid, name: name)
    }

    /// Where the guard listens, for the HTTP client.
    public var endpoint: HTTPClient.Endpoint? {
        guard let u = URLComponents(string: url), u.scheme == "http", let host = u.host, let port = u.port else { return nil }
        return .tcp(host: host, port: UInt16(port))
    }
}
