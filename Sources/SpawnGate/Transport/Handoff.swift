import Foundation
#if canImport(Glibc)
import Glibc
#endif

extension RemoteGateway {
    /// The gateway of the peer `target` in `home`'s peers.yaml, signed for with `home`'s identity; an operator
    /// error naming the peers there are (and how to add one) when there is no such peer.
    public static func to(_ target: String, home: Home, timeout: Double) throws(OperatorError) -> RemoteGateway {
        let identity = try home.loadIdentity()
        let peers = try PeerList.load(home.peersFile)
        guard let peer = peers.peer(target) else {
            let known = peers.peers.map(\.name).joined(separator: ", ")
            throw OperatorError("no peer named '\(target)' in \(home.peersFile)\(known.isEmpty ? "" : " (known: \(known))"); add it with 'spawngate peer add \(target) --url http://HOST:PORT --key \"ssh-ed25519 …\" --fingerprint SHA256:…'")
        }
        var remote = RemoteGateway(peer: peer, identity: identity)
        remote.timeout = timeout
        return remote
    }
}

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
            /// TARGET answered with a verified denial (or a start that failed, or an agent not running): exit 1.
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
/// An agent under `none` or `standard` can write its repository's `.git/config` and `.gitattributes`, and
/// `git status` would then run the commands they name as the operator: `core.fsmonitor`, a clean filter
/// (`filter.X.clean`/`process`, run on files whose index stat no longer matches), a `post-index-change` hook when
/// status refreshes the index. So git runs with those switched off on its command line (which outranks every
/// config file): no fsmonitor, hooks from /dev/null, every filter the configs define emptied and not required,
/// submodules ignored, and no index write (`--no-optional-locks`). Bounded in time; git itself comes from a fixed
/// path, never PATH.
public enum GitWorktree {
    public enum Status: Sendable, Equatable {
        case clean
        /// `git status --porcelain` lines.
        case dirty([String])
        /// Not a repository, no git, git failed or took too long.
        case unknown(String)
    }

    static let gitPaths = ["/usr/bin/git", "/usr/local/bin/git", "/opt/homebrew/bin/git"]
    public static let timeout: Double = 10

    public static func status(_ dir: String) -> Status {
        guard let git = gitPaths.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            return .unknown("git is not installed (looked in \(gitPaths.joined(separator: ", ")))")
        }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            return .unknown("\(dir) is not a directory here")
        }
        // Every filter any config defines (includes followed), to empty it below.
        let listed = run(git, ["-c", "core.fsmonitor=false", "-C", dir, "config", "--name-only", "--get-regexp", #"^filter\..*\.(clean|smudge|process|required)$"#])
        var filters = Set<String>()
        for line in listed.stdout.split(separator: "\n") {
            let parts = line.split(separator: ".", omittingEmptySubsequences: false)
            if parts.count >= 3 { filters.insert(parts[1..<(parts.count - 1)].joined(separator: ".")) }
        }
        var args = ["--no-optional-locks", "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null",
                    "-c", "core.untrackedCache=false", "-c", "status.submoduleSummary=false"]
        for f in filters.sorted() {
            args += ["-c", "filter.\(f).clean=", "-c", "filter.\(f).smudge=", "-c", "filter.\(f).process=", "-c", "filter.\(f).required=false"]
        }
        args += ["-C", dir, "status", "--porcelain", "--ignore-submodules=all", "--untracked-files=normal"]
        let r = run(git, args)
        if r.timedOut { return .unknown("git status did not finish within \(Int(timeout)) s") }
        guard r.status == 0 else {
            let why = r.stderr.split(separator: "\n").first.map(String.init) ?? "exit status \(r.status)"
            return .unknown(why.contains("not a git repository") ? "\(dir) is not in a git repository" : "git status failed: \(why)")
        }
        let lines = r.stdout.split(separator: "\n").map(String.init)
        return lines.isEmpty ? .clean : .dirty(lines)
    }

    struct Output { var status: Int32; var stdout: String; var stderr: String; var timedOut: Bool }

    /// Runs git with a fixed environment (no GIT_DIR or the like from ours), output in files so a large status
    /// never blocks on a full pipe, killed after ``timeout``.
    static func run(_ git: String, _ args: [String]) -> Output {
        let dir = NSTemporaryDirectory() + "spawngate-git-\(UUID().uuidString)"
        guard (try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])) != nil else {
            return Output(status: -1, stdout: "", stderr: "cannot make a temporary directory", timedOut: false)
        }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        FileManager.default.createFile(atPath: dir + "/out", contents: nil)
        FileManager.default.createFile(atPath: dir + "/err", contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: git)
        p.arguments = args
        var env = ["PATH": "/usr/bin:/bin", "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"]
        if let home = ProcessInfo.processInfo.environment["HOME"] { env["HOME"] = home }
        p.environment = env
        p.standardInput = FileHandle.nullDevice
        guard let out = FileHandle(forWritingAtPath: dir + "/out"), let err = FileHandle(forWritingAtPath: dir + "/err") else {
            return Output(status: -1, stdout: "", stderr: "cannot open temporary files", timedOut: false)
        }
        p.standardOutput = out
        p.standardError = err
        let done = DispatchSemaphore(value: 0)
        p.terminationHandler = { _ in done.signal() }
        do { try p.run() } catch { return Output(status: -1, stdout: "", stderr: "\(error)", timedOut: false) }
        var timedOut = false
        if done.wait(timeout: .now() + timeout) == .timedOut {
            timedOut = true
            kill(p.processIdentifier, SIGKILL)
            done.wait()
        }
        try? out.close(); try? err.close()
        let text = { (f: String) in (try? String(contentsOfFile: dir + "/" + f, encoding: .utf8)) ?? "" }
        return Output(status: p.terminationStatus, stdout: text("out"), stderr: text("err"), timedOut: timedOut)
    }
}
