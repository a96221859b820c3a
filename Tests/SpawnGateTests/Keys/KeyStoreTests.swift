import Foundation
import Testing
@testable import SpawnGate

@Suite("Enrollment and revocation")
struct KeyStoreTests {
    private func store() throws -> (KeyStore, String) {
        let dir = TestSupport.tempDir("ks")
        let (home, _) = try TestSupport.makeHome("vps-broker", in: dir)
        return (home.keyStore, dir)
    }

    @Test func enrollsAndLooksUp() throws {
        let (ks, _) = try store()
        let a = SigningKey.generate().publicKey
        try ks.enroll(name: "mac-laptop", key: a, expected: a.fingerprint)
        #expect(try ks.lookup(a.fingerprint) == .enrolled(name: "mac-laptop", key: a))
        #expect(try ks.lookup(SigningKey.generate().publicKey.fingerprint) == .unknown)
    }

    @Test func refusesFingerprintMismatch() throws {
        let (ks, _) = try store()
        let a = SigningKey.generate().publicKey, b = SigningKey.generate().publicKey
        #expect { try ks.enroll(name: "mac-laptop", key: a, expected: b.fingerprint) } throws: {
            ($0 as? OperatorError)?.message.hasPrefix("fingerprint mismatch") == true
        }
        #expect(try ks.entries().isEmpty)
    }

    @Test func refusesNameBoundToAnotherKey() throws {
        let (ks, _) = try store()
        let a = SigningKey.generate().publicKey, b = SigningKey.generate().publicKey
        try ks.enroll(name: "mac-laptop", key: a, expected: a.fingerprint)
        #expect { try ks.enroll(name: "mac-laptop", key: b, expected: b.fingerprint) } throws: {
            ($0 as? OperatorError)?.message.contains("already bound to another key") == true
        }
        #expect(try ks.lookup(b.fingerprint) == .unknown)
    }

    @Test func refusesSameKeyUnderSecondName() throws {
        let (ks, _) = try store()
        let a = SigningKey.generate().publicKey
        try ks.enroll(name: "mac-laptop", key: a, expected: a.fingerprint)
        #expect(throws: OperatorError.self) { try ks.enroll(name: "mini-pc", key: a, expected: a.fingerprint) }
    }

    @Test("refuses unsafe broker names", arguments: ["", "../etc", "a/b", ".hidden", "-x", "a b", "é", String(repeating: "a", count: 65)])
    func refusesBadNames(_ name: String) throws {
        let (ks, _) = try store()
        let a = SigningKey.generate().publicKey
        #expect(throws: OperatorError.self) { try ks.enroll(name: name, key: a, expected: a.fingerprint) }
    }

    /// T6: revocation is permanent until an explicit re-enroll.
    @Test func revocationStaysUntilExplicitReEnroll() throws {
        let (ks, _) = try store()
        let a = SigningKey.generate().publicKey
        try ks.enroll(name: "mac-laptop", key: a, expected: a.fingerprint)
        try ks.revoke(name: "mac-laptop")
        #expect(try ks.lookup(a.fingerprint) == .revoked(name: "mac-laptop"))
        #expect(throws: OperatorError.self) { try ks.enroll(name: "mac-laptop", key: a, expected: a.fingerprint) }
        #expect(throws: OperatorError.self) { try ks.enroll(name: "other", key: a, expected: a.fingerprint) }
        #expect(try ks.lookup(a.fingerprint) == .revoked(name: "mac-laptop"))
        try ks.enroll(name: "mac-laptop", key: a, expected: a.fingerprint, reEnroll: true)
        #expect(try ks.lookup(a.fingerprint) == .enrolled(name: "mac-laptop", key: a))
    }

    @Test func aNameRevokedTwiceKeepsBothKeysRefused() throws {
        let (ks, _) = try store()
        let a = SigningKey.generate().publicKey, b = SigningKey.generate().publicKey
        try ks.enroll(name: "laptop", key: a, expected: a.fingerprint)
        try ks.revoke(name: "laptop")
        try ks.enroll(name: "laptop", key: b, expected: b.fingerprint, reEnroll: true)
        try ks.revoke(name: "laptop")
        #expect(try ks.lookup(a.fingerprint) == .revoked(name: "laptop"))
        #expect(try ks.lookup(b.fingerprint) == .revoked(name: "laptop"))
    }

    /// Re-enrolling one key removes that key's revocation record only; another key once bound to the name stays refused.
    @Test func reEnrollRemovesOnlyThatKeysRevocation() throws {
        let (ks, _) = try store()
        let a = SigningKey.generate().publicKey, b = SigningKey.generate().publicKey
        try ks.enroll(name: "laptop", key: a, expected: a.fingerprint)
        try ks.revoke(name: "laptop")
        try ks.enroll(name: "laptop", key: b, expected: b.fingerprint, reEnroll: true)
        try ks.revoke(name: "laptop")
        try ks.enroll(name: "laptop", key: a, expected: a.fingerprint, reEnroll: true)
        #expect(try ks.lookup(a.fingerprint) == .enrolled(name: "laptop", key: a))
        #expect(try ks.lookup(b.fingerprint) == .revoked(name: "laptop"))
    }

    /// A key both enrolled and revoked (a half-done manual edit) counts as revoked.
    @Test func revokedWinsOverEnrolled() throws {
        let (ks, _) = try store()
        let a = SigningKey.generate().publicKey
        try ks.enroll(name: "laptop", key: a, expected: a.fingerprint)
        try Files.writeAtomically("\(ks.home.revokedDir)/laptop.pub", Array(a.line(comment: "laptop").utf8), mode: 0o644)
        #expect(try ks.lookup(a.fingerprint) == .revoked(name: "laptop"))
    }

    /// T6: a corrupt revocation record makes the store unusable instead of being skipped.
    @Test func corruptKeyFileMeansCannotDecide() throws {
        let (ks, _) = try store()
        let a = SigningKey.generate().publicKey
        try ks.enroll(name: "laptop", key: a, expected: a.fingerprint)
        try Files.writeAtomically("\(ks.home.revokedDir)/laptop.pub", Array("ssh-ed25519 garbage".utf8), mode: 0o644)
        #expect(throws: GatewayFailure.self) { try ks.lookup(a.fingerprint) }
        try FileManager.default.removeItem(atPath: ks.home.revokedDir)
        #expect(throws: GatewayFailure.self) { try ks.lookup(a.fingerprint) }
    }
}
