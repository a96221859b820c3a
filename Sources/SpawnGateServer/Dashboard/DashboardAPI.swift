import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import SpawnGate

/// The dashboard's routes. Nothing here decides anything: a spawn or release is signed with this broker's key and
/// sent to the chosen broker's gateway by the same library calls as `spawn --broker`, `release --broker` and the
/// MCP tools (``BrokerDirectory``, ``RemoteGateway``), and what comes back is shown only from a verified receipt.
/// Blocking work (sockets, files) runs on threads of an ``Offload``, never on the server's event loops.
struct DashboardAPI: Sendable {
    let home: Home
    let timeout: Double
    let logger: Logger
    /// This machine's gateway socket (`--socket`), for approving and denying held requests.
    var socket: String? = nil
    let gate = Offload(limit: 16)
    let streams = StreamSlots(limit: 4)
    /// How often a live-update stream looks at the state.
    static let eventInterval: Duration = .seconds(2)

    /// The largest request body read (a spawn's task included).
    static let bodyLimit = 64 * 1024
    /// Recent decisions shown.
    static let decisionCount = 25

    func register(_ router: Router<BasicRequestContext>) {
        router.get("/") { _, _ in Self.asset(DashboardAssets.html, "text/html; charset=utf-8") }
        router.get("/app.js") { _, _ in Self.asset(DashboardAssets.script, "text/javascript; charset=utf-8") }
        router.get("/app.css") { _, _ in Self.asset(DashboardAssets.style, "text/css; charset=utf-8") }
        // Browsers ask for it on their own; there is none (an answer keeps the page's console clean).
        router.get("/favicon.ico") { _, _ in Response(status: .noContent) }
        router.get("/api/state") { _, _ in await state() }
        router.get("/api/events") { _, _ in events() }
        router.post("/api/spawn") { request, _ in
            switch await Self.body(request) {
            case .refused(let answer): return answer
            case .object(let body): return await spawn(body)
            }
        }
        router.post("/api/release") { request, _ in
            switch await Self.body(request) {
            case .refused(let answer): return answer
            case .object(let body): return await release(body)
            }
        }
        router.post("/api/settle") { request, _ in
            switch await Self.body(request) {
            case .refused(let answer): return answer
            case .object(let body): return await settle(body)
            }
        }
        for path in ["/api/spawn", "/api/release", "/api/settle"] {
            router.get(RouterPath(stringLiteral: path)) { _, _ in Self.error(405, "\(path) takes POST with a JSON body") }
        }
        router.post("/api/state") { _, _ in Self.error(405, "/api/state takes GET") }
    }

    // MARK: state

    /// Everything the page shows: brokers (this one first) with their agents, recent decisions, the policy.
    func state() async -> Response {
        let (status, value) = await snapshot()
        return Self.json(status, value)
    }

    /// The state as an HTTP status and its JSON (an `error` object when it cannot be had).
    func snapshot() async -> (Int, JSONValue) {
        let probe = min(timeout, 3)
        let identity: Identity, brokers: [BrokerDirectory.Status]
        do { (identity, brokers) = try await BrokerDirectory.list(home: home, probe: probe, offload: gate) } catch {
            return (500, .object(["error": .string("cannot read this broker's home: \(error.message)")]))
        }
        let home = self.home
        // This broker's own agents on each broker that answers, all at once.
        let listings = await withTaskGroup(of: (String, JSONValue).self) { group in
            for b in brokers where b.answers {
                let remote = RemoteGateway.to(b.peer, identity: identity, home: home, timeout: probe)
                group.addTask {
                    switch await BrokerDirectory.exchange(remote, offload: gate, { () throws(RemoteError) in try remote.agents() }) {
                    case .success(let (answer, list)):
                        guard answer.receipt.allowed else {
                            return (b.peer.name, .object(["error": .string("\(answer.receipt.reason.rawValue): \(answer.receipt.detail)")]))
                        }
                        return (b.peer.name, .object(["agents": Self.shown(.array(list))]))
                    case .failure(let f): return (b.peer.name, .object(["error": .string(f.message)]))
                    }
                }
            }
            var out: [String: JSONValue] = [:]
            for await (name, v) in group { out[name] = v }
            return out
        }
        var rows: [JSONValue] = []
        if !brokers.contains(where: \.isSelf) {
            rows.append(.object([
                "name": .string(identity.name), "self": .bool(true), "configured": .bool(false), "answers": .bool(false),
                "fingerprint": .string(identity.key.publicKey.fingerprint.description),
                "detail": .string("this machine's own gateway is not in peers.yaml; to start agents here, add it as a peer under its own name: spawngate peer add \(identity.name) --url http://127.0.0.1:7717 --key \"$(cat \(home.identityPub))\" --fingerprint \(identity.key.publicKey.fingerprint)"),
            ]))
        }
        for b in brokers {
            var row: [String: JSONValue] = [
                "name": .string(b.peer.name), "url": .string(b.peer.url), "fingerprint": .string(b.peer.key.fingerprint.description),
                "self": .bool(b.isSelf), "configured": .bool(true), "answers": .bool(b.answers),
                "detail": b.problem.map { .string($0) } ?? .null,
            ]
            if case .object(let l)? = listings[b.peer.name] { for (k, v) in l { row[k] = v } }
            rows.append(.object(row))
        }
        let local = await gate.run(deadline: 10) { [home] in (Self.decisions(home), Self.policy(home), Self.approvals(home)) }
        guard case .done(let (decisions, policy, approvals)) = local else {
            return (503, .object(["error": .string("busy: this broker's audit log and policy could not be read in time")]))
        }
        return (200, .object([
            "self": .string(identity.name), "fingerprint": .string(identity.key.publicKey.fingerprint.description),
            "brokers": .array(rows), "decisions": decisions, "policy": policy, "approvals": approvals,
        ]))
    }

