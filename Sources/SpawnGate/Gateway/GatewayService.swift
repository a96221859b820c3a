import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The long-running gateway's core: the one decision pipeline (swapped whole on reload), the identity that signs
/// receipts, the spawner, and the agents this process started. Transports (HTTP, the Unix socket) only move bytes
/// in and out of it.
///
/// Requests are verified and matched on the cooperative pool (both cores), then committed together by a
/// ``GroupCommitter`` on its own queue: one transaction and one fsync serve every decision waiting, and no pool
/// thread waits for the disk. Starting an agent runs on a queue of its own for the same reason.
// @unchecked: `_pipeline` and `policyStamp` are swapped only under `lock`; the rest is immutable or Sendable.
public final class GatewayService: @unchecked Sendable {
    public let home: Home
    public let identity: Identity
    /// Starts, lists, releases and reaps agents: the same service `exec` uses.
    public let agentService: AgentService
    /// The relay launcher relay workers run (`spawngate-launch`), beside this executable.
    public var launcher = AgentService.defaultLauncher
    public let logger: Logger
    /// Where counts and latencies go (`serve`'s Prometheus registry; nothing, when none is given).
    public let metrics: any GatewayMetricsRecording
    public let limiter: PreAuthLimiter
    private let blocking = DispatchQueue(label: "spawngate.blocking", attributes: .concurrent)
    private let committer = GroupCommitter()
    private let lock = NSLock()
    private var _pipeline: DecisionPipeline
    /// The policy file as last loaded, good or bad, so a watcher reloads only on change.
    private(set) var policyStamp: FileStamp

    public init(home: Home, logger: Logger, metrics: any GatewayMetricsRecording = NoGatewayMetrics(),
                limiter: PreAuthLimiter = PreAuthLimiter()) throws(GatewayFailure) {
        self.home = home
        do { identity = try home.loadIdentity() } catch { throw GatewayFailure(error.message) }
        policyStamp = FileStamp(path: home.policyFile)
        _pipeline = try Self.openPipeline(home: home, identity: identity, state: nil, audit: nil)
        agentService = AgentService(spawner: LocalSpawner(home: home), state: _pipeline.state)
        self.logger = logger
        self.metrics = metrics
        self.limiter = limiter
    }

    private static func openPipeline(home: Home, identity: Identity, state: StateStore?, audit: AuditLog?) throws(GatewayFailure) -> DecisionPipeline {
        let policy = try PolicyLoader.loadForDecisions(home.policyFile)
        let store: StateStore
        if let state { store = state } else { store = try StateStore.open(home.stateDB) }
        return DecisionPipeline(audience: identity.name, keys: KeyStore(home: home, cached: true), policy: policy,
                                state: store, audit: audit ?? AuditLog(path: home.auditLog))
    }

    public var pipeline: DecisionPipeline { lock.lock(); defer { lock.unlock() }; return _pipeline }

    // MARK: Reload

    /// Loads the policy file again. A policy that fails to load or to pass its tests is refused and the last good
    /// one stays in force; the error is returned for the log.
    @discardableResult
    public func reload() -> Result<String, GatewayFailure> {
        let stamp = FileStamp(path: home.policyFile)
        let current = pipeline
        do {
            let next = try Self.openPipeline(home: home, identity: identity, state: current.state, audit: current.audit)
            lock.lock(); _pipeline = next; policyStamp = stamp; lock.unlock()
            metrics.reloads(ok: true)
            logger.notice("policy loaded", metadata: ["policy": .string(next.policy.hash), "file": .string(home.policyFile)])
            return .success(next.policy.hash)
        } catch {
            lock.lock(); policyStamp = stamp; lock.unlock()
            metrics.reloads(ok: false)
            logger.error("policy not reloaded, the last good one stays in force (\(current.policy.hash.prefix(12))): \(error.message)")
            return .failure(error)
        }
    }

    /// Whether the policy file changed since it was last read.
    public var policyChanged: Bool { FileStamp(path: home.policyFile) != policyStamp }

    // MARK: Requests

