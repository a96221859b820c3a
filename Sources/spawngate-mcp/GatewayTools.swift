import Foundation
import MCP
import SpawnGate

/// The tools of `spawngate mcp`: Agent Relay's names and arguments, plus `broker`. Each call is checked here
/// (unknown, missing or mistyped arguments are tool errors), then done by the library on a thread of its own with
/// a deadline, so a slow target never holds the server's message loop or another call.
struct GatewayTools: Sendable {
    let home: Home
    /// Seconds per exchange with a gateway (RemoteGateway's timeout).
    let timeout: Double
    /// The grant this session asks under (`--grant`): read again at every call, so a revocation or expiry counts
    /// at once. nil: the broker's own rights.
    var grant: String? = nil
    let gate = Offload(limit: 8)
    /// Where the transport keeps each call's arguments as written (shared with ``LineTransport``).

    // MARK: definitions

    static let brokerArgument: Value = [
        "type": "string",
        "description": "The broker (machine) to act on, as named in this broker's peers.yaml (broker.list shows them). Omit it, or give this broker's own name, to act on this machine through its own gateway.",
    ]

    static let definitions: [Tool] = [
        Tool(
            name: "agent.add",
            description: """
                Start an AI coding agent (a CLI such as claude or codex) on a broker: this machine, or another one \
                named by `broker`. The request is signed as this broker; the target's own policy decides whether the \
                CLI, its arguments and the working directory are allowed, and the answer is the target's signed \
                receipt. On success you get the agent's pid, sandbox profile and sandbox layers. A denial is a tool \
                error whose text starts with the reason code (cli_not_allowed, cwd_not_allowed, args_not_allowed, \
                rate_limited, concurrency_limit, no_matching_rule, …): it is the target operator's decision. Report \
                it; do not retry with changed arguments (another cwd, cli or args) to slip past the policy.
                """,
            inputSchema: [
                "type": "object",
                "properties": [
                    "name": ["type": "string", "description": "The agent's name (used again by agent.remove and agent.handoff)."],
                    "cli": ["type": "string", "description": "The CLI to start, as the target's policy names it, e.g. claude or codex."],
                    "task": ["type": "string", "description": "The task given to the agent when it starts."],
                    "broker": brokerArgument,
                    "cwd": ["type": "string", "description": "The working directory on the target (an absolute path there)."],
                    "model": ["type": "string", "description": "The model the CLI should use, if the target's policy allows choosing one."],
                    "args": ["type": "array", "items": ["type": "string"], "description": "Extra arguments for the CLI; the target allows only the argument shapes its policy lists."],
                    "channels": ["type": "array", "items": ["type": "string"], "description": "Agent Relay channels the agent joins."],
                ],
                "required": ["name", "cli"],
                "additionalProperties": false,
            ],
            annotations: .init(title: "Start an agent", destructiveHint: false, idempotentHint: false, openWorldHint: true)),
        Tool(
            name: "agent.list",
            description: """
                List the agents this broker started on a broker (this machine when `broker` is omitted): name, cli, \
                cwd, pid, sandbox, state (running, or exited with its status for an hour). The list is the target's \
                signed answer and shows only this broker's own agents there.
                """,
            inputSchema: [
                "type": "object",
                "properties": ["broker": brokerArgument],
                "additionalProperties": false,
            ],
            annotations: .init(title: "List agents", readOnlyHint: true, openWorldHint: true)),
        Tool(
            name: "agent.remove",
            description: """
                Stop this broker's running agents called `name` on a broker (this machine when `broker` is omitted): \
                SIGTERM to everything the agent runs, SIGKILL after a grace period. Only agents this broker started \
                can be stopped. A refusal is a tool error whose text starts with the reason code.
                """,
            inputSchema: [
                "type": "object",
                "properties": [
                    "name": ["type": "string", "description": "The agent's name, as agent.list shows it."],
                    "broker": brokerArgument,
                ],
                "required": ["name"],
                "additionalProperties": false,
            ],
            annotations: .init(title: "Stop an agent", destructiveHint: true, idempotentHint: true, openWorldHint: true)),
        Tool(
            name: "broker.list",
            description: """
                List the brokers this broker can send to (its peers.yaml): name, URL, key fingerprint, and whether \
                something answers at that URL's /healthz right now. Answering is not proof of identity: only a \
                signed receipt is, and every other tool checks one.
                """,
            inputSchema: ["type": "object", "properties": [:], "additionalProperties": false],
            annotations: .init(title: "List brokers", readOnlyHint: true, openWorldHint: true)),
        Tool(
            name: "agent.handoff",
            description: """
                Move a running agent of THIS machine to another broker: its task (cli, task, model, args, channels) \
                is started on `broker` in the same working directory path, through the signed path and the target's \
                policy, and the agent here is stopped only once the target's receipt verifies and the target lists \
                the new agent as running. Only the task moves: no files, no conversation. A working directory with \
                uncommitted git changes is refused (they would not move). A denial is a tool error whose text starts \
                with the reason code; the agent then keeps running here. Do not retry a denial with other arguments \
                to slip past the policy.
                """,
            inputSchema: [
                "type": "object",
                "properties": [
                    "name": ["type": "string", "description": "The running agent's name on this machine."],
                    "broker": ["type": "string", "description": "The broker to move it to, as named in peers.yaml (broker.list)."],
                ],
                "required": ["name", "broker"],
                "additionalProperties": false,
            ],
            annotations: .init(title: "Move an agent", destructiveHint: true, idempotentHint: false, openWorldHint: true)),
    ]

