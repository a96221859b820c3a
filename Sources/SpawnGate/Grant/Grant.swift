/// What one block of a grant allows. A request must pass every block of its grant, so a block added later can only
/// narrow: that is the whole of attenuation (as in macaroons' caveats and Biscuit's blocks), with nothing to merge.
///
/// A field left out does not restrict; a list that is present and empty matches nothing.
public struct GrantScope: Sendable, Equatable {
    /// Brokers the request may be addressed to.
    public var targets: [String]?
    public var clis: [String]?
    /// Working directories, as the policy writes them (`/srv/app/**`), matched against the canonical path.
    public var cwd: [PathPattern]?
    /// Whole argv shapes (after the program), each element one pattern, as the policy's `args:`.
    public var args: [[ArgPattern]]?
    /// How many requests may use the block, counted by the target (and by the requester).
    public var max: Int64?

    public init(targets: [String]? = nil, clis: [String]? = nil, cwd: [PathPattern]? = nil, args: [[ArgPattern]]? = nil, max: Int64? = nil) {
        self.targets = targets; self.clis = clis; self.cwd = cwd; self.args = args; self.max = max
    }

    /// Builds a scope from the operator's text (flags or a policy test), or says which value is wrong.
    public static func parse(targets: [String]?, clis: [String]?, cwd: [String]?, args: [[String]]?, max: Int64?) -> Result<GrantScope, Refusal> {
        var scope = GrantScope(targets: targets, clis: clis, max: max)
        if let max, max < 1 { return .failure(Refusal("max must be at least 1, got \(max)")) }
        if let cwd {
            var patterns: [PathPattern] = []
            for c in cwd {
                switch PathPattern.parse(c) {
                case .success(let p): patterns.append(p)
                case .failure(let why): return .failure(Refusal("cwd \(why)"))
                }
            }
            scope.cwd = patterns
        }
        if let args {
            var shapes: [[ArgPattern]] = []
            for shape in args {
                var one: [ArgPattern] = []
                for a in shape {
                    switch ArgPattern.parse(a) {
                    case .success(let p): one.append(p)
                    case .failure(let why): return .failure(Refusal("argument pattern '\(a)': \(why)"))
                    }
                }
                shapes.append(one)
            }
            scope.args = shapes
        }
        return .success(scope)
    }

    /// nil when the request is inside this block; otherwise what is outside, as a sentence. `cwd` must be
    /// canonical (the target resolves it; the requester passes it resolved as text).
    public func outside(to: String?, cli: String, cwd: String?, args: [String]) -> String? {
        if let targets, let to, !targets.contains(to) { return "it allows \(Self.list(targets)) as targets, not \(to)" }
        if let clis, !clis.contains(cli) { return "it allows \(Self.list(clis)), not cli '\(cli)'" }
        if let patterns = self.cwd {
            guard let dir = cwd, patterns.contains(where: { $0.matches(canonical: dir) }) else {
                return "it allows working directories \(Self.list(patterns.map(\.source))), not \(cwd ?? "none")"
            }
        }
        if let shapes = self.args {
            let fits = shapes.contains { shape in
                shape.count == args.count && zip(shape, args).allSatisfy { $0.matches($1) }
            }
            if !fits {
                let shown = shapes.map { "[\($0.map(\.source).joined(separator: " "))]" }
                return "it allows the argument shapes \(shown.isEmpty ? "(none)" : shown.joined(separator: ", ")), not \(args)"
            }
        }
        return nil
    }

    static func list(_ items: [String]) -> String { items.isEmpty ? "nothing" : items.joined(separator: ", ") }

    /// The scope's fields as JSON members (absent fields are left out).
    func members() -> [(String, JSONWriter.Value)] {
        var m: [(String, JSONWriter.Value)] = []
        if let targets { m.append(("targets", .strings(targets))) }
        if let clis { m.append(("clis", .strings(clis))) }
        if let cwd { m.append(("cwd", .strings(cwd.map(\.source)))) }
        if let args {
            m.append(("args", .raw(JSONWriter.array(args.map { shape in .strings(shape.map(\.source)) }))))
        }
        if let max { m.append(("max", .int(max))) }
        return m
    }