    /// The one entry for every transport: `op` with its input (the body, or the `Spawngate-Request` header's
    /// value; empty for none) from `source`. The transport has taken a token of the source's pre-authentication
    /// allowance first when `op.spendsAllowance` (``admit(_:)``). The hook needs the caller's uid and pid from the
    /// kernel, so the hook socket calls ``hookBlocking(body:uid:pid:)`` instead.
    public func answer(_ op: GatewayOperation, input: [UInt8], source: String) async -> GatewayAnswer {
        switch op {
        case .spawn: return await spawn(body: input, source: source)
        case .release: return await release(body: input, source: source)
        case .agents: return await agents(header: input.isEmpty ? nil : String(decoding: input, as: UTF8.self), source: source)
        case .logs: return await logs(header: input.isEmpty ? nil : String(decoding: input, as: UTF8.self), source: source)
        case .enroll: return await enroll(body: input, source: source)
        case .identity: return identityLine
        case .health: return health
        case .metrics: return metricsText
        case .hook, .settle: return .refused(.malformed, "POST \(op.path) is answered only on the gateway's Unix socket, where the kernel names the caller")
        }
    }

    /// Takes a token of `source`'s pre-authentication allowance: nil, or the 429 to answer without reading more.
    public func admit(_ source: String) -> GatewayAnswer? {
        limiter.admit(source).map { .refused(.tooMany, $0) }
    }

    /// `POST /v1/spawn`: a sealed envelope in, a receipt out (sealed to the requester when it is known).
    /// The caller has taken a token of `source`'s pre-authentication allowance (``admit(_:)``) before reading the body.
    public func spawn(body: [UInt8], source: String) async -> GatewayAnswer {
        let started = ContinuousClock.now
        let p = pipeline
        let outcome = await committer.commit(opened(body, by: p) { p.prepare($0, source: .of(connection: source)) }, through: p)
        // Starting forks, waits for the exec and records the agent (an fsync): off the cooperative pool.
        let answer = await offPool { [self] in start(outcome, source: source, pipeline: p) }
        metrics.observe(duration: ContinuousClock.now - started)
        return answer
    }

    /// `GET /v1/agents`: the requester's own running agents, in a receipt.
    public func agents(header: String?, source: String) async -> GatewayAnswer {
        guard let header, let envelope = Base64.urlDecode(header), envelope.count <= Envelope.maxSize else {
            return .refused(.malformed, "GET /v1/agents needs a signed control request, base64url, in the Spawngate-Request header ('spawngate agents --broker' sends one)")
        }
        let p = pipeline
        let outcome = await committer.commit(p.prepareControl(envelope, expecting: .agents, source: .of(connection: source)), through: p)
        guard let control = outcome.control else { return controlDenial(outcome.decision, source: source, pipeline: p) }
        limiter.refund(source)
        let agents = await offPool { [agentService] in (try? agentService.listed(broker: control.broker)) ?? [] }
        let now = SystemClock().now()
        let list = JSONWriter.encode(.array(agents.map { $0.json(now: now) }))
        metrics.count(outcome.decision.reason)
        return receipt(outcome.decision, started: nil, extra: [("agents", .raw(list))], sealTo: control.fingerprint, pipeline: p)
    }

    /// `GET /v1/logs`: the output of one of the requester's own agents (the running one, else the last that
    /// exited), bounded, without the target's file paths, in a receipt sealed to the requester.
    public func logs(header: String?, source: String) async -> GatewayAnswer {
        guard let header, let envelope = Base64.urlDecode(header), envelope.count <= Envelope.maxSize else {
            return .refused(.malformed, "GET /v1/logs needs a signed control request, base64url, in the Spawngate-Request header ('spawngate logs --broker' sends one)")
        }
        let p = pipeline
        let outcome = await committer.commit(p.prepareControl(envelope, expecting: .logs, source: .of(connection: source)), through: p)
        guard let control = outcome.control, let name = control.request.name else {
            return controlDenial(outcome.decision, source: source, pipeline: p)
        }
        limiter.refund(source)
        let found = await offPool { [agentService] in
            Self.fittingOutput(budget: source.hasPrefix("relay:") ? Self.workspaceLogsBudget : Self.logsBudget) { limit in
                try? agentService.output(name: name, broker: control.broker, lines: control.request.lines ?? 50,
                                         offset: control.request.offset, limit: limit)
            }
        }
        metrics.count(outcome.decision.reason)
        guard let found else {
            let d = outcome.decision
            return receipt(Decision(reason: d.reason, detail: "no agent named '\(name)' was started here by \(control.broker) in the last hour",
                                    requestID: d.requestID, broker: d.broker, fingerprint: d.fingerprint, rule: nil, policy: d.policy),
                           started: nil, extra: [("found", .bool(false))], sealTo: control.fingerprint, pipeline: p)
        }
        return receipt(outcome.decision, started: nil, extra: Self.logsMembers(found), sealTo: control.fingerprint, pipeline: p)
    }