    // MARK: calls

    func call(_ tool: String, _ arguments: [String: JSONValue]?) async -> CallTool.Result {
        do throws(ToolFailure) {
            switch tool {
            case "agent.add": return try await add(Arguments(arguments, tool: tool, allowed: ["name", "cli", "task", "broker", "cwd", "model", "args", "channels"]))
            case "agent.list": return try await list(Arguments(arguments, tool: tool, allowed: ["broker"]))
            case "agent.remove":
                try onlyBroker(tool)
                return try await remove(Arguments(arguments, tool: tool, allowed: ["name", "broker"]))
            case "broker.list":
                _ = try Arguments(arguments, tool: tool, allowed: [])
                return await brokers()
            case "agent.handoff":
                try onlyBroker(tool)
                return try await handoff(Arguments(arguments, tool: tool, allowed: ["name", "broker"]))
            default:
                return Self.error("invalid arguments: there is no tool '\(tool)'; the tools are \(Self.definitions.map(\.name).joined(separator: ", "))")
            }
        } catch {
            return Self.error(error.text)
        }
    }

    private func add(_ a: Arguments) async throws(ToolFailure) -> CallTool.Result {
        let name = try a.string("name", required: true)!, cli = try a.string("cli", required: true)!
        let request = SpawnRequest(name: name, cli: cli, task: try a.string("task"), cwd: try a.string("cwd"),
                                   model: try a.string("model"), args: try a.strings("args"), channels: try a.strings("channels"),
                                   from: "", to: "", iat: 0, exp: 0)
        let remote = try remote(try a.string("broker"))
        let held = try admit(request, to: remote.peer.name)
        let answer = try await exchange(remote) { () throws(RemoteError) in try remote.spawn(request, grant: held) }
        let r = answer.receipt
        var facts = Self.facts(r, broker: remote.peer.name)
        if r.pending {
            facts["name"] = .string(name)
            return CallTool.Result(
                content: [Self.text("pending: \(remote.peer.name) holds \(name) for a person's approval as \(r.approval ?? "?") (\(r.detail)). It has not started; agent.list on \(remote.peer.name) shows it once approved. Do not send it again.")],
                structuredContent: .object(facts), isError: false)
        }
        if let s = r.started, r.allowed {
            facts["name"] = .string(name)
            let sandbox = facts["sandbox"]?.stringValue ?? "?"
            return CallTool.Result(
                content: [Self.text("started \(name) on \(remote.peer.name): pid \(s.pid), sandbox \(sandbox) (\(s.layers.joined(separator: ", "))), rule \(r.rule ?? "-"), request \(r.requestID ?? "-"); receipt verified with \(remote.peer.name)'s key")],
                structuredContent: .object(facts), isError: false)
        }
        return Self.denial(r, broker: remote.peer.name, facts: facts)
    }

