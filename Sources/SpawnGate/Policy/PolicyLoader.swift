import Yams
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads a policy file: permissions, YAML syntax, schema (unknown keys are errors), semantics. Every problem is
/// reported with its `file:line:column`; a file with any error yields no ``Policy``.
public enum PolicyLoader {
    /// Policy files are small; anything larger is refused unread.
    public static let maxSize = 1 << 20

    /// Parses policy text. `file` is the name used in diagnostics.
    public static func parse(_ text: String, file: String) -> Result<Policy, PolicyLoadError> {
        var r = YAMLNodeReader(file: file)
        let root: Node
        // Our own Parser, kept alive until the tree has been checked: nodes hold their anchors weakly, and the
        // parser is what keeps them, so this is how an anchor or alias stays visible to `usesAnchors`.
        let parser: Parser
        do {
            // No implicit tags: the reader takes every scalar as the text and style it was written with (true, 42
            // and null are recognised there), and Yams' default resolver matches each scalar against regular
            // expressions, which loaded ICU into every process that reads a policy (2.4 ms of a fresh `check`).
            parser = try Parser(yaml: text, resolver: .basic)
            guard let node = try parser.singleRoot() else {
                r.error(nil, "the policy is empty; start from 'version: 1' and 'accept_remote_spawn: false'")
                return .failure(PolicyLoadError(diagnostics: r.diagnostics))
            }
            root = node
        } catch let e as YamlError {
            return .failure(PolicyLoadError(diagnostics: [syntaxDiagnostic(e, file: file, text: text)]))
        } catch {
            return .failure(PolicyLoadError(diagnostics: [PolicyDiagnostic(file: file, line: 1, column: 1, message: "cannot read YAML: \(error)")]))
        }
        if let n = withExtendedLifetime(parser, { root.usesAnchors }) {
            r.error(n, "anchors (&name) and aliases (*name) are not allowed in a policy; write each value out")
            return .failure(PolicyLoadError(diagnostics: r.diagnostics))
        }
        let policy = build(root, &r, file: file, hash: Sodium.sha256(Array(text.utf8)).hex)
        guard let policy, !r.hasErrors else {
            let errors = r.diagnostics.filter { $0.severity == .error }.sorted { ($0.line, $0.column) < ($1.line, $1.column) }
            return .failure(PolicyLoadError(diagnostics: errors))
        }
        return .success(policy)
    }

    static func syntaxDiagnostic(_ e: YamlError, file: String, text: String) -> PolicyDiagnostic {
        func d(_ mark: Mark, _ problem: String, _ context: YamlError.Context?) -> PolicyDiagnostic {
            let ctx = context.map { " (\($0.text) at \($0.mark))" } ?? ""
            return PolicyDiagnostic(file: file, line: mark.line, column: mark.column, message: "YAML syntax: \(problem)\(ctx)")
        }
        switch e {
        case .scanner(let c, let p, let m, _), .parser(let c, let p, let m, _), .composer(let c, let p, let m, _):
            return d(m, p, c)
        case .duplicatedKeysInMapping(let dups, let c):
            // Yams marks the first occurrence; the operator needs the second, the one to remove or rename.
            let key = dups.first ?? ""
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            var at = (c.mark.line, c.mark.column)
            for (i, l) in lines.enumerated() where i + 1 > c.mark.line {
                let indent = l.prefix(while: { $0 == " " }).count
                let rest = l.dropFirst(indent)
                if indent + 1 == c.mark.column, rest.hasPrefix("\(key):") || rest.hasPrefix("\"\(key)\":") { at = (i + 1, indent + 1); break }
            }
            return PolicyDiagnostic(file: file, line: at.0, column: at.1,
                                    message: "duplicate key '\(dups.joined(separator: "', '"))' (first at line \(c.mark.line)): each key may appear once in a mapping")
        case .reader(let problem, let offset, _, _):
            return PolicyDiagnostic(file: file, line: 1, column: 1, message: "YAML: \(problem)\(offset.map { " at byte \($0)" } ?? "") (the file must be UTF-8 text)")
        default:
            return PolicyDiagnostic(file: file, line: 1, column: 1, message: "YAML: \(e)")
        }
    }

