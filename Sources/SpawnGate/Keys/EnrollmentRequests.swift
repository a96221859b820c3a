import Foundation

/// Enrollment without copy-paste (salt-key's pending state): a broker sends its public key to a target's gateway
/// with proof that it holds the private key; the target keeps it as *pending*, trusted for nothing, until its
/// operator accepts it with the fingerprint learned out of band (`key accept NAME --fingerprint SHA256:…`), so a
/// key swapped on the way is refused there.
///
/// Wire: an envelope (the request's shape) signed over `spawngate-enroll-v1` by the key it carries; payload
/// `{"name":N,"key":"ssh-ed25519 … N","to":TARGET,"iat":T,"nonce":b64u}`.
public enum EnrollmentRequest {
    public static let domain = SignatureDomain(tag: "spawngate-enroll-v1")
    public static let maxSize = 4096

    public static func make(identity: Identity, to target: String, now: Int64) -> [UInt8] {
        let payload = JSONWriter.object([("name", .string(identity.name)), ("key", .string(identity.key.publicKey.line(comment: identity.name))),
                                         ("to", .string(target)), ("iat", .int(now)), ("nonce", .string(Base64.urlEncode(Sodium.randomBytes(16))))])
        return Envelope.seal(payload, with: identity.key, domain: domain)
    }

    /// The name and key of a request addressed to `audience`, made within `window` of `now`, whose signature is
    /// by the key it carries. Proof of possession only: nothing about who the sender is.
    public static func open(_ bytes: [UInt8], audience: String, now: Int64, window: ValidityWindow) -> Result<(String, PublicKey), Denial> {
        func bad(_ why: String) -> Result<(String, PublicKey), Denial> { .failure(Denial(.malformed, why)) }
        guard bytes.count <= maxSize else { return bad("an enrollment request is at most \(maxSize) bytes") }
        let envelope: Envelope
        switch Envelope.parse(bytes) {
        case .failure(let d): return .failure(d)
        case .success(let e): envelope = e
        }
        guard case .object(let m)? = try? StrictJSONReader.parse(envelope.payload) else { return bad("the enrollment payload is not a JSON object") }
        if let extra = Set(m.keys).subtracting(["name", "key", "to", "iat", "nonce"]).sorted().first { return bad("unknown enrollment field \"\(extra)\"") }
        guard case .string(let name)? = m["name"], case .string(let line)? = m["key"], case .string(let to)? = m["to"],
              let iat = m["iat"]?.safeInteger, case .string(_)? = m["nonce"] else {
            return bad("an enrollment request needs name, key, to, iat and nonce")
        }
        do { try Home.validateBrokerName(name) } catch { return bad(error.message) }
        let key: PublicKey
        do { key = try PublicKey.parseLine(line).key } catch { return bad("its key: \(error.message)") }
        guard envelope.kid == key.fingerprint, key.isValidSignature(envelope.signature, domain: domain, message: envelope.payload) else {
            return .failure(Denial(.badSignature, "the enrollment request is not signed by the key it carries"))
        }
        guard to == audience else { return .failure(Denial(.wrongAudience, "the enrollment request is for '\(to)', not '\(audience)'")) }
        guard iat <= now + window.clockSkew, iat >= now - window.maxTTL - window.clockSkew else {
            return .failure(Denial(.expired, "the enrollment request was made at \(iat), outside this gateway's window"))
        }
        return .success((name, key))
    }
}

/// Keys waiting for an operator's decision, in `pending/` under the home: one small file each, bounded in number
/// (``limit`` in all, ``perSource`` from one address), expiring after a day, never read by the decision path.
public struct PendingKeys: Sendable {
    public static let limit = 32
    /// A source's share: a flood from one address keeps at most this many and cannot push out the others.
    public static let perSource = 4
    public static let lifetime: Int64 = 86400
    /// One add at a time in this process (the gateway's concurrent requests), so the bounds hold.
    private static let lock = NSLock()

    public let home: Home
    public var dir: String { home.root + "/pending" }

