import Foundation
import Testing
@testable import SpawnGate

/// Two brokers in temporary homes: mac-laptop signs, vps-broker verifies. The clock is fixed; nothing sleeps.
struct Brokers {
    let laptop: Identity
    let vps: Identity
    let vpsHome: Home
    let now: Int64 = 1_800_000_000

    init() throws {
        let dir = TestSupport.tempDir("env")
        (_, laptop) = try TestSupport.makeHome("mac-laptop", in: dir)
        (vpsHome, vps) = try TestSupport.makeHome("vps-broker", in: dir)
        try vpsHome.keyStore.enroll(name: "mac-laptop", key: laptop.key.publicKey, expected: laptop.key.publicKey.fingerprint)
    }

    func request(to: String = "vps-broker", from: String = "mac-laptop", iat: Int64? = nil, ttl: Int64 = 60) -> SpawnRequest {
        let iat = iat ?? now
        return SpawnRequest(name: "coder", cli: "claude", task: "Implement the plan", cwd: "/srv/app", args: ["--model", "opus"],
                            from: from, to: to, iat: iat, exp: iat + ttl, nonce: Array(repeating: 7, count: 16))
    }

    func envelope(_ r: SpawnRequest? = nil, key: SigningKey? = nil) -> [UInt8] {
        Envelope.seal((r ?? request()).encoded(), with: key ?? laptop.key, domain: .request)
    }

    func verify(_ bytes: [UInt8], at time: Int64? = nil) throws -> Verification {
        try RequestVerifier(audience: "vps-broker", keys: vpsHome.keyStore, clock: FixedClock(time ?? now)).verify(bytes)
    }

    func reason(_ bytes: [UInt8], at time: Int64? = nil) throws -> ReasonCode {
        switch try verify(bytes, at: time) {
        case .verified: .allowed
        case .denied(let d, _, _, _): d.reason
        }
    }

    /// Rebuilds an envelope from raw parts, for tampering.
    static func envelope(kid: String, payload: [UInt8], sig: [UInt8]) -> [UInt8] {
        JSONWriter.object([("v", .int(1)), ("alg", .string("ed25519")), ("kid", .string(kid)),
                           ("payload", .string(Base64.urlEncode(payload))), ("sig", .string(Base64.urlEncode(sig)))])
    }
}

@Suite("Request verification")
struct RequestVerifierTests {
    @Test func acceptsAValidRequest() throws {
        let b = try Brokers()
        let env = b.envelope()
        guard case .verified(let v) = try b.verify(env) else { Issue.record("not verified"); return }
        #expect(v.broker == "mac-laptop")
        #expect(v.fingerprint == b.laptop.key.publicKey.fingerprint)
        #expect(v.request == b.request())
        #expect(v.requestID == Sodium.sha256(b.request().encoded()).hex)
    }

    /// Every single-bit change of the signed payload or of the signature is refused.
    @Test func everyBitFlipIsRejected() throws {
        let b = try Brokers()
        let payload = b.request().encoded()
        let sig = b.laptop.key.sign(payload, domain: .request)
        let kid = b.laptop.key.publicKey.fingerprint.description
        var flips = 0
        for i in 0..<(payload.count * 8) {
            var p = payload
            p[i / 8] ^= 1 << (i % 8)
            #expect(try b.reason(Brokers.envelope(kid: kid, payload: p, sig: sig)) == .badSignature, "payload bit \(i)")
            flips += 1
        }
        for i in 0..<(sig.count * 8) {
            var s = sig
            s[i / 8] ^= 1 << (i % 8)
            #expect(try b.reason(Brokers.envelope(kid: kid, payload: payload, sig: s)) == .badSignature, "signature bit \(i)")
            flips += 1
        }
        #expect(flips == (payload.count + 64) * 8)
        #expect(try b.reason(Brokers.envelope(kid: kid, payload: payload, sig: sig)) == .allowed)
    }

    /// T5: the same signature addressed elsewhere, or from another domain, is refused.
    @Test func wrongAudience() throws {
        let b = try Brokers()
        #expect(try b.reason(b.envelope(b.request(to: "mini-pc"))) == .wrongAudience)
        let receiptSigned = Envelope.seal(b.request().encoded(), with: b.laptop.key, domain: .receipt)
        #expect(try b.reason(receiptSigned) == .badSignature)
    }

