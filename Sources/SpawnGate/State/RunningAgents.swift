import Foundation
import GRDB

/// An agent the gateway started itself, as the state store remembers it: enough to list it and to stop exactly
/// that process (pid plus start time), also after the gateway restarted.
public struct AgentRecord: Sendable, Equatable {
    public let requestID: String
    public let name: String
    public let broker: String
    public let rule: String
    public let cli: String
    public let cwd: String
    public let profile: String
    public let layers: [String]
    public let process: ProcessIdentity
    /// Unix seconds.
    public let startedAt: Int64
    public let log: String?
    /// Unix seconds after which max_runtime stops the agent; nil when the rule sets none.
    public let deadline: Int64?
    /// Who started it: spawngate's spawner, or the launcher an Agent Relay broker ran.
    public let backend: SpawnerBackend
    /// When it exited (Unix seconds) and its status as a shell reports it (nil: unknown, it ended while no
    /// gateway watched). Exited agents are listed for ``StateStore/exitedRetention`` seconds.
    public var exitedAt: Int64?
    public var exitStatus: Int32?
    /// The last lines a relay worker wrote to standard error before it ended (its terminal is the broker's).
    public var tail: String?
    /// The signed request's payload, as verified, on a record made at start (``StateStore/recordStart(_:leaseID:)``
    /// keeps it apart, for `handoff`); nil on a record read back (``StateStore/requestPayload(of:)`` reads it).
    public var requestPayload: [UInt8]?

    public init(_ agent: SpawnedAgent, of spawn: AuthorizedSpawn, startedAt: Int64) {
        requestID = spawn.request.requestID
        name = agent.name
        broker = spawn.request.broker
        rule = spawn.match.rule.name
        cli = spawn.match.cli.name
        cwd = spawn.match.cwd
        profile = agent.profile.rawValue
        layers = agent.layers
        process = agent.process
        self.startedAt = startedAt
        log = agent.stdoutLog
        deadline = spawn.match.rule.maxRuntime.map { startedAt + $0 }
        backend = spawn.match.rule.spawner
        requestPayload = spawn.request.payload
    }

    init(row: Row) {
        requestID = row["request_id"]; name = row["name"]; broker = row["broker"]; rule = row["rule"]
        cli = row["cli"]; cwd = row["cwd"]; profile = row["profile"]
        layers = (row["layers"] as String).split(separator: ",").map(String.init)
        process = ProcessIdentity(pid: row["pid"], startTime: row["pid_start"])
        startedAt = row["started_at"]; log = row["log"]; deadline = row["deadline"]
        backend = SpawnerBackend(rawValue: row["backend"] ?? "local") ?? .local
        exitedAt = row["exited_at"]; exitStatus = row["exit_status"]; tail = row["tail"]
    }
}