    /// The most the members of a logs receipt may take, so that the receipt, signed and sealed, stays within
    /// ``Envelope/maxSize`` and ``SealedBody/maxSize`` (which requesters enforce): about 48 KiB of payload.
    static let logsBudget = 40 * 1024
    /// The same through the workspace, where the receipt is sealed once more and must fit ``RelayWire/maxText``.
    static let workspaceLogsBudget = 16 * 1024

    /// What a logs receipt adds to the decision: the output as shown, and `next`, the byte offset to go on from.
    static func logsMembers(_ found: AgentOutput) -> [(String, JSONWriter.Value)] {
        var extra: [(String, JSONWriter.Value)] = [("found", .bool(true)), ("stdout", .string(found.stdout)), ("stderr", .string(found.stderr)),
                                                   ("size", .int(found.size)), ("next", .int(found.next)),
                                                   ("state", .string(found.record.exitedAt == nil ? "running" : "exited"))]
        if let s = found.record.exitStatus { extra.append(("exit_status", .int(Int64(s)))) }
        if let n = found.note { extra.append(("note", .string(n))) }
        return extra
    }

    /// Reads output with fewer bytes until it fits ``logsBudget``: shown text can be up to 7 times the bytes it
    /// shows (`\u0001` for one control byte, written as `\\u0001` in JSON), and a receipt that does not fit would
    /// never verify. `next` tells the requester where to go on, so sending less loses nothing. At 512 bytes of
    /// each stream even the worst case fits either budget.
    static func fittingOutput(budget: Int = logsBudget, _ read: (Int) -> AgentOutput?) -> AgentOutput? {
        var limit = AgentOutput.maxBytes
        var found = read(limit)
        while let f = found, limit > 512, JSONWriter.object(logsMembers(f)).count > budget {
            limit /= 2
            found = read(limit)
        }
        return found
    }

    /// `POST /v1/enroll`: a broker's key with proof of possession, kept pending (trusted for nothing) until this
    /// gateway's operator accepts it with the fingerprint learned out of band. The caller has spent a token of its
    /// source's pre-authentication allowance, which it never gets back: requests are rate-limited per source, and
    /// the pending table is bounded in all and per source (``PendingKeys``).
    public func enroll(body: [UInt8], source: String) async -> GatewayAnswer {
        let now = SystemClock().now()
        switch EnrollmentRequest.open(body, audience: identity.name, now: now, window: pipeline.policy.window) {
        case .failure(let d):
            return .refused(.malformed, "\(d.reason.rawValue): \(d.detail)")
        case .success(let (name, key)):
            // The caller is not authenticated: it is told the reason code and a fixed sentence, never this
            // machine's own text (paths, SQLite), which goes to the log under a reference.
            // Reading and writing the table waits for the disk (and for other adds): off the cooperative pool.
            let added: Result<PendingKeys.Entry?, PendingKeys.Refusal> = await offPool { [home] in
                do throws(PendingKeys.Refusal) { return .success(try PendingKeys(home: home).add(name: name, key: key, source: source, now: now)) } catch {
                    return .failure(error)
                }
            }
            let dropped: PendingKeys.Entry?
            do { dropped = try added.get() } catch {
                switch error {
                case .sourceFull:
                    logger.notice("enrollment request refused: its source has its share pending", metadata: ["name": .string(name), "source": .string(source)])
                    return .refused(.tooMany, Self.enrollSourceFull)
                case .failed(let why):
                    let reference = "ref-" + Sodium.randomBytes(8).hex
                    logger.error("enrollment request not kept: \(why)", metadata: ["request_id": .string(reference), "name": .string(name),
                                                                                   "source": .string(source)])
                    return .refused(.internalError, "\(ReasonCode.internalError.rawValue): this gateway could not keep the enrollment request; its operator can find request \(reference) in the log")
                }
            }
            if let d = dropped {
                logger.notice("pending enrollment request dropped to make room (the oldest of \(PendingKeys.limit))",
                              metadata: ["name": .string(d.name), "fingerprint": .string(d.key.fingerprint.description), "source": .string(d.source)])
            }
            logger.notice("enrollment request pending", metadata: ["name": .string(name), "fingerprint": .string(key.fingerprint.description),
                                                                    "source": .string(source)])
            return .pending(JSONWriter.object([("status", .string("pending")), ("name", .string(name)),
                                               ("fingerprint", .string(key.fingerprint.description))]) + [10])
        }
    }

