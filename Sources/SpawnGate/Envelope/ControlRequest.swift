/// A payload the verifier can authenticate: signed over its own domain, addressed, and time-bound.
public protocol SignedPayload: Sendable {
    static var domain: SignatureDomain { get }
    static func parse(_ bytes: [UInt8]) -> Result<Self, Denial>
    var from: String { get }
    var to: String { get }
    var iat: Int64 { get }
    var exp: Int64 { get }
    var nonce: [UInt8] { get }
}

/// A signed request about agents a broker already started through a gateway: list them, stop them by name, or
/// read one's output. Same envelope as a spawn request, signed over `spawngate-control-v1`; payload
/// `{"op":"agents"|"release"|"logs","name":…,"lines":N,"offset":N,"from","to","iat","exp","nonce"}` (`name` only,
/// and always, for release and logs; `lines` (1–1000) and `offset` (a byte offset into the output) only for logs).
public struct ControlRequest: SignedPayload, Sendable, Equatable {
    public enum Operation: String, Sendable { case agents, release, logs }

    public static let domain = SignatureDomain.control
    public var op: Operation
    public var name: String?
    public var from: String
    public var to: String
    public var iat: Int64
    public var exp: Int64
    public var nonce: [UInt8]
    /// For logs: how many lines from the end, or (with `offset`) the output from that byte on.
    public var lines: Int64?
    public var offset: Int64?

    public init(op: Operation, name: String? = nil, from: String, to: String, iat: Int64, exp: Int64,
                nonce: [UInt8] = Sodium.randomBytes(16), lines: Int64? = nil, offset: Int64? = nil) {
        self.op = op; self.name = name; self.from = from; self.to = to; self.iat = iat; self.exp = exp; self.nonce = nonce
        self.lines = lines; self.offset = offset
    }

    static let known: Set<String> = ["op", "name", "from", "to", "iat", "exp", "nonce", "lines", "offset"]

    public func encoded() -> [UInt8] {
        var m: [(String, JSONWriter.Value)] = [("op", .string(op.rawValue))]
        if let name { m.append(("name", .string(name))) }
        if let lines { m.append(("lines", .int(lines))) }
        if let offset { m.append(("offset", .int(offset))) }
        m += [("from", .string(from)), ("to", .string(to)), ("iat", .int(iat)), ("exp", .int(exp)),
              ("nonce", .string(Base64.urlEncode(nonce)))]
        return JSONWriter.object(m)
    }

    public static func parse(_ bytes: [UInt8]) -> Result<ControlRequest, Denial> {
        func malformed(_ why: String) -> Result<ControlRequest, Denial> { .failure(Denial(.malformed, why)) }
        guard case .object(let m)? = try? StrictJSONReader.parse(bytes) else {
            return malformed("control payload must be a strict JSON object")
        }
        if let extra = Set(m.keys).subtracting(known).sorted().first { return malformed("unknown control field \"\(extra)\"") }
        func string(_ key: String) -> String? { if case .string(let s)? = m[key], !s.isEmpty { s } else { nil } }
        guard let opText = string("op"), let op = Operation(rawValue: opText) else {
            return malformed("control field \"op\" must be \"agents\", \"release\" or \"logs\"")
        }
        guard let from = string("from"), let to = string("to") else {
            return malformed("control fields \"from\" and \"to\" are required non-empty strings")
        }
        guard let iat = m["iat"]?.safeInteger, iat >= 0, let exp = m["exp"]?.safeInteger, exp >= 0 else {
            return malformed("control fields \"iat\" and \"exp\" must be non-negative integers of Unix seconds below 2^53")
        }
        guard let nonceText = string("nonce"), let nonce = Base64.urlDecode(nonceText),
              nonce.count >= SpawnRequest.minimumNonceBytes, nonce.count <= 64 else {
            return malformed("control field \"nonce\" must be canonical base64url of 16 to 64 random bytes")
        }
        let name = string("name")
        if m["name"] != nil && name == nil { return malformed("control field \"name\" must be a non-empty string") }
        if let name { do { try Home.validateAgentName(name) } catch { return malformed("control field \"name\": \(error.message)") } }
        let lines = m["lines"]?.safeInteger, offset = m["offset"]?.safeInteger
        if m["lines"] != nil && !(1...1000).contains(lines ?? 0) { return malformed("control field \"lines\" must be an integer from 1 to 1000") }
        if m["offset"] != nil && (offset ?? -1) < 0 { return malformed("control field \"offset\" must be a non-negative integer") }
        if op != .logs && (m["lines"] != nil || m["offset"] != nil) { return malformed("control fields \"lines\" and \"offset\" are only for logs") }
        switch op {
        case .release where name == nil, .logs where name == nil:
            return malformed("a \(op.rawValue) request names the agent: control field \"name\" is required")
        case .agents where name != nil: return malformed("control field \"name\" is only for release and logs")
        default: break
        }
        return .success(ControlRequest(op: op, name: name, from: from, to: to, iat: iat, exp: exp, nonce: nonce, lines: lines, offset: offset))
    }
}

/// A control request whose signature verified against an enrolled key, addressed here and in its window.
public struct VerifiedControl: Sendable, Equatable {
    public let request: ControlRequest
    public let broker: String
    public let fingerprint: Fingerprint
    public let payload: [UInt8]
    public let requestID: String
    /// The places the signing key is bound to (`from=`).
    public let keySources: [SourcePattern]?

    init(request: ControlRequest, broker: String, fingerprint: Fingerprint, payload: [UInt8], keySources: [SourcePattern]?) {
        self.request = request; self.broker = broker; self.fingerprint = fingerprint; self.payload = payload
        self.keySources = keySources
        self.requestID = Sodium.sha256(payload).hex
    }
}

public enum ControlVerification: Sendable, Equatable {
    case verified(VerifiedControl)
    case denied(Denial, requestID: String?, broker: String?, fingerprint: Fingerprint?)
}
