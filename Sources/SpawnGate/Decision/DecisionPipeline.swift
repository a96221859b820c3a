import Foundation
import GRDB

/// A request that passed every stage of the pipeline and whose allow is durably in the audit log. Only
/// ``DecisionPipeline`` can make one, and the spawner accepts nothing else: holding this value is the proof.
public struct AuthorizedSpawn: Sendable {
    public let request: VerifiedRequest
    public let match: PolicyMatch
    public let decision: Decision
    /// The concurrency lease this spawn holds (keyed by request id), when its rule limits concurrency.
    public let leaseID: String?
    /// The envelope exactly as verified, and when: what a launch ticket carries to ``DecisionPipeline/redeem(_:)``.
    public let envelope: [UInt8]
    public let decidedAt: Int64
    /// Where the request came from (a launch ticket keeps it for the re-check at redemption).
    public let source: RequestSource

    fileprivate init(request: VerifiedRequest, match: PolicyMatch, decision: Decision, leaseID: String?,
                     envelope: [UInt8], decidedAt: Int64, source: RequestSource) {
        self.request = request; self.match = match; self.decision = decision; self.leaseID = leaseID
        self.envelope = envelope; self.decidedAt = decidedAt; self.source = source
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
        /// The verified control request, when one was allowed.
        public let control: VerifiedControl?
        /// Every stage the decision ran, when tracing was asked for (`policy explain`).
        public fileprivate(set) var trace: DecisionTrace?

        public init(decision: Decision, authorized: AuthorizedSpawn?) {
            self.init(decision: decision, authorized: authorized, control: nil)
        }
        init(decision: Decision, authorized: AuthorizedSpawn?, control: VerifiedControl?) {
            self.decision = decision
            self.authorized = authorized
            self.control = control
        }
        /// 0 allowed, 1 denied, 2 the gateway could not decide (PRODUCT.md exit codes).
        public var exitCode: Int32 { decision.reason.exitStatus.rawValue }
    }

    /// A decision reached but not yet recorded: what ``commit(_:)`` checks against the state, appends to the audit
    /// log and applies. Only this pipeline's `prepare` functions make one, so nothing can be recorded, or granted,
    /// that did not pass through them.
    public struct Pending: Sendable {
        fileprivate enum Grant: Sendable {
            case spawn(VerifiedRequest, PolicyMatch, leaseID: String?, envelope: [UInt8], at: Int64, source: RequestSource)
            case control(VerifiedControl)
        }
        fileprivate let decision: Decision
        fileprivate var nonce: String? = nil
        fileprivate var cwd: String? = nil
        fileprivate var argv: [String]? = nil
        fileprivate var effects: [StateEffect] = []
        fileprivate let mode: Mode
        fileprivate var grant: Grant? = nil
        /// Final without a record: the gateway could not decide, or a listing (which only reads).
        fileprivate var settled = false
        /// The stages run so far, when tracing (nil otherwise, so the normal path builds no strings).
        fileprivate var trace: [TraceStep]? = nil
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
    /// `policyFile` and `resolver` let `policy explain` decide under another policy file, or with paths as text.
    public static func open(home: Home, clock: any GateClock = SystemClock(), policyFile: String? = nil,
                            resolver: PathResolver = .filesystem) throws(GatewayFailure) -> DecisionPipeline {
        // Deciding needs only this broker's name, never its private key.
        let name: String
        do { name = try home.loadName() } catch { throw GatewayFailure(error.message) }
        let policy = try PolicyLoader.loadForDecisions(policyFile ?? home.policyFile)
        let state = try StateStore.open(home.stateDB)
        return DecisionPipeline(audience: name, keys: home.keyStore, policy: policy, state: state,
                                audit: AuditLog(path: home.auditLog), clock: clock, resolver: resolver)
    }

    /// Decides one request. `brokerSpawn` is the hook's second opinion: the spawn fields the broker is about to
    /// use, which must equal the signed ones.
    /// With `trace`, the outcome carries every stage it ran: `policy explain` is a traced dry run, so it
    /// cannot disagree with `check --dry-run`.
    /// `source`: where the request came from (`serve` passes the connection's address; the hook, `check` and
    /// `exec` are local unless `check --source` says otherwise).
    public func decide(_ envelope: [UInt8], mode: Mode = .commit, brokerSpawn: [String: JSONValue]? = nil, trace: Bool = false,
                       source: RequestSource = .local) -> Outcome {
        commit([prepare(envelope, mode: mode, brokerSpawn: brokerSpawn, trace: trace, source: source)])[0]
    }

