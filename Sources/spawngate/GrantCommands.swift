import ArgumentParser
import Foundation
import SpawnGate
import SpawnGateCLI

/// `spawngate grant add|list|revoke`: rights narrower than this broker's, for one MCP session or agent.
struct GrantCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grant",
        abstract: "Grants: narrower rights than this broker's, for one MCP session or agent ('spawngate mcp --grant NAME').",
        discussion: """
            A grant names the targets, CLIs, working directories and argument shapes a holder may ask for, how \
            many times, and for how long. It is signed with this broker's key and travels with every request made \
            under it, so the target checks it as well as its own policy and records it in the audit line and the \
            receipt. A grant made --from another can only narrow it, and needs no key but the parent's. A call \
            outside the grant is refused here, before anything is signed.
            """,
        subcommands: [Add.self, List.self, Revoke.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a grant (or narrow an existing one with --from).",
            discussion: """
                Example: spawngate grant add fixer --broker vps --cli codex --cwd '/srv/app/**' --max 3 --ttl 8h
                --arg-shape takes one allowed argv shape as words, each a pattern as in the policy's args: \
                (--arg-shape '--model gpt-5'); without one, the grant leaves arguments to the target's policy; \
                --no-args allows none.
                Exit 0: issued; 1: refused (a name already used, a parent revoked or expired); 2: this home's files \
                cannot be used; 64: a bad value.
                """)
        @OptionGroup var home: HomeOption
        @Argument(help: ArgumentHelp("The grant's name (its holder's, e.g. the MCP session's).", valueName: "name")) var name: String
        @Option(name: .customLong("broker"), help: ArgumentHelp("A target broker the holder may ask; repeat for more.", valueName: "target")) var brokers: [String] = []
        @Option(name: .customLong("cli"), help: ArgumentHelp("A CLI the holder may start; repeat for more.", valueName: "cli")) var clis: [String] = []
        @Option(name: .customLong("cwd"), help: ArgumentHelp("A working directory (or tree, '/dir/**') on the target; repeat for more.", valueName: "pattern")) var cwds: [String] = []
        @Option(name: .customLong("arg-shape"), help: ArgumentHelp("An allowed argv shape, as words; repeat for more.", valueName: "words")) var shapes: [String] = []
        @Flag(name: .customLong("no-args"), help: "Allow no arguments at all.") var noArgs = false
        @Option(help: ArgumentHelp("How many requests may use it.", valueName: "n")) var max: Int64?
        @Option(help: ArgumentHelp("How long it lives: 30m, 8h, 7d (default 8h; at most 30d).", valueName: "duration")) var ttl: String?
        @Option(help: ArgumentHelp("Narrow this existing grant instead of issuing one with this broker's key.", valueName: "grant")) var from: String?

        func validate() throws {
            if let ttl, PolicyValues.duration(ttl) == nil { throw ValidationError("--ttl must be a duration like 30m, 8h or 7d; got '\(ttl)'") }
            if noArgs && !shapes.isEmpty { throw ValidationError("--no-args and --arg-shape contradict each other; give one") }
            if let max, max < 1 { throw ValidationError("--max must be at least 1") }
        }

        func run() throws {
            try operatorAction {
                let home = home.resolved
                let args: [[String]]? = noArgs ? [[]] : shapes.isEmpty ? nil : shapes.map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
                let scope: GrantScope
                switch GrantScope.parse(targets: brokers.isEmpty ? nil : brokers, clis: clis.isEmpty ? nil : clis,
                                        cwd: cwds.isEmpty ? nil : cwds, args: args, max: max) {
                case .success(let s): scope = s
                case .failure(let why): throw OperatorError(why.description)
                }
                let store = GrantStore(home: home)
                let now = SystemClock().now()
                let ttlSeconds = ttl.flatMap(PolicyValues.duration)
                let g: GrantStore.Held
                if let from {
                    g = try store.attenuate(name: name, from: from, scope: scope, ttl: ttlSeconds, now: now)
                } else {
                    g = try store.issue(name: name, scope: scope, ttl: ttlSeconds ?? GrantStore.defaultTTL, identity: try home.loadIdentity(), now: now)
                }
                let until = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval(g.expiresAt)))
                printLine("issued grant \(g.name) (\(g.id)), until \(until): \(g.limits.map(\.scope.summary).joined(separator: "; and "))")
                printLine("use it with: spawngate mcp --grant \(g.name)")
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the grants issued here: name, state, what each allows, uses, expiry.")
        @OptionGroup var home: HomeOption
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            try operatorAction {
                let store = GrantStore(home: home.resolved)
                let (grants, problems) = try store.list()
                let now = SystemClock().now()
                if json {
                    let rows: [JSONValue] = grants.map { g in
                        .object(["name": .string(g.name), "id": .string(g.id), "state": .string(g.state(now: now)),
                                 "expires_at": .number(String(g.expiresAt)), "uses": store.uses(g).map { .number(String($0)) } ?? .null,
                                 "allows": .array(g.limits.map { .string($0.scope.summary) })])
                    }
                    print(String(decoding: JSONWriter.encode(.array(rows)), as: UTF8.self))
                } else if grants.isEmpty {
                    printLine("no grants in \(store.directory); 'spawngate grant add' issues one")
                } else {
                    table([["NAME", "STATE", "USES", "EXPIRES", "ALLOWS"]] + grants.map { g in
                        [g.name, g.state(now: now), store.uses(g).map(String.init) ?? "-", AgentRecord.duration(Swift.max(0, g.expiresAt - now)),
                         g.limits.map(\.scope.summary).joined(separator: "; and ")]
                    })
                }
                for p in problems { FileHandle.standardError.write(Data("spawngate: \(p)\n".utf8)) }
            }
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a grant and every grant made from it: nothing here signs for them again.",
            discussion: "The target is not told: a copy of the grant is useless without this broker's key, and its lifetime and max bound it there.")
        @OptionGroup var home: HomeOption
        @Argument(help: ArgumentHelp("The grant's name.", valueName: "name")) var name: String

        func run() throws {
            try operatorAction {
                let g = try GrantStore(home: home.resolved).revoke(name)
                printLine("revoked grant \(g.name) (\(g.id)) and any made from it")
            }
        }
    }
}
