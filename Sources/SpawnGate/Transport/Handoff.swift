import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `spawngate handoff NAME --broker TARGET` and the MCP tool `agent.handoff`: moves a running local agent's task to
/// TARGET. The same request (name, cli, task, model, args, channels, team, as this gateway verified it when it
/// started the agent) is signed by this broker and sent to TARGET; the local agent is stopped only once TARGET's
/// receipt verifies and a signed listing from TARGET shows the new agent running. Nothing else moves: no files,
/// no conversation, no process state. The working directory is the same path there unless `cwd` says otherwise,
/// and files not committed (and pushed, and pulled there) are not in it, so a dirty git worktree is refused
/// unless `force`.
public struct Handoff: Sendable {
    public var name: String
    public var target: String
    /// The working directory on TARGET; nil: the same path as here.
    public var cwd: String?
    /// Go ahead although the local cwd has uncommitted changes (or cannot be checked).
    public var force = false
    /// Seconds for each exchange with TARGET (≤ 15 from the MCP server).
    public var timeout: Double = 10
    /// Seconds TARGET's listing may take to show the new agent running.
    public var runningWithin: Double = 5

    public init(name: String, target: String, cwd: String? = nil, force: Bool = false, timeout: Double = 10) {
        self.name = name; self.target = target; self.cwd = cwd; self.force = force; self.timeout = timeout
    }

    /// What a successful handoff did.
    public struct Moved: Sendable {
        /// TARGET's verified receipt for the new agent.
        public let receipt: VerifiedReceipt
        /// The local agent that was stopped.
        public let local: AgentRecord
        /// The working directory the request named on TARGET.
        public let cwd: String
        /// Whether the local stop found it still running.
        public let stopped: Bool
    }

    public struct Failure: Error, Sendable, CustomStringConvertible {
        public enum Kind: Sendable {
            /// Refused here before anything was sent (no such agent, uncommitted changes, task not kept): exit 1.
            case refused
            /// TARGET answered with a verified denial (or a start that failed, or an agent not running): exit 1, or 2
            /// when TARGET's receipt says it could not decide (internal_error, audit_unavailable).
            case denied
            /// No verified answer from TARGET, or this gateway's own state cannot be read: exit 2.
            case cannotDecide
        }
        public let kind: Kind
        public let message: String
        /// TARGET's verified receipt, when there is one (a denial's reason code).
        public let receipt: VerifiedReceipt?
        public init(_ kind: Kind, _ message: String, receipt: VerifiedReceipt? = nil) {
            self.kind = kind; self.message = message; self.receipt = receipt
        }
        public var description: String { message }
    }

