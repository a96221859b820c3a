import SpawnGate

/// Bodies on the wire between gateways: a request body as `serve` opens it, and a receipt as `spawn --broker`
/// checks it. The first byte picks the path; the second path signs the input with the target's key first, so the
/// receipt's payload parser (reached only after a valid signature) is fuzzed too. A fourth path reads workspace
/// messages (`RelayWire`), which arrive from anyone in an Agent Relay workspace.
enum Keys {
    static let gateway = try! SigningKey(seed: [UInt8](repeating: 7, count: 32))
    static let target = try! SigningKey(seed: [UInt8](repeating: 9, count: 32))
    static let reply = RelayWire.ReplyKey.generate()
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWireBody(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    switch data[0] % 5 {
    case 0:
        if case .success(let envelope) = SealedBody.open(bytes, with: Keys.gateway) { _ = Envelope.parse(envelope) }
    case 1:
        let receipt = Envelope.seal(bytes, with: Keys.target, domain: .receipt)
        for kind in [Receipt.Kind.spawn, .control] {
            _ = Receipt.verify(receipt, from: Keys.target.publicKey, requestID: nil, kind: kind)
            _ = Receipt.verify(receipt, from: Keys.target.publicKey, requestID: "00", kind: kind)
        }
    case 2:
        _ = Receipt.verify(bytes, from: Keys.target.publicKey, requestID: nil)
    case 3:
        // A workspace message (relay: peers), as a relay guard's mailbox reads every one it sees: as text, and
        // sealed to the gateway's key so that the inner message's reader (reached only once a box opens) is
        // fuzzed too.
        _ = RelayWire.open(String(decoding: bytes, as: UTF8.self), identity: Keys.gateway, reply: Keys.reply)
        if let sealed = SealedBody.seal(bytes, to: Keys.gateway.publicKey).sealedText {
            _ = RelayWire.open(RelayWire.prefix + sealed, identity: Keys.gateway, reply: Keys.reply)
        }
    default:
        // The pieces on their own: a base64url text and a box that is not sealed to this key.
        _ = Base64.urlDecode(String(decoding: bytes, as: UTF8.self))
        _ = SealedBody.open(JSONWriter.object([("sealed", .string(Base64.urlEncode(bytes)))]), with: Keys.gateway)
    }
    return 0
}

extension [UInt8] {
    /// The base64url box inside a sealed body `{"sealed":"…"}`.
    var sealedText: String? {
        guard case .object(let o)? = try? StrictJSONReader.parse(self), case .string(let t)? = o["sealed"] else { return nil }
        return t
    }
}
