import ArgumentParser
import Foundation
import SpawnGate
import SpawnGateCLI

struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show which sandbox layers work on this machine, file-permission problems, policy status, and the Agent Relay brokers it would use.",
        discussion: """
            Exit status 0 when nothing is wrong; 1 when something would make requests fail (a file others can \
            change, a policy that does not load or whose tests fail, or a rule asking for a sandbox layer this \
            machine lacks). Each problem line says what to do.
            """)
    @OptionGroup var home: HomeOption
    @Option(help: ArgumentHelp("The address 'serve --listen' uses: beyond loopback, warn about allow rules whose brokers may send from any address (no sources: and no 'key bind').", valueName: "host:port"))
    var listen: String?

    func run() throws {
        let findings = SpawnGate.Doctor.examine(home.resolved, from: FileManager.default.currentDirectoryPath,
                                                environment: ProcessInfo.processInfo.environment, listen: listen)
        for f in findings { print(f.line) }
        let failed = findings.filter { $0.severity == .fail }.count
        let warned = findings.filter { $0.severity == .warn }.count
        print(failed == 0 ? "no problems\(warned > 0 ? " (\(warned) warning\(warned == 1 ? "" : "s"))" : "")" : "\(failed) problem\(failed == 1 ? "" : "s") to fix")
        if failed > 0 { throw Exit.denied }
    }
}
