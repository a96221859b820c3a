import ArgumentParser
import Foundation
import SpawnGate
import SpawnGateCLI

struct Agents: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the agents this gateway started: those running, then those that exited in the last hour.",
        discussion: """
            Agents started by 'spawngate exec', 'serve' and relay workers are remembered in state.db with their \
            process id and start time. An agent whose process is gone is marked exited here, and its concurrency \
            slot is freed, also when it ended while no gateway was running (its status is then unknown). STATE is \
            'running', or 'exited N' with the status a shell would show (128 + signal when killed).
            """)
    @OptionGroup var home: HomeOption
    @Flag(help: "Print a JSON array.") var json = false
    @OptionGroup var target: BrokerOption

    func run() throws {
        if let broker = target.broker {
            let (answer, list) = try remoteAction { try target.remote(home.resolved, target: broker).agents() }
            // A refusal is not an empty listing: say it, and exit as every refused command does.
            guard answer.receipt.allowed else {
                printLine("refused by \(broker): \(answer.receipt.reason.rawValue): \(answer.receipt.detail)")
                throw Exit.of(answer.receipt.reason)
            }
            if json { print(String(decoding: JSONWriter.encode(.array(list)), as: UTF8.self)); return }
            guard !list.isEmpty else { print("no agents of this broker on \(broker)"); return }
            func field(_ v: JSONValue, _ k: String) -> String {
                guard case .object(let o) = v else { return "" }
                switch o[k] { case .string(let s)?: return s; case .number(let n)?: return n; default: return "" }
            }
            table([["NAME", "CLI", "CWD", "PID", "UPTIME", "SANDBOX", "STATE"]] + list.map {
                let state = field($0, "state") == "exited" ? "exited " + (field($0, "exit_status").isEmpty ? "?" : field($0, "exit_status")) : "running"
                return [field($0, "name"), field($0, "cli"), field($0, "cwd"), field($0, "pid"),
                        AgentRecord.duration(Int64(field($0, "uptime_seconds")) ?? 0), field($0, "sandbox"), state]
            })
            return
        }
        try operatorAction {
            let agents = try AgentService.local(home.resolved).listed()
            let now = SystemClock().now()
            if json {
                print(String(decoding: JSONWriter.encode(.array(agents.map { $0.json(now: now) })), as: UTF8.self))
                return
            }
            guard !agents.isEmpty else { print("no agents running"); return }
            table([["NAME", "BROKER", "CLI", "CWD", "PID", "UPTIME", "SANDBOX", "STATE"]] + agents.map {
                [$0.name, $0.broker, $0.cli, $0.cwd, String($0.process.pid), AgentRecord.duration(($0.exitedAt ?? now) - $0.startedAt),
                 $0.profile, $0.stateText(now: now)]
            })
        }
    }
}

/// Columns padded to their widest cell; cells (names, cwds from requests) are shown through TerminalText.
func table(_ rows: [[String]]) {
    let rows = rows.map { $0.map { TerminalText.escaped($0) } }
    let widths = (0..<(rows.first?.count ?? 0)).map { c in rows.map { $0[c].count }.max() ?? 0 }
    for r in rows {
        print(r.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }
            .joined(separator: "  ").trimmingCharacters(in: .whitespaces))
    }
}

struct Release: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stop a running agent: SIGTERM to its process group, then SIGKILL after a grace period.",
        discussion: "Every running agent with that name is stopped, and its concurrency slot freed.")
    @OptionGroup var home: HomeOption
    @Argument(help: ArgumentHelp("The agent's name, as 'spawngate agents' lists it.", valueName: "name")) var name: String
    @Option(help: ArgumentHelp("Seconds between SIGTERM and SIGKILL.", valueName: "seconds")) var grace: Double = Supervisor.grace
    @OptionGroup var target: BrokerOption

    func validate() throws {
        guard grace >= 0, grace <= 600 else { throw ValidationError("--grace must be between 0 and 600 seconds") }
    }

    func run() throws {
        if let broker = target.broker {
            // The target applies its own grace period; only this broker's own agents there can be released.
            let (answer, released) = try remoteAction { try target.remote(home.resolved, target: broker).release(name: name) }
            guard answer.receipt.allowed else {
                printLine("refused by \(broker): \(answer.receipt.reason.rawValue): \(answer.receipt.detail)")
                throw Exit.of(answer.receipt.reason)
            }
            guard !released.isEmpty else {
                throw failure(OperatorError("\(broker): \(answer.receipt.detail)"))
            }
            for case .object(let o) in released {
                let stopped = o["stopped"] == .bool(true)
                let label = { (k: String) -> String in if case .string(let s)? = o[k] { s } else if case .number(let n)? = o[k] { n } else { "?" } }
                printLine(stopped ? "released \(label("name")) on \(broker) (pid \(label("pid")))" : "\(label("name")) on \(broker) (pid \(label("pid"))) had already exited")
            }
            return
        }
        try operatorAction {
            let released = try AgentService.local(home.resolved).release(name: name, broker: nil, grace: grace)
            guard !released.isEmpty else {
                throw OperatorError("no running agent is named '\(name)'; 'spawngate agents' lists the running ones")
            }
            for r in released {
                let agent = r.record
                printLine(r.stopped ? "released \(agent.name) (pid \(agent.process.pid))" : "\(agent.name) (pid \(agent.process.pid)) had already exited")
            }
        }
    }
}
