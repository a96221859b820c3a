/// A signed request or receipt as received: nothing in it is trusted yet.
///
/// `{"v":1,"alg":"ed25519","kid":"SHA256:…","payload":"<b64u>","sig":"<b64u>"}`. Parsing checks only the
/// envelope's shape; the payload stays opaque bytes until the signature over exactly those bytes has verified.
public struct Envelope: Sendable, Equatable {
    /// Envelopes larger than this are refused before parsing.
    public static let maxSize = 64 * 1024
    static let fields: Set<String> = ["v", "alg", "kid", "payload", "sig"]

    public let kid: Fingerprint
    public let payload: [UInt8]
    public let signature: [UInt8]

    /// Parses the envelope's outer shape; any deviation is `malformed` with a sentence saying which.
    public static func parse(_ bytes: [UInt8]) -> Result<Envelope, Denial> {
        func malformed(_ why: String) -> Result<Envelope, Denial> { .failure(Denial(.malformed, why)) }
        guard bytes.count <= maxSize else { return malformed("envelope is larger than \(maxSize) bytes") }
        let value: JSONValue
        do { value = try StrictJSONReader.parse(bytes) } catch { return malformed("envelope is not valid JSON: \(error)") }
        guard case .object(let members) = value else { return malformed("envelope must be a JSON object, got \(value.typeName)") }
        if let extra = Set(members.keys).subtracting(fields).sorted().first {
            return malformed("unknown envelope field \"\(extra)\" (only v, alg, kid, payload, sig are allowed; everything the gateway uses must be inside the signed payload)")
        }
        guard members["v"]?.safeInteger == 1 else { return malformed("envelope field \"v\" must be the integer 1") }
        guard members["alg"] == .string("ed25519") else { return malformed("envelope field \"alg\" must be \"ed25519\"") }
        guard case .string(let kidText)? = members["kid"], let kid = Fingerprint(kidText) else {
            return malformed("envelope field \"kid\" must be a key fingerprint \"SHA256:<43 base64 characters>\"")
        }
        guard case .string(let payloadText)? = members["payload"], let payload = Base64.urlDecode(payloadText), !payload.isEmpty else {
            return malformed("envelope field \"payload\" must be non-empty canonical base64url without padding")
        }
        guard case .string(let sigText)? = members["sig"], let sig = Base64.urlDecode(sigText) else {
            return malformed("envelope field \"sig\" must be canonical base64url without padding")
        }
        guard sig.count == 64 else { return malformed("envelope field \"sig\" must decode to 64 bytes, got \(sig.count)") }
        return .success(Envelope(kid: kid, payload: payload, signature: sig))
    }

    /// Signs `payload` and wraps it. The output is one line of JSON.
    public static func seal(_ payload: [UInt8], with key: SigningKey, domain: SignatureDomain) -> [UInt8] {
        JSONWriter.object([
            ("v", .int(1)),
            ("alg", .string("ed25519")),
            ("kid", .string(key.publicKey.fingerprint.description)),
            ("payload", .string(Base64.urlEncode(payload))),
            ("sig", .string(Base64.urlEncode(key.sign(payload, domain: domain)))),
        ])
    }

    /// `request_id`: lowercase hex SHA-256 of the payload bytes, computable by the requester too.
    public var requestID: String { Sodium.sha256(payload).hex }
}
