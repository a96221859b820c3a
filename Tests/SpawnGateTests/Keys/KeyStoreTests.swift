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

    /// F19 for the key store (T41): a key file, keys/, keys/revoked/ or the home that someone other than the
    /// gateway's user could change, a key file that is a symlink, or one owned by another user, means the gateway
    /// cannot decide, with a sentence naming the path and the fix; both the plain store and serve's cached one
    /// notice at the next lookup, and are usable again once fixed.
    @Test func keysOthersCouldChangeMeanCannotDecide() throws {
        for cached in [false, true] {
            let dir = TestSupport.tempDir("ks")
            let (home, _) = try TestSupport.makeHome("vps-broker", in: dir)
            let ks = KeyStore(home: home, cached: cached)
            let a = SigningKey.generate().publicKey, b = SigningKey.generate().publicKey
            try ks.enroll(name: "mac-laptop", key: a, expected: a.fingerprint)
            try ks.enroll(name: "mini-pc", key: b, expected: b.fingerprint)
            try ks.revoke(name: "mini-pc")
            #expect(try ks.lookup(a.fingerprint) == .enrolled(name: "mac-laptop", key: a))
            let file = home.keysDir + "/mac-laptop.pub", revoked = home.revokedDir + "/mini-pc.pub"
            func refused(_ path: String, _ fix: String) {
                #expect { try ks.lookup(a.fingerprint) } throws: {
                    let m = ($0 as? GatewayFailure)?.message ?? ""
                    return m.contains(path) && m.contains(fix) && m.contains("nothing is decided")
                }
            }
            for (path, mode, restore) in [(file, 0o664, 0o644), (file, 0o646, 0o644), (home.keysDir, 0o770, 0o700),
                                          (home.revokedDir, 0o707, 0o700), (revoked, 0o666, 0o644), (home.root, 0o777, 0o700)] {
                #expect(chmod(path, mode_t(mode)) == 0)
                refused(path, "chmod go-w \(path)")
                #expect(chmod(path, mode_t(restore)) == 0)
                #expect(try ks.lookup(a.fingerprint) == .enrolled(name: "mac-laptop", key: a), "usable again once \(path) is fixed")
            }
            // A link in keys/ could point at a file another user controls.
            let elsewhere = dir + "/elsewhere.pub"
            try FileManager.default.copyItem(atPath: file, toPath: elsewhere)
            #expect(symlink(elsewhere, home.keysDir + "/linked.pub") == 0)
            refused(home.keysDir + "/linked.pub", "is not a regular file")
            #expect(unlink(home.keysDir + "/linked.pub") == 0)
            if getuid() == 0 {
                #expect(chown(file, 4242, 4242) == 0)
                refused(file, "chown 0 \(file)")
                #expect(chown(file, 0, 0) == 0)
                #expect(chown(revoked, 4242, 4242) == 0)
                refused(revoked, "owned by uid 4242")
                #expect(chown(revoked, 0, 0) == 0)
            }
            #expect(try ks.lookup(a.fingerprint) == .enrolled(name: "mac-laptop", key: a))
        }
    }

    /// Through `check`: exit 2 and `internal_error` naming the path, as for a foreign-writable state.db.
    @Test func keyFileOthersCanWriteExitsTwo() throws {
        let g = try DecisionCLITests.live()
        let file = g.vps.keysDir + "/mac-laptop.pub"
        #expect(chmod(file, 0o666) == 0)
        let (status, decision) = try g.check(g.envelope())
        #expect(status == 2 && decision["reason"] as? String == "internal_error", "\(decision)")
        #expect((decision["detail"] as? String)?.contains("chmod go-w \(file)") == true, "\(decision)")
    }

    /// T50: the repository's keys/ holds the example brokers' public keys, in the home's layout, and nothing
    /// else: each enrolls under its own name with the fingerprint ssh-keygen prints, no file is a private key,
    /// and every broker the example policies name has one.
    @Test func shippedExampleKeysArePublicAndEnroll() throws {
        let dir = TestSupport.packageRoot + "/keys"
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        #expect(files == ["README.md", "mac-laptop.pub", "mini-pc.pub", "vps-broker.pub"], "\(files)")
        let (home, _) = try TestSupport.makeHome("target", in: TestSupport.tempDir("shipped"))
        for file in files where file.hasSuffix(".pub") {
            let name = String(file.dropLast(4))
            let text = try String(contentsOfFile: dir + "/" + file, encoding: .utf8)
            #expect(!text.contains("PRIVATE KEY") && text.split(separator: "\n").count == 1, "\(file) is one public key line")
            let (key, comment) = try PublicKey.parseLine(text)
            #expect(comment == name)
            try home.keyStore.enroll(name: name, key: key, expected: key.fingerprint)
            let ssh = try TestSupport.run("/usr/bin/env", ["ssh-keygen", "-lf", dir + "/" + file])
            #expect(ssh.status == 0 && ssh.stdout.contains(" \(key.fingerprint) \(name) "), "\(ssh.stdout) \(ssh.stderr)")
            let readme = try String(contentsOfFile: dir + "/README.md", encoding: .utf8)
            #expect(readme.contains("| `\(name)` | `\(key.fingerprint)` |"), "keys/README.md lists \(name)'s fingerprint")
        }
        for example in ["vps-broker", "mini-pc", "mac-laptop"] {
            let policy = try PolicyLoader.parse(String(contentsOfFile: TestSupport.packageRoot + "/policy/examples/\(example).yaml", encoding: .utf8), file: example).get()
            let named = policy.rules.flatMap { r -> [String] in if case .named(let s) = r.brokers { return Array(s) }; return [] }
                + policy.tests.map(\.request.broker).filter { $0 != "unknown-host" }
            for broker in Set(named) { #expect(files.contains(broker + ".pub"), "\(example).yaml names \(broker), which has no key in keys/") }
        }
    }
}