    /// The stages after authentication that read no state: policy, then (with `machine`) the binary and the
    /// sandbox layers. Shared by decisions, launch-ticket redemption and `policy explain` of a request given by
    /// flags, so none of them can skip one.
    static func authorize(_ q: PolicyRequest, engine: PolicyEngine, machine: Bool = true,
                          missingLayers: (SandboxProfile) -> [String], trace: inout TraceRecorder) -> Result<PolicyMatch, Denial> {
        let match: PolicyMatch
        switch engine.evaluate(q, trace: &trace) {
        case .deny(let d): return .failure(d)
        case .allow(let m): match = m
        }
        // A grant narrows what the broker may: the request as the policy shaped it must be inside every block.
        if let limits = q.grant {
            if let d = GrantLimit.outside(limits, to: nil, cli: q.cli, cwd: match.cwd, args: q.args) {
                trace.note(.grant, "grant '\(limits.last?.name ?? "")'", "deny", d.detail)
                return .failure(Denial(d.reason, d.detail, rule: match.rule.name))
            }
            trace.note(.grant, "grant '\(limits.last?.name ?? "")'", "ok", "cli, cwd and arguments are inside all \(limits.count) of its block\(limits.count == 1 ? "" : "s")")
        }
        guard machine else {
            trace.note(.binary, "binary and sandbox", "skipped", "paths are explained as text, not as on this machine")
            return .success(match)
        }
        // The binary is checked now, not when the policy was loaded: it may have been replaced since.
        if let problem = BinaryCheck.problem(match.cli) {
            trace.note(.binary, "binary of '\(match.cli.name)'", "deny", problem)
            return .failure(Denial(.cliNotAllowed, "cli '\(match.cli.name)' cannot be started safely: \(problem)", rule: match.rule.name))
        }
        trace.note(.binary, "binary of '\(match.cli.name)'", "ok", "\(match.cli.path) is a regular executable only root or its owner can change")
        // A profile this machine cannot enforce is refused, never quietly weakened.
        let profile = match.rule.sandbox
        let missing = missingLayers(profile)
        if !missing.isEmpty {
            trace.note(.sandbox, "sandbox '\(profile.rawValue)'", "deny", "this machine lacks \(missing.joined(separator: " and "))")
            return .failure(Denial(.internalError, "rule '\(match.rule.name)' asks for sandbox '\(profile.rawValue)', which needs \(missing.joined(separator: " and ")); run 'spawngate doctor'", rule: match.rule.name))
        }
        trace.note(.sandbox, "sandbox '\(profile.rawValue)'", "ok", "every layer it needs works on this machine")
        return .success(match)
    }

    /// `policy explain` of a request described by flags (no envelope: no signature, window or nonce): the
    /// stages that need none, with their steps.
    public static func explain(_ q: PolicyRequest, engine: PolicyEngine, machine: Bool) -> (Result<PolicyMatch, Denial>, DecisionTrace) {
        var trace = TraceRecorder(true)
        let result = authorize(q, engine: engine, machine: machine, missingLayers: { SandboxSupport.missing(for: $0) }, trace: &trace)
        if case .success(let m) = result, let approval = m.rule.approval {
            trace.note(.approval, "approve", "would hold", "rule '\(m.rule.name)' holds it for \(approval.by.map { $0.joined(separator: " or ") } ?? "its operator") to approve within \(approval.within)s")
        }
        return (result, DecisionTrace(trace.steps ?? []))
    }

