import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where git takes code to run from, for the repository a working directory belongs to: the places `strict` keeps
/// read-only so that nothing the agent writes runs as the operator at their next git command in or above the cwd.
///
/// Covered: the repository's git directory found as git finds it (`.git` directory, or a gitdir file such as a
/// worktree's or a submodule checkout's, and its `commondir`), in it `config`, `config.worktree`, `hooks/`,
/// `modules/` (every submodule's config and hooks) and `info/`; the gitdir file itself; every file that config
/// includes (`include.path`, `includeIf.*.path`) and the `core.hooksPath` directory, wherever they point; the
/// operator's global config (`~/.gitconfig`, `$XDG_CONFIG_HOME/git/config`); and a `.git` the agent could create in
/// the cwd. Not covered (SECURITY.md): the cwd made into a bare repository (HEAD, objects/, refs/ and config
/// written into the cwd itself; set `safe.bareRepository=explicit`), and repositories below the cwd.
struct GitControlPaths {
    /// Existing paths to mount read-only on themselves.
    var readOnly: [String] = []
    /// Paths named by the configuration (includes, hooksPath) that do not exist, inside a place the agent may
    /// write: it could create them. The start is refused.
    var missing: [String] = []
    /// Standard files and directories of the git directory that do not exist yet, inside a place the agent may
    /// write: kept empty and read-only in the sandbox.
    var emptyFiles: [String] = []
    var emptyDirectories: [String] = []
    /// Symlinks among them inside a place the agent may write: it could replace the link itself.
    var symlinks: [String] = []
    /// The cwd has no `.git`: one created there would take over the operator's git commands in the cwd.
    var blockNewGit = false
    var cwdGit = ""

    /// `writable`: the directories the agent may write (cwd, writable: paths); `home`: the operator's home.
    static func find(cwd: String, writable: [String], home: String?, environment: [String: String] = [:]) -> GitControlPaths {
        var out = GitControlPaths()
        enum Kind { case file, directory, named }
        var configs: [(String, Kind)] = []
        func underWritable(_ p: String) -> Bool { writable.contains { Bubblewrap.under($0, p) } }
        func add(_ path: String, _ kind: Kind = .named, depth: Int = 0) {
            let p = lexical(path)
            switch lstatType(p) {
            case S_IFLNK:
                if underWritable(p) { if !out.symlinks.contains(p) { out.symlinks.append(p) } }
                else if depth < 8, let real = realpath(p, nil) { add(String(cString: real), kind, depth: depth + 1); free(real) }
            case 0:
                guard underWritable(p) else { return }
                switch kind {
                case .file: if !out.emptyFiles.contains(p) { out.emptyFiles.append(p) }
                case .directory: if !out.emptyDirectories.contains(p) { out.emptyDirectories.append(p) }
                case .named: if !out.missing.contains(p) { out.missing.append(p) }
                }
            default: if !out.readOnly.contains(p) { out.readOnly.append(p) }
            }
        }
        if let home {
            configs.append((home + "/.gitconfig", .file))
            configs.append(((environment["XDG_CONFIG_HOME"] ?? home + "/.config") + "/git/config", .file))
        }
        out.cwdGit = cwd + "/.git"
        if lstatType(out.cwdGit) == 0 { out.blockNewGit = true }
        // The repository, found as git finds it: the nearest `.git` at or above the cwd.
        var dir = cwd
        var worktree: String?
        var gitdir: String?
        while true {
            let dotgit = dir + "/.git"
            let type = lstatType(dotgit)
            if type == S_IFDIR { gitdir = dotgit; worktree = dir; break }
            if type == S_IFREG {
                add(dotgit, .file)
                if let target = gitdirFile(dotgit) { gitdir = target.hasPrefix("/") ? target : dir + "/" + target }
                worktree = dir
                break
            }
            if dir == "/" || dir.isEmpty { break }
            dir = parent(dir)
        }
        if let gitdir {
            var dirs = [lexical(gitdir)]
            if let common = firstLine(gitdir + "/commondir") {
                dirs.append(lexical(common.hasPrefix("/") ? common : gitdir + "/" + common))
            }
            for d in dirs {
                for rel in ["config", "config.worktree"] { add(d + "/" + rel, .file) }
                for rel in ["hooks", "modules", "info"] { add(d + "/" + rel, .directory) }
                configs.append((d + "/config", .file))
                configs.append((d + "/config.worktree", .file))
            }
        }
        // Includes and core.hooksPath, followed through the files they name (bounded: a cycle ends it).
        var seen = Set<String>()
        while let (config, kind) = configs.first, seen.count < 64 {
            configs.removeFirst()
            let file = lexical(config)
            guard seen.insert(file).inserted else { continue }
            add(file, kind)
            for (key, value) in settings(file) {
                let expanded = value.hasPrefix("~/") ? (home ?? "") + value.dropFirst(1) : value
                if key == "core.hookspath" {
                    add(expanded.hasPrefix("/") ? expanded : (worktree ?? parent(file)) + "/" + expanded)
                } else if key == "include.path" || (key.hasPrefix("includeif.") && key.hasSuffix(".path")) {
                    let target = expanded.hasPrefix("/") ? expanded : parent(file) + "/" + expanded
                    configs.append((target, .named))
                }
            }
        }
        return out
    }

    /// `key = value` pairs of a git config file, keys as `section.name` (a subsection kept in the middle),
    /// lowercased except the subsection. Enough of git's format to find includes and hooksPath.
    static func settings(_ path: String) -> [(String, String)] {
        guard let bytes = try? Files.readRegular(path, limit: 1 << 20) else { return [] }
        var section = ""
        var out: [(String, String)] = []
        for raw in String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline) {
            var line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("[") {
                guard let close = line.lastIndex(of: "]") else { continue }
                let inner = line[line.index(after: line.startIndex)..<close].trimmingCharacters(in: .whitespaces)
                if let space = inner.firstIndex(of: " ") {
                    let sub = inner[space...].trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
                    section = inner[..<space].lowercased() + "." + sub
                } else { section = inner.lowercased() }
                line = String(line[line.index(after: close)...]).trimmingCharacters(in: .whitespaces)
                if line.isEmpty { continue }
            }
            guard !line.hasPrefix("#"), !line.hasPrefix(";"), let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 { value = String(value.dropFirst().dropLast()) }
            out.append((section + "." + key, value))
        }
        return out
    }

    /// The directory a gitdir file (`.git` of a worktree or a submodule checkout) names, as written.
    static func gitdirFile(_ path: String) -> String? {
        guard let line = firstLine(path), line.hasPrefix("gitdir:") else { return nil }
        return line.dropFirst(7).trimmingCharacters(in: .whitespaces)
    }

    static func firstLine(_ path: String) -> String? {
        guard let bytes = try? Files.readRegular(path, limit: 4096) else { return nil }
        return firstLine(bytes)
    }

    /// The first line of a file's bytes, trimmed of spaces.
    static func firstLine(_ bytes: [UInt8]) -> String? {
        String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline).first.map { $0.trimmingCharacters(in: .whitespaces) }
    }

    /// `..` and `.` removed, symlinks left as they are (``add`` decides about them).
    static func lexical(_ path: String) -> String {
        var parts: [Substring] = []
        for c in path.split(separator: "/") {
            if c == "." || c.isEmpty { continue }
            if c == ".." { _ = parts.popLast() } else { parts.append(c) }
        }
        return "/" + parts.joined(separator: "/")
    }

    static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
        return String(path[..<slash])
    }

    static func lstatType(_ path: String) -> mode_t {
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_mode & S_IFMT : 0
    }
}