    /// One line for people: `targets vps; clis codex; cwd /srv/app/**; max 3`.
    public var summary: String {
        var parts: [String] = []
        if let targets { parts.append("targets \(Self.list(targets))") }
        if let clis { parts.append("clis \(Self.list(clis))") }
        if let cwd { parts.append("cwd \(Self.list(cwd.map(\.source)))") }
        if let args { parts.append("args \(args.isEmpty ? "nothing" : args.map { "[\($0.map(\.source).joined(separator: " "))]" }.joined(separator: ", "))") }
        if let max { parts.append("max \(max)") }
        return parts.isEmpty ? "no further limits" : parts.joined(separator: "; ")
    }
}

/// One block of a grant, as signed: its own id and name, what it allows, its lifetime, and the public key that
/// signs the next block (or the proof, when it is the last). Only the first block names its issuer.
public struct GrantBlock: Sendable, Equatable {
    public var id: String
    public var name: String
    public var issuer: String?
    public var scope: GrantScope
    public var iat: Int64
    public var exp: Int64
    public var next: PublicKey

    /// The longest a grant may live.
    public static let maxLifetime: Int64 = 30 * 24 * 3600

    public init(id: String = Base64.urlEncode(Sodium.randomBytes(16)), name: String, issuer: String?, scope: GrantScope,
                iat: Int64, exp: Int64, next: PublicKey) {
        self.id = id; self.name = name; self.issuer = issuer; self.scope = scope; self.iat = iat; self.exp = exp; self.next = next
    }

    static let known: Set<String> = ["v", "id", "name", "iss", "targets", "clis", "cwd", "args", "max", "iat", "exp", "next"]

    /// Compact JSON in a fixed member order.
    public func encoded() -> [UInt8] {
        var m: [(String, JSONWriter.Value)] = [("v", .int(1)), ("id", .string(id)), ("name", .string(name))]
        if let issuer { m.append(("iss", .string(issuer))) }
        m += scope.members()
        m += [("iat", .int(iat)), ("exp", .int(exp)), ("next", .string(Base64.urlEncode(next.bytes)))]
        return JSONWriter.object(m)
    }

    /// Parses a block's signed bytes strictly; every deviation is a sentence naming the field.
    static func parse(_ bytes: [UInt8], first: Bool) -> Result<GrantBlock, Refusal> {
        func bad(_ why: String) -> Result<GrantBlock, Refusal> { .failure(Refusal(why)) }
        guard case .object(let m)? = try? StrictJSONReader.parse(bytes) else { return bad("is not a JSON object") }
        if let extra = Set(m.keys).subtracting(known).sorted().first { return bad("has an unknown field \"\(extra)\"") }
        guard m["v"]?.safeInteger == 1 else { return bad("field \"v\" must be the integer 1") }
        guard case .string(let id)? = m["id"], let raw = Base64.urlDecode(id), raw.count >= 16, raw.count <= 32 else {
            return bad("field \"id\" must be canonical base64url of 16 to 32 random bytes")
        }
        guard case .string(let name)? = m["name"], !name.isEmpty, name.utf8.count <= 64 else { return bad("field \"name\" must be a string of 1 to 64 bytes") }
        var issuer: String?
        switch (m["iss"], first) {
        case (.string(let s)?, true): issuer = s
        case (nil, false): issuer = nil
        case (_, true): return bad("field \"iss\" (the issuing broker) is required in the first block")
        case (_, false): return bad("field \"iss\" is allowed only in the first block")
        }
        func strings(_ key: String) -> Result<[String]?, Refusal> {
            guard let v = m[key] else { return .success(nil) }
            guard case .array(let items) = v, items.count <= 64 else { return .failure(Refusal("field \"\(key)\" must be an array of at most 64 strings")) }
            var out: [String] = []
            for item in items {
                guard case .string(let s) = item, !s.isEmpty, s.utf8.count <= 1024 else { return .failure(Refusal("field \"\(key)\" must hold non-empty strings")) }
                out.append(s)
            }
            return .success(out)
        }
        do {
            let targets = try strings("targets").get(), clis = try strings("clis").get(), cwd = try strings("cwd").get()
            if first, targets == nil || clis == nil || cwd == nil {
                return bad("the first block must name its targets, clis and cwd")
            }
            var args: [[String]]?
            if let v = m["args"] {
                guard case .array(let shapes) = v, shapes.count <= 64 else { return bad("field \"args\" must be an array of at most 64 argument shapes") }
                args = []
                for shape in shapes {
                    guard case .array(let items) = shape, items.count <= 64 else { return bad("field \"args\" must hold arrays of at most 64 patterns") }
                    var one: [String] = []
                    for item in items {
                        guard case .string(let s) = item, s.utf8.count <= 1024 else { return bad("field \"args\" must hold arrays of strings") }
                        one.append(s)
                    }
                    args!.append(one)
                }
            }
            var max: Int64?
            if let v = m["max"] {
                guard let n = v.safeInteger, n >= 1 else { return bad("field \"max\" must be a positive integer") }
                max = n
            }
            let scope: GrantScope
            switch GrantScope.parse(targets: targets, clis: clis, cwd: cwd, args: args, max: max) {
            case .success(let s): scope = s
            case .failure(let why): return bad(why.description)
            }
            guard let iat = m["iat"]?.safeInteger, let exp = m["exp"]?.safeInteger, iat >= 0, exp > iat else {
                return bad("fields \"iat\" and \"exp\" must be Unix seconds with exp later than iat")
            }
            guard exp - iat <= maxLifetime else { return bad("lives \(exp - iat)s, longer than a grant may (\(maxLifetime)s)") }
            guard case .string(let nextText)? = m["next"], let nextBytes = Base64.urlDecode(nextText),
                  let next = try? PublicKey(validating: nextBytes) else {
                return bad("field \"next\" must be a 32-byte Ed25519 public key, canonical base64url")
            }
            return .success(GrantBlock(id: id, name: name, issuer: issuer, scope: scope, iat: iat, exp: exp, next: next))
        } catch {
            return .failure(error)
        }
    }
}

