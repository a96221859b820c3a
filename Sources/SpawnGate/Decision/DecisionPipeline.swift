import GRDB

/// A request that passed every stage of the pipeline and whose allow is durably in the audit log. Only
/// ``DecisionPipeline`` can make one, and the spawner accepts nothing else: holding this value is the proof.
public struct AuthorizedSpawn: Sendable {
    public let request: VerifiedRequest
    public let match: PolicyMatch
    public let decision: Decision
    /// The concurrency lease this spawn holds (keyed by request id), when its rule limits concurrency.
    public let leaseID: String?

    fileprivate init(request: VerifiedRequest, match: PolicyMatch, decision: Decision, leaseID: String?) {
        self.request = request; self.match = match; self.decision = decision; self.leaseID = leaseID
    }
}

/// The one decision path every entry point uses (`check`, `hook pre-spawn`, `exec`, `serve`):
///
/// envelope → signature → audience and window (``RequestVerifier``) → policy (``PolicyEngine``, pure) →
/// replay → rate → concurrency (``StateStore``, one transaction) → audit append (before anything acts) → result.
///
/// A refusal is a value; only a gateway that cannot decide (state store or audit log unusable) yields
/// `internal_error` / `audit_unavailable`, which callers report with exit status 2.
public struct DecisionPipeline: Sendable {
    public enum Mode: Sendable { case commit, dryRun }

    /// What was decided, and the authorization when allowed.
    public struct Outcome: Sendable {
        public let decision: Decision
        public let authorized: AuthorizedSpawn?

        public init(decision: Decision, authorized: AuthorizedSpawn?) {
            self.decision = decision
            self.authorized = authorized
        }
        /// 0 allowed, 1 denied, 2 the gateway could not decide (PRODUCT.md exit codes).
        public var exitCode: Int32 {
            switch decision.reason {
            case .allowed: 0
            case .internalError, .auditUnavailable: 2
            default: 1
            }
        }
    }

    /// How long a lease taken for a process the gateway does not start lasts, when the rule sets no max_runtime
    /// and the broker never reports the process (see docs/hook.md).
    public static let unboundLeaseSeconds: Int64 = 3600

    public let verifier: RequestVerifier
    public let engine: PolicyEngine
    public let state: StateStore
    public let audit: AuditLog

    public var policy: Policy { engine.policy }
    var clock: any GateClock { verifier.clock }
    /// Which of a profile's layers this machine lacks. Injectable so tests can stand for a machine without one.
    var missingLayers: @Sendable (SandboxProfile) -> [String] = { SandboxSupport.missing(for: $0) }

    public init(audience: String, keys: KeyStore, policy: Policy, state: StateStore, audit: AuditLog,
                clock: any GateClock = SystemClock(), resolver: PathResolver = .filesystem) {
        self.verifier = RequestVerifier(audience: audience, keys: keys, window: policy.window, clock: clock)
        self.engine = PolicyEngine(policy: policy, resolver: resolver)
        self.state = state
        self.audit = audit
    }

    /// The pipeline of a home: its identity (the audience), enrolled keys, policy (which must pass its own tests),
    /// state store and audit log. Throws when any of them cannot be used.
    public static func open(home: Home, clock: any GateClock = SystemClock()) throws(GatewayFailure) -> DecisionPipeline {
        let identity: Identity
        do { identity = try home.loadIdentity() } catch { throw GatewayFailure(error.message) }
        let policy = try PolicyLoader.loadForDecisions(home.policyFile)
        let state = try StateStore.open(home.stateDB)
        return DecisionPipeline(audience: identity.name, keys: home.keyStore, policy: policy, state: state,
                                audit: AuditLog(path: home.auditLog), clock: clock)
    }

