import ArgumentParser
import Foundation
import SpawnGate
import SpawnGateCLI
#if canImport(Glibc)
import Glibc
#endif

/// The relay launcher's second half: `spawngate-launch` (a small C program the Agent Relay broker runs as a relay
/// worker's program) starts the agent its gateway prepared, then execs this to stay with it. Not for people.
struct Launch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Supervise a relay worker's agent (exec'd by spawngate-launch, not run by hand).",
        discussion: """
            The gateway that allowed a spawn with 'spawner: agent-relay' asks the local Agent Relay broker to run \
            'spawngate-launch' in a new relay worker's terminal. The launcher shows its single-use ticket to the \
            waiting gateway, which checks again what could have changed (the key, the policy, the binary) and hands \
            it the start, sandbox included; the launcher starts it and, once the gateway has recorded the agent, \
            becomes this command: it stays in the terminal while the agent runs (forwarding Ctrl-C and window \
            size, copying its standard error), stops it at the rule's max_runtime, and records how it ended. \
            Exit status: the agent's own, or 2 when this gateway's state cannot be used.
            """,
        shouldDisplay: false)
    @OptionGroup var home: HomeOption
    @Option(help: ArgumentHelp("The request whose agent this process started.", valueName: "request-id")) var supervise: String
    @Option(help: ArgumentHelp("The read end of the agent's standard error pipe.", valueName: "fd")) var stderrFd: Int32
    @Option(help: ArgumentHelp("The connection to the gateway, told when the agent has ended.", valueName: "fd")) var reportFd: Int32

    func run() throws {
        let home = home.resolved
        let copier = StderrCopier(from: stderrFd)
        copier.start()
        let service: AgentService
        let found: AgentService.Started?
        do {
            service = try AgentService.local(home)
            found = try service.relayWorker(supervise)
        } catch { throw failure(error, doing: "cannot supervise the relay worker") }
        guard let started = found else {
            printError("request \(supervise) has no agent recorded by this gateway; nothing to supervise")
            throw Exit.of(.startFailed)
        }
        // The agent is this process's child (spawngate-launch started it, then exec'd this). Keys typed in the
        // terminal and resizes go to the terminal's foreground group (this process): on to the agent, whose init
        // passes them to every process it has. The launcher left them ignored until now.
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
        let tail = copier.tail
        try? service.state.recordExit(requestID: supervise, status: status, tail: tail)
        // A gateway still watching the start reads how it ended now.
        LaunchChannel.report(fd: reportFd, status: status, tail: tail)
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
