/// The body of a request or receipt on the wire between gateways: `{"sealed":"<b64u>"}`, an anonymous libsodium
/// sealed box of the whole envelope to the recipient's identity key (converted to X25519). A plain-HTTP hop sees
/// neither the task nor the argv; the envelope inside is unchanged, so its signature still covers the plaintext
/// payload bytes and the recipient verifies exactly what the sender signed.
public enum SealedBody {
    /// A sealed envelope may be no larger than an envelope plus the box's 48 bytes, base64-encoded, plus framing.
    public static let maxSize = (Envelope.maxSize + 48) * 4 / 3 + 64

    public static func seal(_ envelope: [UInt8], to recipient: PublicKey) -> [UInt8] {
        // Fails only for a key that is not a valid point, which PublicKey never holds.
        let box = Sodium.seal(envelope, toEd25519: recipient.bytes)!
        return JSONWriter.object([("sealed", .string(Base64.urlEncode(box)))])
    }

    /// The envelope inside a sealed body addressed to `key`; any other body is `malformed`, saying why.
    public static func open(_ body: [UInt8], with key: SigningKey) -> Result<[UInt8], Denial> {
        func malformed(_ why: String) -> Result<[UInt8], Denial> { .failure(Denial(.malformed, why)) }
        guard body.count <= maxSize else { return malformed("the sealed body is larger than \(maxSize) bytes") }
        guard case .object(let o)? = try? StrictJSONReader.parse(body), o.count == 1, case .string(let text)? = o["sealed"],
              let box = Base64.urlDecode(text) else {
            return malformed("the body must be {\"sealed\":\"<base64url>\"}: the envelope sealed to this gateway's key")
        }
        guard let envelope = key.openSealed(box) else {
            return malformed("the sealed body does not open with this gateway's key (sealed to another gateway, or altered on the way)")
        }
        return .success(envelope)
    }
}
