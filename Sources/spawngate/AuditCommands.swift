import ArgumentParser
import SpawnGate
import SpawnGateCLI

struct Audit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check and read the hash-chained decision log (audit.log).",
        subcommands: [VerifyLog.self, Tail.self, Rotate.self])

    struct VerifyLog: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "verify",
            abstract: "Recompute the hash chain and compare its end with the head kept in the state store.",
            discussion: "Exit 0 intact, 1 broken (the first bad line is named), 2 the log or state store cannot be read.")
        @OptionGroup var home: HomeOption

        func run() throws {
            try operatorAction {
                let home = home.resolved
                let head = try StateStore.open(home.stateDB).auditHead()
                switch try AuditLog(path: home.auditLog).verify(expected: head) {
                case .intact(let h):
                    print("audit log intact: \(h.lines) line\(h.lines == 1 ? "" : "s"), head \(h.hash)")
                case .broken(let line, let reason):
                    throw OperatorError("\(home.auditLog):\(line): \(reason)")
                }
            }
        }
    }

    struct Tail: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the most recent decisions.")
        @OptionGroup var home: HomeOption
        @Option(name: .short, help: ArgumentHelp("How many decisions.", valueName: "n")) var n = 10
        @Flag(help: "Print the log lines as they are (JSON Lines).") var json = false

        func validate() throws {
            guard n > 0 else { throw ValidationError("-n must be at least 1") }
        }

        func run() throws {
            try operatorAction {
                for line in try AuditLog(path: home.resolved.auditLog).tail(n) {
                    // A line written before the log escaped bidi and invisible characters is escaped here; the
                    // JSON means the same.
                    print(json ? TerminalText.escaped(line) : AuditLog.summary(of: line))
                }
            }
        }
    }

    struct Rotate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move audit.log aside and start a new chain.",
            discussion: """
                For a log grown large, or one that 'audit verify' reports broken (decisions are refused with \
                audit_unavailable until then). The old file is kept as audit.log.<unix-time>; keep it as evidence.
                """)
        @OptionGroup var home: HomeOption

        func run() throws {
            try operatorAction {
                let home = home.resolved
                let state = try StateStore.open(home.stateDB)
                let log = AuditLog(path: home.auditLog)
                let before = try? log.verify(expected: state.auditHead())
                let moved = try state.rotateAudit(log, time: SystemClock().now())
                if let moved {
                    let status: String
                    switch before {
                    case .intact(let h)?: status = "intact, \(h.lines) lines, head \(h.hash)"
                    case .broken(let line, let reason)?: status = "broken at line \(line): \(reason)"
                    case nil: status = "unreadable"
                    }
                    print("moved \(home.auditLog) to \(moved) (\(status)); a new chain starts with the next decision")
                } else {
                    print("no audit log yet; the chain head is reset")
                }
            }
        }
    }
}
