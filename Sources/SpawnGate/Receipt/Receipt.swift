/// A target's signed answer to a request: the decision of PRODUCT.md, plus on allow the agent's pid, its start
/// time and the sandbox layers actually in force, so the requester holds proof of what was enforced. Signed with
/// the target's identity key over its own domain (`spawngate-receipt-v1`), so a signed request can never be
/// passed off as a receipt or the reverse, and bound to the request by `request_id`.
public enum Receipt {
    /// What was started, on allow.
    public struct Started: Sendable, Equatable {
        public let pid: Int32
        /// Unix seconds.
        public let startedAt: Int64
        public let layers: [String]

        public init(pid: Int32, startedAt: Int64, layers: [String]) {
            self.pid = pid; self.startedAt = startedAt; self.layers = layers
        }
    }

    /// What a receipt answers: a spawn (an allow must say what was started) or a control request (an allow
    /// carries `agents`, the requester's running agents, or `released`, the ones stopped).
    public enum Kind: Sendable { case spawn, control }

    public static func payload(_ decision: Decision, started: Started?, extra: [(String, JSONWriter.Value)] = []) -> [UInt8] {
        var members = decision.jsonMembers()
        if let started {
            members += [("pid", .int(Int64(started.pid))), ("started_at", .int(started.startedAt)), ("layers", .strings(started.layers))]
        }
        return JSONWriter.object(members + extra)
    }

    /// The receipt envelope, one line of JSON.
    public static func issue(_ decision: Decision, started: Started?, extra: [(String, JSONWriter.Value)] = [],
                             key: SigningKey) -> [UInt8] {
        Envelope.seal(payload(decision, started: started, extra: extra), with: key, domain: .receipt)
    }

    /// Checks a receipt strictly: the expected target's key, the receipt domain, the request it answers, and a
    /// payload of the right shape. Anything else is refused with a sentence saying what.
    ///
    /// `requestID` nil accepts only a denial without one: the target could not read the request at all (not
    /// sealed to it, not JSON), so there was no id to bind to. Such a receipt proves nothing about the request
    /// that was sent (anyone can make the target sign one), and callers must say so.
    public static func verify(_ bytes: [UInt8], from target: PublicKey, requestID: String?,
                              kind: Kind = .spawn) -> Result<VerifiedReceipt, ReceiptError> {
        func fail(_ why: String) -> Result<VerifiedReceipt, ReceiptError> { .failure(ReceiptError(why)) }
        guard !bytes.isEmpty else { return fail("the answer carries no receipt (an unsigned answer is not trusted)") }
        let envelope: Envelope
        switch Envelope.parse(bytes) {
        case .failure(let d): return fail("the receipt is malformed: \(d.detail)")
        case .success(let e): envelope = e
        }
        guard envelope.kid == target.fingerprint else {
            return fail("the receipt is signed by \(envelope.kid), not by the target's key \(target.fingerprint) in peers.yaml")
        }
        guard target.isValidSignature(envelope.signature, domain: .receipt, message: envelope.payload) else {
            return fail("the receipt's signature does not verify with the target's key (forged or altered on the way)")
        }
        guard case .object(let o)? = try? StrictJSONReader.parse(envelope.payload) else {
            return fail("the receipt's signed payload is not a JSON object")
        }
        let rid: String?
        switch o["request_id"] {
        case .string(let r)? where r == requestID: rid = r
        case .null? where requestID == nil && o["decision"] == .string("deny"): rid = nil
        default:
            return fail("the receipt answers another request (request_id \(o["request_id"].map { "\($0)" } ?? "missing"), expected \(requestID ?? "none"))")
        }
        guard case .string(let verdict)? = o["decision"], verdict == "allow" || verdict == "deny" || verdict == "pending",
              case .string(let reasonText)? = o["reason"], let reason = ReasonCode(rawValue: reasonText),
              (verdict == "allow") == (reason == .allowed), (verdict == "pending") == (reason == .approvalPending),
              case .string(let detail)? = o["detail"] else {
            return fail("the receipt's decision, reason or detail is missing or inconsistent")
        }
        var started: Started?
        if verdict == "allow" && kind == .spawn {
            guard let pid = o["pid"]?.safeInteger, pid > 0, pid <= Int64(Int32.max), let at = o["started_at"]?.safeInteger,
                  case .array(let list)? = o["layers"] else {
                return fail("an allow receipt must name the agent's pid, started_at and sandbox layers")
            }
            let layers = list.compactMap { v -> String? in if case .string(let s) = v { s } else { nil } }
            guard layers.count == list.count else { return fail("the receipt's layers must be strings") }
            started = Started(pid: Int32(pid), startedAt: at, layers: layers)
        }
        func string(_ k: String) -> String? { if case .string(let s)? = o[k] { s } else { nil } }
        return .success(VerifiedReceipt(reason: reason, detail: detail, requestID: rid, rule: string("rule"),
                                        started: started, members: o, payload: envelope.payload))
    }
}

/// A receipt that verified against the target's key and answers the request that was sent.
public struct VerifiedReceipt: Sendable {
    public let reason: ReasonCode
    public let detail: String
    /// Nil only on a denial of a request the target could not read.
    public let requestID: String?
    public let rule: String?
    public let started: Receipt.Started?
    /// Every member of the signed payload (a control answer's `agents`, a spawn's `spawn`).
    public let members: [String: JSONValue]
    /// The signed payload, as the target wrote it.
    public let payload: [UInt8]
    public var allowed: Bool { reason == .allowed }
    /// Held on the target for a person's approval; `approval` names it.
    public var pending: Bool { reason == .approvalPending }
    public var approval: String? { if case .string(let s)? = members["approval"] { s } else { nil } }
    /// The grant the target checked the request against (its blocks' ids), when the request carried one.
    public var grant: String? { if case .string(let s)? = members["grant"] { s } else { nil } }
}

public struct ReceiptError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

extension VerifiedReceipt {
    /// The receipt's facts as every surface reports them (the MCP tools' structured content, the dashboard's
    /// answers): broker, decision, reason, detail, request_id, rule; on a start pid, started_at, layers, sandbox;
    /// and exit_status, output, spawner when the target sent them.
    public func facts(broker: String) -> [String: JSONValue] {
        var f: [String: JSONValue] = ["broker": .string(broker), "decision": .string(allowed ? "allow" : pending ? "pending" : "deny"),
                                      "reason": .string(reason.rawValue), "detail": .string(detail),
                                      "request_id": requestID.map { .string($0) } ?? .null, "rule": rule.map { .string($0) } ?? .null]
        if let s = started {
            f["pid"] = .number(String(s.pid)); f["started_at"] = .number(String(s.startedAt)); f["layers"] = .array(s.layers.map { .string($0) })
        }
        if case .object(let spawn)? = members["spawn"], case .string(let p)? = spawn["sandbox"] { f["sandbox"] = .string(p) }
        for k in ["exit_status", "output", "spawner", "grant", "approval", "expires_at"] { if let v = members[k] { f[k] = v } }
        return f
    }
}