    /// Decides one request. `brokerSpawn` is the hook's second opinion: the spawn fields the broker is about to
    /// use, which must equal the signed ones.
    public func decide(_ envelope: [UInt8], mode: Mode = .commit, brokerSpawn: [String: JSONValue]? = nil) -> Outcome {
        let verification: Verification
        do { verification = try verifier.verify(envelope) } catch { return cannotDecide(.internalError, error.message) }
        guard case .verified(let request) = verification else {
            return record(Decision(verification, policy: policy.hash), nonce: nil, cwd: nil, mode: mode)
        }
        let nonce = Base64.urlEncode(request.request.nonce)
        func deny(_ d: Denial) -> Outcome {
            record(Decision(reason: d.reason, detail: d.detail, requestID: request.requestID, broker: request.broker,
                            fingerprint: request.fingerprint.description, rule: d.rule, policy: policy.hash),
                   nonce: nonce, cwd: request.request.cwd, mode: mode)
        }
        if let brokerSpawn, let difference = HookInput.difference(brokerSpawn, signed: request.request) {
            return deny(Denial(.malformed, difference))
        }

        let match: PolicyMatch
        switch engine.evaluate(PolicyRequest(request)) {
        case .deny(let d): return deny(d)
        case .allow(let m): match = m
        }
        // The binary is checked now, not when the policy was loaded: it may have been replaced since.
        if let problem = BinaryCheck.problem(match.cli) {
            return deny(Denial(.cliNotAllowed, "cli '\(match.cli.name)' cannot be started safely: \(problem)", rule: match.rule.name))
        }

        // A profile this machine cannot enforce is refused, never quietly weakened.
        let missing = missingLayers(match.rule.sandbox)
        if !missing.isEmpty {
            return deny(Denial(.internalError, "rule '\(match.rule.name)' asks for sandbox '\(match.rule.sandbox.rawValue)', which needs \(missing.joined(separator: " and ")); run 'spawngate doctor'", rule: match.rule.name))
        }

        let rule = match.rule
        let now = clock.now()
        let window = policy.window
        var effects: [StateEffect] = [.consumeNonce(fingerprint: request.fingerprint.description, nonce: nonce,
                                                    keepUntil: request.request.exp + window.clockSkew)]
        if let rate = rule.rate {
            effects.append(.takeToken(broker: request.broker, rule: rule.name, intervalMilliseconds: rate.intervalMilliseconds, burst: rule.burst))
        }
        var leaseID: String?
        if let max = rule.maxConcurrent {
            leaseID = request.requestID
            effects.append(.takeLease(LeaseRequest(requestID: request.requestID, broker: request.broker, rule: rule.name,
                                                   name: request.request.name, max: max,
                                                   expiresAt: now + (rule.maxRuntime ?? Self.unboundLeaseSeconds))))
        }
        let allow = Decision(reason: .allowed, detail: "allowed by rule '\(rule.name)'", requestID: request.requestID,
                             broker: request.broker, fingerprint: request.fingerprint.description, rule: rule.name,
                             policy: policy.hash,
                             spawn: .init(argv: match.argv, cwd: match.cwd, env: match.env, sandbox: rule.sandbox.rawValue))
        let outcome = record(allow, nonce: nonce, cwd: match.cwd, argv: match.argv, effects: effects, mode: mode)
        guard outcome.decision.allowed, mode == .commit else { return outcome }
        return Outcome(decision: outcome.decision,
                       authorized: AuthorizedSpawn(request: request, match: match, decision: outcome.decision, leaseID: leaseID))
    }

    /// What a control request (`agents`, `release`) came to: a decision, and the verified request when allowed.
    public struct ControlOutcome: Sendable {
        public let decision: Decision
        public let control: VerifiedControl?
    }

    /// Decides a control request. A listing only reads, so it is neither audited nor consumes its nonce (its answer
    /// is sealed to the requester, so a replay shows the replayer nothing). A release acts: its nonce is consumed and
    /// its line appended to the audit log, in one transaction, before any agent is stopped. Either one reaches only
    /// the requesting broker's own agents; the caller filters by ``VerifiedControl/broker``.
    public func decideControl(_ envelope: [UInt8], mode: Mode = .commit) -> ControlOutcome {
        let verification: ControlVerification
        do { verification = try verifier.verifyControl(envelope) } catch {
            return ControlOutcome(decision: cannotDecide(.internalError, error.message).decision, control: nil)
        }
        switch verification {
        case .denied(let d, let rid, let broker, let fp):
            let decision = Decision(reason: d.reason, detail: d.detail, requestID: rid, broker: broker,
                                    fingerprint: fp?.description, rule: nil, policy: policy.hash)
            // Unauthenticated junk aimed at the release endpoint is recorded like any refused spawn.
            let outcome = record(decision, nonce: nil, cwd: nil, mode: mode)
            return ControlOutcome(decision: outcome.decision, control: nil)
        case .verified(let c):
            let acts = c.request.op == .release
            let detail = acts ? "release of agent '\(c.request.name ?? "")' by \(c.broker)" : "agent listing for \(c.broker)"
            let allow = Decision(reason: .allowed, detail: detail, requestID: c.requestID, broker: c.broker,
                                 fingerprint: c.fingerprint.description, rule: nil, policy: policy.hash)
            guard acts else { return ControlOutcome(decision: allow, control: c) }
            let nonce = Base64.urlEncode(c.request.nonce)
            let effects: [StateEffect] = [.consumeNonce(fingerprint: c.fingerprint.description, nonce: nonce,
                                                        keepUntil: c.request.exp + policy.window.clockSkew)]
            let outcome = record(allow, nonce: nonce, cwd: nil, effects: effects, mode: mode)
            return ControlOutcome(decision: outcome.decision, control: outcome.decision.allowed ? c : nil)
        }
    }

