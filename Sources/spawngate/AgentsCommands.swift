import ArgumentParser
import Foundation
import SpawnGate

struct Agents: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the agents this gateway started that are still running.",
        discussion: """
            Agents started by 'spawngate exec' (and by 'serve') are remembered in state.db with their process id \
            and start time. An agent whose process is gone is dropped from the list here, and its concurrency slot \
            is freed, also when it ended while no gateway was running.
            """)
    @OptionGroup var home: HomeOption
    @Flag(help: "Print a JSON array.") var json = false

    func run() throws {
        try operatorAction {
            let agents = try StateStore.open(home.resolved.stateDB).runningAgents()
            let now = SystemClock().now()
            if json {
                print(String(decoding: JSONWriter.encode(.array(agents.map { $0.json(now: now) })), as: UTF8.self))
                return
            }
            guard !agents.isEmpty else { print("no agents running"); return }
            let rows = [["NAME", "BROKER", "CLI", "CWD", "PID", "UPTIME", "SANDBOX"]] + agents.map {
                [$0.name, $0.broker, $0.cli, $0.cwd, String($0.process.pid), AgentRecord.duration(now - $0.startedAt), $0.profile]
            }
            let widths = (0..<7).map { c in rows.map { $0[c].count }.max() ?? 0 }
            for r in rows {
                print(r.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }
                    .joined(separator: "  ").trimmingCharacters(in: .whitespaces))
            }
        }
    }
}

struct Release: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stop a running agent: SIGTERM to its process group, then SIGKILL after a grace period.",
        discussion: "Every running agent with that name is stopped, and its concurrency slot freed.")
    @OptionGroup var home: HomeOption
    @Argument(help: ArgumentHelp("The agent's name, as 'spawngate agents' lists it.", valueName: "name")) var name: String
    @Option(help: ArgumentHelp("Seconds between SIGTERM and SIGKILL.", valueName: "seconds")) var grace: Double = Supervisor.grace

    func validate() throws {
        guard grace >= 0, grace <= 600 else { throw ValidationError("--grace must be between 0 and 600 seconds") }
    }

    func run() throws {
        try operatorAction {
            let state = try StateStore.open(home.resolved.stateDB)
            let matching = try state.runningAgents().filter { $0.name == name }
            guard !matching.isEmpty else {
                throw OperatorError("no running agent is named '\(name)'; 'spawngate agents' lists the running ones")
            }
            for agent in matching {
                let stopped = Supervisor.stop(agent.process, grace: grace)
                try state.recordExit(requestID: agent.requestID)
                print(stopped ? "released \(agent.name) (pid \(agent.process.pid))" : "\(agent.name) (pid \(agent.process.pid)) had already exited")
            }
        }
    }
}
