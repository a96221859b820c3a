#if canImport(Glibc)
import Glibc
#endif
import Foundation

extension AgentService {
    /// The directory of the running executable: spawngate's programs are installed together.
    static var programDirectory: String { directory(of: Files.readLink("/proc/self/exe") ?? CommandLine.arguments[0]) }

    /// Where the relay launcher is: `spawngate-launch` beside the running executable (`spawngate`, or
    /// `spawngate-serve`, which is installed beside it). Its supervisor is the `spawngate` beside it.
    public static var defaultLauncher: String { programDirectory + "/spawngate-launch" }

    /// The command line the broker's worker runs: the launcher, the socket the gateway waits at, the ticket. The
    /// launcher takes no options, so a ticket that starts with `-` (one time in 64: base64url) is still a ticket.
    public static func launcherCommandLine(_ launcher: String, socket: String, ticket: String) -> String {
        AgentRelayBackend.commandLine([launcher, socket, ticket])
    }

    /// `spawner: agent-relay`: the local Agent Relay broker starts a relay worker (its PTY, the task typed in, its
    /// messages delivered) whose program is the launcher, `spawngate-launch SOCKET TICKET` (a small C program).
    /// The gateway waits at SOCKET: the launcher shows the single-use ticket and its environment; the gateway
    /// redeems the ticket (`redeem`: the key, the policy and the binary checked again), checks that the launcher
    /// is a broker's worker, prepares the start in full (``LocalSpawner/prepare(_:)``) and hands it over; the
    /// launcher starts it in the worker's terminal and says how it went; the gateway records the agent, and the
    /// launcher becomes its supervisor (`spawngate launch --supervise`). Then the gateway watches it for the rule's
    /// startup check. A broker that refuses, or never runs the launcher, frees the slot.
    public func startRelayWorker(_ spawn: AuthorizedSpawn, environment: [String: String], launcher: String = AgentService.defaultLauncher,
                                 timeout: Double = 20,
                                 redeem: (LaunchTicket) -> Result<AuthorizedSpawn, GatewayFailure>) -> Outcome {
        let requestID = spawn.request.requestID
        func failed(_ why: String) -> Outcome {
            if let lease = spawn.leaseID { _ = try? state.releaseLease(requestID: lease) }
            return .failed(why: why, exitStatus: nil, tail: nil)
        }
        let connection: AgentRelayConnection
        do { connection = try AgentRelayConnection.find(cwd: spawn.match.cwd, environment: environment) } catch { return failed(error.message) }
        let socketPath = LaunchChannel.path(home: spawner.home, requestID: requestID)
        let listener: LaunchChannel.Listener
        do { listener = try LaunchChannel.Listener(path: socketPath) } catch { return failed(error.message) }
        let secret = LaunchTicket.secret()
        let backend = AgentRelayBackend(connection: connection)
        do { _ = try backend.start(spawn, cli: Self.launcherCommandLine(launcher, socket: socketPath, ticket: secret)) } catch {
            return failed(error.message)
        }
        // The broker answers before its worker runs (v6 says 200 even for a program that cannot start): only the
        // launcher says what started.
        guard let outcome = awaitLauncher(spawn, at: listener, secret: secret, launcher: launcher,
                                          until: Supervisor.monotonic() + timeout, redeem: redeem) else {
            backend.remove(name: spawn.request.request.name)
            return failed("the Agent Relay broker at \(connection.url.absoluteString) accepted the spawn but never ran the launcher within \(AgentService.seconds(timeout)); see the broker's log")
        }
        if case .failed = outcome { backend.remove(name: spawn.request.request.name) }
        return outcome
    }

    /// Waits at `listener` until `deadline` for the launcher that shows `secret`, hands it the start and watches it
    /// for the startup check; nil when none came in time. Connections that do not show the ticket are closed and
    /// waited past.
    func awaitLauncher(_ spawn: AuthorizedSpawn, at listener: LaunchChannel.Listener, secret: String, launcher: String,
                       until deadline: Double, redeem: (LaunchTicket) -> Result<AuthorizedSpawn, GatewayFailure>) -> Outcome? {
        while true {
            let left = deadline - Supervisor.monotonic()
            guard left > 0 else { return nil }
            guard let conn = listener.accept(within: min(left, 0.5)) else { continue }
            switch handOver(spawn, conn, secret: secret, launcher: launcher, redeem: redeem) {
            case .notTheLauncher: continue
            case .failed(let why):
                // Nothing runs: the slot is free again.
                if let lease = spawn.leaseID { _ = try? state.releaseLease(requestID: lease) }
                return .failed(why: why, exitStatus: nil, tail: nil)
            case .started(let started): return watch(spawn, started, conn)
            }
        }
    }

    private enum HandOver {
        case notTheLauncher
        case started(Receipt.Started)
        /// Nothing was started, or what was is stopped.
        case failed(String)
    }

