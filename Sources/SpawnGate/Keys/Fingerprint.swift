/// An OpenSSH-style key fingerprint: `SHA256:` + unpadded base64 of SHA-256 over the key's wire blob.
/// It is the key id (`kid`) of an envelope and what operators compare out of band.
public struct Fingerprint: Hashable, Sendable, CustomStringConvertible {
    public let digest: [UInt8]

    init(digest: [UInt8]) {
        precondition(digest.count == 32)
        self.digest = digest
    }

    /// Parses `SHA256:<43 base64 characters>`; nil for anything else (other hashes, padding, wrong length).
    public init?(_ text: some StringProtocol) {
        guard text.hasPrefix("SHA256:"),
              let digest = Base64.standardDecode(text.dropFirst(7), padded: false), digest.count == 32
        else { return nil }
        self.digest = digest
    }

    public var description: String { "SHA256:" + Base64.standardEncode(digest, pad: false) }
}