    /// Runs the handoff from `home`. The local agent keeps running on every failure.
    public func run(home: Home) throws(Failure) -> Moved {
        let remote: RemoteGateway
        do { remote = try RemoteGateway.to(target, home: home, timeout: timeout) } catch {
            throw Failure(.cannotDecide, error.message)
        }
        guard target != remote.identity.name else {
            throw Failure(.refused, "'\(target)' is this broker itself: a handoff moves an agent to another broker")
        }
        let service: AgentService
        let candidates: [AgentRecord]
        let payload: [UInt8]?
        do {
            service = try AgentService.local(home)
            candidates = try service.running().filter { $0.name == name }
        } catch { throw Failure(.cannotDecide, error.message) }
        guard let local = candidates.first else {
            throw Failure(.refused, "no running agent is named '\(name)' here; 'spawngate agents' lists the running ones")
        }
        guard candidates.count == 1 else {
            let who = candidates.map { "\($0.broker) (pid \($0.process.pid))" }.joined(separator: ", ")
            throw Failure(.refused, "\(candidates.count) running agents are named '\(name)' here (started for \(who)); release the others first, so it is clear which one moves")
        }
        do { payload = try service.state.requestPayload(of: local.requestID) } catch { throw Failure(.cannotDecide, error.message) }
        guard let payload, case .success(let original) = SpawnRequest.parse(payload) else {
            throw Failure(.refused, "the request '\(name)' was started from is not kept here (it was started before this version of spawngate kept requests), so its task cannot be moved; start it on \(target) with 'spawngate spawn' and release it here")
        }
        let targetCwd = cwd ?? local.cwd
        if !force {
            switch GitWorktree.status(local.cwd) {
            case .clean: break
            case .dirty(let lines):
                let shown = lines.prefix(5).joined(separator: "; ") + (lines.count > 5 ? "; … (\(lines.count) in all)" : "")
                throw Failure(.refused, "\(local.cwd) has uncommitted changes (\(shown)); they do not move: handoff starts the same task in \(targetCwd) on \(target) and never copies a tree. Commit and push them (and pull them there), or pass --force to move the task without them")
            case .unknown(let why):
                throw Failure(.refused, "cannot tell whether \(local.cwd) has uncommitted changes (\(why)); no files move: handoff starts the same task in \(targetCwd) on \(target) and never copies a tree. Pass --force to move the task anyway")
            }
        }
        let request = SpawnRequest(name: original.name, cli: original.cli, task: original.task, cwd: targetCwd,
                                   model: original.model, args: original.args, channels: original.channels,
                                   team: original.team, from: "", to: "", iat: 0, exp: 0)
        let answer: RemoteGateway.Answer
        do { answer = try remote.spawn(request) } catch {
            throw Failure(error.kind == .unboundDenial ? .denied : .cannotDecide, "\(error.message); \(name) keeps running here")
        }
        let receipt = answer.receipt
        guard receipt.allowed, let started = receipt.started else {
            throw Failure(.denied, "\(receipt.reason.rawValue): \(receipt.detail) (\(target)'s signed answer); \(name) keeps running here", receipt: receipt)
        }
        // The receipt says it started; the local agent stops only once a signed listing shows it running there.
        let deadline = Date().addingTimeInterval(runningWithin)
        var lastProblem = ""
        while true {
            do {
                let (listing, agents) = try remote.agents()
                if !listing.receipt.allowed {
                    lastProblem = "\(target) refused to list its agents: \(listing.receipt.reason.rawValue): \(listing.receipt.detail)"
                } else if agents.contains(where: { Self.isRunning($0, name: name, pid: started.pid) }) {
                    break
                } else {
                    lastProblem = "\(target)'s signed listing does not show \(name) (pid \(started.pid)) running"
                }
            } catch {
                lastProblem = error.message
            }
            guard Date() < deadline else {
                throw Failure(.denied, "\(name) was started on \(target) (pid \(started.pid), receipt verified) but is not seen running there: \(lastProblem); \(name) keeps running here", receipt: receipt)
            }
            usleep(100_000)
        }
        let released: [AgentService.Released]
        do { released = try service.release(name: name, broker: local.broker) } catch {
            throw Failure(.cannotDecide, "\(name) runs on \(target) now (pid \(started.pid)), but stopping it here failed: \(error.message); release it with 'spawngate release \(name)'", receipt: receipt)
        }
        return Moved(receipt: receipt, local: local, cwd: targetCwd, stopped: released.contains { $0.stopped })
    }

    static func isRunning(_ entry: JSONValue, name: String, pid: Int32) -> Bool {
        guard case .object(let o) = entry else { return false }
        return o["name"] == .string(name) && o["state"] == .string("running") && o["pid"]?.safeInteger == Int64(pid)
    }
}

