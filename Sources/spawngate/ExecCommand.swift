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
        if authorized.match.rule.spawner == .agentRelay {
            try handOff(authorized, state: pipeline.state)
            return
        }
        let service = AgentService(spawner: LocalSpawner(home: home), state: pipeline.state)
        let started: AgentService.Started
        do {
            // The agent's standard input: the task when the CLI takes it there, else this terminal's (unless the
            // envelope itself came from it). Recorded so 'agents' lists it and 'release' can stop it; if this
            // process dies, the next 'agents' finds the agent gone and frees its slot.
            started = try service.start(authorized, output: log ? .logFiles : .inherit, inheritStdin: !(file == nil || file == "-"))
        } catch {
            printError("allowed, but not started: \(error.message)")
            throw Exit.cannotDecide
        }
        let agent = started.agent
        if log {
            print("started \(agent.name) (pid \(agent.pid), sandbox \(agent.profile.rawValue): \(agent.layers.joined(separator: ", ")))")
            print("output: \(agent.stdoutLog ?? "-") and \(agent.stderrLog ?? "-")")
        }
        let status = service.wait(started)
        if status != 0 { throw ExitCode(status) }
    }

    /// `spawner: agent-relay`: the local broker starts the agent; its concurrency slot lasts until `hook exited`
    /// or the rule's max_runtime (else an hour), as for agents a broker starts after `hook pre-spawn`.
    func handOff(_ authorized: AuthorizedSpawn, state: StateStore) throws {
        do {
            let (accepted, connection) = try AgentRelayBackend.handOff(authorized, state: state, environment: ProcessInfo.processInfo.environment)
            print("handed \(authorized.request.request.name) to the Agent Relay broker at \(connection.url.absoluteString) (HTTP \(accepted.status)): \(accepted.body)")
        } catch {
            printError("allowed, but not started: \(error.message)")
            throw Exit.cannotDecide
        }
    }
}