    /// The answer to a source that already has its share of enrollment requests pending.
    static let enrollSourceFull = "\(ReasonCode.rateLimited.rawValue): \(PendingKeys.perSource) enrollment requests from this address are already pending here; its operator must accept or reject them first (they expire after a day)"

    /// `GET /v1/identity`: this gateway's public key line, for `peer add --url` (which still requires the
    /// fingerprint learned out of band).
    public var identityLine: GatewayAnswer {
        .document(contentType: "text/plain", body: Array((identity.key.publicKey.line(comment: identity.name) + "\n").utf8))
    }

    /// `GET /healthz` on every listener: the broker's name and the policy in force.
    public var health: GatewayAnswer {
        .document(contentType: "application/json", body: JSONWriter.object([("status", .string("ok")), ("broker", .string(identity.name)),
                                                                             ("policy", .string(pipeline.policy.hash))]) + [10])
    }

    /// `GET /metrics` on every listener: the recorder's text (Prometheus, from `serve`).
    public var metricsText: GatewayAnswer {
        .document(contentType: metrics.contentType, body: metrics.text())
    }

    /// `POST /v1/release`: stops the requester's own agents of that name (TERM, then KILL after the grace).
    public func release(body: [UInt8], source: String, grace: Double = Supervisor.grace) async -> GatewayAnswer {
        let p = pipeline
        let outcome = await committer.commit(opened(body, by: p) { p.prepareControl($0, expecting: .release, source: .of(connection: source)) }, through: p)
        guard let control = outcome.control else { return controlDenial(outcome.decision, source: source, pipeline: p) }
        limiter.refund(source)
        // Stopping waits up to the grace period: off the cooperative pool.
        let released: [JSONValue] = await offPool { [agentService] in
            let done = (try? agentService.release(name: control.request.name ?? "", broker: control.broker, grace: grace)) ?? []
            return done.map { r in
                .object(["name": .string(r.record.name), "pid": .number(String(r.record.process.pid)),
                         "request_id": .string(r.record.requestID), "stopped": .bool(r.stopped)])
            }
        }
        metrics.count(outcome.decision.reason)
        let d = outcome.decision
        let detail = released.isEmpty ? "no running agent named '\(control.request.name ?? "")' was started here by \(control.broker)"
                                      : "released \(released.count) agent(s) named '\(control.request.name ?? "")'"
        let final = Decision(reason: d.reason, detail: detail, requestID: d.requestID, broker: d.broker,
                             fingerprint: d.fingerprint, rule: nil, policy: d.policy)
        return receipt(final, started: nil, extra: [("released", .raw(JSONWriter.encode(.array(released))))],
                       sealTo: control.fingerprint, pipeline: p)
    }

    /// The Unix socket's `POST /v1/hook`: the same input and decision as `spawngate hook pre-spawn`.
    /// `pid` is the caller's, from the kernel: a caller in another pid namespace is an agent (each runs in one of
    /// its own) or a container, and is refused whatever its uid.
    public func hook(body: [UInt8], uid: UInt32, pid: Int32) async -> (status: Int, decision: Decision) {
        switch screenHook(body: body, uid: uid, pid: pid) {
        case .answered(let status, let d): return (status, d)
        case .toCommit(let status, let pending, let p):
            let d = await committer.commit(pending, through: p).decision
            metrics.count(d.reason)
            return (status, d)
        }
    }