    static let topKeys = ["version", "accept_remote_spawn", "max_ttl", "clock_skew", "hook_users", "clis", "rules", "tests"]
    static let cliKeys = ["path", "sha256", "args", "deny_args", "env", "task", "model_flag", "split_equals", "writable", "protected"]
    static let ruleKeys = ["name", "effect", "brokers", "clis", "cwd", "rate", "burst", "max_concurrent", "sandbox",
                           "max_runtime", "limits", "spawner", "network", "startup_check", "sources", "approve"]
    static let approveKeys = ["by", "within"]
    static let limitKeys = ["cpu", "memory", "open_files", "processes", "file_size"]
    static let testKeys = ["request", "expect", "rule"]
    static let requestKeys = ["from", "cli", "cwd", "args", "model", "task", "source", "grant"]
    static let grantKeys = ["clis", "cwd", "args", "max"]

    private static func build(_ root: Node, _ r: inout YAMLNodeReader, file: String, hash: String) -> Policy? {
        guard let top = r.mapping(root, "the policy", allowed: topKeys, required: ["version"]) else { return nil }
        if let v = top["version"], let n = r.integer(v.value, "version", range: 1...1000), n != 1 {
            r.error(v.value, "version \(n) is not supported by this spawngate; it reads version 1")
        }
        var accept = false
        if let a = top["accept_remote_spawn"], let b = r.bool(a.value, "accept_remote_spawn") { accept = b }
        var window = ValidityWindow.defaults
        if let t = top["max_ttl"], let s = duration(t.value, "max_ttl", &r, range: 1...86400) { window.maxTTL = s }
        if let t = top["clock_skew"], let s = duration(t.value, "clock_skew", &r, range: 0...600) { window.clockSkew = s }

        // Who may ask through `serve --socket`: user names or numeric uids. Missing: the gateway's own user only.
        var hookUsers: [UInt32]?
        if let h = top["hook_users"], let names = r.stringList(h.value, "hook_users") {
            var uids: [UInt32] = []
            for name in names {
                if let uid = UInt32(name) { uids.append(uid) } else if let pw = getpwnam(name) { uids.append(pw.pointee.pw_uid) } else {
                    r.error(h.value, "hook_users: no user named '\(name)' on this machine; use an existing user name or a numeric uid")
                }
            }
            hookUsers = uids
        }

        var clis: [String: CLIEntry] = [:]
        // Names of every entry, valid or not: a rule naming a broken entry should not add a second error.
        var declared: Set<String> = []
        if let c = top["clis"], let entries = r.namedEntries(c.value, "clis") {
            for (name, key, value) in entries {
                declared.insert(name)
                if let e = cli(name, key, value, &r) { clis[name] = e }
            }
        }
        var rules: [Rule] = []
        if let rs = top["rules"], let items = r.sequence(rs.value, "rules") {
            var seen: [String: Int] = [:]
            for (i, item) in items.enumerated() {
                guard let rule = rule(i, item, &r, clis: clis, declared: declared) else { continue }
                if let prev = seen[rule.name] {
                    r.error(item, "rule name '\(rule.name)' is already used by the rule at line \(prev); names identify rules in decisions and logs")
                }
                seen[rule.name] = rule.line
                rules.append(rule)
            }
        }
        // As written, on any machine; `load` checks again with symlinks resolved and `~/` expanded.
        for problem in placementDiagnostics(clis: clis, rules: rules, file: file, homes: [], resolve: { _ in nil }) {
            r.error(line: problem.line, column: problem.column, problem.message)
        }
        var tests: [PolicyTest] = []
        if let ts = top["tests"], let items = r.sequence(ts.value, "tests") {
            for (i, item) in items.enumerated() {
                if let t = test(i, item, &r, rules: rules) { tests.append(t) }
            }
        }
        return Policy(file: file, hash: hash, acceptRemoteSpawn: accept, window: window, hookUsers: hookUsers, clis: clis,
                      rules: rules, tests: tests)
    }

