/// An Ed25519 public key that passed libsodium's point validation: canonical encoding, prime-order subgroup,
/// not of small order. Keys that fail it (the attack keys of ed25519-speccheck) can never be constructed, so
/// they can never be enrolled or verified against.
public struct PublicKey: Hashable, Sendable {
    public static let keyType = "ssh-ed25519"
    /// OpenSSH refuses authorized_keys lines longer than this; so do we.
    public static let maxLineLength = 8192

    public let bytes: [UInt8]

    public init(validating bytes: [UInt8]) throws(OperatorError) {
        guard bytes.count == 32 else {
            throw OperatorError("an Ed25519 public key is 32 bytes, this one has \(bytes.count)")
        }
        guard Sodium.ed25519IsValidPoint(bytes) else {
            throw OperatorError("this is not a usable Ed25519 public key (non-canonical encoding or a small-order point); no honest key generator makes such a key, so it is refused")
        }
        self.bytes = bytes
    }

    /// The OpenSSH wire blob: `string "ssh-ed25519" || string key`.
    public var wireBlob: [UInt8] {
        var w = SSHWireWriter()
        w.string(Self.keyType)
        w.string(bytes)
        return w.bytes
    }

    public var fingerprint: Fingerprint { Fingerprint(digest: Sodium.sha256(wireBlob)) }

    /// `ssh-ed25519 AAAA… comment`
    public func line(comment: String) -> String {
        "\(Self.keyType) \(Base64.standardEncode(wireBlob)) \(comment)"
    }

    /// Refuses a key whose fingerprint is not the one its owner read out of band: that check is what makes the
    /// key theirs. `action` is what the operator was about to do ("enroll", "add").
    public func requireFingerprint(_ expected: Fingerprint, before action: String, from owner: String) throws(OperatorError) {
        guard fingerprint == expected else {
            throw OperatorError("fingerprint mismatch: the key is \(fingerprint) but you expected \(expected); do not \(action) it until you have the right key from \(owner)")
        }
    }

    /// Checks a signature made over `prefix || 0x00 || message`, the domain-separated form every spawngate
    /// signature uses, with libsodium's strict verifier.
    public func isValidSignature(_ signature: [UInt8], domain: SignatureDomain, message: [UInt8]) -> Bool {
        Sodium.ed25519Verify(signature: signature, message: domain.prefixed(message), publicKey: bytes)
    }

    /// Parses one OpenSSH public-key line: `ssh-ed25519 <base64 blob> [comment]`.
    ///
    /// The comment is returned but never trusted: authority comes from the key bytes alone. A trailing newline or
    /// CRLF is tolerated so that the same key in a file edited on any system has the same fingerprint.
    public static func parseLine(_ input: String) throws(OperatorError) -> (key: PublicKey, comment: String) {
        var line = Substring(input)
        if line.hasSuffix("\r\n") { line = line.dropLast(2) } else if line.hasSuffix("\n") || line.hasSuffix("\r") { line = line.dropLast() }
        guard line.utf8.count <= maxLineLength else {
            throw OperatorError("the key line is longer than \(maxLineLength) bytes; paste exactly the one line of the .pub file")
        }
        guard !line.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\t" || $0.value == 0x7F }) else {
            throw OperatorError("the key line contains a control character or a line break; paste exactly one line of the .pub file")
        }
        let fields = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
        guard fields.count >= 2 else {
            throw OperatorError("expected 'ssh-ed25519 AAAA… NAME' (the contents of a .pub file), got \(fields.count) field(s)")
        }
        guard fields[0] == keyType else {
            if fields[0].contains("=") || fields[0].contains(",") {
                throw OperatorError("key options (authorized_keys style '\(fields[0].prefix(40))') are not accepted; give just 'ssh-ed25519 AAAA… NAME'")
            }
            throw OperatorError("only ssh-ed25519 keys are accepted, this line has type '\(fields[0].prefix(40))'")
        }
        guard let blob = Base64.standardDecode(fields[1]) else {
            throw OperatorError("the key's base64 is not canonical padded base64; copy the .pub line again without changes")
        }
        var r = SSHWireReader(blob)
        guard let type = r.string(), type == Array(keyType.utf8), let key = r.string(), r.atEnd else {
            throw OperatorError("the key blob is not an ssh-ed25519 public key (its inner type or length is wrong)")
        }
        let comment = fields.count > 2 ? String(fields[2]) : ""
        return (try PublicKey(validating: key), comment)
    }
}

/// Domain separation: every signature covers a fixed ASCII tag, a zero byte, then the message, so a signature
/// made for one purpose (a receipt) can never be replayed as another (a request).
public struct SignatureDomain: Sendable, Equatable {
    public let tag: String
    public static let request = SignatureDomain(tag: "spawngate-request-v1")
    public static let receipt = SignatureDomain(tag: "spawngate-receipt-v1")
    /// Requests that act on agents already running (`agents`, `release`), never mistaken for a spawn request.
    public static let control = SignatureDomain(tag: "spawngate-control-v1")
    /// A grant's blocks: the first signed by the issuing broker's key, each later one by the key its predecessor names.
    public static let grant = SignatureDomain(tag: "spawngate-grant-v1")
    /// A grant's proof of possession: the last block's key over the request it travels with.
    public static let grantProof = SignatureDomain(tag: "spawngate-grant-proof-v1")

    func prefixed(_ message: [UInt8]) -> [UInt8] { Array(tag.utf8) + [0] + message }
}