/// A grant as it travels inside a signed spawn request (`"grant"` of the payload, docs/protocol.md):
/// `{"blocks":[{"payload":b64u,"sig":b64u},…],"proof":b64u}`. Nothing in it is trusted until ``VerifiedGrant``.
public struct GrantToken: Sendable, Equatable {
    public struct Signed: Sendable, Equatable {
        public let payload: [UInt8]
        public let sig: [UInt8]
        public init(payload: [UInt8], sig: [UInt8]) { self.payload = payload; self.sig = sig }
    }
    public var blocks: [Signed]
    /// The last block's key over the request (``GrantToken/proofMessage(to:nonce:)``): whoever holds only an
    /// earlier block's key cannot drop the later, narrower blocks.
    public var proof: [UInt8]

    public static let maxBlocks = 8

    public init(blocks: [Signed], proof: [UInt8]) { self.blocks = blocks; self.proof = proof }

    /// What the proof signs: the target and the request's nonce, so a proof belongs to one request only.
    public static func proofMessage(to: String, nonce: [UInt8]) -> [UInt8] { Array(to.utf8) + [0] + nonce }

    public func json() -> JSONWriter.Value {
        let list = JSONWriter.array(blocks.map { b in
            .raw(JSONWriter.object([("payload", .string(Base64.urlEncode(b.payload))), ("sig", .string(Base64.urlEncode(b.sig)))]))
        })
        var w = JSONWriter()
        w.writeObject([("blocks", .raw(list)), ("proof", .string(Base64.urlEncode(proof)))])
        return .object(w)
    }

    /// The shape only: an object with 1 to 8 blocks of base64url payload and a 64-byte signature, and a proof.
    static func parse(_ value: JSONValue) -> Result<GrantToken, Denial> {
        func bad(_ why: String) -> Result<GrantToken, Denial> { .failure(Denial(.malformed, "payload field \"grant\" \(why)")) }
        guard case .object(let o) = value else { return bad("must be an object") }
        if let extra = Set(o.keys).subtracting(["blocks", "proof"]).sorted().first { return bad("has an unknown field \"\(extra)\"") }
        guard case .array(let items)? = o["blocks"], !items.isEmpty, items.count <= maxBlocks else {
            return bad("must have \"blocks\", an array of 1 to \(maxBlocks) signed blocks")
        }
        var blocks: [Signed] = []
        for (i, item) in items.enumerated() {
            guard case .object(let b) = item, Set(b.keys) == ["payload", "sig"],
                  case .string(let p)? = b["payload"], let payload = Base64.urlDecode(p), !payload.isEmpty,
                  case .string(let s)? = b["sig"], let sig = Base64.urlDecode(s), sig.count == 64 else {
                return bad("block \(i) must be {\"payload\": base64url, \"sig\": base64url of 64 bytes}")
            }
            blocks.append(Signed(payload: payload, sig: sig))
        }
        guard case .string(let p)? = o["proof"], let proof = Base64.urlDecode(p), proof.count == 64 else {
            return bad("must have \"proof\", base64url of a 64-byte signature")
        }
        return .success(GrantToken(blocks: blocks, proof: proof))
    }
}

