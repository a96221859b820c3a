import ArgumentParser
import Foundation
import SpawnGate
import SpawnGateCLI
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
            when nothing was started, the decision JSON on standard error and its status: 1 for a denial, or for \
            start_failed (a relay worker that did not come up, as 'spawn --broker' reports it), 2 when the gateway \
            cannot decide or could not start the agent (internal_error).
            """)
    @OptionGroup var home: HomeOption
    @Argument(help: ArgumentHelp("The envelope file, or - for standard input.", valueName: "file")) var file: String?
    @Flag(help: "Send the agent's output to agents/NAME/<request>.out and .err in the home instead of this terminal.")
    var log = false

    func run() throws {
        let home = home.resolved
        let pipeline = try exiting { try DecisionPipeline.open(home: home) }
        let input = try exiting { try Files.readInput(file, limit: Envelope.maxSize) }
        let outcome = pipeline.decide(input)
        guard let authorized = outcome.authorized else {
            printError(outcome.decision.json)
            throw Exit.of(outcome.decision.reason)
        }
        let service = AgentService(spawner: LocalSpawner(home: home), state: pipeline.state)
        if authorized.match.rule.spawner == .agentRelay {
            // The broker's worker runs it, in its own terminal; this command says what started and returns.
            switch service.startRelayWorker(authorized, environment: ProcessInfo.processInfo.environment, redeem: { pipeline.redeem($0) }) {
            case .started(let s):
                printLine("started \(authorized.request.request.name) as an Agent Relay worker (pid \(s.pid), sandbox \(authorized.match.rule.sandbox.rawValue): \(s.layers.joined(separator: ", ")))")
                return
            case .failed(let why, let status, let tail):
                // The same record, and so the same reason and status, as serve's receipt for this start.
                let d = outcome.decision.notStarted(why: why, exitStatus: status, relayWorker: true)
                printError(d.json)
                printError("\(d.reason.rawValue): \(d.detail)\(status.map { " (exit status \($0))" } ?? "")\(tail.map { "; it last wrote:\n" + $0 } ?? "")")
                throw Exit.of(d.reason)
            }
        }
        let started: AgentService.Started
        do {
            // The agent's standard input: the task when the CLI takes it there, else this terminal's (unless the
            // envelope itself came from it). Recorded so 'agents' lists it and 'release' can stop it; if this
            // process dies, the next 'agents' finds the agent gone and frees its slot.
            started = try service.start(authorized, output: log ? .logFiles : .inherit, inheritStdin: !(file == nil || file == "-"))
        } catch {
            let d = outcome.decision.notStarted(why: error.message, exitStatus: nil, relayWorker: false)
            printError(d.json)
            printError(d.detail)
            throw Exit.of(d.reason)
        }
        let agent = started.agent
        if log {
            print("started \(agent.name) (pid \(agent.pid), sandbox \(agent.profile.rawValue): \(agent.layers.joined(separator: ", ")))")
            print("output: \(agent.stdoutLog ?? "-") and \(agent.stderrLog ?? "-")")
        }
        let status = service.wait(started)
        if status != 0 { throw ExitCode(status) }
    }
}