    /// The same, for a caller on a thread of its own (the hook socket's connection threads): the decision is
    /// prepared on this thread and committed with whatever else is waiting, and this returns once it is durable.
    public func hookBlocking(body: [UInt8], uid: UInt32, pid: Int32) -> (status: Int, decision: Decision) {
        hookBlocking(bodies: [body], uid: uid, pid: pid)[0]
    }

    /// The same for requests pipelined on one connection, answered in order: each is screened and prepared as
    /// above, and all of them wait for the same group commit.
    public func hookBlocking(bodies: [[UInt8]], uid: UInt32, pid: Int32) -> [(status: Int, decision: Decision)] {
        var answers: [(status: Int, decision: Decision)?] = Array(repeating: nil, count: bodies.count)
        var toCommit: [(index: Int, status: Int, pending: DecisionPipeline.Pending)] = []
        var through = pipeline
        // One connection, one caller: its pid namespace is looked up once for the batch, not once per request.
        let caller = screenCaller(uid: uid, pid: pid, pipeline: through)
        for (i, body) in bodies.enumerated() {
            switch screenHook(body: body, uid: uid, caller: caller) {
            case .answered(let status, let d): answers[i] = (status, d)
            case .toCommit(let status, let pending, let p): toCommit.append((i, status, pending)); through = p
            }
        }
        let outcomes = committer.commit(toCommit.map(\.pending), through: through)
        for (c, o) in zip(toCommit, outcomes) {
            metrics.count(o.decision.reason)
            answers[c.index] = (c.status, o.decision)
        }
        return answers.map { $0! }
    }

    private enum Screened {
        case answered(Int, Decision)
        case toCommit(Int, DecisionPipeline.Pending, DecisionPipeline)
    }

    /// Who may ask, then the decision prepared (verified and matched), ready to commit.
    private func screenHook(body: [UInt8], uid: UInt32, pid: Int32) -> Screened {
        screenHook(body: body, uid: uid, caller: screenCaller(uid: uid, pid: pid, pipeline: pipeline))
    }

    /// Why this caller may not ask (another pid namespace, a uid `hook_users` does not admit), or nil.
    private func screenCaller(uid: UInt32, pid: Int32, pipeline p: DecisionPipeline) -> String? {
        if !SandboxSupport.sharesPidNamespace(with: pid) {
            "the caller (pid \(pid)) runs in another pid namespace than the gateway: an agent's, or a container's; agents may not ask this gateway for decisions"
        } else if !p.policy.admitsHookUser(uid, gatewayUID: getuid()) {
            "uid \(uid) may not use this gateway's socket; the policy's hook_users names who may"
        } else { nil }
    }

    private func screenHook(body: [UInt8], uid: UInt32, caller refused: String?) -> Screened {
        let p = pipeline
        if let refused {
            // Each refusal is an fsynced audit line: a caller that is not admitted spends a pre-authentication
            // allowance (its own, keyed by uid so it cannot collide with an address), and once that is empty it
            // gets 429 with no decision work and nothing written, so it cannot fill the disk.
            if limiter.admit("uid:\(uid)") != nil {
                let detail = "too many requests from uid \(uid), which may not use this gateway's socket (\(refused)); nothing was decided or recorded"
                return .answered(429, Decision(reason: .unknownKey, detail: detail,
                                               requestID: nil, broker: nil, fingerprint: nil, policy: p.policy.hash))
            }
            return .toCommit(403, p.prepareRefusal(Denial(.unknownKey, refused)), p)
        }
        return .toCommit(200, p.prepareHook(body), p)
    }

    /// Records a refusal that no request stands behind (a frame the relay guard dropped): an audit line, durable
    /// before this returns, like every decision.
    @discardableResult
    public func refuse(_ denial: Denial) async -> Decision {
        let p = pipeline
        let d = await committer.commit(p.prepareRefusal(denial), through: p).decision
        metrics.count(d.reason)
        return d
    }

