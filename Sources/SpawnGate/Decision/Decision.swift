/// The decision record of PRODUCT.md: stdout of `check` and `hook pre-spawn`, the body of a receipt, a line of
/// the audit log. Environment variable values never appear, only their names.
public struct Decision: Sendable, Equatable {
    public struct Spawn: Sendable, Equatable {
        public var argv: [String]
        public var cwd: String
        public var env: [String]
        public var sandbox: String
        public init(argv: [String], cwd: String, env: [String], sandbox: String) {
            self.argv = argv; self.cwd = cwd; self.env = env; self.sandbox = sandbox
        }
    }

    public var reason: ReasonCode
    public var detail: String
    public var requestID: String?
    public var broker: String?
    public var fingerprint: String?
    public var rule: String?
    public var policy: String?
    public var spawn: Spawn?
    /// The grant the request was made under (its blocks' ids), when it named one.
    public var grant: String?
    /// The id a held request waits under (`approval_pending`), or the approval it was started by.
    public var approval: String?

    public var allowed: Bool { reason == .allowed }
    /// Held for a person's approval: decided up to the start, not started.
    public var pending: Bool { reason == .approvalPending }
    /// `allow`, `pending` or `deny`: the record's `decision` member.
    public var verdict: String { allowed ? "allow" : pending ? "pending" : "deny" }

    public init(reason: ReasonCode, detail: String, requestID: String?, broker: String?, fingerprint: String?,
                rule: String? = nil, policy: String? = nil, spawn: Spawn? = nil) {
        self.reason = reason; self.detail = detail; self.requestID = requestID; self.broker = broker
        self.fingerprint = fingerprint; self.rule = rule; self.policy = policy; self.spawn = spawn
    }

    public init(_ verification: Verification, policy: String? = nil) {
        switch verification {
        case .verified(let v):
            self.init(reason: .allowed, detail: "signature, audience and validity window are good", requestID: v.requestID,
                      broker: v.broker, fingerprint: v.fingerprint.description, policy: policy)
        case .denied(let d, let id, let broker, let fp):
            self.init(reason: d.reason, detail: d.detail, requestID: id, broker: broker, fingerprint: fp?.description,
                      rule: d.rule, policy: policy)
        }
    }

    public func jsonMembers() -> [(String, JSONWriter.Value)] {
        func opt(_ s: String?) -> JSONWriter.Value { s.map { .string($0) } ?? .null }
        var spawnValue: JSONWriter.Value = .null
        if let spawn {
            var w = JSONWriter()
            w.writeObject([("argv", .strings(spawn.argv)), ("cwd", .string(spawn.cwd)), ("env", .strings(spawn.env)),
                           ("sandbox", .string(spawn.sandbox))])
            spawnValue = .object(w)
        }
        return [
            ("decision", .string(verdict)), ("reason", .string(reason.rawValue)),
            ("detail", .string(detail)), ("request_id", opt(requestID)), ("broker", opt(broker)),
            ("fingerprint", opt(fingerprint)), ("rule", opt(rule)), ("policy", opt(policy)), ("spawn", spawnValue),
        ] + (grant.map { [("grant", .string($0))] } ?? []) + (approval.map { [("approval", .string($0))] } ?? [])
    }

    /// One line of JSON.
    public var json: String { String(decoding: JSONWriter.object(jsonMembers()), as: UTF8.self) }

    /// One line for people: `deny bad_signature: the signature does not verify …`.
    /// The detail may quote the request, so it is shown through ``TerminalText``.
    public var summary: String {
        allowed ? "allow: \(TerminalText.escaped(detail))" : "\(verdict) \(reason.rawValue): \(TerminalText.escaped(detail))"
    }
}