    private func list(_ a: Arguments) async throws(ToolFailure) -> CallTool.Result {
        let remote = try remote(try a.string("broker"))
        let (answer, agents) = try await exchange(remote) { () throws(RemoteError) in try remote.agents() }
        guard answer.receipt.allowed else { return Self.denial(answer.receipt, broker: remote.peer.name, facts: Self.facts(answer.receipt, broker: remote.peer.name)) }
        let lines = agents.map { entry -> String in
            guard case .object(let o) = entry else { return "?" }
            func f(_ k: String) -> String { switch o[k] { case .string(let s)?: s; case .number(let n)?: n; default: "-" } }
            let state = f("state") == "exited" ? "exited \(f("exit_status"))" : f("state")
            return "\(f("name")): \(f("cli")) in \(f("cwd")), pid \(f("pid")), sandbox \(f("sandbox")), \(state)"
        }
        let text = lines.isEmpty ? "no agents of this broker on \(remote.peer.name)" : "agents of this broker on \(remote.peer.name) (signed listing):\n" + lines.joined(separator: "\n")
        return CallTool.Result(content: [Self.text(text)],
                               structuredContent: ["broker": .string(remote.peer.name), "agents": .array(agents.map(Self.value))], isError: false)
    }

    private func remove(_ a: Arguments) async throws(ToolFailure) -> CallTool.Result {
        let name = try a.string("name", required: true)!
        let remote = try remote(try a.string("broker"))
        let (answer, released) = try await exchange(remote) { () throws(RemoteError) in try remote.release(name: name) }
        let r = answer.receipt
        guard r.allowed else { return Self.denial(r, broker: remote.peer.name, facts: Self.facts(r, broker: remote.peer.name)) }
        guard !released.isEmpty else {
            return Self.error("not_running: \(r.detail) (\(remote.peer.name)'s signed answer; agent.list shows this broker's agents there)",
                              facts: ["broker": .string(remote.peer.name), "released": []])
        }
        let lines = released.map { entry -> String in
            guard case .object(let o) = entry else { return "?" }
            let pid = o["pid"]?.safeInteger.map(String.init) ?? "?"
            return o["stopped"] == .bool(true) ? "released \(name) on \(remote.peer.name) (pid \(pid))" : "\(name) on \(remote.peer.name) (pid \(pid)) had already exited"
        }
        return CallTool.Result(content: [Self.text(lines.joined(separator: "\n"))],
                               structuredContent: ["broker": .string(remote.peer.name), "released": .array(released.map(Self.value))], isError: false)
    }

    private func brokers() async -> CallTool.Result {
        let identity: Identity, brokers: [BrokerDirectory.Status]
        do { (identity, brokers) = try await BrokerDirectory.list(home: home, probe: min(timeout, 5), offload: gate) } catch {
            return Self.error("cannot send: \(error.message)")
        }
        var rows: [Value] = [], lines: [String] = []
        for b in brokers {
            let p = b.peer
            rows.append(["name": .string(p.name), "url": .string(p.url), "fingerprint": .string(p.key.fingerprint.description),
                         "answers": .bool(b.answers), "detail": b.problem.map { .string($0) } ?? .null, "self": .bool(b.isSelf)])
            lines.append("\(p.name)\(b.isSelf ? " (this broker)" : ""): \(p.url), \(p.key.fingerprint), \(b.problem.map { "not answering: \($0)" } ?? "answers /healthz")")
        }
        let text = lines.isEmpty
            ? "no brokers in \(home.peersFile); add one with 'spawngate peer add NAME --url http://HOST:PORT --key \"ssh-ed25519 …\" --fingerprint SHA256:…'"
            : "brokers of \(identity.name) (answering /healthz proves no identity; receipts do):\n" + lines.joined(separator: "\n")
        return CallTool.Result(content: [Self.text(text)], structuredContent: ["self": .string(identity.name), "brokers": .array(rows)], isError: false)
    }