/// `git status` of a directory an agent worked in, without running anything the agent could have planted there.
///
/// An agent under `none` or `standard` can write its repository's git directory (`config`, hooks, `info/`) and its
/// `.gitattributes`, and `git status` in that repository would run, as the operator, the commands they name:
/// `core.fsmonitor`, clean filters (`filter.X.clean`/`process`), an index hook, a `git status` in each submodule
/// with the submodule's own config, a lazy fetch's transport. Git has no switch that ignores a repository's own
/// configuration, and naming each setting to override it loses to the names git's parser accepts (a filter called
/// `a=b` cannot be overridden with `-c`). So git is never pointed at the agent's git directory: ``status(_:)``
/// finds the repository as git would (``Repository``), reads what status needs from it as data (HEAD resolved to a
/// commit id here, the index and `info/exclude` copied, the object format), and writes a git directory of its own
/// (``Shadow``) whose config holds only `repositoryformatversion`, `bare = false`, the object format and a few
/// checked booleans that change what status reports. Git runs from a fixed path with that directory as `GIT_DIR`,
/// the agent's tree as `GIT_WORK_TREE`, the real object store as `GIT_OBJECT_DIRECTORY` (reading objects runs
/// nothing), no system or global configuration, an empty `HOME`, hooks from /dev/null, no fsmonitor, submodules
/// ignored, no index write (`--no-optional-locks`), bounded in time. `.gitattributes` in the tree can still name a
/// filter or a diff driver, but nothing defines one, so nothing runs; built-in conversions (eol, encoding) run no
/// program. What it cannot stop: the agent controls the index too, so it can hide a change from any status
/// (`assume-unchanged`, `skip-worktree`); the check keeps honest work from being left behind, it is not a control.
public enum GitWorktree {
    public enum Status: Sendable, Equatable {
        case clean
        /// `git status --porcelain` lines.
        case dirty([String])
        /// Not a repository, no git, a repository this check cannot read safely, git failed or took too long.
        case unknown(String)
    }

    static let gitPaths = ["/usr/bin/git", "/usr/local/bin/git", "/opt/homebrew/bin/git"]
    public static let timeout: Double = 10
    /// The largest index copied (a repository with some hundred thousand files); beyond it: `.unknown`.
    static let indexLimit = 64 << 20
    static let smallFileLimit = 1 << 20
    static let packedRefsLimit = 64 << 20