    /// Binaries an agent could replace (``BinaryPlacement``), located at each CLI's `path:` value.
    static func placementDiagnostics(clis: [String: CLIEntry], rules: [Rule], file: String, homes: [String],
                                     resolve: (String) -> String?) -> [PolicyDiagnostic] {
        BinaryPlacement.problems(clis: clis, rules: rules, homes: homes, resolve: resolve).map {
            let cli = clis[$0.cli]!
            return PolicyDiagnostic(file: file, line: cli.pathLine, column: cli.pathColumn, message: $0.message)
        }
    }

    /// A broker name in a policy must be one enrollment would accept (`Home.validateBrokerName`: ASCII letters,
    /// digits, '-', '_', '.'). A look-alike (U+2010 for '-', a Cyrillic 'а') never equals the enrolled name, so a
    /// deny rule naming it protects nothing and an embedded test using it proves nothing about the real broker.
    static func brokerNameProblem(_ name: String) -> String? {
        do { try Home.validateBrokerName(name) } catch {
            let odd = name.unicodeScalars.filter { !$0.isASCII }.map { s -> String in
                let hex = String(s.value, radix: 16, uppercase: true)
                return "U+" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
            }
            // Shown with every non-ASCII or control character as '?', so the message itself cannot mislead.
            let shown = String(String.UnicodeScalarView(name.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 && $0.value != 0x7F ? $0 : "?" }))
            let why = odd.isEmpty ? "" : " (it contains \(odd.joined(separator: ", ")), not ASCII: a look-alike never matches the enrolled broker)"
            return "'\(shown)' is not a broker name enrollment would accept\(why); write the name exactly as 'spawngate key list' shows it: 1–64 characters from a–z, A–Z, 0–9, '-', '_', '.', not starting with '.' or '-'"
        }
        return nil
    }

    private static func duration(_ node: Node, _ path: String, _ r: inout YAMLNodeReader, range: ClosedRange<Int64>) -> Int64? {
        guard let s = r.string(node, path) else { return nil }
        guard let v = PolicyValues.duration(s), range.contains(v) else {
            r.error(node, "\(path) must be a duration like 30s, 2m, 1h or 1d, from \(range.lowerBound)s to \(range.upperBound)s; got '\(s)'")
            return nil
        }
        return v
    }

    private static func cli(_ name: String, _ key: Node, _ node: Node, _ r: inout YAMLNodeReader) -> CLIEntry? {
        let p = "clis.\(name)"
        if name == "*" || name.contains(where: { $0 == "/" || $0.isWhitespace }) {
            r.error(key, "'\(name)' is not a usable CLI name; requests name CLIs by a plain word such as 'claude'")
        }
        guard let m = r.mapping(node, p, allowed: cliKeys, required: ["path", "args"]) else { return nil }
        var ok = true
        var path = ""
        if let v = m["path"], let s = r.string(v.value, "\(p).path") {
            if !s.hasPrefix("/") {
                r.error(v.value, "\(p).path must be an absolute path such as /usr/local/bin/\(name); programs are never looked up in PATH")
                ok = false
            } else if s.split(separator: "/").contains(where: { $0 == "." || $0 == ".." }) || s.hasSuffix("/") {
                r.error(v.value, "\(p).path must be a plain absolute path to a file, without '.', '..' or a trailing '/'")
                ok = false
            }
            path = s
        } else { ok = false }
        var sha: [UInt8]?
        if let v = m["sha256"], let s = r.string(v.value, "\(p).sha256") {
            if let b = [UInt8](hex: s), b.count == 32 { sha = b } else {
                r.error(v.value, "\(p).sha256 must be 64 hex digits (as 'sha256sum \(path.isEmpty ? "FILE" : path)' prints)")
                ok = false
            }
        }
        var shapes: [[ArgPattern]] = []
        if let v = m["args"], let items = r.sequence(v.value, "\(p).args") {
            for (i, item) in items.enumerated() {
                guard case .sequence = item else {
                    r.error(item, "\(p).args[\(i)] must be a list of argument patterns, e.g. [] for no arguments or [\"--model\", \"sonnet|opus\"]")
                    ok = false
                    continue
                }
                guard let elems = r.stringList(item, "\(p).args[\(i)]") else { ok = false; continue }
                var shape: [ArgPattern] = []
                for (j, e) in elems.enumerated() {
                    switch ArgPattern.parse(e) {
                    case .success(let a): shape.append(a)
                    case .failure(let why): r.error(item, "\(p).args[\(i)][\(j)]: \(why)"); ok = false
                    }
                }
                shapes.append(shape)
            }
        } else { ok = false }
        var denyArgs: [ArgPattern] = []
        if let v = m["deny_args"], let elems = r.stringList(v.value, "\(p).deny_args") {
            for e in elems {
                switch ArgPattern.parse(e) {
                case .success(let a): denyArgs.append(a)
                case .failure(let why): r.error(v.value, "\(p).deny_args: \(why)"); ok = false
                }
            }
        }
        var env: [String] = []
        if let v = m["env"], let names = r.stringItems(v.value, "\(p).env") {
            for (n, node) in names {
                if let why = EnvironmentPolicy.refusal(n) { r.error(node, "\(p).env: \(why)"); ok = false } else { env.append(n) }
            }
        }
        var task = CLIEntry.TaskDelivery.afterDoubleDash
        if let v = m["task"], let s = r.string(v.value, "\(p).task") {
            switch s {
            case "after_double_dash": task = .afterDoubleDash
            case "stdin": task = .stdin
            case "none": task = .none
            default:
                if s.hasPrefix("env:") {
                    // The request's task text becomes this variable's value: a remote requester would choose it.
                    if let why = EnvironmentPolicy.refusal(String(s.dropFirst(4))) {
                        r.error(v.value, "\(p).task: \(why)")
                        ok = false
                    } else {
                        task = .environment(String(s.dropFirst(4)))
                    }
                } else {
                    r.error(v.value, "\(p).task must be after_double_dash, stdin, env:VARIABLE or none; got '\(s)'")
                    ok = false
                }
            }
        }
        var modelFlag: String?
        if let v = m["model_flag"], let s = r.string(v.value, "\(p).model_flag") {
            if s.hasPrefix("-") { modelFlag = s } else { r.error(v.value, "\(p).model_flag must be an option such as --model"); ok = false }
        }
        var split = false
        if let v = m["split_equals"], let b = r.bool(v.value, "\(p).split_equals") { split = b }
        var writable: [String] = []
        if let v = m["writable"], let list = r.stringList(v.value, "\(p).writable") {
            for w in list where !w.hasPrefix("/") && !w.hasPrefix("~/") {
                r.error(v.value, "\(p).writable: '\(w)' must be an absolute path or start with ~/"); ok = false
            }
            writable = list
        }
        var protected: [String] = []
        if let v = m["protected"], let list = r.stringList(v.value, "\(p).protected") {
            for w in list where w.hasPrefix("/") || w.split(separator: "/").contains("..") {
                r.error(v.value, "\(p).protected: '\(w)' must be a path relative to the working directory"); ok = false
            }
            protected = list
        }
        guard ok else { return nil }
        let pathMark = m["path"]?.value.mark
        return CLIEntry(name: name, path: path, sha256: sha, args: shapes, denyArgs: denyArgs, env: env, task: task,
                        modelFlag: modelFlag, splitEquals: split, writable: writable, protected: protected, line: key.mark?.line ?? 0,
                        pathLine: pathMark?.line ?? 1, pathColumn: pathMark?.column ?? 1)
    }

    private static func rule(_ i: Int, _ node: Node, _ r: inout YAMLNodeReader, clis: [String: CLIEntry], declared: Set<String>) -> Rule? {
        let p = "rules[\(i)]"
        guard let m = r.mapping(node, p, allowed: ruleKeys, required: ["name", "brokers"]) else { return nil }
        let start = r.diagnostics.count
        let name = m["name"].flatMap { r.string($0.value, "\(p).name") } ?? ""
        let label = name.isEmpty ? p : "rule '\(name)'"
        var effect = Rule.Effect.allow
        if let v = m["effect"], let s = r.string(v.value, "\(label): effect") {
            if let e = Rule.Effect(rawValue: s) { effect = e } else { r.error(v.value, "\(label): effect must be allow or deny; got '\(s)'") }
        }
        var brokers = Rule.Brokers.named([])
        if let v = m["brokers"], let items = r.stringItems(v.value, "\(label): brokers") {
            let list = items.map(\.value)
            if list.contains("*") {
                if list.count > 1 { r.error(v.value, "\(label): brokers: \"*\" already means every broker; list it alone") }
                brokers = .any
            } else {
                for (b, node) in items {
                    if b.contains("*") || b.contains("?") {
                        r.error(node, "\(label): brokers: '\(b)': \"*\" on its own is the only wildcard for brokers")
                    } else if let why = brokerNameProblem(b) {
                        r.error(node, "\(label): brokers: \(why)")
                    }
                }
                brokers = .named(Set(list))
            }
        }
        var ruleCLIs: Set<String>?
        if let v = m["clis"], let items = r.stringItems(v.value, "\(label): clis") {
            let list = items.map(\.value)
            if list == ["*"] { ruleCLIs = nil } else {
                for (c, node) in items where !declared.contains(c) {
                    let hint = closestMatch(to: c, in: Array(clis.keys)).map { " (did you mean '\($0)'?)" } ?? ""
                    r.error(node, "\(label): clis: '\(c)' is not defined under clis:\(hint)")
                }
                ruleCLIs = Set(list)
            }
        } else if effect == .allow {
            r.error(node, "\(label) needs 'clis': an allow rule must name the CLIs it allows")
        }
        var cwd: [PathPattern]?
        if let v = m["cwd"], let items = r.stringItems(v.value, "\(label): cwd") {
            var pats: [PathPattern] = []
            for (c, node) in items {
                switch PathPattern.parse(c) {
                case .success(let pp): pats.append(pp)
                case .failure(let why): r.error(node, "\(label): cwd: \(why)")
                }
            }
            cwd = pats
        } else if effect == .allow {
            r.error(node, "\(label) needs 'cwd': an allow rule must name the directories agents may work in")
        }
        // Where the rule's requests must come from; an empty list matches nothing, like every list here.
        var sources: [SourcePattern]?
        if let v = m["sources"], let items = r.stringItems(v.value, "\(label): sources") {
            var pats: [SourcePattern] = []
            for (c, node) in items {
                switch SourcePattern.parse(c) {
                case .success(let sp): pats.append(sp)
                case .failure(let why): r.error(node, "\(label): sources: \(why)")
                }
            }
            sources = pats
        }
        var rate: Rate?
        if let v = m["rate"], let s = r.string(v.value, "\(label): rate") {
            rate = Rate.parse(s)
            if rate == nil { r.error(v.value, "\(label): rate must look like 20/hour (N/second, N/minute, N/hour or N/day); got '\(s)'") }
        }
        var burst: Int64 = 1
        if let v = m["burst"] {
            if rate == nil && m["rate"] == nil { r.error(v.value, "\(label): burst needs a rate") }
            if let b = r.integer(v.value, "\(label): burst", range: 1...100_000) { burst = b }
        }
        var maxConcurrent: Int64?
        if let v = m["max_concurrent"] { maxConcurrent = r.integer(v.value, "\(label): max_concurrent", range: 1...100_000) }
        var sandbox = SandboxProfile.standard
        if let v = m["sandbox"], let s = r.string(v.value, "\(label): sandbox") {
            if let sp = SandboxProfile(rawValue: s) { sandbox = sp } else { r.error(v.value, "\(label): sandbox must be none, standard or strict; got '\(s)'") }
        }
        var maxRuntime: Int64?
        if let v = m["max_runtime"] { maxRuntime = duration(v.value, "\(label): max_runtime", &r, range: 1...(30 * 86400)) }
        // How long a started agent is watched before its receipt says it started: one that exits sooner is
        // reported as start_failed, with its status and last output.
        var startupCheck = Rule.defaultStartupCheck
        if let v = m["startup_check"], let d = duration(v.value, "\(label): startup_check", &r, range: 0...60) { startupCheck = d }
        // `approve: required`, or `approve: {by: [users], within: 10m}`: held for a person before it starts.
        var approval: Rule.Approval?
        if let v = m["approve"] {
            if case .scalar = v.value {
                if r.string(v.value, "\(label): approve") == "required" { approval = Rule.Approval(by: nil, within: Rule.Approval.defaultWithin) } else {
                    r.error(v.value, "\(label): approve must be 'required' or a mapping with 'by' (the users who may approve) and 'within' (how long a request waits, e.g. 10m)")
                }
            } else if let am = r.mapping(v.value, "\(label): approve", allowed: approveKeys) {
                var a = Rule.Approval(by: nil, within: Rule.Approval.defaultWithin)
                if let b = am["by"] { a.by = r.stringList(b.value, "\(label): approve.by") ?? [] }
                if let w = am["within"], let d = duration(w.value, "\(label): approve.within", &r, range: 10...86400) { a.within = d }
                approval = a
            }
        }
        var limits = ResourceLimits()
        if let v = m["limits"], let lm = r.mapping(v.value, "\(label): limits", allowed: limitKeys) {
            if let x = lm["cpu"] { limits.cpuSeconds = duration(x.value, "\(label): limits.cpu", &r, range: 1...(30 * 86400)) }
            for (key, kp) in [("memory", \ResourceLimits.memoryBytes), ("file_size", \ResourceLimits.fileSizeBytes)] {
                if let x = lm[key], let s = r.string(x.value, "\(label): limits.\(key)") {
                    if let b = PolicyValues.size(s) { limits[keyPath: kp] = b } else { r.error(x.value, "\(label): limits.\(key) must be a size like 512M or 4GiB; got '\(s)'") }
                }
            }
            if let x = lm["open_files"] { limits.openFiles = r.integer(x.value, "\(label): limits.open_files", range: 16...1_048_576) }
            if let x = lm["processes"] { limits.processes = r.integer(x.value, "\(label): limits.processes", range: 1...1_000_000) }
        }
        var spawner = SpawnerBackend.local
        if let v = m["spawner"], let s = r.string(v.value, "\(label): spawner") {
            if let b = SpawnerBackend(rawValue: s) { spawner = b } else { r.error(v.value, "\(label): spawner must be local or agent-relay; got '\(s)'") }
        }
        var network = NetworkAccess.shared
        if let v = m["network"], let s = r.string(v.value, "\(label): network") {
            if let n = NetworkAccess(rawValue: s) { network = n } else { r.error(v.value, "\(label): network must be shared or none; got '\(s)'") }
        }
        // A rule never asks for more than its profile enforces: only strict has a network namespace, and the
        // broker behind agent-relay starts agents without our sandbox.
        if network == .none, sandbox != .strict, let v = m["network"] {
            r.error(v.value, "\(label): network: none needs sandbox: strict (only strict has its own network namespace); set sandbox: strict or remove network")
        }
        if effect == .deny {
            for k in ["rate", "burst", "max_concurrent", "sandbox", "max_runtime", "limits", "spawner", "network", "startup_check", "approve"] {
                if let v = m[k] { r.error(v.key, "\(label): '\(k)' has no meaning on a deny rule; remove it") }
            }
        }
        guard r.diagnostics.count == start || !r.diagnostics[start...].contains(where: { $0.severity == .error }), !name.isEmpty else { return nil }
        return Rule(name: name, effect: effect, brokers: brokers, clis: ruleCLIs, cwd: cwd, sources: sources, rate: rate, burst: burst,
                    maxConcurrent: maxConcurrent, sandbox: sandbox, maxRuntime: maxRuntime, limits: limits, spawner: spawner,
                    network: network, startupCheck: startupCheck, approval: approval, line: node.mark?.line ?? 0)
    }

    private static func test(_ i: Int, _ node: Node, _ r: inout YAMLNodeReader, rules: [Rule]) -> PolicyTest? {
        let p = "tests[\(i)]"
        guard let m = r.mapping(node, p, allowed: testKeys, required: ["request", "expect"]) else { return nil }
        let start = r.diagnostics.count
        var request = PolicyRequest(broker: "", cli: "", cwd: nil)
        if let v = m["request"], let q = r.mapping(v.value, "\(p).request", allowed: requestKeys, required: ["from", "cli"]) {
            request.broker = q["from"].flatMap { r.string($0.value, "\(p).request.from") } ?? ""
            if let v = q["from"], !request.broker.isEmpty, let why = brokerNameProblem(request.broker) {
                r.error(v.value, "\(p).request.from: \(why)")
            }
            request.cli = q["cli"].flatMap { r.string($0.value, "\(p).request.cli") } ?? ""
            request.cwd = q["cwd"].flatMap { r.string($0.value, "\(p).request.cwd") }
            request.args = q["args"].flatMap { r.stringList($0.value, "\(p).request.args") } ?? []
            request.model = q["model"].flatMap { r.string($0.value, "\(p).request.model") }
            request.task = q["task"].flatMap { r.string($0.value, "\(p).request.task") }
            // The grant the request is made under, as its limits (the target checks them after the policy).
            if let v = q["grant"], let g = r.mapping(v.value, "\(p).request.grant", allowed: grantKeys) {
                let clis = g["clis"].flatMap { r.stringList($0.value, "\(p).request.grant.clis") }
                let cwd = g["cwd"].flatMap { r.stringList($0.value, "\(p).request.grant.cwd") }
                var args: [[String]]?
                if let a = g["args"], let shapes = r.stringList(a.value, "\(p).request.grant.args") {
                    args = shapes.map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
                }
                let max = g["max"].flatMap { r.integer($0.value, "\(p).request.grant.max", range: 1...1_000_000) }
                switch GrantScope.parse(targets: nil, clis: clis, cwd: cwd, args: args, max: max) {
                case .success(let scope): request.grant = [GrantLimit(name: "test", scope: scope)]
                case .failure(let why): r.error(v.value, "\(p).request.grant: \(why)")
                }
            }
            if let v = q["source"], let s = r.string(v.value, "\(p).request.source") {
                if let place = RequestSource(recorded: s) { request.source = place } else {
                    r.error(v.value, "\(p).request.source: '\(s)' is not an IP address, 'local' or 'workspace'")
                }
            }
        }
        var expect = ReasonCode.allowed
        if let v = m["expect"], let s = r.string(v.value, "\(p).expect") {
            if s == "allow" { expect = .allowed } else if s == "pending" { expect = .approvalPending } else if let code = ReasonCode(rawValue: s), PolicyEngine.policyReasons.contains(code) { expect = code } else {
                let options = ["allow", "pending"] + PolicyEngine.policyReasons.map(\.rawValue)
                let hint = closestMatch(to: s, in: options).map { " (did you mean '\($0)'?)" } ?? ""
                r.error(v.value, "\(p).expect must be allow, pending (a rule that says approve:) or a reason the policy can give (\(PolicyEngine.policyReasons.map(\.rawValue).joined(separator: ", "))); got '\(s)'\(hint)")
            }
        }
        var rule: String?
        if let v = m["rule"], let s = r.string(v.value, "\(p).rule") {
            if !rules.contains(where: { $0.name == s }) { r.error(v.value, "\(p).rule: no rule is named '\(s)'") }
            rule = s
        }
        guard !r.diagnostics[start...].contains(where: { $0.severity == .error }) else { return nil }
        return PolicyTest(request: request, expect: expect, rule: rule, line: node.mark?.line ?? 0, column: node.mark?.column ?? 0)
    }
}