    /// Everything before the state store: signature, audience and window, the broker's fields, policy, binary and
    /// sandbox checks. Pure but for the key store, path canonicalization and a stat of the binary, so a server runs
    /// it on many threads at once and commits the results together.
    public func prepare(_ envelope: [UInt8], mode: Mode = .commit, brokerSpawn: [String: JSONValue]? = nil, trace tracing: Bool = false,
                        source: RequestSource = .local) -> Pending {
        var trace = TraceRecorder(tracing)
        func traced(_ p: Pending) -> Pending { var p = p; p.trace = trace.steps; return p }
        let verification: Verification
        do { verification = try verifier.verify(envelope) } catch {
            trace.note(.gateway, "key store", "cannot decide", error.message)
            return traced(cannotDecide(.internalError, error.message, mode: mode))
        }
        let request: VerifiedRequest
        switch verification {
        case .denied(let d, _, _, _):
            let stage = d.reason.stage ?? .parse
            trace.note(stage, stage.rawValue, "deny", "\(d.reason.rawValue): \(d.detail)")
            return traced(Pending(decision: Decision(verification, policy: policy.hash), mode: mode))
        case .verified(let v):
            request = v
        }
        if trace.on {
            let r = request.request, w = policy.window
            trace.note(.signature, "signature", "ok", "signed by \(request.broker) (\(request.fingerprint)), request \(request.requestID)")
            trace.note(.audience, "audience", "ok", "addressed to \(r.to), this broker")
            trace.note(.window, "window", "ok", "iat \(r.iat), exp \(r.exp): lives \(r.exp - r.iat)s (max_ttl \(w.maxTTL)s), valid now \(clock.now()) (clock_skew \(w.clockSkew)s)")
            if let g = request.grant {
                trace.note(.grant, "grant chain", "ok", "\(g.blocks.count) block\(g.blocks.count == 1 ? "" : "s") (\(g.id)): the first signed by \(request.broker)'s key, each next by its predecessor's, the proof by the last; valid now and for this target")
            }
        }
        let nonce = Base64.urlEncode(request.request.nonce)
        let grantID = request.grant?.id
        func deny(_ d: Denial) -> Pending {
            var decision = Decision(reason: d.reason, detail: d.detail, requestID: request.requestID, broker: request.broker,
                                    fingerprint: request.fingerprint.description, rule: d.rule, policy: policy.hash)
            decision.grant = grantID
            return traced(Pending(decision: decision, nonce: nonce, cwd: request.request.cwd, mode: mode))
        }
        if let brokerSpawn {
            if let difference = HookInput.difference(brokerSpawn, signed: request.request) {
                trace.note(.request, "broker's spawn fields", "deny", difference)
                return deny(Denial(.malformed, difference))
            }
            trace.note(.request, "broker's spawn fields", "ok", "equal to the signed ones")
        }

        let match: PolicyMatch
        switch Self.authorize(PolicyRequest(request, source: source), engine: engine, missingLayers: missingLayers, trace: &trace) {
        case .failure(let d): return deny(d)
        case .success(let m): match = m
        }

        let rule = match.rule
        let now = clock.now()
        let window = policy.window
        var effects: [StateEffect] = [.consumeNonce(fingerprint: request.fingerprint.description, nonce: nonce,
                                                    keepUntil: request.request.exp + window.clockSkew)]
        if let rate = rule.rate {
            effects.append(.takeToken(broker: request.broker, rule: rule.name, intervalMilliseconds: rate.intervalMilliseconds, burst: rule.burst))
        }
        effects += Self.grantUses(request)
        // A rule that says approve: holds the request here: its nonce, rate token and grant uses are spent now,
        // and it is kept (with the envelope) until a person settles it or it expires. Nothing starts yet.
        if let approval = rule.approval {
            let id = HeldRequest.id(of: request.requestID)
            let expires = now + approval.within
            effects.append(.holdApproval(HeldRequest(
                id: id, requestID: request.requestID, broker: request.broker, rule: rule.name, name: request.request.name,
                cli: match.cli.name, cwd: match.cwd, argv: match.argv, grantID: grantID, envelope: envelope,
                source: source.description, decidedAt: now, expiresAt: expires)))
            let who = approval.by.map { $0.isEmpty ? "nobody (approve.by is empty)" : $0.joined(separator: " or ") } ?? "its operator"
            var held = Decision(reason: .approvalPending,
                                detail: "rule '\(rule.name)' holds this request for approval as \(id) until \(ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval(expires)))) (\(approval.within)s): \(who) can approve it with 'spawngate approve \(id)' on \(verifier.audience); once started it is in the agent list",
                                requestID: request.requestID, broker: request.broker, fingerprint: request.fingerprint.description,
                                rule: rule.name, policy: policy.hash,
                                spawn: .init(argv: match.argv, cwd: match.cwd, env: match.env, sandbox: rule.sandbox.rawValue))
            held.grant = grantID
            held.approval = id
            trace.note(.approval, "approve", "held", "rule '\(rule.name)' says approve: \(who) within \(approval.within)s")
            return traced(Pending(decision: held, nonce: nonce, cwd: match.cwd, argv: match.argv, effects: effects, mode: mode))
        }
        let leaseID = Self.takeLease(rule, request, now: now, into: &effects)
        var allow = Decision(reason: .allowed, detail: "allowed by rule '\(rule.name)'", requestID: request.requestID,
                             broker: request.broker, fingerprint: request.fingerprint.description, rule: rule.name,
                             policy: policy.hash,
                             spawn: .init(argv: match.argv, cwd: match.cwd, env: match.env, sandbox: rule.sandbox.rawValue))
        allow.grant = grantID
        return traced(Pending(decision: allow, nonce: nonce, cwd: match.cwd, argv: match.argv, effects: effects, mode: mode,
                              grant: .spawn(request, match, leaseID: leaseID, envelope: envelope, at: now, source: source)))
    }