    /// One connection at the launch socket: the launcher's ticket, the checks, the prepared start, its result.
    private func handOver(_ spawn: AuthorizedSpawn, _ conn: LaunchChannel.Connection, secret: String, launcher: String,
                          redeem: (LaunchTicket) -> Result<AuthorizedSpawn, GatewayFailure>) -> HandOver {
        let requestID = spawn.request.requestID
        // Only this uid can reach the socket (the home is 0700); the kernel says so again, and who it is.
        guard let peer = conn.peer, peer.uid == getuid() else { return .notTheLauncher }
        guard let hello = conn.readWords(within: 2), let shown = hello.first, Sodium.equal(Array(shown.utf8), Array(secret.utf8)) else {
            conn.send(["refuse", "this is not the launch ticket the gateway waits for at this socket"])
            return .notTheLauncher
        }
        // The ticket has been shown: whatever comes of it, this wait ends here (a ticket starts one spawn, once).
        func fail(_ why: String) -> HandOver {
            conn.send(["refuse", why])
            return .failed(why)
        }
        // The ticket travels on the broker's command line: only a process the broker started may use it.
        let parent = Self.parentExecutable(of: peer.pid)
        guard parent.split(separator: "/").last?.hasPrefix("agent-relay-broker") == true else {
            return fail("the launcher must be started by an Agent Relay broker's worker; its parent is \(parent)")
        }
        let authorized: AuthorizedSpawn
        switch redeem(LaunchTicket(for: spawn)) {
        case .failure(let e): return fail(e.message)
        case .success(let a): authorized = a
        }
        // The worker's environment, as the broker gave it, is where the policy's variables (and TERM) come from.
        var env: [String: String] = [:]
        for entry in hello.dropFirst() {
            guard let eq = entry.firstIndex(of: "=") else { continue }
            env[String(entry[..<eq])] = String(entry[entry.index(after: eq)...])
        }
        let local = LocalSpawner(home: spawner.home, environment: env, passThrough: ["TERM"], diesWithStarter: true)
        let prepared: PreparedStart
        var task: Int32?
        do {
            prepared = try local.prepare(authorized)
            if let t = authorized.match.stdinTask { task = try LocalSpawner.taskInput(t) }
        } catch { return fail(error.message) }
        defer { if let task { close(task) } }
        let supervisor = [Self.directory(of: launcher) + "/spawngate", "launch", "--home", spawner.home.root, "--supervise", requestID]
        guard let frame = LaunchChannel.startFrame(prepared, stdin: task, supervisor: supervisor) else {
            return fail("an argument or variable holds a NUL byte, which no program can be given")
        }
        guard conn.send(frame.words, fds: frame.fds), let result = conn.readResult(within: 30) else {
            return fail("the launcher stopped answering before it started the agent")
        }
        guard result.stage == 0, result.pid > 0 else {
            let why = LocalSpawner.explain(stage: result.stage, errno: result.errno, spawn: authorized)
            conn.writeSentence(why)
            return .failed(why)
        }
        let agent = prepared.agent(pid: result.pid)
        let record = AgentRecord(agent, of: authorized, startedAt: clock.now())
        do { try state.recordStart(record, leaseID: authorized.leaseID) } catch {
            // An agent the gateway cannot track is one nobody can release: the launcher stops it.
            conn.write([UInt8(ascii: "s")])
            return .failed("the agent was stopped at once: the state store did not record it: \(error.message)")
        }
        let started = Receipt.Started(pid: agent.pid, startedAt: record.startedAt, layers: agent.layers)
        conn.write([UInt8(ascii: "g")])
        return .started(started)
    }

    /// Watches a started relay worker for the rule's startup check: its supervisor reports on the connection when
    /// the agent has ended, `[status, tail]`; a connection that ends without a report means nothing is running.
    private func watch(_ spawn: AuthorizedSpawn, _ started: Receipt.Started, _ conn: LaunchChannel.Connection) -> Outcome {
        let check = Double(spawn.match.rule.startupCheck)
        guard check > 0 else { return .started(started) }
        let why = "the relay worker exited within its startup check (\(AgentService.seconds(check)))"
        switch conn.readReport(within: check) {
        case .none: return .started(started)
        case .ended: return .failed(why: why + "; its supervisor ended without a report (see the broker's log)", exitStatus: nil, tail: nil)
        case .exited(let status, let tail):
            // A program that finished its work that soon, successfully, did start.
            return status == 0 ? .started(started) : .failed(why: why, exitStatus: status, tail: tail.isEmpty ? nil : tail)
        }
    }

    static func directory(of path: String) -> String {
        let dir = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return dir.isEmpty ? "." : dir
    }

    /// The executable of `pid`'s parent, or "?".
    static func parentExecutable(of pid: Int32) -> String {
        // Field 4 of /proc/PID/stat is the parent's pid.
        guard let fields = ProcessIdentity.statFields(pid), fields.count > 1,
              let ppid = Int32(String(decoding: fields[1], as: UTF8.self)) else { return "?" }
        return Files.readLink("/proc/\(ppid)/exe") ?? "?"
    }

    /// `spawngate launch --supervise`: the relay launcher, exec'd once its agent is recorded (the agent is this
    /// process's child). The agent of `requestID` as recorded, or nil when none was. It may have exited already (a
    /// CLI that dies young): waiting for it collects its status all the same.
    public func relayWorker(_ requestID: String) throws(GatewayFailure) -> Started? {
        guard let record = try state.agent(requestID: requestID) else { return nil }
        let agent = SpawnedAgent(process: record.process, name: record.name, profile: SandboxProfile(rawValue: record.profile) ?? .standard,
                                 layers: record.layers, stdoutLog: nil, stderrLog: nil)
        return Started(agent: agent, record: record)
    }
}

extension Decision {
    /// What an allowed decision is reported as when its agent is not running after all: the one record every start
    /// path gives (`exec`, `serve`'s receipt, the relay guard mailbox's receipt), so the requester sees the same
    /// reason, and exits with the same status, whichever path started it. `start_failed` when the agent exited
    /// within its startup check (`exitStatus`) or its relay worker did not come up (the broker missing or refusing,
    /// the launcher never run or refusing); `internal_error` when this gateway could not start a local agent at all.
    public func notStarted(why: String, exitStatus: Int32?, relayWorker: Bool) -> Decision {
        let reported = exitStatus != nil || relayWorker
        return Decision(reason: reported ? .startFailed : .internalError,
                        detail: "allowed by rule '\(rule ?? "")', but \(reported ? "not running" : "not started"): \(why)",
                        requestID: requestID, broker: broker, fingerprint: fingerprint, rule: rule, policy: policy)
    }
}
