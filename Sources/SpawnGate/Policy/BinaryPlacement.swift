import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A CLI's binary must lie outside every place an agent may write: every directory an allow rule's `cwd` can
/// name (an agent works there, and `standard` lets it write anything beneath) and every CLI's `writable:` path.
/// Otherwise an agent can replace the binary, and the next spawn of that CLI, by anyone, runs the agent's code.
/// The binary is checked as written and, on this machine, after resolving symlinks (an installer often links
/// `/usr/local/bin/claude` into the user's home).
enum BinaryPlacement {
    struct Problem: Equatable {
        let cli: String
        let message: String
    }

    /// `resolve` gives a path's real path on this machine (nil: check it as written only); `homes` are what
    /// `~/` in `writable:` may mean (none: such paths are checked where they can be resolved).
    static func problems(clis: [String: CLIEntry], rules: [Rule], homes: [String], resolve: (String) -> String?) -> [Problem] {
        let allow = rules.filter { $0.effect == .allow }
        var out: [Problem] = []
        for name in clis.keys.sorted() {
            let cli = clis[name]!
            let binaries = unique([cli.path] + [resolve(cli.path)].compactMap { $0 })
            func label(_ b: String) -> String { b == cli.path ? cli.path : "\(cli.path), which resolves to \(b)," }
            let fix = "install the CLI outside every allowed cwd and writable: path (for example in /usr/local/bin, owned by root) and point path: at it"
            found: for b in binaries {
                for rule in allow {
                    for pattern in rule.cwd ?? [] {
                        guard let dir = ancestors(of: b).first(where: { pattern.matches(canonical: $0) }) else { continue }
                        out.append(Problem(cli: name, message: "clis.\(name).path: \(label(b)) lies inside \(dir), a working directory that rule '\(rule.name)' allows (\(pattern.source)): an agent started there could replace the binary, and the next spawn of '\(name)' would run its code; \(fix), or narrow the rule's cwd"))
                        break found
                    }
                }
                for owner in clis.keys.sorted() {
                    for w in clis[owner]!.writable {
                        let expanded = w.hasPrefix("~/") ? homes.map { $0 + String(w.dropFirst(1)) } : [w]
                        let places = unique(expanded.flatMap { [normalized($0)] + [resolve($0)].compactMap { $0 } })
                        guard let place = places.first(where: { b == $0 || b.hasPrefix($0 == "/" ? "/" : $0 + "/") }) else { continue }
                        out.append(Problem(cli: name, message: "clis.\(name).path: \(label(b)) lies inside \(place), which clis.\(owner).writable lists ('\(w)'): an agent of '\(owner)' may write there, so it could replace the binary and the next spawn of '\(name)' would run its code; \(fix), or remove that path from writable:"))
                        break found
                    }
                }
            }
        }
        return out
    }

    /// The directories above a path, from `/` down to its parent.
    static func ancestors(of path: String) -> [String] {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).dropLast()
        var out = ["/"]
        var current = ""
        for p in parts { current += "/" + p; out.append(current) }
        return out
    }

    /// The real path of `path`, or of its longest existing leading part with the rest appended (a binary not yet
    /// installed still resolves through a linked directory); nil when nothing of it resolves to something new.
    static func realPath(_ path: String) -> String? {
        var head = normalized(path), tail: [Substring] = []
        while true {
            if let r = realpath(head, nil) {
                defer { free(r) }
                let base = String(cString: r)
                let full = tail.isEmpty ? base : (base == "/" ? "" : base) + "/" + tail.reversed().joined(separator: "/")
                return full == normalized(path) ? nil : full
            }
            guard head != "/", let slash = head.lastIndex(of: "/") else { return nil }
            tail.append(head[head.index(after: slash)...])
            head = slash == head.startIndex ? "/" : String(head[..<slash])
        }
    }

    /// Repeated and trailing slashes removed (writable: paths are written by hand).
    static func normalized(_ path: String) -> String {
        "/" + path.split(separator: "/", omittingEmptySubsequences: true).joined(separator: "/")
    }

    /// What `~/` means for the gateway: `$HOME` (as the spawner expands it) and the user's home in the password database.
    static var gatewayHomes: [String] {
        var homes: [String] = []
        if let h = ProcessInfo.processInfo.environment["HOME"], h.hasPrefix("/") { homes.append(h) }
        if let pw = getpwuid(geteuid()), let dir = pw.pointee.pw_dir { homes.append(String(cString: dir)) }
        return unique(homes)
    }

    private static func unique(_ list: [String]) -> [String] {
        var seen: Set<String> = []
        return list.filter { seen.insert($0).inserted }
    }
}
