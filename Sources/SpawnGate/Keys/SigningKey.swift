import Foundation

/// This broker's Ed25519 identity key.
///
/// Stored in OpenSSH's own unencrypted private-key format (`openssh-key-v1`), so `ssh-keygen -y -f identity.key`
/// prints the same public key and `ssh-keygen -lf` the same fingerprint: operators can cross-check with a tool
/// they already trust. `description` never shows key material.
public struct SigningKey: Sendable, CustomStringConvertible {
    private let seed: [UInt8]
    private let secretKey: [UInt8]
    public let publicKey: PublicKey

    public init(seed: [UInt8]) throws(OperatorError) {
        guard seed.count == 32 else { throw OperatorError("an Ed25519 seed is 32 bytes") }
        let (pk, sk) = Sodium.ed25519PublicKey(seed: seed)
        self.seed = seed
        self.secretKey = sk
        self.publicKey = try PublicKey(validating: pk)
    }

    public static func generate() -> SigningKey {
        // A fresh libsodium key is always a valid point; try! documents that invariant.
        try! SigningKey(seed: Sodium.randomBytes(32))
    }

    public var description: String { "SigningKey(\(publicKey.fingerprint))" }

    /// The 32-byte seed, for a grant's holder key kept in a 0600 file (``GrantStore``).
    var seedBytes: [UInt8] { seed }

    /// Opens a sealed box addressed to this key (see ``SealedBody``); nil when it was not, or was altered.
    func openSealed(_ box: [UInt8]) -> [UInt8]? {
        Sodium.openSealed(box, ed25519PublicKey: publicKey.bytes, secretKey: secretKey)
    }

    public func sign(_ message: [UInt8], domain: SignatureDomain) -> [UInt8] {
        Sodium.ed25519Sign(message: domain.prefixed(message), secretKey: secretKey)
    }

    private static let header = "-----BEGIN OPENSSH PRIVATE KEY-----"
    private static let footer = "-----END OPENSSH PRIVATE KEY-----"
    private static let magic = Array("openssh-key-v1".utf8) + [0]

    /// The key as an `openssh-key-v1` PEM file, unencrypted (its protection is the file mode, 0600).
    public func openSSHPrivateKeyFile(comment: String) -> String {
        var priv = SSHWireWriter()
        let check = UInt32.random(in: 0...UInt32.max)
        priv.uint32(check)
        priv.uint32(check)
        priv.string(PublicKey.keyType)
        priv.string(publicKey.bytes)
        priv.string(seed + publicKey.bytes)
        priv.string(comment)
        var pad: UInt8 = 1
        while priv.bytes.count % 8 != 0 { priv.bytes.append(pad); pad += 1 }

        var w = SSHWireWriter()
        w.bytes = Self.magic
        w.string("none")
        w.string("none")
        w.string([UInt8]())
        w.uint32(1)
        w.string(publicKey.wireBlob)
        w.string(priv.bytes)
        let body = Base64.standardEncode(w.bytes)
        var lines = [Self.header]
        var rest = Substring(body)
        while !rest.isEmpty { lines.append(String(rest.prefix(70))); rest = rest.dropFirst(70) }
        lines.append(Self.footer)
        return lines.joined(separator: "\n") + "\n"
    }

    /// Reads an unencrypted `openssh-key-v1` Ed25519 key and checks that its halves agree.
    public static func parseOpenSSHPrivateKey(_ text: String) throws(OperatorError) -> SigningKey {
        let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        guard lines.first == header, lines.last == footer, lines.count >= 3 else {
            throw OperatorError("not an OpenSSH private key (expected '\(header)' … '\(footer)')")
        }
        guard let raw = Base64.standardDecode(lines.dropFirst().dropLast().joined()) else {
            throw OperatorError("the private key's base64 is damaged")
        }
        var r = SSHWireReader(raw)
        guard r.raw(magic.count) == magic else { throw OperatorError("not an openssh-key-v1 private key") }
        guard let cipher = r.string(), let kdf = r.string(), r.string() != nil, let n = r.uint32() else {
            throw OperatorError("the private key file is truncated")
        }
        guard cipher == Array("none".utf8), kdf == Array("none".utf8) else {
            throw OperatorError("the private key is passphrase-protected; spawngate needs an unattended key (its protection is mode 0600): remove the passphrase with 'ssh-keygen -p -N \"\" -f FILE'")
        }
        guard n == 1, let pubBlob = r.string(), let privBlock = r.string(), r.atEnd else {
            throw OperatorError("the private key file must hold exactly one key")
        }
        var p = SSHWireReader(privBlock)
        guard let c1 = p.uint32(), let c2 = p.uint32(), c1 == c2,
              p.string() == Array(PublicKey.keyType.utf8), let pk = p.string(), let sk = p.string(), sk.count == 64,
              p.string() != nil
        else { throw OperatorError("the private key is not an intact ssh-ed25519 key") }
        let key = try SigningKey(seed: Array(sk[0..<32]))
        guard key.publicKey.bytes == pk, Array(sk[32...]) == pk, key.publicKey.wireBlob == pubBlob else {
            throw OperatorError("the private key's public half does not match its secret half; the file is corrupt")
        }
        return key
    }
}