    /// Turns a launch ticket, once its launcher has shown it, back into the authorization it was issued for: the
    /// relay launcher a broker runs (`spawngate-launch`). The allow is already recorded, its nonce consumed and its lease taken;
    /// what is checked again is everything that could have changed since: the signature under the keys enrolled
    /// now (a revocation counts), audience and window as of the decision, the policy now (a reload that no
    /// longer allows it wins), the binary and the sandbox layers. The same request id and rule are required.
    public func redeem(_ ticket: LaunchTicket) -> Result<AuthorizedSpawn, GatewayFailure> {
        let asOf = RequestVerifier(audience: verifier.audience, keys: verifier.keys, window: policy.window,
                                   clock: FixedClock(ticket.decidedAt))
        let verification: Verification
        do { verification = try asOf.verify(ticket.envelope) } catch { return .failure(error) }
        guard case .verified(let request) = verification, request.requestID == ticket.requestID else {
            return .failure(GatewayFailure("the ticket's request no longer verifies (\(Decision(verification, policy: policy.hash).detail))"))
        }
        // The source the decision saw, so sources: on rules and keys are checked alike at redemption.
        guard let recorded = ticket.source, let source = RequestSource(recorded: recorded) else {
            return .failure(GatewayFailure("the ticket does not say where its request came from (issued before this version?); it was not started, send the request again"))
        }
        var noTrace = TraceRecorder(false)
        let match: PolicyMatch
        switch Self.authorize(PolicyRequest(request, source: source), engine: engine, missingLayers: missingLayers, trace: &noTrace) {
        case .failure(let d):
            return .failure(GatewayFailure("this request is no longer allowed (\(d.reason.rawValue): \(d.detail)); it was not started"))
        case .success(let m) where m.rule.name != ticket.rule:
            return .failure(GatewayFailure("the policy in force no longer allows this request by rule '\(ticket.rule)'; it was not started"))
        case .success(let m): match = m
        }
        let allow = Decision(reason: .allowed, detail: "allowed by rule '\(match.rule.name)'", requestID: request.requestID,
                             broker: request.broker, fingerprint: request.fingerprint.description, rule: match.rule.name,
                             policy: policy.hash,
                             spawn: .init(argv: match.argv, cwd: match.cwd, env: match.env, sandbox: match.rule.sandbox.rawValue))
        return .success(AuthorizedSpawn(request: request, match: match, decision: allow, leaseID: ticket.leaseID,
                                         envelope: ticket.envelope, decidedAt: ticket.decidedAt, source: source))
    }

    // MARK: Held requests

    /// What a person does with a held request.
    public enum Settlement: String, Sendable { case approve, deny }

    /// A settlement that could not be tried: nothing changed and nothing was recorded (the id is unknown, or
    /// `user` may not approve under the rule).
    public struct SettleRefusal: Error, Sendable, Equatable {
        public let message: String
    }