    /// T10: the validity window.
    @Test func timeWindow() throws {
        let b = try Brokers()
        let env = b.envelope(b.request(ttl: 60))
        #expect(try b.reason(env, at: b.now - 30) == .allowed)        // within skew before iat
        #expect(try b.reason(env, at: b.now - 31) == .notYetValid)
        #expect(try b.reason(env, at: b.now + 90) == .allowed)        // exp + skew
        #expect(try b.reason(env, at: b.now + 91) == .expired)
        #expect(try b.reason(b.envelope(b.request(ttl: 121))) == .ttlTooLong)
        #expect(try b.reason(b.envelope(b.request(ttl: 120))) == .allowed)
        #expect(try b.reason(b.envelope(b.request(ttl: 0))) == .malformed)
        #expect(try b.reason(b.envelope(b.request(ttl: -5))) == .malformed)
    }

    @Test func unknownAndRevokedKeys() throws {
        let b = try Brokers()
        let stranger = SigningKey.generate()
        #expect(try b.reason(b.envelope(key: stranger)) == .unknownKey)
        try b.vpsHome.keyStore.revoke(name: "mac-laptop")
        #expect(try b.reason(b.envelope()) == .revokedKey)
    }

    /// T4: kid names broker A but the signature is broker B's; and B claiming to be A.
    @Test func keyIdentityComesFromTheVerifyingKey() throws {
        let b = try Brokers()
        let mini = SigningKey.generate()
        try b.vpsHome.keyStore.enroll(name: "mini-pc", key: mini.publicKey, expected: mini.publicKey.fingerprint)
        let payload = b.request().encoded()
        let forged = Brokers.envelope(kid: b.laptop.key.publicKey.fingerprint.description, payload: payload,
                                      sig: mini.sign(payload, domain: .request))
        #expect(try b.reason(forged) == .badSignature)
        // mini-pc signs honestly with its own kid, but the payload claims to come from mac-laptop.
        guard case .denied(let d, _, let broker, _) = try b.verify(b.envelope(b.request(from: "mac-laptop"), key: mini)) else {
            Issue.record("accepted a request whose from does not match its key"); return
        }
        #expect(d.reason == .unknownKey)
        #expect(broker == "mini-pc")
    }

    @Test func oversizedEnvelopeIsMalformedBeforeParsing() throws {
        let b = try Brokers()
        var r = b.request()
        r.task = String(repeating: "a", count: Envelope.maxSize)
        #expect(try b.reason(b.envelope(r)) == .malformed)
    }

    @Test("malformed envelopes", arguments: [
        "", "null", "[]", "{}", #"{"v":1}"#,
        #"{"v":2,"alg":"ed25519","kid":"SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","payload":"e30","sig":"AA"}"#,
    ])
    func malformedEnvelopes(_ text: String) throws {
        let b = try Brokers()
        #expect(try b.reason(Array(text.utf8)) == .malformed)
    }

