import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Remote requests carried over the Agent Relay workspace (a peer whose url is `relay:NAME`): the same bytes
/// `spawn --broker` posts over HTTP (a sealed envelope, or a signed control request), sent as a direct message
/// through Relaycast from this gateway's mailbox agent to the target's, and the signed answer back the same way.
///
/// Everyone holding the workspace key reads every direct message, so a message's text is one sealed box:
///
///     spawngate-v2 <base64url(sealed box)>
///
/// A request is sealed to the target gateway's identity key (its X25519 form), an answer to the reply key the
/// request carried (a key pair the requesting guard made for itself). Inside, padded with spaces to a multiple of
/// ``padding`` bytes so that sizes say little, is one JSON object:
///
///     {"kind":"request","to":<broker>,"id":<id>,"op":<op>,"reply_key":<b64u>,"payload":<text>}
///     {"kind":"answer","to":<broker>,"id":<id>,"status":<int>,"body":<text>}
///
/// `to` is the gateway the message is for (its broker name), `id` the requester's random correlation id (a retry
/// reuses it, and the target answers a retry with the same answer), `op` one of `spawn`, `release`, `agents`,
/// `logs`, and `payload`/`body` the HTTP body (or, for `agents` and `logs`, the `Spawngate-Request` header's
/// base64url value). An observer with the workspace key sees which two mailboxes talk, when, and the padded size;
/// nothing else. Nothing inside is trusted either: the target verifies the envelope as it would over HTTP, and the
/// requester verifies the receipt against the peer's key and its own request id.
public enum RelayWire {
    public static let prefix = "spawngate-v2 "
    /// Every spawngate workspace message starts so (this version's and older ones'): none reaches a broker.
    public static let family = "spawngate-v"
    /// Longest message text sent or read. Relaycast publishes no limit, so spawngate keeps to 64 KiB of text: a
    /// request with a task of about 24 KiB, and every answer a gateway gives through the workspace (logs receipts
    /// are cut to fit). A larger message is refused before it is sent, with this number in the sentence.
    public static let maxText = 64 * 1024
    /// Inner messages are padded with spaces to a multiple of this.
    public static let padding = 2048

    /// The operations a workspace message can carry: those of ``GatewayOperation`` that travel through the
    /// workspace, by their names.
    public typealias Operation = GatewayOperation

    public enum Message: Sendable, Equatable {
        case request(to: String, id: String, op: Operation, replyKey: [UInt8], payload: [UInt8])
        case answer(to: String, id: String, status: Int, body: [UInt8])
    }

    /// The key pair a requesting mailbox has answers sealed to.
    public struct ReplyKey: Sendable {
        public let publicKey: [UInt8]
        let secretKey: [UInt8]
        public static func generate() -> ReplyKey {
            let (pk, sk) = Sodium.boxKeyPair()
            return ReplyKey(publicKey: pk, secretKey: sk)
        }
    }

    /// The Relaycast agent name of `broker`'s gateway mailbox.
    public static func mailbox(_ broker: String) -> String { "spawngate-" + broker }

    public static func newID() -> String { Sodium.randomBytes(12).hex }

    /// Whether a message's text is meant for spawngate (and so never for an agent's terminal).
    public static func isOurs(_ text: String) -> Bool { text.hasPrefix(family) }

    /// The text of a request, sealed to `recipient` (the target gateway's identity key); `malformed` when it would
    /// be longer than ``maxText``.
    public static func request(to: String, id: String, op: Operation, replyKey: [UInt8], payload: [UInt8], recipient: PublicKey) -> Result<String, Denial> {
        let inner = JSONWriter.object([("kind", .string("request")), ("to", .string(to)), ("id", .string(id)), ("op", .string(op.rawValue)),
                                       ("reply_key", .string(Base64.urlEncode(replyKey))),
                                       ("payload", .string(String(decoding: payload, as: UTF8.self)))])
        return seal(inner) { Sodium.seal($0, toEd25519: recipient.bytes) }
    }

