import ArgumentParser
import Foundation
import SpawnGate
#if canImport(Glibc)
import Glibc
#endif

struct Exec: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decide a request, then run the approved agent in its sandbox in the foreground.",
        discussion: """
            For a broker that owns the terminal: run 'spawngate exec request.json' as the agent command. The agent \
            gets this terminal (or, with --log, files under agents/NAME/ in the home), exactly the approved argv, cwd \
            and environment, and the rule's sandbox profile. Exit status: the agent's own (128 + signal when killed); \
            when nothing was started, 1 for a denial and 2 when the gateway cannot decide, with the decision JSON on \
            standard error.
            """)
    @OptionGroup var home: HomeOption
    @Argument(help: ArgumentHelp("The envelope file, or - for standard input.", valueName: "file")) var file: String?
    @Flag(help: "Send the agent's output to agents/NAME/<request>.out and .err in the home instead of this terminal.")
    var log = false

    func run() throws {
        let home = home.resolved
        let pipeline: DecisionPipeline
        do { pipeline = try DecisionPipeline.open(home: home) } catch {
            printError(error.message)
            throw Exit.cannotDecide
        }
        let input: [UInt8]
        do { input = try Files.readInput(file, limit: Envelope.maxSize) } catch {
            printError(error.message)
            throw Exit.cannotDecide
        }
        let outcome = pipeline.decide(input)
        guard let authorized = outcome.authorized else {
            printError(outcome.decision.json)
            throw ExitCode(outcome.exitCode)
        }
        if authorized.match.rule.spawner == "agent-relay" {
            try handOff(authorized, state: pipeline.state)
            return
        }
        // The agent's standard input: the task when the CLI takes it there, else this terminal's (unless the
        // envelope itself came from it).
        var stdinFD: Int32? = (file == nil || file == "-") ? nil : 0
        if let task = authorized.match.stdinTask {
            do { stdinFD = try LocalSpawner.taskInput(task) } catch {
                printError("allowed, but not started: \(error.message)")
                throw Exit.cannotDecide
            }
        }
        let agent: SpawnedAgent
        do {
            agent = try LocalSpawner(home: home).start(authorized, output: log ? .logFiles : .inherit, stdin: stdinFD)
        } catch {
            if let lease = authorized.leaseID { _ = try? pipeline.state.releaseLease(requestID: lease) }
            printError("allowed, but not started: \(error.message)")
            throw Exit.cannotDecide
        }
        if let fd = stdinFD, fd != 0 { close(fd) }
        // Remembered (and its lease bound to its process) so 'agents' lists it and 'release' can stop it; if this
        // process dies, the next 'agents' finds the agent gone and frees its slot.
        let record = AgentRecord(agent, of: authorized, startedAt: SystemClock().now())
        do { try pipeline.state.recordStart(record, leaseID: authorized.leaseID) } catch {
            // An agent the gateway cannot track is one nobody can release: it does not keep running.
            _ = Supervisor.stop(agent.process, grace: 0)
            _ = Supervisor.wait(agent, maxRuntime: nil)
            printError("allowed, but stopped at once: the state store did not record the agent: \(error.message)")
            throw Exit.cannotDecide
        }
        if log {
            print("started \(agent.name) (pid \(agent.pid), sandbox \(agent.profile.rawValue): \(agent.layers.joined(separator: ", ")))")
            print("output: \(agent.stdoutLog ?? "-") and \(agent.stderrLog ?? "-")")
        }
        let status = Supervisor.wait(agent, maxRuntime: authorized.match.rule.maxRuntime)
        try? pipeline.state.recordExit(requestID: record.requestID)
        if status != 0 { throw ExitCode(status) }
    }

    /// `spawner: agent-relay`: the local broker starts the agent; its concurrency slot lasts until `hook exited`
    /// or the rule's max_runtime (else an hour), as for agents a broker starts after `hook pre-spawn`.
    func handOff(_ authorized: AuthorizedSpawn, state: StateStore) throws {
        let env = ProcessInfo.processInfo.environment
        do {
            let connection = try AgentRelayConnection.load(AgentRelayConnection.file(cwd: authorized.match.cwd, environment: env))
            let accepted = try AgentRelayBackend(connection: connection).start(authorized)
            print("handed \(authorized.request.request.name) to the Agent Relay broker at \(connection.url.absoluteString) (HTTP \(accepted.status)): \(accepted.body)")
        } catch {
            if let lease = authorized.leaseID { _ = try? state.releaseLease(requestID: lease) }
            printError("allowed, but not started: \(error.message)")
            throw Exit.cannotDecide
        }
    }
}