    public init(home: Home) { self.home = home }

    public struct Entry: Sendable, Equatable {
        public let name: String
        public let key: PublicKey
        public let source: String
        public let at: Int64
        var file: String
    }

    /// Why a request was not kept.
    public enum Refusal: Error, Sendable, Equatable {
        /// Its source already has ``perSource`` requests pending.
        case sourceFull
        /// It could not be written (the home's file system); the text names files, for the operator's log only.
        case failed(String)
    }

    /// Keeps a request (one per name and key; a repeat refreshes it). A source at its share is refused; when the
    /// table is full, the oldest request is dropped to make room (and returned), so sources flooding together
    /// cannot lock everyone else out until their requests expire a day later.
    @discardableResult
    public func add(name: String, key: PublicKey, source: String, now: Int64) throws(Refusal) -> Entry? {
        Self.lock.lock(); defer { Self.lock.unlock() }
        do { try Files.makeDirectory(dir, mode: 0o700) } catch { throw .failed(error.message) }
        let current = list(now: now)
        let file = dir + "/\(name).\(key.fingerprint.description.dropFirst(7).prefix(16).replacingOccurrences(of: "/", with: "_")).json"
        let kept = String(source.prefix(64))
        var dropped: Entry?
        if !current.contains(where: { $0.file == file }) {
            guard current.filter({ $0.source == kept }).count < Self.perSource else { throw .sourceFull }
            if current.count >= Self.limit, let oldest = current.first {
                unlink(oldest.file)
                dropped = oldest
            }
        }
        let body = JSONWriter.object([("name", .string(name)), ("key", .string(key.line(comment: name))),
                                      ("source", .string(kept)), ("at", .int(now))]) + [10]
        do { try Files.writeAtomically(file, body, mode: 0o600) } catch { throw .failed(error.message) }
        return dropped
    }

    /// The pending requests still fresh, oldest first; expired ones are removed.
    public func list(now: Int64) -> [Entry] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        var out: [Entry] = []
        for n in names where n.hasSuffix(".json") {
            let file = dir + "/" + n
            guard let bytes = try? Files.read(file, limit: 4096), case .object(let o)? = try? StrictJSONReader.parse(bytes),
                  case .string(let name)? = o["name"], case .string(let line)? = o["key"], case .string(let source)? = o["source"],
                  let at = o["at"]?.safeInteger, let key = try? PublicKey.parseLine(line).key else { unlink(file); continue }
            if at + Self.lifetime < now { unlink(file); continue }
            out.append(Entry(name: name, key: key, source: source, at: at, file: file))
        }
        return out.sorted { ($0.at, $0.name) < ($1.at, $1.name) }
    }

    /// Enrolls the pending key of `name` whose fingerprint is `fingerprint` (learned out of band), with every check
    /// `key enroll` makes, and forgets the requests for that name.
    public func accept(name: String, fingerprint: Fingerprint, now: Int64, sources: [SourcePattern]? = nil) throws(OperatorError) -> Entry {
        let candidates = list(now: now).filter { $0.name == name }
        guard !candidates.isEmpty else {
            throw OperatorError("no enrollment request from '\(name)' is pending; 'spawngate key pending' lists them (they expire after a day)")
        }
        guard let match = candidates.first(where: { $0.key.fingerprint == fingerprint }) else {
            let seen = candidates.map(\.key.fingerprint.description).joined(separator: ", ")
            throw OperatorError("no pending key of '\(name)' has the fingerprint \(fingerprint) (pending: \(seen)); a request swapped on the way is refused: compare the fingerprint with \(name)'s operator again, and reject the others")
        }
        try home.keyStore.enroll(name: name, key: match.key, expected: fingerprint, sources: sources)
        for c in candidates { unlink(c.file) }
        return match
    }

    /// Forgets every pending request for `name`; returns how many there were.
    @discardableResult
    public func reject(name: String, now: Int64) -> Int {
        let candidates = list(now: now).filter { $0.name == name }
        for c in candidates { unlink(c.file) }
        return candidates.count
    }
}
