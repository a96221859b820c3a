/// What `hook pre-spawn` reads on standard input: a bare envelope, or the broker's view of the spawn next to it,
/// `{"envelope": {…}, "spawn": {name, cli, task, cwd, model, args, channels, team}}`, so the gateway can refuse a
/// broker about to start something other than what was signed. See docs/hook.md.
public enum HookInput {
    /// An envelope plus the task and a copy of everything else: bounded so an endless stream cannot grow memory.
    public static let maxSize = 3 * Envelope.maxSize

    /// The spawn fields a broker may send: exactly those the signed request mirrors. Anything else (Agent
    /// Relay's `shadow_of`, `agent_token`, `restart_policy`, …) is not covered by the signature and is refused.
    static let stringFields = ["name", "cli", "task", "cwd", "model", "team"]
    static let listFields = ["args", "channels"]

    /// The envelope's bytes and the broker's spawn fields, or why the input is not one of the two shapes.
    public static func parse(_ bytes: [UInt8]) -> Result<(envelope: [UInt8], spawn: [String: JSONValue]?), Denial> {
        guard bytes.count <= maxSize else {
            return .failure(Denial(.malformed, "the hook input is over \(maxSize) bytes"))
        }
        // A bare envelope goes to the envelope parser as it is, which gives the precise reason for any fault.
        guard case .object(let top)? = try? StrictJSONReader.parse(bytes), top["envelope"] != nil else {
            return .success((bytes, nil))
        }
        if let extra = top.keys.sorted().first(where: { $0 != "envelope" && $0 != "spawn" }) {
            return .failure(Denial(.malformed, "the hook input has an unknown field \"\(extra)\"; it takes {\"envelope\": …, \"spawn\": …}"))
        }
        guard case .object = top["envelope"]! else {
            return .failure(Denial(.malformed, "\"envelope\" must be the envelope's JSON object"))
        }
        guard case .object(let spawn)? = top["spawn"] else {
            return .failure(Denial(.malformed, "\"spawn\" must be an object with the broker's spawn fields (name, cli, task, cwd, model, args, channels, team)"))
        }
        return .success((JSONWriter.encode(top["envelope"]!), spawn))
    }

    /// The first way the broker's fields differ from the signed request, as a sentence; nil when they agree.
    /// A field present on one side and absent on the other is a difference.
    public static func difference(_ spawn: [String: JSONValue], signed r: SpawnRequest) -> String? {
        if let unknown = spawn.keys.sorted().first(where: { !stringFields.contains($0) && !listFields.contains($0) }) {
            return "the broker's spawn field \"\(unknown)\" is not part of the signed request; only \((stringFields + listFields).joined(separator: ", ")) may be given"
        }
        let signedStrings: [String: String?] = ["name": r.name, "cli": r.cli, "task": r.task, "cwd": r.cwd, "model": r.model, "team": r.team]
        let signedLists: [String: [String]?] = ["args": r.args, "channels": r.channels]
        func show(_ v: JSONValue?) -> String {
            guard let v else { return "absent" }
            return String(decoding: JSONWriter.encode(v), as: UTF8.self)
        }
        for key in stringFields {
            let signed: JSONValue? = signedStrings[key]!.map { .string($0) }
            if spawn[key] != signed {
                return "the broker's spawn field \"\(key)\" (\(show(spawn[key]))) differs from the signed request (\(show(signed)))"
            }
        }
        for key in listFields {
            let signed: JSONValue? = signedLists[key]!.map { .array($0.map { .string($0) }) }
            if spawn[key] != signed {
                return "the broker's spawn field \"\(key)\" (\(show(spawn[key]))) differs from the signed request (\(show(signed)))"
            }
        }
        return nil
    }
}

extension DecisionPipeline {
    /// The hook's input (a bare envelope, or the envelope with the broker's spawn fields), decided; input of the
    /// wrong shape is a recorded refusal. `hook pre-spawn` and the gateway's socket both answer with this.
    public func decideHook(_ input: [UInt8]) -> Outcome {
        commit([prepareHook(input)])[0]
    }

    public func prepareHook(_ input: [UInt8]) -> Pending {
        switch HookInput.parse(input) {
        case .success(let (envelope, spawn)): prepare(envelope, brokerSpawn: spawn)
        case .failure(let denial): prepareRefusal(denial)
        }
    }
}
