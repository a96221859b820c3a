/// One element of an allowed argv shape: a literal, an alternation `a|b`, or a glob with `*` and `?`.
///
/// A pattern is always matched against exactly one argv element, so `*` can never swallow a neighbouring
/// argument: `["--resume", "*"]` admits `--resume x` and never `--resume x --dangerously-skip-permissions`
/// (sudo's joined-string matching is the mistake this avoids). `\` escapes `|`, `*`, `?` and `\`.
public struct ArgPattern: Sendable, Equatable, CustomStringConvertible {
    enum Token: Sendable, Equatable { case scalar(Unicode.Scalar), star, question }

    let alternatives: [[Token]]
    public let source: String

    public var description: String { source }

    /// Parses a pattern, or returns a sentence saying what is wrong with it.
    static func parse(_ text: String) -> Result<ArgPattern, Refusal> {
        var alternatives: [[Token]] = [[]]
        var escaped = false
        for s in text.unicodeScalars {
            if escaped {
                guard "|*?\\".unicodeScalars.contains(s) else { return .failure(Refusal("'\\\(s)' is not an escape: only \\|, \\*, \\? and \\\\ are")) }
                alternatives[alternatives.count - 1].append(.scalar(s))
                escaped = false
                continue
            }
            switch s {
            case "\\": escaped = true
            case "|": alternatives.append([])
            case "*": alternatives[alternatives.count - 1].append(.star)
            case "?": alternatives[alternatives.count - 1].append(.question)
            default: alternatives[alternatives.count - 1].append(.scalar(s))
            }
        }
        if escaped { return .failure(Refusal("the pattern ends with a lone '\\'")) }
        if alternatives.count > 1, alternatives.contains(where: \.isEmpty) {
            return .failure(Refusal("'\(text)' has an empty alternative; write each choice out (\"a|b\")"))
        }
        return .success(ArgPattern(alternatives: alternatives, source: text))
    }

    public func matches(_ arg: String) -> Bool {
        let scalars = Array(arg.unicodeScalars)
        return alternatives.contains { Self.glob($0[...], scalars[...]) }
    }

    /// Iterative wildcard match with single backtrack point: linear in practice, never exponential.
    private static func glob(_ pattern: ArraySlice<Token>, _ text: ArraySlice<Unicode.Scalar>) -> Bool {
        let p = Array(pattern), t = Array(text)
        var pi = 0, ti = 0, starP = -1, starT = 0
        while ti < t.count {
            if pi < p.count, p[pi] == .question || p[pi] == .scalar(t[ti]) {
                pi += 1; ti += 1
            } else if pi < p.count, p[pi] == .star {
                starP = pi; starT = ti; pi += 1
            } else if starP >= 0 {
                pi = starP + 1; starT += 1; ti = starT
            } else {
                return false
            }
        }
        while pi < p.count, p[pi] == .star { pi += 1 }
        return pi == p.count
    }

    /// Whether `option` (`--` and at least one more character) could be an abbreviation of a long option this
    /// pattern matches: some `--…` string the pattern matches starts with `option`. A prefix of the text always
    /// ends on a token boundary, so that is "some leading run of a `--` alternative's tokens matches it whole".
    func deniesLongOption(abbreviatedAs option: String) -> Bool {
        let text = Array(option.unicodeScalars)
        return alternatives.contains { tokens in (0...tokens.count).contains { Self.glob(tokens[0..<$0], text[...]) } }
    }

    /// True when this pattern can only ever match one literal string (no glob, one alternative).
    var literal: String? {
        guard alternatives.count == 1 else { return nil }
        var out = String.UnicodeScalarView()
        for t in alternatives[0] { guard case .scalar(let s) = t else { return nil }; out.append(s) }
        return String(out)
    }
}