    /// Settles the held request `id` for `user` (the kernel names the caller on the gateway's socket).
    ///
    /// Approving checks the request again as a launch ticket's redemption does: the signature under the keys
    /// enrolled now, its window and grant as of the hold, the policy in force now (by the same rule), the binary and
    /// the sandbox layers. Then, in one transaction with its audit line, the hold is marked approved and the lease
    /// taken, and the outcome carries the authorization to start. A request that no longer passes is recorded as
    /// expired and never starts. Denying records the denial. Only a pending request whose time is not up is settled.
    public func settle(_ id: String, _ settlement: Settlement, by user: String) -> Result<Outcome, SettleRefusal> {
        let found: HeldRequest?
        do { found = try state.heldRequest(id) } catch { return .success(cannotDecide(.internalError, error.message)) }
        guard let held = found else {
            return .failure(SettleRefusal(message: "no request is held here as \(id); 'spawngate approvals' lists the requests waiting"))
        }
        if let rule = policy.rules.first(where: { $0.name == held.rule && $0.effect == .allow }), let approval = rule.approval, !approval.admits(user) {
            return .failure(SettleRefusal(message: "\(user) may not settle requests held by rule '\(rule.name)': its approve.by names \(GrantScope.list(approval.by ?? []))"))
        }
        let fingerprint = try? Envelope.parse(held.envelope).get().kid.description
        func record(_ reason: ReasonCode, _ detail: String, to: HeldRequest.State) -> Result<Outcome, SettleRefusal> {
            var d = Decision(reason: reason, detail: detail, requestID: held.requestID, broker: held.broker, fingerprint: fingerprint,
                             rule: held.rule, policy: policy.hash)
            d.approval = held.id; d.grant = held.grantID
            return .success(commit([Pending(decision: d, cwd: held.cwd, effects: [.settleApproval(id: held.id, to: to, by: to == .expired ? nil : user)],
                                            mode: .commit)])[0])
        }
        guard held.state == .pending else {
            return .failure(SettleRefusal(message: "request \(id) is no longer waiting: it was \(held.state.rawValue)\(held.decidedBy.map { " by \($0)" } ?? "")"))
        }
        // Its time is up: recorded as expired now (the sweep would), whatever was asked.
        if held.state == .pending && clock.now() >= held.expiresAt {
            return record(.approvalExpired, "request \(held.id) waited its time (until \(held.expiresAt)) and expired; it will not start, and the requester can ask again", to: .expired)
        }
        if settlement == .deny { return record(.approvalDenied, "request \(held.id) was denied by \(user)", to: .denied) }

        let asOf = RequestVerifier(audience: verifier.audience, keys: verifier.keys, window: policy.window, clock: FixedClock(held.decidedAt))
        let verification: Verification
        do { verification = try asOf.verify(held.envelope) } catch { return .success(cannotDecide(.internalError, error.message)) }
        guard case .verified(let request) = verification, request.requestID == held.requestID else {
            return record(.approvalExpired, "request \(held.id) no longer verifies (\(Decision(verification).detail)); it will not start", to: .expired)
        }
        guard let source = RequestSource(recorded: held.source) else {
            return record(.approvalExpired, "request \(held.id) does not say where it came from; it will not start", to: .expired)
        }
        var noTrace = TraceRecorder(false)
        let match: PolicyMatch
        switch Self.authorize(PolicyRequest(request, source: source), engine: engine, missingLayers: missingLayers, trace: &noTrace) {
        case .failure(let d):
            return record(.approvalExpired, "request \(held.id) is no longer allowed by the policy in force (\(d.reason.rawValue): \(d.detail)); it will not start", to: .expired)
        case .success(let m) where m.rule.name != held.rule:
            return record(.approvalExpired, "the policy in force no longer allows request \(held.id) by rule '\(held.rule)'; it will not start", to: .expired)
        case .success(let m): match = m
        }
        let rule = match.rule, now = clock.now()
        var effects: [StateEffect] = [.settleApproval(id: held.id, to: .approved, by: user)]
        let leaseID = Self.takeLease(rule, request, now: now, into: &effects)
        var allow = Decision(reason: .allowed, detail: "allowed by rule '\(rule.name)', approved by \(user)", requestID: request.requestID,
                             broker: request.broker, fingerprint: request.fingerprint.description, rule: rule.name, policy: policy.hash,
                             spawn: .init(argv: match.argv, cwd: match.cwd, env: match.env, sandbox: rule.sandbox.rawValue))
        allow.grant = request.grant?.id
        allow.approval = held.id
        // decidedAt stays the hold's: a relay worker's launch ticket re-checks the request as of its decision.
        return .success(commit([Pending(decision: allow, cwd: match.cwd, argv: match.argv, effects: effects, mode: .commit,
                                        grant: .spawn(request, match, leaseID: leaseID, envelope: held.envelope, at: held.decidedAt, source: source))])[0])
    }

