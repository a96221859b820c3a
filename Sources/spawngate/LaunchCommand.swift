import ArgumentParser
import Foundation
import SpawnGate
import SpawnGateCLI
#if canImport(Glibc)
import Glibc
#endif

/// What an Agent Relay broker runs as a relay worker's program, in the worker's PTY, for a spawn the gateway
/// allowed (`spawner: agent-relay`). Not for people: the gateway puts the command line in the broker's request.
struct Launch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start an allowed relay worker from a launch ticket (run by an Agent Relay broker, not by hand).",
        discussion: """
            The gateway that allowed a spawn with 'spawner: agent-relay' asks the local Agent Relay broker to run \
            'spawngate launch --ticket T' in a new relay worker's terminal. The ticket is good once, for a minute. \
            The launcher redeems it, checks again what could have changed (the key, the policy, the binary), starts \
            the approved program with exactly the approved arguments in the rule's sandbox, stays in the terminal \
            while it runs (forwarding Ctrl-C and window size), and reports to the gateway how it started and ended. \
            Exit status: the agent's own; when nothing was started, start_failed's (1), as the requester's \
            receipt says (a ticket unknown, used or expired, or a request no longer allowed), or 2 when this \
            gateway's state cannot be used.
            """,
        shouldDisplay: false)
    @OptionGroup var home: HomeOption
    @Option(help: ArgumentHelp("The launch ticket the gateway issued.", valueName: "ticket")) var ticket: String

    func run() throws {
        let home = home.resolved
        let pipeline: DecisionPipeline
        do { pipeline = try DecisionPipeline.open(home: home) } catch { throw failure(error, doing: "cannot launch") }
        let state = pipeline.state
        let redeemed: LaunchTicket?
        do { redeemed = try state.redeemTicket(ticket, now: SystemClock().now()) } catch { throw failure(error, doing: "cannot launch") }
        // Nothing started: the outcome the gateway reports to the requester as start_failed, with its status.
        guard let t = redeemed else {
            printError("this launch ticket is unknown, already used or expired: a ticket starts one allowed spawn, once, within \(LaunchTicket.lifetime) s of the decision")
            throw Exit.of(.startFailed)
        }
        // After each report: the waiting gateway reads it at once (LaunchSignal).
        let signalPath = LaunchSignal.path(home: home, requestID: t.requestID)
        func fail(_ why: String) -> ExitCode {
            printError("not started: \(why)")
            try? state.report(ticketFor: t.requestID, failure: why)
            LaunchSignal.notify(signalPath)
            if let lease = t.leaseID { _ = try? state.releaseLease(requestID: lease) }
            return Exit.of(.startFailed)
        }
        // The ticket travels on the broker's command line: only a process the broker started may use it.
        let parent = Files.readLink("/proc/\(getppid())/exe") ?? "?"
        guard parent.split(separator: "/").last?.hasPrefix("agent-relay-broker") == true else {
            throw fail("the launcher must be started by an Agent Relay broker's worker; its parent is \(parent)")
        }
        let authorized: AuthorizedSpawn
        switch pipeline.redeem(t) {
        case .failure(let e): throw fail(e.message)
        case .success(let a): authorized = a
        }

        // Standard error goes through a pipe copied to the terminal, so a CLI that dies young can be reported
        // with its last lines.
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw fail("cannot make a pipe: \(String(cString: strerror(errno)))") }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        let service = AgentService(spawner: LocalSpawner(home: home, passThrough: ["TERM"], diesWithStarter: true), state: state)
        let started: AgentService.Started
        do { started = try service.start(authorized, output: .descriptors(stdout: 1, stderr: fds[1]), inheritStdin: true) } catch {
            close(fds[0]); close(fds[1])
            throw fail(error.message)
        }
        close(fds[1])
        try? state.report(ticketFor: t.requestID, started: started.receipt)
        LaunchSignal.notify(signalPath)
        let copier = StderrCopier(from: fds[0])
        copier.start()
        // Keys typed in the terminal and resizes go to the terminal's foreground group (this process): on to the
        // agent, whose init passes them to every process it has.
        let forwarded = [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH, SIGUSR1, SIGUSR2]
        let agentInit = started.agent.pid
        let sources = forwarded.map { sig -> DispatchSourceSignal in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { _ = kill(agentInit, sig) }
            source.resume()
            return source
        }
        let status = service.wait(started)
        for s in sources { s.cancel() }
        copier.finish()
        try? state.report(ticketFor: t.requestID, exitStatus: status, tail: copier.tail)
        LaunchSignal.notify(signalPath)
        if status != 0 { throw ExitCode(status) }
    }
}

/// Copies the agent's standard error to this process's (the terminal), keeping the last 4 KiB.
// @unchecked: `last` is read and written only under `lock`; `fd` and `done` are set once, before the thread starts.
final class StderrCopier: @unchecked Sendable {
    private let fd: Int32
    private let lock = NSLock()
    private var last: [UInt8] = []
    private let done = DispatchSemaphore(value: 0)

    init(from fd: Int32) { self.fd = fd }

    func start() {
        let t = Thread { [self] in
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(fd, &buf, buf.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                var off = 0
                while off < n {
                    let w = buf[off..<n].withUnsafeBytes { write(2, $0.baseAddress, n - off) }
                    if w <= 0 { if errno == EINTR { continue }; break }
                    off += w
                }
                lock.lock(); last.append(contentsOf: buf[0..<n]); if last.count > 4096 { last.removeFirst(last.count - 4096) }; lock.unlock()
            }
            close(fd)
            done.signal()
        }
        t.start()
    }

    /// Waits until every writer is gone (the agent's namespace has ended, so this comes at once).
    func finish() { done.wait() }

    var tail: String {
        lock.lock(); defer { lock.unlock() }
        return String(decoding: last, as: UTF8.self).split(separator: "\n").suffix(10).joined(separator: "\n")
    }
}
