#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How long a request may live, and how far clocks may disagree.
public struct ValidityWindow: Sendable, Equatable {
    public var maxTTL: Int64
    public var clockSkew: Int64
    /// Used until a policy sets its own (PRODUCT.md defaults).
    public static let defaults = ValidityWindow(maxTTL: 120, clockSkew: 30)
    public init(maxTTL: Int64, clockSkew: Int64) { self.maxTTL = maxTTL; self.clockSkew = clockSkew }
}

/// Wall-clock seconds, injected so tests never sleep.
public protocol GateClock: Sendable {
    /// Unix seconds.
    func now() -> Int64
    /// Unix milliseconds (rate buckets need finer steps than seconds).
    func nowMilliseconds() -> Int64
}

extension GateClock {
    public func nowMilliseconds() -> Int64 { now() * 1000 }
}

public struct SystemClock: GateClock {
    public init() {}
    public func now() -> Int64 { nowMilliseconds() / 1000 }
    public func nowMilliseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}

public struct FixedClock: GateClock {
    public let time: Int64
    public init(_ time: Int64) { self.time = time }
    public func now() -> Int64 { time }
}

/// A request whose signature verified against an enrolled, unrevoked key, addressed to this broker and inside
/// its validity window. Only ``RequestVerifier`` can make one: holding a value of this type is the proof.
public struct VerifiedRequest: Sendable, Equatable {
    public let request: SpawnRequest
    /// The enrolled name of the signing key (always equal to `request.from`).
    public let broker: String
    public let fingerprint: Fingerprint
    public let payload: [UInt8]
    public let requestID: String
    /// The places the signing key is bound to (`from=`), checked with the request's source by the policy stage.
    public let keySources: [SourcePattern]?
    /// The grant the request is made under, verified (chain, proof, lifetime, target); nil when it names none.
    public let grant: VerifiedGrant?

    fileprivate init(request: SpawnRequest, broker: String, fingerprint: Fingerprint, payload: [UInt8], keySources: [SourcePattern]?,
                     grant: VerifiedGrant?) {
        self.request = request
        self.grant = grant
        self.keySources = keySources
        self.broker = broker
        self.fingerprint = fingerprint
        self.payload = payload
        self.requestID = Sodium.sha256(payload).hex
    }
}

/// What verification concluded: a verified request, or a denial with whatever could be learned about the sender.
public enum Verification: Sendable, Equatable {
    case verified(VerifiedRequest)
    case denied(Denial, requestID: String?, broker: String?, fingerprint: Fingerprint?)
}

/// Envelope → signature → audience and time window, in that order.
///
/// The signature is checked over the exact payload bytes received, and only then are those bytes parsed, so a
/// parser bug can only ever be reached by an enrolled key.
public struct RequestVerifier: Sendable {
    public let audience: String
    public let keys: KeyStore
    public let window: ValidityWindow
    public let clock: any GateClock

    public init(audience: String, keys: KeyStore, window: ValidityWindow = .defaults, clock: any GateClock = SystemClock()) {
        self.audience = audience
        self.keys = keys
        self.window = window
        self.clock = clock
    }

    /// Throws only when the gateway cannot decide (the key store is unreadable); every bad request is a denial.
    public func verify(_ bytes: [UInt8]) throws(GatewayFailure) -> Verification {
        switch try authenticate(bytes, as: SpawnRequest.self) {
        case .denied(let d, let rid, let broker, let fp): return .denied(d, requestID: rid, broker: broker, fingerprint: fp)
        case .authentic(let request, let name, let kid, let payload, let sources, let key):
            // The grant is checked with the key that signed the request: a broker can only narrow its own rights.
            var grant: VerifiedGrant?
            if let token = request.grant {
                switch VerifiedGrant.verify(token, issuer: name, issuerKey: key, audience: audience, nonce: request.nonce,
                                            now: clock.now(), skew: window.clockSkew) {
                case .success(let g): grant = g
                case .failure(let d):
                    return .denied(d, requestID: Sodium.sha256(payload).hex, broker: name, fingerprint: kid)
                }
            }
            return .verified(VerifiedRequest(request: request, broker: name, fingerprint: kid, payload: payload, keySources: sources, grant: grant))
        }
    }

