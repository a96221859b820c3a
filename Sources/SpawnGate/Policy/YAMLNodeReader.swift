import Yams

/// Reads a composed YAML tree into typed values, collecting a located diagnostic for every deviation instead of
/// stopping at the first. It reads scalars as the text the operator wrote, so YAML 1.1's surprises (`no` as
/// false, `0x10` as 16, `1:30` as 90) never change a value silently: the expected type decides.
struct YAMLNodeReader {
    let file: String
    private(set) var diagnostics: [PolicyDiagnostic] = []

    init(file: String) { self.file = file }

    mutating func error(_ node: Node?, _ message: String) {
        let mark = node?.mark
        diagnostics.append(PolicyDiagnostic(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1, message: message))
    }

    mutating func error(line: Int, column: Int, _ message: String) {
        diagnostics.append(PolicyDiagnostic(file: file, line: line, column: column, message: message))
    }

    mutating func warning(_ node: Node?, _ message: String) {
        let mark = node?.mark
        diagnostics.append(PolicyDiagnostic(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1, severity: .warning, message: message))
    }

    var hasErrors: Bool { diagnostics.contains { $0.severity == .error } }

    /// A mapping whose keys are all in `allowed` and which holds every key in `required`.
    mutating func mapping(_ node: Node, _ path: String, allowed: [String], required: [String] = []) -> [String: (key: Node, value: Node)]? {
        guard case .mapping(let m) = node else {
            error(node, "\(path) must be a mapping (key: value lines), found \(describe(node))")
            return nil
        }
        var out: [String: (key: Node, value: Node)] = [:]
        for (k, v) in m {
            guard case .scalar(let s) = k else { error(k, "\(path): keys must be plain words"); continue }
            let key = s.string
            guard allowed.contains(key) else {
                let hint = closestMatch(to: key, in: allowed).map { " (did you mean '\($0)'?)" } ?? ""
                error(k, "unknown key '\(key)' in \(path)\(hint); allowed keys: \(allowed.joined(separator: ", "))")
                continue
            }
            out[key] = (k, v)
        }
        for key in required where out[key] == nil {
            error(node, "\(path) needs '\(key)'")
        }
        return out
    }

    /// Any mapping with free-form keys (e.g. the names under `clis:`), in file order.
    mutating func namedEntries(_ node: Node, _ path: String) -> [(name: String, key: Node, value: Node)]? {
        guard case .mapping(let m) = node else {
            error(node, "\(path) must be a mapping of names to entries, found \(describe(node))")
            return nil
        }
        var out: [(String, Node, Node)] = []
        for (k, v) in m {
            guard case .scalar(let s) = k, !s.string.isEmpty else { error(k, "\(path): every entry needs a plain name"); continue }
            out.append((s.string, k, v))
        }
        return out
    }

    mutating func sequence(_ node: Node, _ path: String) -> [Node]? {
        guard case .sequence(let s) = node else {
            error(node, "\(path) must be a list ([a, b] or lines starting with '- '), found \(describe(node))")
            return nil
        }
        return Array(s)
    }

    mutating func string(_ node: Node, _ path: String) -> String? {
        guard case .scalar(let s) = node else {
            error(node, "\(path) must be a single value, found \(describe(node))")
            return nil
        }
        if s.style == .plain, s.string == "~" || s.string == "null" || s.string.isEmpty {
            error(node, "\(path) is empty; write a value (quote it if it really is the text \"\(s.string)\")")
            return nil
        }
        guard !s.string.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            error(node, "\(path) contains a control character")
            return nil
        }
        return s.string
    }

    mutating func stringList(_ node: Node, _ path: String) -> [String]? {
        guard let items = sequence(node, path) else { return nil }
        var out: [String] = []
        for (i, item) in items.enumerated() {
            guard let s = string(item, "\(path)[\(i)]") else { continue }
            out.append(s)
        }
        return out.count == items.count ? out : nil
    }

    /// A list of single values, each with its own node (so an error can point at the element).
    mutating func stringItems(_ node: Node, _ path: String) -> [(value: String, node: Node)]? {
        guard let items = sequence(node, path) else { return nil }
        var out: [(String, Node)] = []
        for (i, item) in items.enumerated() {
            guard let s = string(item, "\(path)[\(i)]") else { continue }
            out.append((s, item))
        }
        return out.count == items.count ? out : nil
    }

    mutating func bool(_ node: Node, _ path: String) -> Bool? {
        guard case .scalar(let s) = node, s.style == .plain, s.string == "true" || s.string == "false" else {
            error(node, "\(path) must be true or false (not yes/no/on/off, not quoted)")
            return nil
        }
        return s.string == "true"
    }

    mutating func integer(_ node: Node, _ path: String, range: ClosedRange<Int64>) -> Int64? {
        guard case .scalar(let s) = node, s.style == .plain, s.string.allSatisfy(\.isASCII), let v = Int64(s.string), range.contains(v),
              s.string.first != "+", !(s.string.hasPrefix("0") && s.string.count > 1)
        else {
            error(node, "\(path) must be a whole number from \(range.lowerBound) to \(range.upperBound)")
            return nil
        }
        return v
    }

    private func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let s): "the value '\(s.string.prefix(40))'"
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .alias: "an alias"
        }
    }
}

extension Node {
    /// Anchors and aliases let one edit change many places and let a small file expand without bound; a policy
    /// is refused if it uses them.
    var usesAnchors: Node? {
        switch self {
        case .alias: return self
        case .scalar(let s): return s.anchor != nil ? self : nil
        case .mapping(let m):
            if m.anchor != nil { return self }
            for (k, v) in m { if let n = k.usesAnchors ?? v.usesAnchors { return n } }
            return nil
        case .sequence(let s):
            if s.anchor != nil { return self }
            for v in s { if let n = v.usesAnchors { return n } }
            return nil
        }
    }
}