    /// Records every held request whose time is up as expired (one audit line each). `serve` runs it with its reaping.
    @discardableResult
    public func expireHeld() -> [Outcome] {
        let overdue: [HeldRequest]
        do { overdue = try state.overdueHeldRequests(now: clock.now()) } catch { return [] }
        return commit(overdue.map { held in
            var d = Decision(reason: .approvalExpired, detail: "request \(held.id) was not approved within its time (until \(held.expiresAt)); it will not start",
                             requestID: held.requestID, broker: held.broker, fingerprint: try? Envelope.parse(held.envelope).get().kid.description,
                             rule: held.rule, policy: policy.hash)
            d.approval = held.id; d.grant = held.grantID
            return Pending(decision: d, cwd: held.cwd, effects: [.settleApproval(id: held.id, to: .expired, by: nil)], mode: .commit)
        })
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
    public func decideControl(_ envelope: [UInt8], mode: Mode = .commit, source: RequestSource = .local) -> ControlOutcome {
        let outcome = commit([prepareControl(envelope, mode: mode, source: source)])[0]
        return ControlOutcome(decision: outcome.decision, control: outcome.control)
    }

    /// ``decideControl(_:mode:)`` before the state store.
    /// `expecting`: the operation the endpoint serves. A signed request for another one is refused as malformed
    /// before anything is recorded or done (a `logs` request posted to the release endpoint stops nothing).
    public func prepareControl(_ envelope: [UInt8], expecting: ControlRequest.Operation? = nil, mode: Mode = .commit,
                               source: RequestSource = .local) -> Pending {
        let verification: ControlVerification
        do { verification = try verifier.verifyControl(envelope) } catch { return cannotDecide(.internalError, error.message, mode: mode) }
        switch verification {
        case .denied(let d, let rid, let broker, let fp):
            // Unauthenticated junk aimed at the release endpoint is recorded like any refused spawn.
            return Pending(decision: Decision(reason: d.reason, detail: d.detail, requestID: rid, broker: broker,
                                              fingerprint: fp?.description, rule: nil, policy: policy.hash), mode: mode)
        case .verified(let c):
            if let bound = c.keySources, !bound.admits(source) {
                return Pending(decision: Decision(reason: .sourceNotAllowed, detail: "\(c.broker)'s key is accepted only from \(bound.listed), and this request came from \(source)",
                                                  requestID: c.requestID, broker: c.broker, fingerprint: c.fingerprint.description,
                                                  rule: nil, policy: policy.hash), mode: mode)
            }
            if let expecting, c.request.op != expecting {
                return Pending(decision: Decision(reason: .malformed, detail: "this endpoint takes '\(expecting.rawValue)' requests; the signed request is for '\(c.request.op.rawValue)'",
                                                  requestID: c.requestID, broker: c.broker, fingerprint: c.fingerprint.description,
                                                  rule: nil, policy: policy.hash), mode: mode)
            }
            let acts = c.request.op == .release
            let detail = switch c.request.op {
            case .release: "release of agent '\(c.request.name ?? "")' by \(c.broker)"
            case .logs: "output of agent '\(c.request.name ?? "")' for \(c.broker)"
            case .agents: "agent listing for \(c.broker)"
            }
            let allow = Decision(reason: .allowed, detail: detail, requestID: c.requestID, broker: c.broker,
                                 fingerprint: c.fingerprint.description, rule: nil, policy: policy.hash)
            guard acts else { return Pending(decision: allow, mode: mode, grant: .control(c), settled: true) }
            let nonce = Base64.urlEncode(c.request.nonce)
            return Pending(decision: allow, nonce: nonce,
                           effects: [.consumeNonce(fingerprint: c.fingerprint.description, nonce: nonce,
                                                   keepUntil: c.request.exp + policy.window.clockSkew)],
                           mode: mode, grant: .control(c))
        }
    }

    /// Records a refusal made before there was an envelope to verify (the hook's input had the wrong shape).
    public func refuse(_ denial: Denial, mode: Mode = .commit) -> Outcome {
        commit([prepareRefusal(denial, mode: mode)])[0]
    }

    public func prepareRefusal(_ denial: Denial, mode: Mode = .commit) -> Pending {
        Pending(decision: Decision(reason: denial.reason, detail: denial.detail, requestID: nil, broker: nil, fingerprint: nil,
                                   rule: denial.rule, policy: policy.hash), mode: mode)
    }

    /// Failures inside the transaction that decide which reason the requester sees.
    private struct AuditFailure: Error { let failure: GatewayFailure }

    /// Records decisions: checks their state effects in order (each sees the ones before it), appends their audit
    /// lines with one write and one fsync, applies the effects and commits, all in one transaction under the state
    /// store's write lock. The lines are durable before the effects commit, and the effects commit before anyone
    /// acts on an allow. A server commits many concurrent decisions at once (group commit); the CLI commits one.
    public func commit(_ batch: [Pending]) -> [Outcome] {
        var results = [Outcome?](repeating: nil, count: batch.count)
        var toRecord: [Int] = []
        for (i, p) in batch.enumerated() {
            if p.settled {
                results[i] = outcome(p, p.decision)
            } else if p.mode == .dryRun {
                results[i] = dryRun(p)
            } else {
                toRecord.append(i)
            }
        }
        var from = 0
        while from < toRecord.count {
            let group = Array(toRecord[from..<min(from + AuditLog.maxLinesPerAppend, toRecord.count)])
            for (i, o) in zip(group, record(group.map { batch[$0] })) { results[i] = o }
            from += group.count
        }
        return zip(batch, results).map { p, o in
            var o = o!
            if let steps = p.trace { o.trace = DecisionTrace(steps + stateSteps(p, o.decision)) }
            return o
        }
    }

    /// The concurrency slot a rule with `max_concurrent` takes for this request (its id is the lease's), added to
    /// `effects`; nil for a rule without the limit. A decision and an approval take it the same way.
    static func takeLease(_ rule: Rule, _ request: VerifiedRequest, now: Int64, into effects: inout [StateEffect]) -> String? {
        guard let max = rule.maxConcurrent else { return nil }
        effects.append(.takeLease(LeaseRequest(requestID: request.requestID, broker: request.broker, rule: rule.name,
                                               name: request.request.name, max: max,
                                               expiresAt: now + (rule.maxRuntime ?? unboundLeaseSeconds))))
        return request.requestID
    }

    /// One use of each block of the request's grant that has a max, counted here until the block expires.
    static func grantUses(_ request: VerifiedRequest) -> [StateEffect] {
        guard let g = request.grant else { return [] }
        return g.blocks.compactMap { b in
            b.scope.max.map { .useGrant(issuer: request.fingerprint.description, blockID: b.id, name: b.name, max: $0, keepUntil: b.exp + 3600) }
        }
    }

    /// The trace of the stages after `prepare`: replay, rate and concurrency (when the request got that far),
    /// then the audit log. Read off the effects and the final decision, so tracing costs the state store nothing.
    private func stateSteps(_ p: Pending, _ final: Decision) -> [TraceStep] {
        guard !p.settled else { return [] }
        // internal_error that prepare did not give (a missing sandbox layer) came from the state store.
        if final.reason == .internalError && p.decision.reason != .internalError {
            return [TraceStep(.gateway, "state store", "cannot decide", final.detail)]
        }
        var steps: [TraceStep] = []
        if final.reason == .grantExceeded && p.decision.reason != .grantExceeded {
            steps.append(TraceStep(.grant, "grant uses", "deny", "\(final.reason.rawValue): \(final.detail)"))
        }
        if p.decision.allowed || p.decision.pending {
            let rule = p.decision.rule ?? "?"
            for stage in [TraceStage.replay, .rate, .concurrency] {
                if final.reason.stage == stage {
                    steps.append(TraceStep(stage, stage.rawValue, "deny", "\(final.reason.rawValue): \(final.detail)"))
                    return steps
                }
                let effect = p.effects.first {
                    switch ($0, stage) {
                    case (.consumeNonce, .replay), (.takeToken, .rate), (.takeLease, .concurrency): true
                    default: false
                    }
                }
                switch effect {
                case .consumeNonce(_, let nonce, _)?:
                    steps.append(TraceStep(stage, "replay", "ok", "nonce \(nonce) has not been accepted before"))
                case .takeToken(_, _, let interval, let burst)?:
                    steps.append(TraceStep(stage, "rate", "ok", "rule '\(rule)' has a token free (one per \(StateStore.seconds(interval)), burst \(burst))"))
                case .takeLease(let lease)?:
                    steps.append(TraceStep(stage, "concurrency", "ok", "fewer than \(lease.max) live agents of \(lease.broker) under rule '\(rule)'"))
                case nil where stage == .concurrency && p.decision.pending:
                    steps.append(TraceStep(stage, "concurrency", "later", "a held request takes its slot when it is approved"))
                case .useGrant?, .holdApproval?, .settleApproval?:
                    break
                case nil:
                    steps.append(TraceStep(stage, stage.rawValue, "none", stage == .rate ? "rule '\(rule)' sets no rate" : "rule '\(rule)' sets no max_concurrent"))
                }
            }
        }
        if p.decision.pending && final.pending, let id = p.decision.approval {
            steps.append(TraceStep(.approval, "approval", p.mode == .dryRun ? "would hold" : "held", p.mode == .dryRun
                                   ? "a real request would wait as \(id) for 'spawngate approve \(id)'"
                                   : "waits as \(id) for 'spawngate approve \(id)' (or deny, or expiry); nothing started"))
        }
        switch (p.mode, final.reason) {
        case (.dryRun, _):
            steps.append(TraceStep(.audit, "audit", "skipped", "a dry run consumes no nonce, rate token or lease, and writes nothing"))
        case (.commit, .auditUnavailable):
            steps.append(TraceStep(.audit, "audit", "deny", "audit_unavailable: \(final.detail)"))
        case (.commit, _):
            steps.append(TraceStep(.audit, "audit", "recorded", "appended to the audit log before anything acts on it"))
        }
        return steps
    }

    private func outcome(_ p: Pending, _ final: Decision) -> Outcome {
        guard final.allowed else { return Outcome(decision: final, authorized: nil, control: nil) }
        switch p.grant {
        case .spawn(let request, let match, let leaseID, let envelope, let at, let source)? where p.mode == .commit && !p.settled:
            return Outcome(decision: final, authorized: AuthorizedSpawn(request: request, match: match, decision: final, leaseID: leaseID,
                                                                        envelope: envelope, decidedAt: at, source: source),
                           control: nil)
        case .control(let c)?:
            return Outcome(decision: final, authorized: nil, control: c)
        default:
            return Outcome(decision: final, authorized: nil, control: nil)
        }
    }

    private func final(_ decision: Decision, _ denial: Denial?) -> Decision {
        guard let denial else { return decision }
        var d = Decision(reason: denial.reason, detail: denial.detail, requestID: decision.requestID, broker: decision.broker,
                         fingerprint: decision.fingerprint, rule: denial.rule ?? decision.rule, policy: decision.policy)
        d.grant = decision.grant
        d.approval = decision.approval
        return d
    }

    /// Nothing is consumed and nothing is written: the decision as it would be now.
    private func dryRun(_ p: Pending) -> Outcome {
        let nowMs = clock.nowMilliseconds()
        do {
            let denial = !p.effects.isEmpty ? try state.read { db in
                try StateStore.admit(p.effects, nowMilliseconds: nowMs, db).denial
            } : nil
            return Outcome(decision: final(p.decision, denial), authorized: nil, control: nil)
        } catch {
            return cannotDecide(.internalError, StateStore.failure(error).message, like: p.decision)
        }
    }

    private func record(_ group: [Pending]) -> [Outcome] {
        let nowMs = clock.nowMilliseconds()
        do {
            let finals: [Decision] = try state.write { db in
                var head = try StateStore.auditHead(db)
                let reconciliation: AuditLog.Reconciliation
                do throws(GatewayFailure) { reconciliation = try audit.reconcile(head) } catch { throw AuditFailure(failure: error) }
                if case .rolledForward(let lines, let newHead) = reconciliation {
                    for line in lines { try honour(line, db) }
                    head = newHead
                    try StateStore.setAuditHead(head, db)
                }
                var chained: [(line: [UInt8], head: AuditLog.Head)] = [], finals: [Decision] = []
                var next = head
                for p in group {
                    // Only a decision that acts carries effects (an allow, a hold, settling a held request).
                    let admission = p.effects.isEmpty ? nil : try StateStore.admit(p.effects, nowMilliseconds: nowMs, db)
                    let decided = final(p.decision, admission?.denial)
                    let entry = AuditLog.Entry(time: nowMs / 1000, decision: decided, nonce: p.nonce,
                                               argv: decided.allowed || decided.pending ? p.argv : nil, cwd: p.cwd)
                    guard let link = AuditLog.chain(entry, after: next) else {
                        // Unrecorded, so not allowed; its effects are not applied and the rest of the group goes on.
                        finals.append(cannotDecide(.auditUnavailable, "the decision could not be recorded, so nothing is allowed: its audit line would be over \(AuditLog.maxLineLength) bytes", like: decided).decision)
                        continue
                    }
                    // Applied now so the next decision in the group sees them; committed only after the lines are durable.
                    if case .admitted(let apply)? = admission { try apply() }
                    chained.append(link)
                    next = link.head
                    finals.append(decided)
                }
                if !chained.isEmpty {
                    do throws(GatewayFailure) { try audit.append(chained, after: head) } catch { throw AuditFailure(failure: error) }
                    try StateStore.setAuditHead(next, db)
                }
                return finals
            }
            return zip(group, finals).map { outcome($0, $1) }
        } catch let e as AuditFailure {
            return group.map { cannotDecide(.auditUnavailable, "the decision could not be recorded, so nothing is allowed: \(e.failure.message)", like: $0.decision) }
        } catch {
            let message = StateStore.failure(error).message
            return group.map { cannotDecide(.internalError, message, like: $0.decision) }
        }
    }

    /// A line that reached the log while its transaction did not commit (the process died in between). Its
    /// decision was never acted on, but an allow must still never be granted twice for the same nonce.
    private func honour(_ line: [UInt8], _ db: Database) throws {
        guard case .object(let m)? = try? StrictJSONReader.parse(line),
              m["decision"] == .string("allow") || m["decision"] == .string("pending"), case .string(let fp)? = m["fingerprint"],
              case .string(let nonce)? = m["nonce"], let time = m["time"]?.safeInteger else { return }
        let w = policy.window
        // exp ≤ iat + max_ttl and iat ≤ time + skew, so the request is dead after time + max_ttl + 2·skew.
        try StateStore.rememberNonce(fingerprint: fp, nonce: nonce, keepUntil: time + w.maxTTL + 2 * w.clockSkew, db)
    }

    private func cannotDecide(_ reason: ReasonCode, _ detail: String, like d: Decision? = nil) -> Outcome {
        Outcome(decision: Decision(reason: reason, detail: detail, requestID: d?.requestID, broker: d?.broker,
                                   fingerprint: d?.fingerprint, rule: nil, policy: policy.hash), authorized: nil)
    }

    private func cannotDecide(_ reason: ReasonCode, _ detail: String, mode: Mode) -> Pending {
        Pending(decision: cannotDecide(reason, detail).decision, mode: mode, settled: true)
    }
}