    /// Live updates as server-sent events: the state (`event: state`, or `event: error`) each time it changes,
    /// looked at every `eventInterval`, and a comment line now and then so a dead client is noticed. At most
    /// `streams.limit` at once (429 beyond: the page then polls); each ends when its client goes away and at
    /// graceful shutdown, so SIGTERM is never held up by an open page.
    func events() -> Response {
        guard streams.take() else {
            return Self.error(429, "at most \(streams.limit) live-update streams at once; the page polls instead")
        }
        let api = self
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            defer { api.streams.release() }
            var last: [UInt8] = [], quiet = 0
            try await writer.write(ByteBuffer(string: ": spawngate dashboard\n\n"))
            while !Task.isCancelled && !Task.isShuttingDownGracefully {
                let (status, value) = await api.snapshot()
                let event = Array("event: \(status == 200 ? "state" : "error")\ndata: ".utf8) + JSONWriter.encode(value) + Array("\n\n".utf8)
                if event != last {
                    try await writer.write(ByteBuffer(bytes: event))
                    last = event; quiet = 0
                } else if quiet >= 5 {
                    try await writer.write(ByteBuffer(string: ": still here\n\n"))
                    quiet = 0
                } else {
                    quiet += 1
                }
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: Self.eventInterval) }
            }
            try await writer.finish(nil)
        })
    }

    /// The last decisions of this broker's own gateway (its audit log), newest first.
    static func decisions(_ home: Home) -> JSONValue {
        let lines: [String]
        do { lines = try AuditLog(path: home.auditLog).tail(Self.decisionCount) } catch {
            return .object(["error": .string("cannot read \(home.auditLog): \(error.message)")])
        }
        var out: [JSONValue] = []
        for line in lines.reversed() {
            guard case .object(let m)? = try? StrictJSONReader.parse(Array(line.utf8)) else { continue }
            var row: [String: JSONValue] = [:]
            for k in ["time", "decision", "reason", "rule", "broker", "detail", "request_id", "cwd", "argv"] { row[k] = m[k] ?? .null }
            out.append(shown(.object(row)))
        }
        return .object(["entries": .array(out)])
    }

    /// Requests this broker's gateway holds for approval (and those settled in the last hour), newest first.
    static func approvals(_ home: Home) -> JSONValue {
        let now = SystemClock().now()
        do {
            let held = try StateStore.open(home.stateDB).heldRequests(now: now)
            return .object(["entries": .array(held.map { shown($0.json(now: now)) })])
        } catch {
            return .object(["error": .string("cannot read the held requests: \(error.message)")])
        }
    }

    /// `POST /api/settle` `{"id": …, "settle": "approve"|"deny"}`: the same request as `spawngate approve` /
    /// `deny`, to this machine's gateway socket, where the kernel names the dashboard's user.
    func settle(_ body: [String: JSONValue]) async -> Response {
        if let unknown = body.keys.sorted().first(where: { !["id", "settle"].contains($0) }) {
            return Self.error(400, "settle takes no field '\(unknown)'; it takes id, settle")
        }
        guard case .string(let id)? = body["id"], HeldRequest.isID(id), case .string(let verb)? = body["settle"],
              let settlement = DecisionPipeline.Settlement(rawValue: verb) else {
            return Self.error(400, "settle needs id (16 hex digits) and settle (\"approve\" or \"deny\")")
        }
        let home = self.home, socket = self.socket
        let outcome = await gate.run(deadline: 70) { () -> Result<[String: JSONValue], OperatorError> in
            do throws(OperatorError) { return .success(try SettleClient.settle(id, settlement, socket: try SettleClient.socket(socket, home: home))) } catch {
                return .failure(error)
            }
        }
        switch outcome {
        case .busy(let why): return Self.error(503, "busy: \(why)")
        case .timedOut: return Self.error(504, "the gateway did not answer in time; 'spawngate approvals' shows where \(id) stands")
        case .done(.failure(let e)): return Self.error(e.kind == .refused ? 409 : 502, e.message)
        case .done(.success(var o)):
            o["ok"] = .bool(o["reason"] == .string(settlement == .approve ? "allowed" : "approval_denied"))
            o["id"] = .string(id)
            logger.notice("\(settlement.rawValue) \(id): \(o["reason"].map { "\($0)" } ?? "?")")
            return Self.json(200, Self.shown(.object(o)))
        }
    }

    /// The policy's status and its embedded tests, as `policy check` and `policy test` see them.
    static func policy(_ home: Home) -> JSONValue {
        let file = home.policyFile
        switch PolicyLoader.load(file) {
        case .failure(let e):
            return shown(.object(["status": .string("invalid"), "file": .string(file), "errors": .array(e.diagnostics.map { .string($0.description) })]))
        case .success(let p):
            let results = PolicyTestRunner.run(p)
            let failed = results.filter { !$0.passed }.count
            return shown(.object([
                "status": .string(failed == 0 ? "ok" : "tests_failing"), "file": .string(file), "hash": .string(p.hash),
                "accept_remote_spawn": .bool(p.acceptRemoteSpawn), "clis": .number(String(p.clis.count)), "rules": .number(String(p.rules.count)),
                "passed": .number(String(results.count - failed)), "failed": .number(String(failed)),
                "warnings": .array(PolicyLinter.warnings(p).map { .string($0.description) }),
                "tests": .array(results.map { .object(["passed": .bool($0.passed), "line": .string($0.line(file: file))]) }),
            ]))
        }
    }

    // MARK: actions

    func spawn(_ body: [String: JSONValue]) async -> Response {
        let fields: SpawnFields
        switch SpawnFields.parse(body) {
        case .failure(let e): return Self.error(400, e.message)
        case .success(let f): fields = f
        }
        let remote: RemoteGateway
        do { remote = try BrokerDirectory.remote(fields.broker, home: home, timeout: timeout) } catch {
            return Self.error(400, "cannot send: \(error.message)")
        }
        let request = SpawnRequest(name: fields.name, cli: fields.cli, task: fields.task, cwd: fields.cwd, model: fields.model,
                                   args: fields.args, channels: fields.channels, from: "", to: "", iat: 0, exp: 0)
        switch await BrokerDirectory.exchange(remote, offload: gate, { () throws(RemoteError) in try remote.spawn(request) }) {
        case .failure(let f): return Self.error(f.message.hasPrefix("busy:") ? 503 : 502, f.message)
        case .success(let answer):
            var facts = answer.receipt.facts(broker: remote.peer.name)
            facts["name"] = .string(fields.name)
            facts["ok"] = .bool(answer.receipt.allowed && answer.receipt.started != nil)
            logger.notice("spawn \(fields.name) on \(remote.peer.name): \(answer.receipt.reason.rawValue)")
            return Self.json(200, Self.shown(.object(facts)))
        }
    }

    func release(_ body: [String: JSONValue]) async -> Response {
        if let unknown = body.keys.sorted().first(where: { !["broker", "name"].contains($0) }) {
            return Self.error(400, "release takes no field '\(unknown)'; it takes broker, name")
        }
        guard case .string(let broker)? = body["broker"], !broker.isEmpty, case .string(let name)? = body["name"], !name.isEmpty else {
            return Self.error(400, "release needs broker and name (non-empty strings)")
        }
        let remote: RemoteGateway
        do { remote = try BrokerDirectory.remote(broker, home: home, timeout: timeout) } catch {
            return Self.error(400, "cannot send: \(error.message)")
        }
        switch await BrokerDirectory.exchange(remote, offload: gate, { () throws(RemoteError) in try remote.release(name: name) }) {
        case .failure(let f): return Self.error(f.message.hasPrefix("busy:") ? 503 : 502, f.message)
        case .success(let (answer, released)):
            var facts = answer.receipt.facts(broker: remote.peer.name)
            facts["name"] = .string(name)
            facts["released"] = .array(released)
            facts["ok"] = .bool(answer.receipt.allowed && !released.isEmpty)
            if answer.receipt.allowed && released.isEmpty { facts["reason"] = .string("not_running") }
            logger.notice("release \(name) on \(remote.peer.name): \(answer.receipt.reason.rawValue), \(released.count) stopped")
            return Self.json(200, Self.shown(.object(facts)))
        }
    }

    /// A spawn's fields, checked: unknown fields, missing or mistyped ones are a 400 that says which.
    struct SpawnFields {
        var broker: String, name: String, cli: String
        var task: String?, cwd: String?, model: String?
        var args: [String]?, channels: [String]?

        struct Problem: Error { let message: String }
        static let allowed = ["broker", "name", "cli", "task", "cwd", "model", "args", "channels"]

        static func parse(_ o: [String: JSONValue]) -> Result<SpawnFields, Problem> {
            if let unknown = o.keys.sorted().first(where: { !allowed.contains($0) }) {
                return .failure(Problem(message: "spawn takes no field '\(unknown)'; it takes \(allowed.joined(separator: ", "))"))
            }
            func string(_ k: String, required: Bool = false) throws(Problem) -> String? {
                switch o[k] {
                case nil, .null?:
                    if required { throw Problem(message: "spawn needs '\(k)' (a string)") }
                    return nil
                case .string(let s)?:
                    if s.isEmpty { if required { throw Problem(message: "'\(k)' must not be empty") }; return nil }
                    return s
                case let v?: throw Problem(message: "'\(k)' must be a string, not \(v.typeName)")
                }
            }
            func strings(_ k: String) throws(Problem) -> [String]? {
                switch o[k] {
                case nil, .null?: return nil
                case .array(let list)?:
                    let out = try list.enumerated().map { (i, e) throws(Problem) -> String in
                        guard case .string(let s) = e else { throw Problem(message: "'\(k)'[\(i)] must be a string, not \(e.typeName)") }
                        return s
                    }
                    return out.isEmpty ? nil : out
                case let v?: throw Problem(message: "'\(k)' must be an array of strings, not \(v.typeName)")
                }
            }
            do throws(Problem) {
                return .success(SpawnFields(broker: try string("broker", required: true)!, name: try string("name", required: true)!,
                                            cli: try string("cli", required: true)!, task: try string("task"), cwd: try string("cwd"),
                                            model: try string("model"), args: try strings("args"), channels: try strings("channels")))
            } catch { return .failure(error) }
        }
    }

    // MARK: helpers

    /// The body as a strict JSON object (no duplicate keys, no trailing data), at most `bodyLimit` bytes; otherwise
    /// the 4xx answer that says why.
    enum Body { case object([String: JSONValue]), refused(Response) }

    static func body(_ request: Request) async -> Body {
        let tooLarge = error(413, "the body is over \(bodyLimit) bytes")
        if let declared = request.headers[.contentLength].flatMap(Int.init), declared > bodyLimit { return .refused(tooLarge) }
        let bytes: [UInt8]
        do { bytes = Array(try await request.body.collect(upTo: bodyLimit).readableBytesView) } catch {
            return .refused(tooLarge)
        }
        do throws(JSONSyntaxError) {
            guard case .object(let o) = try StrictJSONReader.parse(bytes) else { return .refused(Self.error(400, "the body must be a JSON object")) }
            return .object(o)
        } catch {
            return .refused(Self.error(400, "the body is not valid JSON: \(error.description)"))
        }
    }

    /// Strings as people should see them: control, bidi and invisible characters escaped, as every command shows
    /// text that came from a request (the page also inserts text only as text, never as HTML).
    static func shown(_ v: JSONValue) -> JSONValue {
        switch v {
        case .string(let s): return .string(TerminalText.escaped(s))
        case .array(let a): return .array(a.map(shown))
        case .object(let o): return .object(o.mapValues(shown))
        default: return v
        }
    }

    static func json(_ status: Int, _ value: JSONValue) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: JSONWriter.encode(value) + [10])))
    }

    static func error(_ status: Int, _ message: String) -> Response {
        json(status, .object(["error": .string(message)]))
    }

    static func asset(_ text: String, _ type: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

/// Live-update streams open at once.
// @unchecked: `open` is read and written only under `lock`.
final class StreamSlots: @unchecked Sendable {
    let limit: Int
    private let lock = NSLock()
    private var open = 0
    init(limit: Int) { self.limit = limit }
    func take() -> Bool { lock.withLock { guard open < limit else { return false }; open += 1; return true } }
    func release() { lock.withLock { open -= 1 } }
}
