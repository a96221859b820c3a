import ArgumentParser
import Foundation
import SpawnGate

/// `spawngate dashboard` runs `spawngate-dashboard`, installed next to this binary, with the same arguments, as
/// `serve` runs `spawngate-serve`: the network stack stays out of `spawngate`.
struct DashboardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dashboard",
        abstract: "Serve a local web page: brokers, a Spawn Agent dialog with a broker selector, live agents, decisions, the policy.",
        discussion: """
            Runs spawngate-dashboard (installed next to spawngate) with these arguments; 'spawngate dashboard \
            --help' lists its options (--home, --listen, --timeout). It prints the URL to open, with this start's \
            secret, as the first line of standard output.
            """,
        helpNames: [])
    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("Options of the dashboard: see 'spawngate dashboard --help'.", valueName: "options"))
    var arguments: [String] = []

    func run() throws { try execSibling("spawngate-dashboard", as: "dashboard", arguments) }
}