    private func handoff(_ a: Arguments) async throws(ToolFailure) -> CallTool.Result {
        let name = try a.string("name", required: true)!, broker = try a.string("broker", required: true)!
        let h = Handoff(name: name, target: broker, timeout: timeout)
        // spawn, a listing or two, the local stop and git: each bounded; the whole gets their sum.
        let deadline = 3 * timeout + h.runningWithin + GitWorktree.timeout + 5
        let outcome = await gate.run(deadline: deadline) { () -> Result<Handoff.Moved, Handoff.Failure> in
            do throws(Handoff.Failure) { return .success(try h.run(home: home)) } catch { return .failure(error) }
        }
        switch outcome {
        case .busy(let why): return Self.error("busy: \(why)")
        case .timedOut:
            return Self.error("no verified answer from \(broker): the handoff did not finish within \(Int(deadline)) s; it may still complete: agent.list (here and on \(broker)) shows where \(name) runs")
        case .done(.success(let moved)):
            var facts = Self.facts(moved.receipt, broker: broker)
            facts["name"] = .string(name); facts["cwd"] = .string(moved.cwd)
            facts["stopped_here"] = .bool(moved.stopped); facts["local_pid"] = .int(Int(moved.local.process.pid))
            let s = moved.receipt.started!
            return CallTool.Result(content: [Self.text("moved \(name) to \(broker): started there in \(moved.cwd) (pid \(s.pid), receipt verified, seen running) and stopped here (pid \(moved.local.process.pid)). Only the task moved: files not committed and pushed did not")],
                                   structuredContent: .object(facts), isError: false)
        case .done(.failure(let f)):
            if let r = f.receipt, !r.allowed { return Self.denial(r, broker: broker, facts: Self.facts(r, broker: broker), suffix: "; \(name) keeps running here") }
            let prefix: String
            switch f.kind {
            case .refused: prefix = "refused"
            case .denied: prefix = "not_moved"
            case .cannotDecide: prefix = "no verified answer from \(broker)"
            }
            return Self.error("\(prefix): \(f.message)")
        }
    }

    // MARK: helpers

    /// Under a grant: the request checked against it here (revoked, expired, outside, used up) before anything is
    /// signed, and the grant to send with it. A refusal is a tool error starting with the reason code.
    private func admit(_ request: SpawnRequest, to target: String) throws(ToolFailure) -> GrantStore.Held? {
        guard let grant else { return nil }
        let store = GrantStore(home: home)
        do {
            let g = try store.load(grant)
            if let d = try store.admit(g, request: request, target: target, now: SystemClock().now()) {
                throw ToolFailure("\(d.reason.rawValue): \(d.detail). Refused by this session's grant '\(grant)' before anything was signed or sent: report it; do not retry with changed arguments to get around it.")
            }
            return g
        } catch let e as ToolFailure { throw e } catch let e as OperatorError {
            throw ToolFailure("cannot send: this session's grant '\(grant)' cannot be used: \(e.message)")
        } catch {
            throw ToolFailure("cannot send: this session's grant '\(grant)' cannot be used: \(error)")
        }
    }

    /// Under a grant, the tools that act on agents already running are not this session's: a grant covers starts.
    private func onlyBroker(_ tool: String) throws(ToolFailure) {
        if let grant {
            throw ToolFailure("grant_exceeded: \(tool) acts on this broker's running agents, and this session holds only grant '\(grant)', which covers starting agents (agent.add) and listing them")
        }
    }

    /// The gateway for `broker`; nil or this broker's own name: this machine's own gateway, which must be a peer
    /// under this broker's name.
    private func remote(_ broker: String?) throws(ToolFailure) -> RemoteGateway {
        do { return try BrokerDirectory.remote(broker, home: home, timeout: timeout) } catch {
            throw ToolFailure("cannot send: \(error.message)")
        }
    }

    /// One exchange with `remote` off the message loop, within its timeout plus a margin.
    private func exchange<T: Sendable>(_ remote: RemoteGateway, _ work: @escaping @Sendable () throws(RemoteError) -> T) async throws(ToolFailure) -> T {
        switch await BrokerDirectory.exchange(remote, offload: gate, work) {
        case .success(let value): return value
        case .failure(let f): throw ToolFailure(f.message)
        }
    }

    /// The receipt's facts, for structured content.
    static func facts(_ r: VerifiedReceipt, broker: String) -> [String: Value] {
        r.facts(broker: broker).mapValues(value)
    }

    static func denial(_ r: VerifiedReceipt, broker: String, facts: [String: Value], suffix: String = "") -> CallTool.Result {
        var text = "\(r.reason.rawValue): \(r.detail) (\(broker)'s signed decision\(suffix)). This is the target's policy: report it; do not retry with changed arguments to get around it."
        if r.reason == .startFailed {
            text = "\(r.reason.rawValue): \(r.detail) (\(broker)'s signed answer: allowed, but the agent did not keep running\(suffix))"
            if let n = r.members["exit_status"]?.safeInteger { text += "; exit status \(n)" }
            if case .string(let out)? = r.members["output"], !out.isEmpty { text += "; it last wrote: \(out)" }
        }
        return CallTool.Result(content: [Self.text(text)], structuredContent: .object(facts), isError: true)
    }

