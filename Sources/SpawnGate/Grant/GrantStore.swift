import Foundation
import GRDB

/// The grants this broker issued, kept in `grants/` of its home (0700), one file per grant (0600): the signed
/// blocks and the private key of the last block's `next`, which signs each request's proof and any narrower grant
/// made from it. Revoking a grant records its last block's id in `grants/revoked`; a grant made from a revoked one
/// carries that id too, so it is revoked with it.
///
/// Revocation binds this side: nothing here signs for a revoked grant. The target does not learn of it (it keeps
/// no list of the issuer's grants); a grant's lifetime and max are what bound it there.
public struct GrantStore: Sendable {
    public let home: Home
    public init(home: Home) { self.home = home }

    public var directory: String { home.root + "/grants" }
    var revokedFile: String { directory + "/revoked" }
    func file(_ name: String) -> String { directory + "/" + name + ".grant" }

    /// The longest `--ttl`, and the one given when none is.
    public static let defaultTTL: Int64 = 8 * 3600

    /// A grant as this broker holds it.
    public struct Held: Sendable {
        public let name: String
        public let signed: [GrantToken.Signed]
        public let blocks: [GrantBlock]
        let key: SigningKey
        /// When it was revoked (its own or an ancestor's revocation), nil while it is not.
        public let revoked: Bool

        public var limits: [GrantLimit] { blocks.map { GrantLimit(name: $0.name, scope: $0.scope) } }
        public var id: String { blocks.map(\.id).joined(separator: "/") }
        public var expiresAt: Int64 { blocks.map(\.exp).min() ?? 0 }
        public var targets: [String]? { blocks.compactMap(\.scope.targets).last }

        /// The token for one request: these blocks, and the proof over the request's target and nonce.
        public func token(to: String, nonce: [UInt8]) -> GrantToken {
            GrantToken(blocks: signed, proof: key.sign(GrantToken.proofMessage(to: to, nonce: nonce), domain: .grantProof))
        }

        /// `active`, `expired` or `revoked`, as of `now`.
        public func state(now: Int64) -> String {
            if revoked { return "revoked" }
            if blocks.contains(where: { now > $0.exp }) { return "expired" }
            return "active"
        }
    }

    public static func validateName(_ name: String) throws(OperatorError) {
        do { try Home.validateBrokerName(name) } catch {
            throw OperatorError("'\(name)' is not a usable grant name: 1–64 characters from a–z, A–Z, 0–9, '-', '_', '.', not starting with '.' or '-'")
        }
    }

    /// Issues a grant signed with this broker's own key: the first block.
    public func issue(name: String, scope: GrantScope, ttl: Int64, identity: Identity, now: Int64) throws(OperatorError) -> Held {
        try Self.validateName(name)
        guard let targets = scope.targets, !targets.isEmpty, let clis = scope.clis, !clis.isEmpty, let cwd = scope.cwd, !cwd.isEmpty else {
            throw OperatorError("a grant names at least one --broker, one --cli and one --cwd: it can only narrow, so it lists what it allows")
        }
        try checkTTL(ttl)
        let next = SigningKey.generate()
        let block = GrantBlock(name: name, issuer: identity.name, scope: scope, iat: now, exp: now + ttl, next: next.publicKey)
        let payload = block.encoded()
        let signed = GrantToken.Signed(payload: payload, sig: identity.key.sign(payload, domain: .grant))
        return try save(name: name, signed: [signed], key: next)
    }

    /// Makes a narrower grant from `parent` without this broker's key: a block signed by the parent's last key.
    /// It can only narrow: a request must pass the parent's blocks as well as this one.
    public func attenuate(name: String, from parent: String, scope: GrantScope, ttl: Int64?, now: Int64) throws(OperatorError) -> Held {
        try Self.validateName(name)
        let p = try load(parent)
        guard !p.revoked else { throw OperatorError("grant '\(parent)' is revoked; a grant cannot be made from it") }
        let parentEnds = p.expiresAt
        guard parentEnds > now else { throw OperatorError("grant '\(parent)' has expired; a grant cannot be made from it") }
        let exp = min(parentEnds, now + (ttl ?? (parentEnds - now)))
        if let ttl { try checkTTL(ttl) }
        let next = SigningKey.generate()
        let block = GrantBlock(name: name, issuer: nil, scope: scope, iat: now, exp: exp, next: next.publicKey)
        let payload = block.encoded()
        let signed = GrantToken.Signed(payload: payload, sig: p.key.sign(payload, domain: .grant))
        return try save(name: name, signed: p.signed + [signed], key: next)
    }