    /// Records a refusal made before there was an envelope to verify (the hook's input had the wrong shape).
    public func refuse(_ denial: Denial, mode: Mode = .commit) -> Outcome {
        record(Decision(reason: denial.reason, detail: denial.detail, requestID: nil, broker: nil, fingerprint: nil, policy: policy.hash),
               nonce: nil, cwd: nil, mode: mode)
    }

    /// Failures inside the transaction that decide which reason the requester sees.
    private struct AuditFailure: Error { let failure: GatewayFailure }

    /// Checks and applies the state effects and appends the audit line, all under the state store's write lock:
    /// the line is durable before the effects commit, and the effects commit before anyone acts on the allow.
    private func record(_ decision: Decision, nonce: String?, cwd: String?, argv: [String]? = nil,
                        effects: [StateEffect] = [], mode: Mode) -> Outcome {
        let nowMs = clock.nowMilliseconds()
        func finalDecision(_ denial: Denial?) -> Decision {
            guard let denial else { return decision }
            return Decision(reason: denial.reason, detail: denial.detail, requestID: decision.requestID, broker: decision.broker,
                            fingerprint: decision.fingerprint, rule: denial.rule ?? decision.rule, policy: decision.policy)
        }
        do {
            if mode == .dryRun {
                // Nothing is consumed and nothing is written: the decision as it would be now.
                let denial = decision.allowed ? try state.read { db in
                    try StateStore.admit(effects, nowMilliseconds: nowMs, db).denial
                } : nil
                return Outcome(decision: finalDecision(denial), authorized: nil)
            }
            let final: Decision = try state.write { db in
                var head = try StateStore.auditHead(db)
                let reconciliation: AuditLog.Reconciliation
                do throws(GatewayFailure) { reconciliation = try audit.reconcile(head) } catch { throw AuditFailure(failure: error) }
                if case .rolledForward(let line, let newHead) = reconciliation {
                    try honour(line, db)
                    head = newHead
                    try StateStore.setAuditHead(head, db)
                }
                let admission = decision.allowed ? try StateStore.admit(effects, nowMilliseconds: nowMs, db) : nil
                let final = finalDecision(admission?.denial)
                let entry = AuditLog.Entry(time: nowMs / 1000, decision: final, nonce: nonce,
                                           argv: final.allowed ? argv : nil, cwd: cwd)
                let newHead: AuditLog.Head
                do throws(GatewayFailure) { newHead = try audit.append(after: head, entry) } catch { throw AuditFailure(failure: error) }
                if case .admitted(let apply)? = admission { try apply() }
                try StateStore.setAuditHead(newHead, db)
                return final
            }
            return Outcome(decision: final, authorized: nil)
        } catch let e as AuditFailure {
            return cannotDecide(.auditUnavailable, "the decision could not be recorded, so nothing is allowed: \(e.failure.message)", like: decision)
        } catch {
            return cannotDecide(.internalError, StateStore.failure(error).message, like: decision)
        }
    }

    /// A line that reached the log while its transaction did not commit (the process died in between). Its
    /// decision was never acted on, but an allow must still never be granted twice for the same nonce.
    private func honour(_ line: [UInt8], _ db: Database) throws {
        guard case .object(let m)? = try? StrictJSONReader.parse(line),
              case .string("allow")? = m["decision"], case .string(let fp)? = m["fingerprint"],
              case .string(let nonce)? = m["nonce"], let time = m["time"]?.safeInteger else { return }
        let w = policy.window
        // exp ≤ iat + max_ttl and iat ≤ time + skew, so the request is dead after time + max_ttl + 2·skew.
        try StateStore.rememberNonce(fingerprint: fp, nonce: nonce, keepUntil: time + w.maxTTL + 2 * w.clockSkew, db)
    }

    private func cannotDecide(_ reason: ReasonCode, _ detail: String, like d: Decision? = nil) -> Outcome {
        Outcome(decision: Decision(reason: reason, detail: detail, requestID: d?.requestID, broker: d?.broker,
                                   fingerprint: d?.fingerprint, rule: nil, policy: policy.hash), authorized: nil)
    }
}
