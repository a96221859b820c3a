import ArgumentParser
import Foundation
import SpawnGate
import SpawnGateCLI

/// `spawngate handoff NAME --broker TARGET`: the library's ``Handoff``, which the MCP tool `agent.handoff` uses too.
struct HandoffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "handoff",
        abstract: "Move a running agent's task to another broker: start it there, stop it here once that is proven.",
        discussion: """
            The agent's request as this gateway verified it when it started the agent (cli, task, model, \
            arguments, channels, team) is signed by this broker and sent to TARGET, like 'spawngate spawn'. The \
            agent here is stopped only once TARGET's receipt verifies and TARGET's signed listing shows the new \
            agent running; on any failure it keeps running here.
            What moves is the task, nothing else: no files, no conversation, no process state. The working \
            directory on TARGET is the same path unless --cwd names another, and this command never copies a tree, \
            so a cwd with uncommitted git changes (or one that is not a git worktree) is refused unless --force.
            Exit 0: moved; 1: refused here, denied by TARGET, or not seen running there (signed answer); \
            2: no verified answer from TARGET, TARGET could not decide (its receipt says internal_error or \
            audit_unavailable), or this gateway's state cannot be read.
            Example: spawngate handoff coder --broker vps-broker --cwd /srv/app
            """)
    @OptionGroup var home: HomeOption
    @Argument(help: ArgumentHelp("The running agent's name, as 'spawngate agents' lists it.", valueName: "name")) var name: String
    @OptionGroup var target: BrokerOption
    @Option(help: ArgumentHelp("The working directory on the target (default: the same path as here).", valueName: "dir")) var cwd: String?
    @Flag(help: "Move the task although the cwd has uncommitted changes (they stay here).") var force = false
    @Flag(help: "Print the target's verified receipt payload as JSON.") var json = false

    func validate() throws {
        guard target.broker != nil else { throw ValidationError("handoff needs --broker TARGET: the peer whose gateway takes the agent over") }
        guard target.timeout <= 60 else { throw ValidationError("--timeout must be at most 60 seconds for a handoff") }
    }

    func run() throws {
        var handoff = Handoff(name: name, target: target.broker!, cwd: cwd, force: force, timeout: target.timeout)
        // How long the new agent may take to show as running there (a relay worker's start included).
        handoff.runningWithin = max(2, min(target.timeout, 20))
        let moved: Handoff.Moved
        do { moved = try handoff.run(home: home.resolved) } catch {
            if json, let r = error.receipt { print(String(decoding: r.payload, as: UTF8.self)) }
            if error.kind == .denied { printLine("not moved to \(target.broker!): \(error.message)") } else { printError(error.message) }
            throw Exit.of(error: error)
        }
        if json { print(String(decoding: moved.receipt.payload, as: UTF8.self)); return }
        let s = moved.receipt.started!
        printLine("started \(name) on \(target.broker!) in \(moved.cwd): pid \(s.pid) (\(s.layers.joined(separator: ", "))); receipt verified with \(target.broker!)'s key, seen running there")
        printLine(moved.stopped ? "stopped \(name) here (pid \(moved.local.process.pid))" : "\(name) here (pid \(moved.local.process.pid)) had already exited")
    }
}