/// A grant whose every block verified: the first with the requesting broker's enrolled key, each later one with
/// the key its predecessor names; the proof with the last block's key over this very request; every block inside
/// its lifetime and addressed to this target. Only ``verify(_:issuer:issuerKey:audience:nonce:now:skew:)`` makes
/// one. What it allows of the request's cli, cwd and arguments is checked after the policy (``DecisionPipeline``).
public struct VerifiedGrant: Sendable, Equatable {
    public let blocks: [GrantBlock]

    /// Every block's id, first to last: how the audit line and the receipt name the grant.
    public var id: String { blocks.map(\.id).joined(separator: "/") }
    /// The holder's name for it (the last block's).
    public var name: String { blocks.last!.name }
    /// What each block allows, for the checks after the policy.
    public var limits: [GrantLimit] { blocks.map { GrantLimit(name: $0.name, scope: $0.scope) } }

    private init(blocks: [GrantBlock]) { self.blocks = blocks }

    public static func verify(_ token: GrantToken, issuer: String, issuerKey: PublicKey, audience: String, nonce: [UInt8],
                              now: Int64, skew: Int64) -> Result<VerifiedGrant, Denial> {
        var key = issuerKey
        var blocks: [GrantBlock] = []
        for (i, signed) in token.blocks.enumerated() {
            let signer = i == 0 ? "\(issuer)'s key" : "the key block \(i - 1) names"
            guard key.isValidSignature(signed.sig, domain: .grant, message: signed.payload) else {
                return .failure(Denial(.grantInvalid, "block \(i) of the grant is not signed by \(signer) (altered, or issued by another broker)"))
            }
            let block: GrantBlock
            switch GrantBlock.parse(signed.payload, first: i == 0) {
            case .success(let b): block = b
            case .failure(let why): return .failure(Denial(.grantInvalid, "block \(i) of the grant \(why.description)"))
            }
            if i == 0, block.issuer != issuer {
                return .failure(Denial(.grantInvalid, "the grant was issued by \(block.issuer ?? "nobody"), and the request is signed by \(issuer)"))
            }
            guard block.iat <= now + skew else {
                return .failure(Denial(.grantExpired, "grant '\(block.name)' is not valid for another \(block.iat - now)s; check the issuer's clock"))
            }
            guard block.exp + skew >= now else {
                return .failure(Denial(.grantExpired, "grant '\(block.name)' expired \(now - block.exp)s ago; its issuer can add a new one with 'spawngate grant add'"))
            }
            if let targets = block.scope.targets, !targets.contains(audience) {
                return .failure(Denial(.grantExceeded, "grant '\(block.name)' allows \(GrantScope.list(targets)) as targets, not \(audience)"))
            }
            blocks.append(block)
            key = block.next
        }
        guard key.isValidSignature(token.proof, domain: .grantProof, message: GrantToken.proofMessage(to: audience, nonce: nonce)) else {
            return .failure(Denial(.grantInvalid, "the grant's proof is not signed by its last block's key over this request (a block was dropped, or the proof belongs to another request)"))
        }
        return .success(VerifiedGrant(blocks: blocks))
    }

}

/// One block's limits under its name: what the pipeline (and a policy test that states a grant) checks a request
/// against once the policy has shaped it.
public struct GrantLimit: Sendable, Equatable {
    public let name: String
    public let scope: GrantScope
    public init(name: String, scope: GrantScope) { self.name = name; self.scope = scope }

    /// nil when the request is inside every limit; otherwise the denial naming the first one it is outside. The
    /// one copy of this rule: the requester checks with it before signing, the target after its policy.
    public static func outside(_ limits: [GrantLimit], to: String?, cli: String, cwd: String?, args: [String]) -> Denial? {
        for l in limits {
            if let why = l.scope.outside(to: to, cli: cli, cwd: cwd, args: args) {
                return Denial(.grantExceeded, "the request is outside grant '\(l.name)': \(why)")
            }
        }
        return nil
    }
}