extension StateStore {
    /// Remembers a started agent and binds its concurrency lease (if any) to its process, in one transaction.
    public func recordStart(_ record: AgentRecord, leaseID: String?) throws(GatewayFailure) {
        do {
            try write { db in
                try db.execute(sql: """
                    INSERT OR REPLACE INTO agent (request_id, name, broker, rule, cli, cwd, profile, layers, pid, pid_start, started_at, log, deadline, backend)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [record.requestID, record.name, record.broker, record.rule, record.cli, record.cwd,
                                     record.profile, record.layers.joined(separator: ","), record.process.pid,
                                     record.process.startTime, record.startedAt, record.log, record.deadline,
                                     record.backend.rawValue])
                if let leaseID {
                    try db.execute(sql: "UPDATE lease SET pid = ?, pid_start = ?, expires_at = NULL WHERE request_id = ?",
                                   arguments: [record.process.pid, record.process.startTime, leaseID])
                }
                if let payload = record.requestPayload {
                    try db.execute(sql: "INSERT OR REPLACE INTO agent_request (request_id, payload) VALUES (?, ?)",
                                   arguments: [record.requestID, Data(payload)])
                }
            }
        } catch { throw Self.failure(error) }
    }

    /// The signed request payload a running agent was started from; nil when it was started before this store kept
    /// them (or has exited: the task is kept only while the agent runs).
    public func requestPayload(of requestID: String) throws(GatewayFailure) -> [UInt8]? {
        do {
            return try read { db in
                try Data.fetchOne(db, sql: "SELECT payload FROM agent_request WHERE request_id = ?", arguments: [requestID]).map { [UInt8]($0) }
            }
        } catch { throw Self.failure(error) }
    }

    /// How long an exited agent stays listed (with its status) before it is forgotten.
    public static let exitedRetention: Int64 = 3600

    /// Marks an agent exited (its status when known) and ends its lease. The first time and the first known status
    /// win: `release` may mark it before the process that reaps it (and so knows its status) reports.
    /// `tail`: a relay worker's last lines of standard error.
    public func recordExit(requestID: String, status: Int32? = nil, tail: String? = nil, at now: Int64 = SystemClock().now()) throws(GatewayFailure) {
        do {
            try write { db in
                try db.execute(sql: "UPDATE agent SET exited_at = COALESCE(exited_at, ?), exit_status = COALESCE(exit_status, ?), tail = COALESCE(tail, ?) WHERE request_id = ?",
                               arguments: [now, status, tail, requestID])
                try db.execute(sql: "DELETE FROM lease WHERE request_id = ?", arguments: [requestID])
                try db.execute(sql: "DELETE FROM agent WHERE exited_at < ?", arguments: [now - Self.exitedRetention])
                try db.execute(sql: "DELETE FROM agent_request WHERE request_id NOT IN (SELECT request_id FROM agent WHERE exited_at IS NULL)")
            }
        } catch { throw Self.failure(error) }
    }

    /// The agents still running, oldest first. Agents whose process is gone (it exited while no gateway watched,
    /// or the gateway restarted) are marked exited here, and their leases end with them.
    public func runningAgents() throws(GatewayFailure) -> [AgentRecord] {
        let all: [AgentRecord]
        do {
            all = try read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM agent WHERE exited_at IS NULL ORDER BY started_at, request_id").map(AgentRecord.init(row:))
            }
        } catch { throw Self.failure(error) }
        var live: [AgentRecord] = []
        for a in all {
            if a.process.isAlive { live.append(a) } else { try recordExit(requestID: a.requestID) }
        }
        return live
    }

    /// The agent started for `requestID`, running or not (the relay supervisor's own agent may have exited, and been
    /// marked so by someone listing, before the supervisor looked).
    public func agent(requestID: String) throws(GatewayFailure) -> AgentRecord? {
        do {
            return try read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM agent WHERE request_id = ?", arguments: [requestID]).map(AgentRecord.init(row:))
            }
        } catch { throw Self.failure(error) }
    }

    /// Agents that exited within ``exitedRetention``, newest first.
    public func exitedAgents(now: Int64 = SystemClock().now()) throws(GatewayFailure) -> [AgentRecord] {
        do {
            return try read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM agent WHERE exited_at >= ? ORDER BY exited_at DESC, request_id",
                                 arguments: [now - Self.exitedRetention]).map(AgentRecord.init(row:))
            }
        } catch { throw Self.failure(error) }
    }
}

extension AgentRecord {
    /// The agent as `agents --json` and `GET /v1/agents` show it.
    public func json(now: Int64) -> JSONValue {
        .object([
            "name": .string(name), "broker": .string(broker), "rule": .string(rule), "cli": .string(cli),
            "cwd": .string(cwd), "pid": .number(String(process.pid)), "started_at": .number(String(startedAt)),
            "uptime_seconds": .number(String(max(0, (exitedAt ?? now) - startedAt))), "sandbox": .string(profile),
            "layers": .array(layers.map { .string($0) }), "request_id": .string(requestID),
            "state": .string(exitedAt == nil ? "running" : "exited"),
            "exit_status": exitStatus.map { .number(String($0)) } ?? .null,
            "exited_at": exitedAt.map { .number(String($0)) } ?? .null,
            "spawner": .string(backend.rawValue),
        ])
    }

    /// "running", or "exited 3 (2m ago)" (a status as a shell shows it; "?" when it ended unwatched).
    public func stateText(now: Int64) -> String {
        guard let exitedAt else { return "running" }
        return "exited \(exitStatus.map(String.init) ?? "?") (\(Self.duration(now - exitedAt)) ago)"
    }

    /// "3h12m", "45s": uptime for people.
    public static func duration(_ seconds: Int64) -> String {
        let s = max(0, seconds)
        if s >= 86400 { return "\(s / 86400)d\((s % 86400) / 3600)h" }
        if s >= 3600 { return "\(s / 3600)h\((s % 3600) / 60)m" }
        if s >= 60 { return "\(s / 60)m\(s % 60)s" }
        return "\(s)s"
    }
}