    /// The same checks for a control request (`agents`, `release`), signed over its own domain so that neither
    /// kind of request can stand in for the other.
    public func verifyControl(_ bytes: [UInt8]) throws(GatewayFailure) -> ControlVerification {
        switch try authenticate(bytes, as: ControlRequest.self) {
        case .denied(let d, let rid, let broker, let fp): return .denied(d, requestID: rid, broker: broker, fingerprint: fp)
        case .authentic(let request, let name, let kid, let payload, let sources, _):
            return .verified(VerifiedControl(request: request, broker: name, fingerprint: kid, payload: payload, keySources: sources))
        }
    }

    private enum Authentication<P: SignedPayload> {
        case authentic(P, name: String, kid: Fingerprint, payload: [UInt8], sources: [SourcePattern]?, key: PublicKey)
        case denied(Denial, requestID: String?, broker: String?, fingerprint: Fingerprint?)
    }

    private func authenticate<P: SignedPayload>(_ bytes: [UInt8], as: P.Type) throws(GatewayFailure) -> Authentication<P> {
        try Sodium.ensureInitialized()
        let envelope: Envelope
        switch Envelope.parse(bytes) {
        case .failure(let denial): return .denied(denial, requestID: nil, broker: nil, fingerprint: nil)
        case .success(let e): envelope = e
        }
        let requestID = envelope.requestID
        func deny(_ reason: ReasonCode, _ detail: String, broker: String? = nil) -> Authentication<P> {
            .denied(Denial(reason, detail), requestID: requestID, broker: broker, fingerprint: envelope.kid)
        }

        let name: String, key: PublicKey, sources: [SourcePattern]?
        switch try keys.lookup(envelope.kid) {
        case .unknown: return deny(.unknownKey, "key \(envelope.kid) is not enrolled here; the operator enrolls it with 'spawngate key enroll'")
        case .revoked(let n): return deny(.revokedKey, "key \(envelope.kid) of \(n) has been revoked", broker: n)
        case .enrolled(let n, let k, let s): (name, key, sources) = (n, k, s)
        }
        guard key.isValidSignature(envelope.signature, domain: P.domain, message: envelope.payload) else {
            return deny(.badSignature, "the signature does not verify with the key of \(name) (\(envelope.kid)) over the payload as received", broker: name)
        }

        let request: P
        switch P.parse(envelope.payload) {
        case .failure(let denial): return .denied(denial, requestID: requestID, broker: name, fingerprint: envelope.kid)
        case .success(let r): request = r
        }
        // The key decides who is speaking; a payload claiming another name is a lie or a misconfiguration.
        guard request.from == name else {
            return deny(.unknownKey, "the payload says from=\"\(request.from)\" but key \(envelope.kid) is enrolled as \(name)", broker: name)
        }
        guard request.to == audience else {
            return deny(.wrongAudience, "the request is addressed to \"\(request.to)\", and this broker is \"\(audience)\"", broker: name)
        }
        guard request.exp > request.iat else {
            return deny(.malformed, "exp (\(request.exp)) must be later than iat (\(request.iat))", broker: name)
        }
        guard request.exp - request.iat <= window.maxTTL else {
            return deny(.ttlTooLong, "the request lives \(request.exp - request.iat)s, longer than max_ttl \(window.maxTTL)s", broker: name)
        }
        let now = clock.now()
        guard request.iat <= now + window.clockSkew else {
            return deny(.notYetValid, "iat is \(request.iat - now)s in the future, beyond clock_skew \(window.clockSkew)s; check the requester's clock", broker: name)
        }
        guard request.exp + window.clockSkew >= now else {
            return deny(.expired, "the request expired \(now - request.exp)s ago (clock_skew \(window.clockSkew)s)", broker: name)
        }
        return .authentic(request, name: name, kid: envelope.kid, payload: envelope.payload, sources: sources, key: key)
    }
}