    private func checkTTL(_ ttl: Int64) throws(OperatorError) {
        guard ttl >= 60, ttl <= GrantBlock.maxLifetime else {
            throw OperatorError("--ttl must be from 1m to \(GrantBlock.maxLifetime / 86400)d; got \(ttl)s")
        }
    }

    private func save(name: String, signed: [GrantToken.Signed], key: SigningKey) throws(OperatorError) -> Held {
        guard signed.count <= GrantToken.maxBlocks else { throw OperatorError("a grant has at most \(GrantToken.maxBlocks) blocks; this one would have \(signed.count)") }
        if !Files.exists(directory) { try Files.makeDirectory(directory, mode: 0o700) }
        let blocks = signed.map { s in
            JSONWriter.object([("payload", .string(Base64.urlEncode(s.payload))), ("sig", .string(Base64.urlEncode(s.sig)))])
        }
        let contents = JSONWriter.object([("v", .int(1)), ("name", .string(name)), ("blocks", .raw(JSONWriter.array(blocks.map { .raw($0) }))),
                                          ("key", .string(Base64.urlEncode(key.seedBytes)))]) + [10]
        try Files.writeAtomically(file(name), contents, mode: 0o600, exclusive: true)
        return try load(name)
    }

    /// Reads a grant back, checking its file as strictly as the target checks the blocks (its own key included).
    public func load(_ name: String) throws(OperatorError) -> Held {
        try Self.validateName(name)
        let path = file(name)
        guard Files.exists(path) else {
            throw OperatorError("no grant named '\(name)' in \(directory); 'spawngate grant list' shows them, 'spawngate grant add' makes one")
        }
        try Files.checkPrivate(path)
        let bytes = try Files.read(path, limit: 256 * 1024)
        func bad(_ why: String) -> OperatorError { OperatorError.unusable("\(path): \(why); remove it and add the grant again") }
        guard case .object(let o)? = try? StrictJSONReader.parse(bytes), Set(o.keys) == ["v", "name", "blocks", "key"],
              o["v"]?.safeInteger == 1, o["name"] == .string(name), case .array(let items)? = o["blocks"],
              case .string(let seedText)? = o["key"], let seed = Base64.urlDecode(seedText), let key = try? SigningKey(seed: seed) else {
            throw bad("not a grant file of this version")
        }
        let identity = try home.loadIdentity()
        var signed: [GrantToken.Signed] = [], blocks: [GrantBlock] = []
        var signer = identity.key.publicKey
        for (i, item) in items.enumerated() {
            guard case .object(let b) = item, case .string(let p)? = b["payload"], let payload = Base64.urlDecode(p),
                  case .string(let s)? = b["sig"], let sig = Base64.urlDecode(s), signer.isValidSignature(sig, domain: .grant, message: payload) else {
                throw bad("block \(i) is not signed by \(i == 0 ? "this broker's key" : "the key of block \(i - 1)")")
            }
            guard case .success(let block) = GrantBlock.parse(payload, first: i == 0) else { throw bad("block \(i) is malformed") }
            if i == 0, block.issuer != identity.name { throw bad("it was issued by \(block.issuer ?? "?"), not by \(identity.name)") }
            signed.append(GrantToken.Signed(payload: payload, sig: sig)); blocks.append(block)
            signer = block.next
        }
        guard !blocks.isEmpty, key.publicKey == signer else { throw bad("its key does not belong to its last block") }
        let revokedIDs = try revoked()
        return Held(name: name, signed: signed, blocks: blocks, key: key, revoked: blocks.contains { revokedIDs.contains($0.id) })
    }

    /// Every grant in the directory, by name; files that do not load are reported beside them.
    public func list() throws(OperatorError) -> (grants: [Held], problems: [String]) {
        guard Files.exists(directory) else { return ([], []) }
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".grant") }.sorted() } catch {
            throw OperatorError.unusable("cannot list \(directory): \(error.localizedDescription)")
        }
        var out: [Held] = [], problems: [String] = []
        for n in names {
            do { out.append(try load(String(n.dropLast(".grant".count)))) } catch { problems.append(error.message) }
        }
        return (out, problems)
    }

    /// Revokes `name` and every grant made from it: nothing here signs for them again.
    public func revoke(_ name: String) throws(OperatorError) -> Held {
        let g = try load(name)
        guard !g.revoked else { return g }
        var ids = try revoked()
        ids.insert(g.blocks.last!.id)
        try Files.writeAtomically(revokedFile, Array((ids.sorted().joined(separator: "\n") + "\n").utf8), mode: 0o600)
        return try load(name)
    }

    private func revoked() throws(OperatorError) -> Set<String> {
        guard Files.exists(revokedFile) else { return [] }
        let bytes = try Files.read(revokedFile, limit: 4 * 1024 * 1024)
        return Set(String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init))
    }

    /// Whether `request` to `target` may be signed under `grant` now: not revoked, inside its lifetime and every
    /// block's limits (the working directory resolved as text: the target resolves it on its own disk), and
    /// within each block's max as counted here. Counts the use when it may. nil: sign it.
    public func admit(_ grant: Held, request: SpawnRequest, target: String, now: Int64) throws(OperatorError) -> Denial? {
        if grant.revoked { return Denial(.grantRevoked, "grant '\(grant.name)' was revoked here; nothing is signed for it") }
        if let ended = grant.blocks.first(where: { now > $0.exp }) {
            return Denial(.grantExpired, "grant '\(grant.name)' expired at \(ended.exp) (block '\(ended.name)'); its issuer can add a new one with 'spawngate grant add'")
        }
        var cwd: String?
        if let c = request.cwd {
            switch PathResolver.lexical.resolve(c) {
            case .success(let r): cwd = r
            case .failure(let why): return Denial(.grantExceeded, "the request is outside grant '\(grant.name)': its cwd \(why.description)")
            }
        }
        if let d = GrantLimit.outside(grant.limits, to: target, cli: request.cli, cwd: cwd, args: request.args ?? []) { return d }
        let counted = grant.blocks.filter { $0.scope.max != nil }
        guard !counted.isEmpty else { return nil }
        let state: StateStore
        do { state = try StateStore.open(home.stateDB) } catch { throw OperatorError.unusable(error.message) }
        do {
            return try state.write { db -> Denial? in
                for b in counted {
                    let used = try Int64.fetchOne(db, sql: "SELECT uses FROM grant_use WHERE issuer = 'local' AND block_id = ?", arguments: [b.id]) ?? 0
                    if used >= b.scope.max! {
                        return Denial(.grantExceeded, "grant '\(b.name)' has been used \(used) time\(used == 1 ? "" : "s"), its max")
                    }
                }
                for b in counted {
                    try db.execute(sql: "INSERT INTO grant_use (issuer, block_id, uses, keep_until) VALUES ('local', ?, 1, ?) ON CONFLICT (issuer, block_id) DO UPDATE SET uses = uses + 1",
                                   arguments: [b.id, b.exp + 3600])
                }
                return nil
            }
        } catch { throw OperatorError.unusable(StateStore.failure(error).message) }
    }

    /// How many times each counted block was used here.
    public func uses(_ grant: Held) -> Int64? {
        guard let b = grant.blocks.last(where: { $0.scope.max != nil }), let state = try? StateStore.open(home.stateDB) else { return nil }
        return try? state.read { db in try Int64.fetchOne(db, sql: "SELECT uses FROM grant_use WHERE issuer = 'local' AND block_id = ?", arguments: [b.id]) ?? 0 }
    }
}
