/// The signed payload of a spawn request (PRODUCT.md "Signed request").
///
/// Fields mirror Agent Relay's `POST /api/spawn` (`name`, `cli`, `task`, `cwd`, `model`, `args`, `channels`, `team`)
/// plus the gateway's own (`from`, `to`, `iat`, `exp`, `nonce`).
public struct SpawnRequest: SignedPayload, Sendable, Equatable {
    public static let domain = SignatureDomain.request
    public var name: String
    public var cli: String
    public var task: String?
    public var cwd: String?
    public var model: String?
    public var args: [String]?
    public var channels: [String]?
    public var team: String?
    public var from: String
    public var to: String
    public var iat: Int64
    public var exp: Int64
    public var nonce: [UInt8]
    /// The attenuated right the request is made under (``GrantToken``), when its broker signs for a grant's holder.
    public var grant: GrantToken?

    public static let minimumNonceBytes = 16

    public init(name: String, cli: String, task: String? = nil, cwd: String? = nil, model: String? = nil,
                args: [String]? = nil, channels: [String]? = nil, team: String? = nil,
                from: String, to: String, iat: Int64, exp: Int64, nonce: [UInt8] = Sodium.randomBytes(16), grant: GrantToken? = nil) {
        self.name = name; self.cli = cli; self.task = task; self.cwd = cwd; self.model = model
        self.args = args; self.channels = channels; self.team = team
        self.from = from; self.to = to; self.iat = iat; self.exp = exp; self.nonce = nonce
        self.grant = grant
    }

    static let required: [String] = ["name", "cli", "from", "to", "iat", "exp", "nonce"]
    static let known: Set<String> = ["name", "cli", "task", "cwd", "model", "args", "channels", "team",
                                     "from", "to", "iat", "exp", "nonce", "grant"]

    /// The payload's bytes, compact JSON in a fixed member order.
    public func encoded() -> [UInt8] {
        var m: [(String, JSONWriter.Value)] = [("name", .string(name)), ("cli", .string(cli))]
        if let task { m.append(("task", .string(task))) }
        if let cwd { m.append(("cwd", .string(cwd))) }
        if let model { m.append(("model", .string(model))) }
        if let args { m.append(("args", .strings(args))) }
        if let channels { m.append(("channels", .strings(channels))) }
        if let team { m.append(("team", .string(team))) }
        m += [("from", .string(from)), ("to", .string(to)), ("iat", .int(iat)), ("exp", .int(exp)),
              ("nonce", .string(Base64.urlEncode(nonce)))]
        if let grant { m.append(("grant", grant.json())) }
        return JSONWriter.object(m)
    }

    /// Parses payload bytes that have already passed signature verification. Strict: every deviation is a
    /// `malformed` denial naming the field.
    public static func parse(_ bytes: [UInt8]) -> Result<SpawnRequest, Denial> {
        func malformed(_ why: String) -> Result<SpawnRequest, Denial> { .failure(Denial(.malformed, why)) }
        let value: JSONValue
        do { value = try StrictJSONReader.parse(bytes) } catch { return malformed("payload is not valid JSON: \(error)") }
        guard case .object(let m) = value else { return malformed("payload must be a JSON object, got \(value.typeName)") }
        if let extra = Set(m.keys).subtracting(known).sorted().first {
            return malformed("unknown payload field \"\(extra)\"")
        }
        if let missing = required.first(where: { m[$0] == nil }) { return malformed("payload field \"\(missing)\" is required") }

        func string(_ key: String) -> Result<String?, Denial> {
            guard let v = m[key] else { return .success(nil) }
            guard case .string(let s) = v else { return .failure(Denial(.malformed, "payload field \"\(key)\" must be a string, got \(v.typeName)")) }
            return .success(s)
        }
        func strings(_ key: String) -> Result<[String]?, Denial> {
            guard let v = m[key] else { return .success(nil) }
            guard case .array(let items) = v else { return .failure(Denial(.malformed, "payload field \"\(key)\" must be an array of strings, got \(v.typeName)")) }
            var out: [String] = []
            for (i, item) in items.enumerated() {
                guard case .string(let s) = item else { return .failure(Denial(.malformed, "payload field \"\(key)\"[\(i)] must be a string, got \(item.typeName)")) }
                out.append(s)
            }
            return .success(out)
        }
        func integer(_ key: String) -> Result<Int64, Denial> {
            guard let v = m[key], let n = v.safeInteger, n >= 0 else {
                return .failure(Denial(.malformed, "payload field \"\(key)\" must be a non-negative integer of Unix seconds below 2^53"))
            }
            return .success(n)
        }
        do {
            let name = try string("name").get()!, cli = try string("cli").get()!
            let from = try string("from").get()!, to = try string("to").get()!
            guard !name.isEmpty, !cli.isEmpty, !from.isEmpty, !to.isEmpty else {
                return malformed("payload fields \"name\", \"cli\", \"from\" and \"to\" must not be empty")
            }
            do { try Home.validateAgentName(name) } catch { return malformed("payload field \"name\": \(error.message)") }
            guard let nonce = Base64.urlDecode(try string("nonce").get()!), nonce.count >= minimumNonceBytes, nonce.count <= 64 else {
                return malformed("payload field \"nonce\" must be canonical base64url of 16 to 64 random bytes")
            }
            var grant: GrantToken?
            if let g = m["grant"] { grant = try GrantToken.parse(g).get() }
            return .success(SpawnRequest(
                name: name, cli: cli, task: try string("task").get(), cwd: try string("cwd").get(),
                model: try string("model").get(), args: try strings("args").get(), channels: try strings("channels").get(),
                team: try string("team").get(), from: from, to: to,
                iat: try integer("iat").get(), exp: try integer("exp").get(), nonce: nonce, grant: grant))
        } catch {
            return .failure(error)
        }
    }
}
