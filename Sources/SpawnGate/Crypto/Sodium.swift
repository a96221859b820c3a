import CSodium

/// The one place spawngate touches libsodium. Every function checks lengths before calling C,
/// because libsodium trusts the lengths it is given.
public enum Sodium {
    private static let initResult: Int32 = sodium_init()

    /// Throws when libsodium could not initialise (no entropy source); nothing can be decided then.
    public static func ensureInitialized() throws(GatewayFailure) {
        if initResult < 0 { throw GatewayFailure("libsodium failed to initialise (sodium_init returned \(initResult))") }
    }

    public static func randomBytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { randombytes_buf($0.baseAddress!, count) }
        return out
    }

    public static func sha256(_ data: some Collection<UInt8>) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(crypto_hash_sha256_BYTES))
        let input = Array(data)
        _ = crypto_hash_sha256(&out, input, UInt64(input.count))
        return out
    }

    /// Unkeyed BLAKE2b-256: the audit log's chain hash.
    public static func blake2b256(_ data: some Collection<UInt8>) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        let input = Array(data)
        _ = crypto_generichash(&out, 32, input, UInt64(input.count), nil, 0)
        return out
    }

    static func ed25519PublicKey(seed: [UInt8]) -> (publicKey: [UInt8], secretKey: [UInt8]) {
        precondition(seed.count == Int(crypto_sign_SEEDBYTES))
        var pk = [UInt8](repeating: 0, count: Int(crypto_sign_PUBLICKEYBYTES))
        var sk = [UInt8](repeating: 0, count: Int(crypto_sign_SECRETKEYBYTES))
        _ = crypto_sign_seed_keypair(&pk, &sk, seed)
        return (pk, sk)
    }

    static func ed25519Sign(message: [UInt8], secretKey: [UInt8]) -> [UInt8] {
        precondition(secretKey.count == Int(crypto_sign_SECRETKEYBYTES))
        var sig = [UInt8](repeating: 0, count: Int(crypto_sign_BYTES))
        var len: UInt64 = 0
        _ = crypto_sign_detached(&sig, &len, message, UInt64(message.count), secretKey)
        return sig
    }

    /// Strict Ed25519 verification (libsodium 1.0.18: S < L, canonical A and R, no small-order A or R,
    /// cofactorless equation). Returns false on any length mismatch instead of calling C.
    static func ed25519Verify(signature: [UInt8], message: [UInt8], publicKey: [UInt8]) -> Bool {
        guard signature.count == Int(crypto_sign_BYTES), publicKey.count == Int(crypto_sign_PUBLICKEYBYTES) else {
            return false
        }
        return crypto_sign_verify_detached(signature, message, UInt64(message.count), publicKey) == 0
    }

    /// True for a canonical encoding of a point in the prime-order subgroup that is not of small order:
    /// the only kind of public key an honest Ed25519 key generator produces.
    static func ed25519IsValidPoint(_ bytes: [UInt8]) -> Bool {
        guard bytes.count == Int(crypto_core_ed25519_BYTES) else { return false }
        return crypto_core_ed25519_is_valid_point(bytes) == 1
    }

    /// An anonymous sealed box (X25519 + XSalsa20-Poly1305) to the X25519 form of an Ed25519 public key.
    static func seal(_ message: [UInt8], toEd25519 publicKey: [UInt8]) -> [UInt8]? {
        var x = [UInt8](repeating: 0, count: Int(crypto_box_PUBLICKEYBYTES))
        guard crypto_sign_ed25519_pk_to_curve25519(&x, publicKey) == 0 else { return nil }
        var out = [UInt8](repeating: 0, count: message.count + crypto_box_sealbytes())
        guard crypto_box_seal(&out, message, UInt64(message.count), x) == 0 else { return nil }
        return out
    }

    /// Opens a sealed box with the X25519 forms of an Ed25519 key pair; nil when it was not sealed to that key
    /// or was altered.
    static func openSealed(_ box: [UInt8], ed25519PublicKey pk: [UInt8], secretKey sk: [UInt8]) -> [UInt8]? {
        guard box.count >= crypto_box_sealbytes() else { return nil }
        var xpk = [UInt8](repeating: 0, count: Int(crypto_box_PUBLICKEYBYTES))
        var xsk = [UInt8](repeating: 0, count: Int(crypto_box_SECRETKEYBYTES))
        defer { sodium_memzero(&xsk, xsk.count) }
        guard crypto_sign_ed25519_pk_to_curve25519(&xpk, pk) == 0, crypto_sign_ed25519_sk_to_curve25519(&xsk, sk) == 0 else { return nil }
        var out = [UInt8](repeating: 0, count: box.count - crypto_box_sealbytes())
        guard crypto_box_seal_open(&out, box, UInt64(box.count), xpk, xsk) == 0 else { return nil }
        return out
    }

    /// A fresh X25519 key pair for sealed boxes (public, secret).
    static func boxKeyPair() -> (publicKey: [UInt8], secretKey: [UInt8]) {
        var pk = [UInt8](repeating: 0, count: Int(crypto_box_PUBLICKEYBYTES))
        var sk = [UInt8](repeating: 0, count: Int(crypto_box_SECRETKEYBYTES))
        crypto_box_keypair(&pk, &sk)
        return (pk, sk)
    }

    /// An anonymous sealed box to an X25519 public key; nil for a key of the wrong length.
    static func seal(_ message: [UInt8], toX25519 publicKey: [UInt8]) -> [UInt8]? {
        guard publicKey.count == Int(crypto_box_PUBLICKEYBYTES) else { return nil }
        var out = [UInt8](repeating: 0, count: message.count + crypto_box_sealbytes())
        guard crypto_box_seal(&out, message, UInt64(message.count), publicKey) == 0 else { return nil }
        return out
    }

    /// Opens a sealed box with an X25519 key pair; nil when it was not sealed to it or was altered.
    static func openSealed(_ box: [UInt8], x25519PublicKey pk: [UInt8], secretKey sk: [UInt8]) -> [UInt8]? {
        guard box.count >= crypto_box_sealbytes() else { return nil }
        var out = [UInt8](repeating: 0, count: box.count - crypto_box_sealbytes())
        guard crypto_box_seal_open(&out, box, UInt64(box.count), pk, sk) == 0 else { return nil }
        return out
    }

    /// Constant-time comparison, for MACs and hashes an attacker may probe.
    static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.count == b.count && sodium_memcmp(a, b, a.count) == 0
    }
}
