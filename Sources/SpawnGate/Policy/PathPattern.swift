#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An allowed working directory: an absolute path matched component by component. `*` and `?` match within one
/// component; a final `/**` means the directory itself and everything below it. `/w/app` never admits
/// `/w/app-evil`, because whole components are compared, never string prefixes.
public struct PathPattern: Sendable, Equatable, CustomStringConvertible {
    let components: [ArgPattern]
    let recursive: Bool
    public let source: String

    public var description: String { source }

    static func parse(_ text: String) -> Result<PathPattern, Refusal> {
        guard text.hasPrefix("/") else { return .failure(Refusal("'\(text)' is not an absolute path; working directories must start with '/'")) }
        var parts = text.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        var recursive = false
        if parts.last == "**" { recursive = true; parts.removeLast() }
        var comps: [ArgPattern] = []
        for p in parts {
            if p == "." || p == ".." { return .failure(Refusal("'\(text)' contains '\(p)'; write the directory's real path")) }
            if p.contains("**") { return .failure(Refusal("'\(text)': '**' is allowed only as the last component ('/dir/**')")) }
            if p.contains("|") { return .failure(Refusal("'\(text)': '|' is not allowed in a path; list each directory separately")) }
            switch ArgPattern.parse(p) {
            case .success(let a): comps.append(a)
            case .failure(let why): return .failure(why)
            }
        }
        return .success(PathPattern(components: comps, recursive: recursive, source: text))
    }

    /// `path` must already be canonical (absolute, no `.`/`..`, symlinks resolved).
    public func matches(canonical path: String) -> Bool {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        if recursive { guard parts.count >= components.count else { return false } } else { guard parts.count == components.count else { return false } }
        for (i, c) in components.enumerated() where !c.matches(String(parts[i])) { return false }
        return true
    }

    /// The leading components without wildcards, as a path (for checking that the operator wrote a real path).
    var literalPrefix: String {
        var out: [String] = []
        for c in components { guard let l = c.literal else { break }; out.append(l) }
        return "/" + out.joined(separator: "/")
    }
}

/// How a request's working directory becomes the canonical path that patterns are matched against.
public enum PathResolver: Sendable {
    /// realpath(3): `..` and every symlink resolved; the directory must exist. Used for real decisions.
    case filesystem
    /// `.`, `..` and repeated slashes resolved as text, no file system access. Used by a policy's embedded tests,
    /// which must give the same answer on any machine.
    case lexical

    public func resolve(_ path: String) -> Result<String, Refusal> {
        guard path.hasPrefix("/") else { return .failure(Refusal("'\(path)' is not an absolute path")) }
        switch self {
        case .lexical:
            var out: [Substring] = []
            for p in path.split(separator: "/", omittingEmptySubsequences: true) {
                if p == "." { continue }
                if p == ".." { if !out.isEmpty { out.removeLast() }; continue }
                out.append(p)
            }
            return .success("/" + out.joined(separator: "/"))
        case .filesystem:
            guard let resolved = realpath(path, nil) else {
                return .failure(Refusal("'\(path)' cannot be resolved: \(String(cString: strerror(errno)))"))
            }
            defer { free(resolved) }
            let canonical = String(cString: resolved)
            var st = stat()
            guard stat(canonical, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
                return .failure(Refusal("'\(path)' is not a directory"))
            }
            return .success(canonical)
        }
    }
}