    public static func status(_ dir: String) -> Status {
        guard let git = gitPaths.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            return .unknown("git is not installed (looked in \(gitPaths.joined(separator: ", ")))")
        }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue, let real = realpath(dir, nil) else {
            return .unknown("\(dir) is not a directory here")
        }
        let physical = String(cString: real)
        free(real)
        let repository: Repository
        switch Repository.find(physical) {
        case .success(let r): repository = r
        case .failure(let why): return .unknown(why.message)
        }
        // A private directory (mkdtemp: mode 0700, a name nobody else can take) for the shadow git directory, an
        // empty HOME and git's output.
        var template = Array((NSTemporaryDirectory() as NSString).appendingPathComponent("spawngate-gitstatus-XXXXXX").utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            return .unknown("cannot make a temporary directory: \(errnoText())")
        }
        let tmp = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let shadow: Shadow
        do { shadow = try Shadow.make(for: repository, in: tmp) } catch { return .unknown(error.message) }
        let env = [
            "GIT_DIR": shadow.gitDir, "GIT_WORK_TREE": repository.worktree, "GIT_INDEX_FILE": shadow.gitDir + "/index",
            "GIT_OBJECT_DIRECTORY": repository.commonDir + "/objects",
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_SYSTEM": "/dev/null", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_ATTR_NOSYSTEM": "1",
            "HOME": shadow.home, "XDG_CONFIG_HOME": shadow.home, "PATH": "/usr/bin:/bin", "LC_ALL": "C",
            "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "GIT_NO_LAZY_FETCH": "1", "GIT_NO_REPLACE_OBJECTS": "1",
        ]
        let args = ["--no-optional-locks", "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null",
                    "-c", "core.untrackedCache=false", "-c", "status.submoduleSummary=false",
                    "status", "--porcelain", "--ignore-submodules=all", "--untracked-files=normal"]
        let r = run(git, args, environment: env, in: repository.worktree, scratch: tmp)
        if r.timedOut { return .unknown("git status did not finish within \(Int(timeout)) s") }
        guard r.status == 0 else {
            let why = r.stderr.split(separator: "\n").first.map(String.init) ?? "exit status \(r.status)"
            return .unknown("git status failed: \(why)")
        }
        let lines = r.stdout.split(separator: "\n").map(String.init)
        return lines.isEmpty ? .clean : .dirty(lines)
    }

    /// The repository a directory belongs to, found as git finds it (the nearest `.git` at or above it that is a
    /// git directory, or a gitdir file, and its `commondir`), from files read as data only.
    struct Repository: Equatable {
        /// The top of the working tree: where `.git` is.
        var worktree: String
        /// This working tree's git directory (HEAD, index): `.git`, or what a gitdir file names.
        var gitDir: String
        /// The shared one (config, objects, refs, info): `commondir` of a linked worktree, else ``gitDir``.
        var commonDir: String

        static func find(_ start: String) -> Result<Repository, OperatorError> {
            var st = stat()
            guard stat(start, &st) == 0 else { return .failure(OperatorError("cannot look at \(start): \(errnoText())")) }
            let device = st.st_dev
            var dir = start
            while true {
                let dotgit = (dir == "/" ? "" : dir) + "/.git"
                if stat(dotgit, &st) == 0 {
                    if st.st_mode & S_IFMT == S_IFDIR {
                        if let common = gitDirectory(dotgit) { return .success(Repository(worktree: dir, gitDir: dotgit, commonDir: common)) }
                        // Not a git directory (an empty `.git` strict leaves behind): git passes over it.
                    } else if st.st_mode & S_IFMT == S_IFREG {
                        guard let named = GitControlPaths.gitdirFile(dotgit) else {
                            return .failure(OperatorError("\(dotgit) is a file that names no git directory"))
                        }
                        let gitDir = named.hasPrefix("/") ? named : dir + "/" + named
                        guard let common = gitDirectory(gitDir) else {
                            return .failure(OperatorError("\(dotgit) names \(gitDir), which is not a git directory"))
                        }
                        return .success(Repository(worktree: dir, gitDir: gitDir, commonDir: common))
                    }
                }
                if gitDirectory(dir) != nil {
                    return .failure(OperatorError("\(dir) is a bare git directory, not a working tree"))
                }
                if dir == "/" { break }
                let up = GitControlPaths.parent(dir)
                // Git stops at a file-system boundary (GIT_DISCOVERY_ACROSS_FILESYSTEM unset): so does this.
                guard stat(up, &st) == 0, st.st_dev == device else { break }
                dir = up
            }
            return .failure(OperatorError("\(start) is not in a git repository"))
        }

        /// The common directory of `dir` when it is a git directory as git's `is_git_directory` sees one (a HEAD,
        /// and `objects/` and `refs/` in its common directory), else nil.
        static func gitDirectory(_ dir: String) -> String? {
            var st = stat()
            guard stat(dir + "/HEAD", &st) == 0, st.st_mode & S_IFMT == S_IFREG else { return nil }
            var common = dir
            if let line = GitControlPaths.firstLine(dir + "/commondir"), !line.isEmpty {
                common = line.hasPrefix("/") ? line : dir + "/" + line
            }
            for sub in ["objects", "refs"] {
                guard stat(common + "/" + sub, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else { return nil }
            }
            return common
        }
    }

    /// The git directory ``status(_:)`` points git at: written here, from the agent's repository read as data.
    struct Shadow {
        var gitDir: String
        var home: String

        /// Settings of the repository's `[core]` that change what status reports and name no program, with the
        /// values each may take; anything else in the repository's configuration is left out. Not `trustctime` or
        /// `checkstat`: with them the agent could hide a change of the same size by setting the file's mtime back,
        /// and without them git only compares more and re-reads a file whose stat differs (slower, never wrong).
        static let copied: [String: Set<String>] = [
            "core.filemode": booleans, "core.symlinks": booleans, "core.ignorecase": booleans,
            "core.autocrlf": booleans.union(["input"]),
        ]
        static let booleans: Set<String> = ["true", "false"]
        /// Repository format extensions whose absence here makes no difference to what status reads (or makes it
        /// fail, never run anything: `partialclone` without its extension fetches nothing); also `refstorage =
        /// files`, the default. Any other (`refstorage = reftable`, `compatobjectformat`, what git adds later):
        /// `.unknown`.
        static let harmlessExtensions: Set<String> = ["noop", "noop-v1", "preciousobjects", "partialclone", "worktreeconfig"]

        static func make(for repo: Repository, in tmp: String) throws(OperatorError) -> Shadow {
            let shadow = Shadow(gitDir: tmp + "/git", home: tmp + "/home")
            for d in [shadow.gitDir, shadow.gitDir + "/refs", shadow.gitDir + "/info", shadow.home] {
                guard mkdir(d, 0o700) == 0 else { throw OperatorError.unusable("cannot create \(d): \(errnoText())") }
            }
            // The configuration: ours, with what the repository's says taken only as checked values.
            var version = 0
            var format = "sha1"
            var core: [String: String] = [:]
            for (key, raw) in GitControlPaths.settings(repo.commonDir + "/config") {
                let value = plain(raw)
                if key == "core.repositoryformatversion" {
                    guard let v = Int(value), (0...1).contains(v) else {
                        throw OperatorError("\(repo.commonDir)/config says repositoryformatversion \(raw), which this check does not read")
                    }
                    version = v
                } else if key == "extensions.objectformat" {
                    guard value == "sha1" || value == "sha256" else {
                        throw OperatorError("\(repo.commonDir)/config names the object format '\(raw)', which this check does not know")
                    }
                    format = value
                } else if key.hasPrefix("extensions.") {
                    let name = String(key.dropFirst("extensions.".count))
                    guard harmlessExtensions.contains(name) || (name == "refstorage" && value == "files") else {
                        throw OperatorError("the repository uses the git extension '\(name)', which this check does not know how to read without running the repository's own configuration")
                    }
                } else if let allowed = copied[key] {
                    let v = ["yes", "on", "1"].contains(value) ? "true" : ["no", "off", "0", ""].contains(value) ? "false" : value
                    if allowed.contains(v) { core[key] = v } else { core[key] = nil }
                }
            }
            var config = "[core]\n\trepositoryformatversion = \(format == "sha256" ? 1 : version)\n\tbare = false\n"
            for (key, value) in core.sorted(by: { $0.key < $1.key }) { config += "\t\(key.dropFirst("core.".count)) = \(value)\n" }
            if format == "sha256" { config += "[extensions]\n\tobjectformat = sha256\n" }
            try create(shadow.gitDir + "/config", Array(config.utf8))

            // HEAD: the commit it names, resolved here, as a detached HEAD; an unborn branch as it is.
            try create(shadow.gitDir + "/HEAD", Array(try head(repo, format: format).utf8))

            // The index, with its modification time (git's racy-clean check compares against it), and the shared
            // index of a split index beside it.
            if let (bytes, st) = try read(repo.gitDir + "/index", limit: indexLimit, what: "the index") {
                try create(shadow.gitDir + "/index", bytes, times: st)
            }
            if let names = try? FileManager.default.contentsOfDirectory(atPath: repo.gitDir) {
                for name in names.filter({ $0.hasPrefix("sharedindex.") }).prefix(64) where name.utf8.count <= 128 && !name.contains("/") {
                    guard symlink(repo.gitDir + "/" + name, shadow.gitDir + "/" + name) == 0 else {
                        throw OperatorError.unusable("cannot link \(name): \(errnoText())")
                    }
                }
            }

            // Data that changes what status lists: the repository's excludes (after the operator's own global
            // excludes file, which they rank below), its info/attributes, its shallow list.
            var exclude: [UInt8] = []
            if let global = globalExcludes(), let (bytes, _) = try? read(global, limit: smallFileLimit, what: "the global excludes file") {
                exclude = bytes + (bytes.last == 10 || bytes.isEmpty ? [] : [10])
            }
            if let (bytes, _) = try read(repo.commonDir + "/info/exclude", limit: smallFileLimit, what: "info/exclude") { exclude += bytes }
            if !exclude.isEmpty { try create(shadow.gitDir + "/info/exclude", exclude) }
            if let (bytes, _) = try read(repo.commonDir + "/info/attributes", limit: smallFileLimit, what: "info/attributes") {
                try create(shadow.gitDir + "/info/attributes", bytes)
            }
            if let (bytes, _) = try read(repo.commonDir + "/shallow", limit: smallFileLimit, what: "the shallow list") {
                try create(shadow.gitDir + "/shallow", bytes)
            }
            return shadow
        }

        /// A config value as a word: an inline comment and quotes removed, lowercased.
        static func plain(_ raw: String) -> String {
            var v = raw
            if let c = v.firstIndex(where: { $0 == "#" || $0 == ";" }) { v = String(v[..<c]) }
            return v.trimmingCharacters(in: CharacterSet.whitespaces.union(CharacterSet(charactersIn: "\""))).lowercased()
        }

        /// The contents of the shadow HEAD: `<id>\n` for the commit HEAD resolves to, `ref: <name>\n` for a branch
        /// that has no commit yet.
        static func head(_ repo: Repository, format: String) throws(OperatorError) -> String {
            let length = format == "sha256" ? 64 : 40
            func commitID(_ s: Substring) -> String? {
                let id = s.lowercased()
                return id.utf8.count == length && id.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }) ? id : nil
            }
            guard let line = try read(repo.gitDir + "/HEAD", limit: 4096, what: "HEAD").flatMap({ GitControlPaths.firstLine($0.bytes) }) else {
                throw OperatorError("\(repo.gitDir)/HEAD cannot be read")
            }
            var current = line
            var first: String?
            for _ in 0..<6 {
                if let id = commitID(Substring(current)) { return id + "\n" }
                guard current.hasPrefix("ref:") else { throw OperatorError("\(repo.gitDir)/HEAD names neither a branch nor a commit") }
                let name = current.dropFirst(4).trimmingCharacters(in: .whitespaces)
                guard isRefName(name) else { throw OperatorError("\(repo.gitDir)/HEAD names '\(name.prefix(80))', which is not a ref name") }
                if first == nil { first = name }
                // Per-worktree refs live in this worktree's git directory, the rest in the common one.
                let perWorktree = ["refs/worktree/", "refs/bisect/", "refs/rewritten/"].contains { name.hasPrefix($0) }
                if let loose = try read((perWorktree ? repo.gitDir : repo.commonDir) + "/" + name, limit: 4096, what: name).flatMap({ GitControlPaths.firstLine($0.bytes) }) {
                    current = loose
                    continue
                }
                if let packed = try read(repo.commonDir + "/packed-refs", limit: packedRefsLimit, what: "packed-refs") {
                    let suffix = " " + name
                    for l in String(decoding: packed.bytes, as: UTF8.self).split(whereSeparator: \.isNewline) where l.hasSuffix(suffix) {
                        if let id = commitID(l.dropLast(suffix.count)) { return id + "\n" }
                    }
                }
                // No commit on it yet: everything in the tree shows as new, as git would show it.
                return "ref: \(first ?? name)\n"
            }
            throw OperatorError("\(repo.gitDir)/HEAD is a chain of symbolic refs too long to follow")
        }

        /// A ref name git would accept (`git check-ref-format`, in short), so that it is safe as a path below a git
        /// directory and as a line of HEAD.
        static func isRefName(_ name: String) -> Bool {
            guard name.hasPrefix("refs/"), name.utf8.count <= 1024, !name.hasSuffix("/"), !name.hasSuffix("."),
                  !name.contains(".."), !name.contains("@{"), !name.contains("//") else { return false }
            if name.utf8.contains(where: { $0 < 0x21 || $0 == 0x7f || [UInt8(ascii: "~"), UInt8(ascii: "^"), UInt8(ascii: ":"), UInt8(ascii: "?"), UInt8(ascii: "*"), UInt8(ascii: "["), UInt8(ascii: "\\")].contains($0) }) {
                return false
            }
            return name.split(separator: "/").allSatisfy { !$0.hasPrefix(".") && !$0.hasSuffix(".lock") }
        }

        /// The operator's own global excludes file (their `core.excludesFile`, else git's default place), or nil.
        static func globalExcludes(_ env: [String: String] = ProcessInfo.processInfo.environment) -> String? {
            guard let home = env["HOME"], home.hasPrefix("/") else { return nil }
            let xdg = env["XDG_CONFIG_HOME"].flatMap { $0.hasPrefix("/") ? $0 : nil } ?? home + "/.config"
            var named: String?
            for file in [xdg + "/git/config", home + "/.gitconfig"] {
                for (key, value) in GitControlPaths.settings(file) where key == "core.excludesfile" && !value.isEmpty {
                    named = value.hasPrefix("~/") ? home + value.dropFirst(1) : value
                }
            }
            let path = named ?? xdg + "/git/ignore"
            return path.hasPrefix("/") ? path : nil
        }

        /// A file of the agent's repository, bounded: nil when it does not exist, an error when it cannot be read
        /// as a regular file of at most `limit` bytes.
        static func read(_ path: String, limit: Int, what: String) throws(OperatorError) -> (bytes: [UInt8], stat: stat)? {
            do { return try Files.readRegularWithStat(path, limit: limit) } catch {
                throw OperatorError("\(what) of the repository cannot be read safely: \(error.message)")
            }
        }

        /// Writes a new file of ours (never through a link), mode 0600, with `times`' access and modification times.
        static func create(_ path: String, _ bytes: [UInt8], times: stat? = nil) throws(OperatorError) {
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw OperatorError.unusable("cannot create \(path): \(errnoText())") }
            defer { close(fd) }
            var written = 0
            while written < bytes.count {
                let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, bytes.count - written) }
                if n < 0 { if errno == EINTR { continue }; throw OperatorError.unusable("cannot write \(path): \(errnoText())") }
                written += n
            }
            if let st = times {
                #if canImport(Glibc)
                var ts = [st.st_atim, st.st_mtim]
                #else
                var ts = [st.st_atimespec, st.st_mtimespec]
                #endif
                guard futimens(fd, &ts) == 0 else { throw OperatorError.unusable("cannot set the times of \(path): \(errnoText())") }
            }
        }
    }

    struct Output { var status: Int32; var stdout: String; var stderr: String; var timedOut: Bool }

    /// Runs git with exactly `environment` in `directory`, output in files in `scratch` so a large status never
    /// blocks on a full pipe, killed after ``timeout``.
    static func run(_ git: String, _ args: [String], environment: [String: String], in directory: String, scratch: String) -> Output {
        let outPath = scratch + "/out", errPath = scratch + "/err"
        guard FileManager.default.createFile(atPath: outPath, contents: nil, attributes: [.posixPermissions: 0o600]),
              FileManager.default.createFile(atPath: errPath, contents: nil, attributes: [.posixPermissions: 0o600]),
              let out = FileHandle(forWritingAtPath: outPath), let err = FileHandle(forWritingAtPath: errPath) else {
            return Output(status: -1, stdout: "", stderr: "cannot open temporary files", timedOut: false)
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: git)
        p.arguments = args
        p.environment = environment
        p.currentDirectoryURL = URL(fileURLWithPath: directory)
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = out
        p.standardError = err
        let done = DispatchSemaphore(value: 0)
        p.terminationHandler = { _ in done.signal() }
        do { try p.run() } catch { try? out.close(); try? err.close(); return Output(status: -1, stdout: "", stderr: "\(error)", timedOut: false) }
        var timedOut = false
        if done.wait(timeout: .now() + timeout) == .timedOut {
            timedOut = true
            kill(p.processIdentifier, SIGKILL)
            done.wait()
        }
        try? out.close(); try? err.close()
        let text = { (f: String) in String(decoding: (try? Files.readRegular(f, limit: 16 << 20)) ?? [], as: UTF8.self) }
        return Output(status: p.terminationStatus, stdout: text(outPath), stderr: text(errPath), timedOut: timedOut)
    }
}
