/// One problem in a policy file, located at `file:line:column` and phrased as what is expected.
public struct PolicyDiagnostic: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Severity: String, Sendable { case error, warning }

    public let file: String
    public let line: Int
    public let column: Int
    public let severity: Severity
    public let message: String

    public init(file: String, line: Int, column: Int, severity: Severity = .error, message: String) {
        self.file = file; self.line = line; self.column = column; self.severity = severity; self.message = message
    }

    public var description: String { "\(file):\(line):\(column): \(severity.rawValue): \(message)" }
}

/// A policy that could not be loaded: every problem found, in file order.
public struct PolicyLoadError: Error, Sendable, CustomStringConvertible {
    public let diagnostics: [PolicyDiagnostic]
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}

/// "Did you mean" for a misspelt key: the closest allowed key within a small edit distance.
func closestMatch(to word: String, in candidates: [String]) -> String? {
    func distance(_ a: [Character], _ b: [Character]) -> Int {
        var prev = Array(0...b.count)
        for (i, ca) in a.enumerated() {
            var cur = [i + 1] + Array(repeating: 0, count: b.count)
            for (j, cb) in b.enumerated() {
                cur[j + 1] = min(prev[j + 1] + 1, cur[j] + 1, prev[j] + (ca == cb ? 0 : 1))
            }
            prev = cur
        }
        return prev[b.count]
    }
    let w = Array(word.lowercased())
    let scored = candidates.map { ($0, distance(w, Array($0))) }.sorted { $0.1 < $1.1 }
    if let best = scored.first, best.1 <= max(2, w.count / 3) { return best.0 }
    // "alow_args" → "args": a known key after a misspelt qualifier.
    let tail = word.split(separator: "_").last.map(String.init) ?? word
    return candidates.first { $0 == tail }
}

/// Why a value was refused: one sentence, used where a parser reports rather than throws.
public struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
