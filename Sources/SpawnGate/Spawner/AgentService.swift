import CSpawn
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Starting, supervising, reaping and releasing agents: the one path every entry point uses (`exec` in the
/// foreground, `serve` in the background, the relay launcher, and the CLI's local `agents` and `release`). It takes
/// only an ``AuthorizedSpawn``; an agent it starts is recorded in the state store with its concurrency lease and its
/// max_runtime deadline, or it does not keep running; a start that fails frees the slot it took.
///
/// An agent is one process from outside: the init of its own pid namespace (see `cspawn_start`). Everything the
/// agent starts, by any means (setsid, double fork, nohup), lives in that namespace, so it holds the slot while
/// any of it runs, and none of it runs once the agent's own process has exited: the kernel ends the namespace
/// with its init. `release` and `max_runtime` stop the init, and so all of it.
// @unchecked: `children` is read and written only under `lock`; the spawner and the state store are safe to share.
public final class AgentService: @unchecked Sendable {
    public let spawner: LocalSpawner
    public let state: StateStore
    let clock: any GateClock
    /// Agents this process started (its children, which only it can reap), by pid: their request ids.
    private var children: [Int32: String] = [:]
    private let lock = NSLock()

    public init(spawner: LocalSpawner, state: StateStore, clock: any GateClock = SystemClock()) {
        self.spawner = spawner
        self.state = state
        self.clock = clock
    }

    /// The service over a home's state store, for commands that list or release (they start nothing).
    public static func local(_ home: Home) throws(GatewayFailure) -> AgentService {
        AgentService(spawner: LocalSpawner(home: home), state: try StateStore.open(home.stateDB))
    }

    /// An agent that is running, as started here.
    public struct Started: Sendable {
        public let agent: SpawnedAgent
        public let record: AgentRecord
        /// What its receipt says about the start.
        public var receipt: Receipt.Started { Receipt.Started(pid: agent.pid, startedAt: record.startedAt, layers: agent.layers) }
    }

    /// What a start came to, as a receipt tells it.
    public enum Outcome: Sendable {
        case started(Receipt.Started)
        /// Nothing is running: it could not start, or it exited within the startup check.
        case failed(why: String, exitStatus: Int32?, tail: String?)
    }

    /// Starts `spawn` in its sandbox and records it. The task goes through a pipe when the CLI takes it on
    /// standard input; otherwise standard input is /dev/null, or with `inheritStdin` this process's own.
    public func start(_ spawn: AuthorizedSpawn, output: LocalSpawner.Output, inheritStdin: Bool = false) throws(GatewayFailure) -> Started {
        var stdinFD: Int32? = inheritStdin ? 0 : nil
        do {
            if let task = spawn.match.stdinTask { stdinFD = try LocalSpawner.taskInput(task) }
        } catch { throw freeing(spawn, error) }
        defer { if let fd = stdinFD, fd != 0 { close(fd) } }
        let agent: SpawnedAgent
        do { agent = try spawner.start(spawn, output: output, stdin: stdinFD) } catch { throw freeing(spawn, error) }
        lock.lock(); children[agent.pid] = spawn.request.requestID; lock.unlock()
        let record = AgentRecord(agent, of: spawn, startedAt: clock.now())
        do { try state.recordStart(record, leaseID: spawn.leaseID) } catch {
            // An agent the gateway cannot track is one nobody can release: it does not keep running.
            _ = Supervisor.stop(agent.process, grace: 0)
            collect(agent.pid, wait: true)
            throw freeing(spawn, GatewayFailure("the agent was stopped at once: the state store did not record it: \(error.message)"))
        }
        return Started(agent: agent, record: record)
    }

    /// Starts `spawn` in the background (`serve`), its output in log files, and watches it for `window`
    /// seconds: an agent that exits that soon with a failure status (or a signal) is reported as failed, with its
    /// status and last output.
    public func startChecked(_ spawn: AuthorizedSpawn, window: Double) -> Outcome {
        let started: Started
        do { started = try start(spawn, output: .logFiles) } catch { return .failed(why: error.message, exitStatus: nil, tail: nil) }
        guard window > 0, cspawn_await_exit(started.agent.pid, Int32(window * 1000)) == 1 else { return .started(started.receipt) }
        let status = collect(started.agent.pid, wait: true) ?? ((try? state.exitedAgents(now: clock.now()))?.first { $0.requestID == spawn.request.requestID }?.exitStatus)
        // A program that finished its work that soon, successfully, did start.
        if status == 0 { return .started(started.receipt) }
        let tail = [started.agent.stderrLog, started.agent.stdoutLog].compactMap { $0 }.compactMap(Self.tail).first { !$0.isEmpty }
        return .failed(why: "the agent exited within its startup check (\(Self.seconds(window)))", exitStatus: status, tail: tail)
    }

    /// Waits in the foreground until the agent exits or its max_runtime is up (then TERM, KILL after `grace`),
    /// and records its status. Returns it as a shell reports it.
    public func wait(_ started: Started, grace: Double = Supervisor.grace) -> Int32 {
        let remaining = started.record.deadline.map { max(0, $0 - clock.now()) }
        let status = Supervisor.wait(started.agent, maxRuntime: remaining, grace: grace)
        lock.lock(); children[started.agent.pid] = nil; lock.unlock()
        try? state.recordExit(requestID: started.record.requestID, status: status, at: clock.now())
        return status
    }

    /// The running agents, oldest first (of one broker, when given). Agents that are gone are marked exited.
    public func running(broker: String? = nil) throws(GatewayFailure) -> [AgentRecord] {
        try state.runningAgents().filter { broker == nil || $0.broker == broker }
    }

    /// Running agents, then those that exited within the retention period (with their status).
    public func listed(broker: String? = nil) throws(GatewayFailure) -> [AgentRecord] {
        let running = try running(broker: broker)
        return running + (try state.exitedAgents(now: clock.now())).filter { broker == nil || $0.broker == broker }
    }

    /// One agent released: whether it was still running when asked.
    public struct Released: Sendable {
        public let record: AgentRecord
        public let stopped: Bool
    }

    /// Stops every running agent named `name` (of `broker`, when given): TERM to all of it, KILL after `grace`.
    public func release(name: String, broker: String?, grace: Double = Supervisor.grace) throws(GatewayFailure) -> [Released] {
        try running(broker: broker).filter { $0.name == name }.map { record in
            let stopped = Supervisor.stop(record.process, grace: grace)
            let status = collect(record.process.pid, wait: true)
            try? state.recordExit(requestID: record.requestID, status: status, at: clock.now())
            return Released(record: record, stopped: stopped)
        }
    }

    /// Collects agents that exited and stops those past their max_runtime deadline, whoever started them: the
    /// deadline is in the state store, so it holds across a restart of the gateway. Returns how many ended.
    @discardableResult
    public func reap(grace: Double = 2) -> Int {
        lock.lock(); let mine = Array(children.keys); lock.unlock()
        // Our own children first: an exited one is a zombie until collected here.
        var ended = 0
        for pid in mine where collect(pid, wait: false) != nil { ended += 1 }
        guard let records = try? state.runningAgents() else { return ended }
        let now = clock.now()
        for record in records {
            guard let deadline = record.deadline, now >= deadline else { continue }
            _ = Supervisor.stop(record.process, grace: grace)
            let status = collect(record.process.pid, wait: true)
            try? state.recordExit(requestID: record.requestID, status: status, at: now)
            ended += 1
        }
        return ended
    }

    /// Reaps `pid` if it is a child of this process that exited (`wait`: waits for it to exit), records its exit,
    /// and returns its status as a shell reports it; nil when it was not reaped here.
    @discardableResult
    private func collect(_ pid: Int32, wait: Bool) -> Int32? {
        lock.lock(); let requestID = children[pid]; lock.unlock()
        guard let requestID else { return nil }
        var raw: Int32 = 0
        let r = waitpid(pid, &raw, wait ? 0 : WNOHANG)
        guard r == pid || (r < 0 && errno == ECHILD) else { return nil }
        lock.lock(); children[pid] = nil; lock.unlock()
        let status: Int32? = r == pid ? ((raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)) : nil
        try? state.recordExit(requestID: requestID, status: status, at: clock.now())
        return status
    }

    private func freeing(_ spawn: AuthorizedSpawn, _ error: GatewayFailure) -> GatewayFailure {
        if let lease = spawn.leaseID { _ = try? state.releaseLease(requestID: lease) }
        return error
    }

    /// The last lines of a log file (from its last 2 KiB, as `logs` shows them), for a receipt of a start that failed.
    static func tail(_ path: String) -> String? {
        guard let bytes = try? Files.read(path, limit: 16 << 20) else { return nil }
        let text = TerminalText.displayed(bytes: bytes.suffix(2048))
        return text.split(separator: "\n", omittingEmptySubsequences: true).suffix(10).joined(separator: "\n")
    }

    static func seconds(_ s: Double) -> String { s == s.rounded() ? "\(Int(s)) s" : "\(s) s" }
}

/// An agent's output, as `logs` shows it: never a file path of the target, bounded in size. Offsets are bytes of
/// the output file; the text is only for display (``TerminalText/displayed(bytes:)``), so output that is not valid
/// UTF-8 neither moves a follower's place nor looks like other bytes.
public struct AgentOutput: Sendable {
    public static let maxBytes = 64 * 1024
    public static let maxLines: Int64 = 1000

    public let record: AgentRecord
    /// The last lines of standard output, or (for a read from an offset) what follows that offset, at most
    /// ``maxBytes`` of it, as shown.
    public let stdout: String
    /// The last lines of standard error (not on reads from an offset), as shown.
    public let stderr: String
    /// Standard output's size when it was read.
    public let size: Int64
    /// The byte offset of standard output to read on from: the offset plus the bytes this read consumed. Short of
    /// `size` when more was there than one read takes, or while the agent runs and its output ends inside a UTF-8
    /// sequence (probably half-written: its last bytes wait for the next read).
    public let next: Int64
    /// Where the output is when it is not here (a relay worker's terminal is the broker's).
    public let note: String?
}

extension AgentService {
    /// The output of `name` (of `broker`, when given): the running one, else the one that exited last. `lines` from
    /// the end of each stream, or from byte `offset` of standard output on (for following it). `limit`: the most
    /// bytes read from each stream.
    public func output(name: String, broker: String?, lines: Int64 = 50, offset: Int64? = nil,
                       limit: Int = AgentOutput.maxBytes) throws(GatewayFailure) -> AgentOutput? {
        let all = try listed(broker: broker).filter { $0.name == name }
        guard let record = all.first(where: { $0.exitedAt == nil }) ?? all.first else { return nil }
        guard let out = record.log else {
            return AgentOutput(record: record, stdout: "", stderr: TerminalText.escaped(record.tail ?? "", keepingNewlines: true),
                               size: 0, next: 0,
                               note: "a relay worker's terminal is its Agent Relay broker's; only the last lines it wrote to standard error when it ended are kept here")
        }
        let err = out.hasSuffix(".out") ? String(out.dropLast(4)) + ".err" : out + ".err"
        let n = Int(min(max(lines, 1), AgentOutput.maxLines))
        // Once the agent has exited nothing more is written: its last bytes are whole, valid or not.
        let complete = record.exitedAt != nil
        let size = Int64(Files.size(out) ?? 0)
        if let offset {
            let from = min(offset, size)
            let bytes = Self.read(out, from: from, limit: limit, complete: complete)
            return AgentOutput(record: record, stdout: TerminalText.displayed(bytes: bytes), stderr: "", size: size,
                               next: from + Int64(bytes.count), note: nil)
        }
        let (stdout, next) = Self.lastLines(out, n, size: size, limit: limit, complete: complete)
        let (stderr, _) = Self.lastLines(err, n, size: Int64(Files.size(err) ?? 0), limit: limit, complete: complete)
        return AgentOutput(record: record, stdout: stdout, stderr: stderr, size: size, next: next, note: nil)
    }

    /// The bytes of `path` to consume from `offset` on: at most `limit`, and not past `end` when given. A read that
    /// stopped short of the data there ends after its last whole line; one that is not `complete` (the writer may
    /// still be writing, or the read stopped short) leaves out a UTF-8 sequence cut at its end.
    static func read(_ path: String, from offset: Int64, upTo end: Int64? = nil, limit: Int = AgentOutput.maxBytes,
                     complete: Bool) -> ArraySlice<UInt8> {
        let want = Int(max(0, min(Int64(limit), (end ?? Int64.max) - offset)))
        guard want > 0 else { return [] }
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: want)
        let n = pread(fd, &buf, want, off_t(offset))
        guard n > 0 else { return [] }
        var bytes = buf[0..<n]
        let short = end == nil && n == limit
        if short, let nl = bytes.lastIndex(of: 10) { return bytes[...nl] }
        if short || !complete { bytes = bytes.dropLast(Self.incompleteTail(bytes)) }
        return bytes
    }

    /// How many bytes at the end of `bytes` begin a UTF-8 sequence that needs more (0 to 3).
    static func incompleteTail(_ bytes: ArraySlice<UInt8>) -> Int {
        var continuations = 0
        for b in bytes.reversed() {
            if b & 0xC0 == 0x80 {
                continuations += 1
                if continuations == 3 { return 0 }  // a whole 4-byte sequence, or none to wait for
                continue
            }
            let length = switch b { case 0xC2...0xDF: 2; case 0xE0...0xEF: 3; case 0xF0...0xF4: 4; default: 0 }
            return length > continuations + 1 ? continuations + 1 : 0
        }
        return 0
    }

    /// The last `count` lines of a file of `size` bytes, read from its last `limit` bytes, as shown; and the offset
    /// after the bytes consumed.
    static func lastLines(_ path: String, _ count: Int, size: Int64, limit: Int = AgentOutput.maxBytes,
                          complete: Bool) -> (text: String, end: Int64) {
        guard size > 0 else { return ("", 0) }
        let from = max(0, size - Int64(limit))
        let bytes = read(path, from: from, upTo: size, limit: limit, complete: complete)
        var lines = bytes.split(separator: 10, omittingEmptySubsequences: false)
        if lines.last?.isEmpty == true { lines.removeLast() }
        if from > 0, !lines.isEmpty { lines.removeFirst() }  // a partial first line
        var shown: [UInt8] = []
        for line in lines.suffix(count) { shown += line; shown.append(10) }
        return (TerminalText.displayed(bytes: shown), from + Int64(bytes.count))
    }
}