    /// The envelope in a sealed body, prepared by `prepare`; a body that does not open is a recorded refusal.
    private func opened(_ body: [UInt8], by p: DecisionPipeline,
                        _ prepare: ([UInt8]) -> DecisionPipeline.Pending) -> DecisionPipeline.Pending {
        switch SealedBody.open(body, with: identity.key) {
        case .failure(let d): p.prepareRefusal(d)
        case .success(let envelope): prepare(envelope)
        }
    }

    // MARK: Work that blocks

    /// Runs blocking work (fork and exec, waiting for an agent to stop, a state store read) on a thread of its own
    /// queue, so Swift's cooperative pool (two threads on two cores) keeps serving. Verification runs on the pool;
    /// commits run on the ``GroupCommitter``'s queue.
    private func offPool<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { done in blocking.async { done.resume(returning: work()) } }
    }

    private func start(_ outcome: DecisionPipeline.Outcome, source: String, pipeline p: DecisionPipeline) -> GatewayAnswer {
        metrics.count(outcome.decision.reason)
        if !Self.unauthenticated(outcome.decision.reason) { limiter.refund(source) }
        guard let authorized = outcome.authorized else {
            if outcome.decision.pending {
                logger.notice("held for approval", metadata: ["approval": .string(outcome.decision.approval ?? "?"), "broker": .string(outcome.decision.broker ?? "?"),
                                                              "rule": .string(outcome.decision.rule ?? "?")])
            }
            return receipt(outcome.decision, started: nil, sealTo: outcome.decision.fingerprint.flatMap(Fingerprint.init), pipeline: p)
        }
        let (decision, started, extra) = launch(authorized, decision: outcome.decision)
        return receipt(decision, started: started, extra: extra, sealTo: authorized.request.fingerprint, pipeline: p)
    }

    /// Starts an authorized agent (locally, or as a relay worker) and says how it went: the decision as the
    /// receipt gives it (allowed, or start_failed with why), what started, and the receipt's extra members.
    private func launch(_ authorized: AuthorizedSpawn, decision: Decision) -> (Decision, Receipt.Started?, [(String, JSONWriter.Value)]) {
        let outcome = (decision: decision, authorized: authorized)
        func notStarted(_ why: String) -> (Decision, Receipt.Started?, [(String, JSONWriter.Value)]) {
            logger.error("allowed, but not started: \(why)", metadata: ["request_id": .string(authorized.request.requestID)])
            return (outcome.decision.notStarted(why: why, exitStatus: nil, relayWorker: false), nil, [])
        }
        let relay = authorized.match.rule.spawner == .agentRelay
        // The launcher's ticket is redeemed against the pipeline in force when it arrives (a reload since counts).
        let result = relay ? agentService.startRelayWorker(authorized, environment: ProcessInfo.processInfo.environment, launcher: launcher,
                                                           redeem: { [self] in pipeline.redeem($0) })
                           : agentService.startChecked(authorized, window: Double(authorized.match.rule.startupCheck))
        metrics.liveAgents((try? agentService.running().count) ?? 0)
        let extra: [(String, JSONWriter.Value)] = relay ? [("spawner", .string("agent-relay"))] : []
        switch result {
        case .started(let started):
            logger.info("started", metadata: ["name": .string(authorized.request.request.name), "broker": .string(authorized.request.broker),
                                              "pid": .stringConvertible(started.pid), "sandbox": .string(authorized.match.rule.sandbox.rawValue),
                                              "spawner": .string(authorized.match.rule.spawner.rawValue)])
            return (outcome.decision, started, extra)
        case .failed(let why, let status, let tail):
            guard status != nil || relay else { return notStarted(why) }
            logger.notice("allowed, but the agent did not start", metadata: ["request_id": .string(authorized.request.requestID), "why": .string(why)])
            // The one record every start path gives (exec, serve, the mailbox): start_failed, the same exit status.
            let failed = outcome.decision.notStarted(why: why, exitStatus: status, relayWorker: relay)
            var more = extra
            if let status { more.append(("exit_status", .int(Int64(status)))) }
            if let tail { more.append(("output", .string(tail))) }
            return (failed, nil, more)
        }
    }

    // MARK: Held requests

    /// The Unix socket's `POST /v1/settle` (`spawngate approve` / `deny`): `{"id": …, "settle": "approve"|"deny"}`
    /// from a caller the kernel names. The caller must be admitted to the socket (`hook_users`) and, when the rule
    /// says `approve.by`, be one of those users. Approving starts the agent here, as any allowed request.
    /// Answers the decision (with `pid` and `layers` when it started) as JSON, and a status: 200 settled, 403 not
    /// admitted, 409 not settled (unknown id, not this user's to settle), 400 malformed.
    public func settleBlocking(body: [UInt8], uid: UInt32, pid: Int32) -> (status: Int, json: [UInt8]) {
        func error(_ status: Int, _ message: String) -> (Int, [UInt8]) { (status, JSONWriter.object([("error", .string(message))]) + [10]) }
        let p = pipeline
        guard SandboxSupport.sharesPidNamespace(with: pid) else {
            return error(403, "the caller (pid \(pid)) runs in another pid namespace than the gateway: an agent's, or a container's; agents may not approve their own requests")
        }
        guard p.policy.admitsHookUser(uid, gatewayUID: getuid()) else {
            return error(403, "uid \(uid) may not use this gateway's socket; the policy's hook_users names who may")
        }
        guard case .object(let o)? = try? StrictJSONReader.parse(body), Set(o.keys) == ["id", "settle"],
              case .string(let id)? = o["id"], HeldRequest.isID(id),
              case .string(let verb)? = o["settle"], let settlement = DecisionPipeline.Settlement(rawValue: verb) else {
            return error(400, "the body must be {\"id\": the 16 hex digits 'spawngate approvals' shows, \"settle\": \"approve\" or \"deny\"}")
        }
        return settle(id, settlement, by: Self.userName(uid), pipeline: p)
    }

    /// Settles a held request for `user` (``settleBlocking`` once the kernel has named the caller; the dashboard for
    /// its operator). Blocks while an approved agent starts.
    public func settle(_ id: String, _ settlement: DecisionPipeline.Settlement, by user: String,
                       pipeline given: DecisionPipeline? = nil) -> (status: Int, json: [UInt8]) {
        let p = given ?? pipeline
        let outcome: DecisionPipeline.Outcome
        switch p.settle(id, settlement, by: user) {
        case .failure(let refusal):
            logger.notice("held request not settled", metadata: ["approval": .string(id), "by": .string(user), "why": .string(refusal.message)])
            return (409, JSONWriter.object([("error", .string(refusal.message))]) + [10])
        case .success(let o): outcome = o
        }
        metrics.count(outcome.decision.reason)
        logger.notice("held request settled", metadata: ["approval": .string(id), "by": .string(user), "reason": .string(outcome.decision.reason.rawValue)])
        guard let authorized = outcome.authorized else { return (200, Array(outcome.decision.json.utf8) + [10]) }
        let (decision, started, extra) = launch(authorized, decision: outcome.decision)
        return (200, Receipt.payload(decision, started: started, extra: extra) + [10])
    }

    /// The name of `uid` as this machine knows it, or `uid:N`.
    static func userName(_ uid: UInt32) -> String {
        var pwd = passwd(), result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        guard getpwuid_r(uid, &pwd, &buffer, buffer.count, &result) == 0, result != nil, let name = pwd.pw_name else { return "uid:\(uid)" }
        return String(cString: name)
    }

    /// Refusals that keep the source's pre-authentication token: not from an enrolled key, or not what its broker
    /// sends (a captured request replayed, or one outside its window), so resending one cannot flood the audit log.
    static func unauthenticated(_ reason: ReasonCode) -> Bool {
        reason.unauthenticated
    }

    private func controlDenial(_ decision: Decision, source: String, pipeline p: DecisionPipeline) -> GatewayAnswer {
        metrics.count(decision.reason)
        if !Self.unauthenticated(decision.reason) { limiter.refund(source) }
        return receipt(decision, started: nil, sealTo: decision.fingerprint.flatMap(Fingerprint.init), pipeline: p)
    }

    /// Signs the receipt, and seals it to the requester's key when that key is enrolled here: its contents
    /// (argv, cwd, agents) are for the requester only. Without a known requester it goes back plain.
    ///
    /// The detail of a plain receipt, and of any `internal_error` or `audit_unavailable`, is replaced on the wire by
    /// a fixed sentence with a reference: the gateway's own failures name its files, and a plain receipt goes to
    /// whoever asked. The full text goes to this gateway's log under that reference (and stays in the audit line
    /// when the decision was recorded).
    private func receipt(_ decision: Decision, started: Receipt.Started?, extra: [(String, JSONWriter.Value)] = [],
                         sealTo fingerprint: Fingerprint?, pipeline p: DecisionPipeline) -> GatewayAnswer {
        var sealKey: PublicKey?
        if let fingerprint, case .enrolled(_, let key, _)? = try? p.verifier.keys.lookup(fingerprint) { sealKey = key }
        var sent = decision
        if sealKey == nil || Self.internalReasons.contains(decision.reason) {
            let reference = decision.requestID ?? "ref-" + Sodium.randomBytes(8).hex
            sent.detail = Self.wireDetail(decision.reason, reference: reference)
            let level: Logger.Level = Self.internalReasons.contains(decision.reason) ? .error : .info
            logger.log(level: level, "\(decision.reason.rawValue): \(decision.detail)",
                       metadata: ["request_id": .string(reference), "sealed": .stringConvertible(sealKey != nil)])
        }
        let signed = Receipt.issue(sent, started: started, extra: extra, key: identity.key)
        if let sealKey { return .receipt(SealedBody.seal(signed, to: sealKey)) }
        return .receipt(signed)
    }

    /// Reasons that mean the gateway itself failed; their text is for its operator.
    static let internalReasons: Set<ReasonCode> = Set(ReasonCode.allCases.filter(\.isGatewayFailure))

    /// What a requester is told instead of the gateway's own text: the reason code stays in the receipt, and
    /// the sentence says who can see more. Nothing in it comes from the request or from this machine.
    static func wireDetail(_ reason: ReasonCode, reference: String) -> String {
        if internalReasons.contains(reason) {
            return "the gateway could not decide; its operator can find request \(reference) in the log"
        }
        let hint: String
        switch reason {
        case .unknownKey: hint = "this broker's key is not enrolled there"
        case .revokedKey: hint = "this broker's key is revoked there"
        case .malformed, .badSignature: hint = "the request could not be opened or verified there"
        default: hint = "refused"
        }
        return "\(hint); its operator can find request \(reference) in the log"
    }

    // MARK: Agents

    /// Collects agents that exited and stops those past max_runtime (deadlines from the state store, so also
    /// agents a previous gateway started). Returns how many ended.
    @discardableResult
    public func reap() -> Int {
        metrics.commits(groups: committer.groups, decisions: committer.decisions)
        for o in pipeline.expireHeld() {
            logger.notice("held request expired", metadata: ["approval": .string(o.decision.approval ?? "?"), "reason": .string(o.decision.reason.rawValue)])
        }
        let ended = agentService.reap()
        if ended > 0 { logger.info("agents ended", metadata: ["count": .stringConvertible(ended)]) }
        metrics.liveAgents((try? agentService.running().count) ?? 0)
        return ended
    }
}

/// What the gateway records for monitoring. `serve` and the relay guard give it their Prometheus registry
/// (`GatewayMetrics`, in the server target, so the library carries no metrics backend).
public protocol GatewayMetricsRecording: Sendable {
    func count(_ reason: ReasonCode)
    func observe(duration: Duration)
    func liveAgents(_ n: Int)
    func commits(groups: Int, decisions: Int)
    func reloads(ok: Bool)
    /// The exposition text for `GET /metrics`, and its content type.
    func text() -> [UInt8]
    var contentType: String { get }
}

/// Records nothing: for a gateway with no metrics listener (tests, one-off tools).
public struct NoGatewayMetrics: GatewayMetricsRecording {
    public init() {}
    public func count(_ reason: ReasonCode) {}
    public func observe(duration: Duration) {}
    public func liveAgents(_ n: Int) {}
    public func commits(groups: Int, decisions: Int) {}
    public func reloads(ok: Bool) {}
    public func text() -> [UInt8] { [] }
    public var contentType: String { "text/plain; version=0.0.4" }
}