    /// Payload-level hostile inputs, each correctly signed: only strict parsing after verification stops them.
    @Test("signed but malformed payloads (T7, T8)", arguments: [
        #"{"name":"c","cli":"claude","cli":"sh","from":"mac-laptop","to":"vps-broker","iat":1800000000,"exp":1800000060,"nonce":"AAAAAAAAAAAAAAAAAAAAAA"}"#,
        #"{"name":"c","cli":"claude","shell":"/bin/sh","from":"mac-laptop","to":"vps-broker","iat":1800000000,"exp":1800000060,"nonce":"AAAAAAAAAAAAAAAAAAAAAA"}"#,
        #"{"name":"c","cli":"claude","from":"mac-laptop","to":"vps-broker","iat":1800000000,"exp":1800000060,"nonce":"AAAAAAAAAAAAAAAAAAAAAA"} {}"#,
        #"{"name":"c","cli":"claude","cwd":"/srv\u0000/etc","from":"mac-laptop","to":"vps-broker","iat":1800000000,"exp":1800000060,"nonce":"AAAAAAAAAAAAAAAAAAAAAA"}"#,
        #"{"name":"c","cli":"claude","from":"mac-laptop","to":"vps-broker","iat":1800000000,"exp":9007199254740993,"nonce":"AAAAAAAAAAAAAAAAAAAAAA"}"#,
        #"{"name":"c","cli":"claude","from":"mac-laptop","to":"vps-broker","iat":1.8e9,"exp":1800000060,"nonce":"AAAAAAAAAAAAAAAAAAAAAA"}"#,
        #"{"name":"c","cli":"claude","from":"mac-laptop","to":"vps-broker","iat":-1,"exp":1800000060,"nonce":"AAAAAAAAAAAAAAAAAAAAAA"}"#,
        #"{"name":"c","cli":"claude","from":"mac-laptop","to":"vps-broker","iat":"1800000000","exp":1800000060,"nonce":"AAAAAAAAAAAAAAAAAAAAAA"}"#,
        // T10: a request without a validity window would never expire.
        #"{"name":"c","cli":"claude","from":"mac-laptop","to":"vps-broker","exp":1800000060,"nonce":"AAAAAAAAAAAAAAAAAAAAAA"}"#,
        #"{"name":"c","cli":"claude","from":"mac-laptop","to":"vps-broker","iat":1800000000,"nonce":"AAAAAAAAAAAAAAAAAAAAAA"}"#,
        #"{"name":"c","cli":"claude","from":"mac-laptop","to":"vps-broker","iat":1800000000,"exp":1800000060}"#,
        #"{"name":"c","cli":"claude","from":"mac-laptop","to":"vps-broker","iat":1800000000,"exp":1800000060,"nonce":"AAAAAAAAAAAAAAAAAAAA"}"#,
        #"{"name":"c","cli":"claude","args":"--yes","from":"mac-laptop","to":"vps-broker","iat":1800000000,"exp":1800000060,"nonce":"AAAAAAAAAAAAAAAAAAAAAA"}"#,
        #"{"name":"c","cli":"claude","args":["a",1],"from":"mac-laptop","to":"vps-broker","iat":1800000000,"exp":1800000060,"nonce":"AAAAAAAAAAAAAAAAAAAAAA"}"#,
        #"{"name":"c","cli":"claude","task":"\ud800","from":"mac-laptop","to":"vps-broker","iat":1800000000,"exp":1800000060,"nonce":"AAAAAAAAAAAAAAAAAAAAAA"}"#,
        #"{"name":"","cli":"claude","from":"mac-laptop","to":"vps-broker","iat":1800000000,"exp":1800000060,"nonce":"AAAAAAAAAAAAAAAAAAAAAA"}"#,
        #"["name","c"]"#,
    ])
    func signedMalformedPayloads(_ payload: String) throws {
        let b = try Brokers()
        let bytes = Array(payload.utf8)
        let env = Brokers.envelope(kid: b.laptop.key.publicKey.fingerprint.description, payload: bytes,
                                   sig: b.laptop.key.sign(bytes, domain: .request))
        #expect(try b.reason(env) == .malformed)
    }

    @Test func signedInvalidUTF8IsMalformed() throws {
        let b = try Brokers()
        var bytes = Array(#"{"name":"c","cli":"claude","task":"XX","from":"mac-laptop","to":"vps-broker","iat":1800000000,"exp":1800000060,"nonce":"AAAAAAAAAAAAAAAAAAAAAA"}"#.utf8)
        let at = bytes.firstIndex(of: UInt8(ascii: "X"))!
        bytes[at] = 0xC0; bytes[at + 1] = 0xAF
        let env = Brokers.envelope(kid: b.laptop.key.publicKey.fingerprint.description, payload: bytes,
                                   sig: b.laptop.key.sign(bytes, domain: .request))
        #expect(try b.reason(env) == .malformed)
    }

    /// An unsigned copy of a field in the envelope is refused, never merged (T7).
    @Test func unsignedEnvelopeFieldIsMalformed() throws {
        let b = try Brokers()
        var text = String(decoding: b.envelope(), as: UTF8.self)
        text.removeLast()
        text += #","cwd":"/etc"}"#
        #expect(try b.reason(Array(text.utf8)) == .malformed)
    }

    @Test func unreadableKeyStoreCannotDecide() throws {
        let b = try Brokers()
        try FileManager.default.removeItem(atPath: b.vpsHome.keysDir)
        #expect(throws: GatewayFailure.self) { try b.verify(b.envelope()) }
    }
}