    static func text(_ text: String) -> Tool.Content { .text(text: text, annotations: nil, _meta: nil) }

    static func error(_ text: String, facts: [String: Value]? = nil) -> CallTool.Result {
        CallTool.Result(content: [Self.text(text)], structuredContent: facts.map { .object($0) }, isError: true)
    }

    static func value(_ v: JSONValue) -> Value {
        switch v {
        case .null: return .null
        case .bool(let b): return .bool(b)
        case .number(let n): if let i = Int(n) { return .int(i) }; return Double(n).map { .double($0) } ?? .string(n)
        case .string(let s): return .string(s)
        case .array(let a): return .array(a.map(value))
        case .object(let o): return .object(o.mapValues(value))
        }
    }
}

/// A tool error's text.
struct ToolFailure: Error {
    let text: String
    init(_ text: String) { self.text = text }
}

/// A call's arguments, checked against what the tool takes: unknown names, missing required ones and wrong types
/// are tool errors that say which and why. JSON null counts as absent. They are the agent's own, as the transport
/// read them (``ToolCall``); on the SDK's path a string it decoded as binary data is refused first
/// (``exactly(_:)``), as its exact text is lost.
struct Arguments {
    let tool: String
    let values: [String: JSONValue]

    init(_ given: [String: JSONValue]?, tool: String, allowed: [String]) throws(ToolFailure) {
        self.tool = tool
        self.values = (given ?? [:]).filter { $0.value != .null }
        if let unknown = self.values.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw ToolFailure("invalid arguments: \(tool) takes no argument '\(unknown)'\(allowed.isEmpty ? " (it takes none)" : "; it takes \(allowed.joined(separator: ", "))")")
        }
    }

    func string(_ key: String, required: Bool = false) throws(ToolFailure) -> String? {
        guard let v = values[key] else {
            if required { throw ToolFailure("invalid arguments: \(tool) needs '\(key)' (a string)") }
            return nil
        }
        guard case .string(let s) = v else { throw ToolFailure("invalid arguments: '\(key)' must be a string, not \(v.typeName)") }
        if required && s.isEmpty { throw ToolFailure("invalid arguments: '\(key)' must not be empty") }
        return s
    }

    func strings(_ key: String) throws(ToolFailure) -> [String]? {
        guard let v = values[key] else { return nil }
        guard case .array(let list) = v else { throw ToolFailure("invalid arguments: '\(key)' must be an array of strings, not \(v.typeName)") }
        return try list.enumerated().map { (i, e) throws(ToolFailure) -> String in
            guard case .string(let s) = e else { throw ToolFailure("invalid arguments: '\(key)'[\(i)] must be a string, not \(e.typeName)") }
            return s
        }
    }

    /// The SDK's values as JSON; a string it turned into binary data cannot be given back as written, so it is refused.
    static func exactly(_ values: [String: Value]) throws(ToolFailure) -> [String: JSONValue] {
        func convert(_ v: Value, _ path: String) throws(ToolFailure) -> JSONValue {
            switch v {
            case .null: return .null
            case .bool(let b): return .bool(b)
            case .int(let n): return .number(String(n))
            case .double(let d): return .number(String(d))
            case .string(let s): return .string(s)
            case .data:
                throw ToolFailure("invalid arguments: '\(path)' looks like a data: URL, and the MCP library reads such a string as binary data, so its exact text is lost; spawngate signs only what was written: reword it (for example without 'data:' at its start)")
            case .array(let items):
                var out: [JSONValue] = []
                for (i, item) in items.enumerated() { out.append(try convert(item, "\(path)[\(i)]")) }
                return .array(out)
            case .object(let members):
                var out: [String: JSONValue] = [:]
                for (k, item) in members { out[k] = try convert(item, "\(path).\(k)") }
                return .object(out)
            }
        }
        var out: [String: JSONValue] = [:]
        for (k, v) in values { out[k] = try convert(v, k) }
        return out
    }
}