    /// The text of an answer, sealed to the reply key its request carried.
    public static func answer(to: String, id: String, status: Int, body: [UInt8], replyKey: [UInt8]) -> Result<String, Denial> {
        let inner = JSONWriter.object([("kind", .string("answer")), ("to", .string(to)), ("id", .string(id)), ("status", .int(Int64(status))),
                                       ("body", .string(String(decoding: body, as: UTF8.self)))])
        return seal(inner) { Sodium.seal($0, toX25519: replyKey) }
    }

    private static func seal(_ inner: [UInt8], _ box: ([UInt8]) -> [UInt8]?) -> Result<String, Denial> {
        let padded = inner + [UInt8](repeating: 0x20, count: (padding - inner.count % padding) % padding)
        // Four base64 characters for every three bytes of the box (48 bytes longer than what it holds).
        let length = prefix.utf8.count + (padded.count + 48 + 2) / 3 * 4
        guard length <= maxText, let sealed = box(padded) else {
            return .failure(Denial(.malformed, "the message would be \(length) bytes of text in the workspace, over the \(maxText) bytes spawngate sends through Relaycast; shorten the task, or reach this peer over http://"))
        }
        return .success(prefix + Base64.urlEncode(sealed))
    }

    /// Reads a message: opened with this gateway's identity key (a request) or with `reply` (an answer), then
    /// read strictly. `malformed`, saying why, for anything else: an older version, a box sealed to another key
    /// or altered, or an inner message not in the exact form above.
    public static func open(_ text: String, identity: SigningKey, reply: ReplyKey) -> Result<Message, Denial> {
        func malformed(_ why: String) -> Result<Message, Denial> { .failure(Denial(.malformed, "a workspace message for spawngate \(why)")) }
        guard text.utf8.count <= maxText else { return malformed("is longer than \(maxText) bytes") }
        guard text.hasPrefix(prefix) else {
            return malformed(text.hasPrefix(family) ? "is of another version than '\(prefix)' (update spawngate on both machines)" : "does not start with '\(prefix)'")
        }
        guard let box = Base64.urlDecode(String(text.dropFirst(prefix.count))) else { return malformed("is not one base64url box") }
        guard let inner = identity.openSealed(box) ?? Sodium.openSealed(box, x25519PublicKey: reply.publicKey, secretKey: reply.secretKey) else {
            return malformed("does not open with this gateway's key (sealed to another gateway, altered, or not from a spawngate gateway)")
        }
        guard case .object(let o)? = try? StrictJSONReader.parse(inner), case .string(let kind)? = o["kind"],
              case .string(let to)? = o["to"], case .string(let id)? = o["id"] else {
            return malformed("opened, but holds no valid message")
        }
        guard (try? Home.validateBrokerName(to)) != nil else { return malformed("names no valid broker") }
        guard id.count >= 8, id.count <= 64, id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) else {
            return malformed("has no valid id")
        }
        switch kind {
        case "request":
            guard Set(o.keys) == ["kind", "to", "id", "op", "reply_key", "payload"], case .string(let opName)? = o["op"],
                  case .string(let key)? = o["reply_key"], let replyKey = Base64.urlDecode(key), replyKey.count == 32,
                  case .string(let payload)? = o["payload"], !payload.isEmpty else {
                return malformed("is a request without exactly kind, to, id, op, reply_key (32 bytes) and payload")
            }
            guard let op = GatewayOperation(rawValue: opName), op.throughWorkspace else { return malformed("names an unknown operation") }
            return .success(.request(to: to, id: id, op: op, replyKey: replyKey, payload: Array(payload.utf8)))
        case "answer":
            guard Set(o.keys) == ["kind", "to", "id", "status", "body"], let status = o["status"]?.safeInteger, (100...599).contains(status),
                  case .string(let body)? = o["body"] else {
                return malformed("is an answer without exactly kind, to, id, status (100-599) and body")
            }
            return .success(.answer(to: to, id: id, status: Int(status), body: Array(body.utf8)))
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
