import Foundation
import Testing
@testable import SpawnGate

@Suite("Public keys and fingerprints")
struct PublicKeyTests {
    /// The 7 small-order encodings libsodium blocks, plus p and p+1 (non-canonical forms of small-order points).
    static let smallOrder: [String] = [
        "0100000000000000000000000000000000000000000000000000000000000000", // identity
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // order 2
        "0000000000000000000000000000000000000000000000000000000000000000", // order 4
        "0000000000000000000000000000000000000000000000000000000000000080", // order 4
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p + 1
    ]

    /// T3: every small-order encoding, its sign-bit twin, and y ≥ p encodings are refused at enrollment.
    @Test func refusesSmallOrderAndNonCanonicalKeys() {
        var candidates = Self.smallOrder.map { [UInt8](hex: $0)! }
        candidates += candidates.map { var b = $0; b[31] ^= 0x80; return b }
        for extra in 0..<19 {  // y = p + extra, for every small extra: all non-canonical
            var b = [UInt8](hex: "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")!
            b[0] = UInt8(0xed + extra)
            candidates.append(b)
        }
        for bytes in candidates {
            #expect(throws: OperatorError.self, "\(bytes.hex)") { try PublicKey(validating: bytes) }
        }
    }

    @Test func acceptsHonestKeys() throws {
        for _ in 0..<50 {
            let k = SigningKey.generate().publicKey
            #expect(try PublicKey(validating: k.bytes) == k)
        }
    }

    /// T24 and F7: the fingerprint is ssh-keygen's, whatever the line ending or comment.
    @Test func fingerprintMatchesSSHKeygen() throws {
        let dir = TestSupport.tempDir("fp")
        let key = SigningKey.generate().publicKey
        for (i, variant) in [key.line(comment: "a"), key.line(comment: "other name") + "\r\n", key.line(comment: "") + "\n"].enumerated() {
            let (parsed, _) = try PublicKey.parseLine(variant)
            #expect(parsed.fingerprint == key.fingerprint)
            let path = "\(dir)/k\(i).pub"
            try variant.write(toFile: path, atomically: true, encoding: .utf8)
            let out = try TestSupport.run("/usr/bin/ssh-keygen", ["-lf", path])
            #expect(out.status == 0, "\(out.stderr)")
            #expect(out.stdout.split(separator: " ")[1] == Substring(key.fingerprint.description))
        }
    }

    @Test("refuses malformed key lines", arguments: [
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== x",
        #"command="sh" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ9FKTGmmCRPb163yXfa/+uwu6JXKiGXKnoEPKYcgGAl x"#,
        "ssh-ed25519",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ9FKTGmmCRPb163yXfa/+uwu6JXKiGXKnoEPKYcgGA x",  // truncated, unpadded
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ9FKTGmmCRPb163yXfa/+uwu6JXKiGXKnoEPKYcgGAl\nssh-ed25519 AAAA x",
        "ssh-ed25519 AAAAC3NzaC1yc2EAAAAgn0UpMaaYJE9vXrfJd9r/67C7olcqIZcqegQ8phyAYCU= x",      // inner type ssh-rsa
    ])
    func refusesBadLines(_ line: String) {
        #expect(throws: OperatorError.self) { try PublicKey.parseLine(line) }
    }

    @Test func refusesOverlongLine() {
        let key = SigningKey.generate().publicKey
        #expect(throws: OperatorError.self) { try PublicKey.parseLine(key.line(comment: String(repeating: "x", count: 9000))) }
    }
}

@Suite("Identity key files")
struct SigningKeyTests {
    @Test func privateKeyRoundTripsAndSSHKeygenReadsIt() throws {
        let dir = TestSupport.tempDir("id")
        let (home, id) = try TestSupport.makeHome("vps-broker", in: dir)
        let loaded = try home.loadIdentity()
        #expect(loaded.key.publicKey == id.key.publicKey)
        #expect(loaded.name == "vps-broker")
        let out = try TestSupport.run("/usr/bin/ssh-keygen", ["-y", "-f", home.identityKey])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stdout.hasPrefix(id.key.publicKey.line(comment: "")))
    }

    @Test func refusesReadableOrForeignPrivateKey() throws {
        let dir = TestSupport.tempDir("perm")
        let (home, _) = try TestSupport.makeHome("laptop", in: dir)
        for mode: mode_t in [0o640, 0o604, 0o660] {
            chmod(home.identityKey, mode)
            #expect { try home.loadIdentity() } throws: { ($0 as? OperatorError)?.message.contains("chmod 600") == true }
        }
        chmod(home.identityKey, 0o600)
        #expect(try home.loadIdentity().name == "laptop")
    }

    /// A private key reached through a symlink, or owned by another user, is refused.
    @Test func refusesSymlinkedOrForeignPrivateKey() throws {
        let dir = TestSupport.tempDir("perm2")
        let (home, _) = try TestSupport.makeHome("laptop", in: dir)
        try FileManager.default.moveItem(atPath: home.identityKey, toPath: dir + "/elsewhere.key")
        try FileManager.default.createSymbolicLink(atPath: home.identityKey, withDestinationPath: dir + "/elsewhere.key")
        #expect { try home.loadIdentity() } throws: { ($0 as? OperatorError)?.message.contains("not a regular file") == true }
        try FileManager.default.removeItem(atPath: home.identityKey)
        try FileManager.default.moveItem(atPath: dir + "/elsewhere.key", toPath: home.identityKey)
        #expect(try home.loadIdentity().name == "laptop")
        if geteuid() == 0 {
            chown(home.identityKey, 65534, 65534)
            #expect { try home.loadIdentity() } throws: { ($0 as? OperatorError)?.message.contains("owned by uid 65534") == true }
        }
    }

    @Test func initRefusesToOverwrite() throws {
        let dir = TestSupport.tempDir("init")
        let (home, id) = try TestSupport.makeHome("laptop", in: dir)
        #expect(throws: OperatorError.self) { try Home.initialize(at: home.root, name: "laptop") }
        #expect(try home.loadIdentity().key.publicKey == id.key.publicKey)
    }

    @Test func descriptionNeverShowsKeyMaterial() {
        let key = SigningKey.generate()
        #expect(key.description == "SigningKey(\(key.publicKey.fingerprint))")
    }

    @Test func refusesTamperedPrivateKey() throws {
        let key = SigningKey.generate()
        let text = key.openSSHPrivateKeyFile(comment: "x")
        #expect(try SigningKey.parseOpenSSHPrivateKey(text).publicKey == key.publicKey)
        // Swap in another key's public half: the halves no longer agree.
        let other = SigningKey.generate()
        let lines = text.split(separator: "\n").map(String.init)
        var raw = Base64.standardDecode(lines.dropFirst().dropLast().joined())!
        let blob = other.publicKey.bytes
        if let at = raw.firstRange(of: key.publicKey.bytes) { raw.replaceSubrange(at, with: blob) }
        let forged = ([lines.first!, Base64.standardEncode(raw), lines.last!]).joined(separator: "\n")
        #expect(throws: OperatorError.self) { try SigningKey.parseOpenSSHPrivateKey(forged) }
        #expect(throws: OperatorError.self) { try SigningKey.parseOpenSSHPrivateKey("not a key") }
    }
}
