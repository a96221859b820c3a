import ArgumentParser
import Foundation
import SpawnGate
import SpawnGateCLI
#if canImport(Glibc)
import Glibc
#endif

struct Logs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show an agent's output: here, or (signed, this broker's own agents only) on a target.",
        discussion: """
            The agent named NAME that is running, else the one that exited last (within the hour 'agents' lists \
            exited agents). Shows the last lines of its standard output and standard error; --follow then prints \
            what it writes until it exits. With --broker the request is signed like 'agents --broker', the answer \
            is a receipt sealed to this broker, and the target shows only this broker's own agents, at most 64 KiB \
            at a time and never a file path of its own. A relay worker's terminal is its Agent Relay broker's: only \
            the last lines it wrote to standard error when it ended are kept.
            Exit 0: shown; 1: no such agent, or the target refused (signed answer); 2: no verified answer from the \
            target, or it could not decide (its receipt says internal_error or audit_unavailable).
            """)
    @OptionGroup var home: HomeOption
    @Argument(help: ArgumentHelp("The agent's name, as 'spawngate agents' lists it.", valueName: "name")) var name: String
    @Option(name: [.customShort("n"), .customLong("lines")], help: ArgumentHelp("How many lines from the end (1 to 1000).", valueName: "n"))
    var lines: Int64 = 50
    @Flag(help: "Keep printing what the agent writes until it exits.") var follow = false
    @OptionGroup var target: BrokerOption

    func validate() throws {
        guard (1...AgentOutput.maxLines).contains(lines) else { throw ValidationError("-n must be between 1 and \(AgentOutput.maxLines)") }
    }

    /// One read of the agent's output, wherever it is. `next`: the byte offset of standard output to read on
    /// from, as the gateway counted it (nil from a gateway older than it).
    struct Chunk { var stdout = "", stderr = "", size: Int64 = 0, next: Int64?, running = false, status: Int64?, note: String? }

    func run() throws {
        let home = home.resolved
        let read: (Int64?) throws -> Chunk?
        if let broker = target.broker {
            let remote = try remoteAction { try target.remote(home, target: broker) }
            read = { offset in
                let answer = try remoteAction { try remote.logs(name: name, lines: lines, offset: offset) }
                let r = answer.receipt
                guard r.allowed else {
                    printError("refused by \(broker): \(r.reason.rawValue): \(r.detail)")
                    throw Exit.of(r.reason)
                }
                guard r.members["found"] == .bool(true) else { return nil }
                func s(_ k: String) -> String { if case .string(let v)? = r.members[k] { v } else { "" } }
                return Chunk(stdout: s("stdout"), stderr: s("stderr"), size: r.members["size"]?.safeInteger ?? 0,
                             next: r.members["next"]?.safeInteger, running: s("state") == "running", status: r.members["exit_status"]?.safeInteger,
                             note: r.members["note"] == nil ? nil : s("note"))
            }
        } else {
            let service = try remoteAction { try AgentService.local(home) }
            read = { offset in
                guard let o = try remoteAction({ try service.output(name: name, broker: nil, lines: lines, offset: offset) }) else { return nil }
                return Chunk(stdout: o.stdout, stderr: o.stderr, size: o.size, next: o.next, running: o.record.exitedAt == nil,
                             status: o.record.exitStatus.map(Int64.init), note: o.note)
            }
        }
        guard var chunk = try read(nil) else {
            throw failure(OperatorError("no agent named '\(name)' \(target.broker.map { "of this broker on \($0)" } ?? "here") is running or exited in the last hour; 'spawngate agents\(target.broker.map { " --broker \($0)" } ?? "")' lists them"))
        }
        if let note = chunk.note { Console.write(1, "(\(note))\n") }
        Console.write(1, TerminalText.escaped(chunk.stdout, keepingNewlines: true))
        if !chunk.stderr.isEmpty {
            Console.write(1, "-- standard error:\n")
            Console.write(1, TerminalText.escaped(chunk.stderr, keepingNewlines: true))
        }
        guard follow, chunk.note == nil else { return }
        // Offsets are bytes of the agent's output, as the gateway counted them: the text is only for display
        // (invalid bytes shown as \xNN, controls escaped), so its length says nothing about how much was read.
        var offset = chunk.next ?? chunk.size
        while true {
            let wasRunning = chunk.running
            usleep(target.broker == nil ? 250_000 : 1_000_000)
            guard let next = try read(offset) else { return }
            chunk = next
            Console.write(1, TerminalText.escaped(chunk.stdout, keepingNewlines: true))
            offset = chunk.next ?? offset + Int64(chunk.stdout.utf8.count)  // an older gateway: its text was decoded lossily
            if !wasRunning && chunk.stdout.isEmpty {
                Console.write(1, TerminalText.escaped("-- \(name) exited\(chunk.status.map { " with status \($0)" } ?? "")") + "\n")
                return
            }
        }
    }
}
