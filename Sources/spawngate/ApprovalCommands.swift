import ArgumentParser
import Foundation
import SpawnGate
import SpawnGateCLI

/// `spawngate approvals`: requests held here by a rule that says `approve:`.
struct Approvals: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the requests held here for approval (and those settled in the last hour).",
        discussion: """
            A rule with 'approve: required' (or 'approve: {by: [users], within: 10m}') holds each request it allows: \
            it is decided up to the start, then waits. Settle it with 'spawngate approve ID' or 'spawngate deny ID'; \
            one not approved in time expires and never starts.
            """)
    @OptionGroup var home: HomeOption
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        try operatorAction {
            let state = try StateStore.open(home.resolved.stateDB)
            let now = SystemClock().now()
            let held = try state.heldRequests(now: now)
            if json {
                print(String(decoding: JSONWriter.encode(.array(held.map { $0.json(now: now) })), as: UTF8.self))
                return
            }
            guard !held.isEmpty else { printLine("no requests held for approval"); return }
            table([["ID", "STATE", "BROKER", "NAME", "RULE", "WAITS", "ARGV", "CWD"]] + held.map { h in
                let s = h.state(now: now)
                let waits = s == .pending ? AgentRecord.duration(h.expiresAt - now) : (h.decidedBy.map { "by \($0)" } ?? "-")
                return [h.id, s.rawValue, h.broker, h.name, h.rule, waits, h.argv.joined(separator: " "), h.cwd]
            })
        }
    }
}

/// `--socket`: where the running gateway answers this machine (`serve --socket`).
struct SocketOption: ParsableArguments {
    @Option(help: ArgumentHelp("The running gateway's Unix socket (default: <home>/hook.sock, else /run/spawngate/hook.sock).", valueName: "path"))
    var socket: String?
}

/// `approve ID` and `deny ID`: one request to the running gateway, which names the caller by its uid.
func settle(_ id: String, _ settlement: DecisionPipeline.Settlement, home: Home, socket: SocketOption) throws {
    try operatorAction {
        let o = try SettleClient.settle(id, settlement, socket: try SettleClient.socket(socket.socket, home: home))
        let reason = o["reason"].flatMap { if case .string(let r) = $0 { ReasonCode(rawValue: r) } else { nil } } ?? .internalError
        let detail = o["detail"].flatMap { if case .string(let d) = $0 { d } else { nil } } ?? ""
        switch reason {
        case .allowed:
            let pid = o["pid"]?.safeInteger.map(String.init) ?? "?"
            printLine("approved \(id): started, pid \(pid) (\(detail))")
        case .approvalDenied: printLine("denied \(id): \(detail)")
        default:
            printLine("\(id) not started: \(reason.rawValue): \(detail)")
            throw Exit.of(reason)
        }
    }
}

struct Approve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Approve a held request: it is checked again (keys, policy, binary, sandbox) and started here.",
        discussion: """
            You are named by your uid on the gateway's socket: the policy's hook_users must admit you, and a rule's \
            approve.by must name you. Exit 0: started; 1: not started (denied, expired, no longer allowed, or not \
            yours to approve); 2: no gateway to ask, or it could not decide.
            """)
    @OptionGroup var home: HomeOption
    @OptionGroup var socket: SocketOption
    @Argument(help: ArgumentHelp("The id 'spawngate approvals' shows.", valueName: "id")) var id: String
    func run() throws { try settle(id, .approve, home: home.resolved, socket: socket) }
}

struct Deny: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Deny a held request: it never starts, and the denial is in the audit log.",
        discussion: "Exit 0: denied; 1: not settled (unknown id, no longer waiting, not yours); 2: no gateway to ask.")
    @OptionGroup var home: HomeOption
    @OptionGroup var socket: SocketOption
    @Argument(help: ArgumentHelp("The id 'spawngate approvals' shows.", valueName: "id")) var id: String
    func run() throws { try settle(id, .deny, home: home.resolved, socket: socket) }
}
