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
    }

    init(row: Row) {
        requestID = row["request_id"]; name = row["name"]; broker = row["broker"]; rule = row["rule"]
        cli = row["cli"]; cwd = row["cwd"]; profile = row["profile"]
        layers = (row["layers"] as String).split(separator: ",").map(String.init)
        process = ProcessIdentity(pid: row["pid"], startTime: row["pid_start"])
        startedAt = row["started_at"]; log = row["log"]; deadline = row["deadline"]
    }
}

extension StateStore {
    /// Remembers a started agent and binds its concurrency lease (if any) to its process, in one transaction.
    public func recordStart(_ record: AgentRecord, leaseID: String?) throws(GatewayFailure) {
        do {
            try write { db in
                try db.execute(sql: """
                    INSERT OR REPLACE INTO agent (request_id, name, broker, rule, cli, cwd, profile, layers, pid, pid_start, started_at, log, deadline)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [record.requestID, record.name, record.broker, record.rule, record.cli, record.cwd,
                                     record.profile, record.layers.joined(separator: ","), record.process.pid,
                                     record.process.startTime, record.startedAt, record.log, record.deadline])
                if let leaseID {
                    try db.execute(sql: "UPDATE lease SET pid = ?, pid_start = ?, expires_at = NULL WHERE request_id = ?",
                                   arguments: [record.process.pid, record.process.startTime, leaseID])
                }
            }
        } catch { throw Self.failure(error) }
    }

    /// Forgets an agent that exited and ends its lease.
    public func recordExit(requestID: String) throws(GatewayFailure) {
        do {
            try write { db in
                try db.execute(sql: "DELETE FROM agent WHERE request_id = ?", arguments: [requestID])
                try db.execute(sql: "DELETE FROM lease WHERE request_id = ?", arguments: [requestID])
            }
        } catch { throw Self.failure(error) }
    }

    /// The agents still running, oldest first. Agents whose process is gone (it exited while no gateway watched,
    /// or the gateway restarted) are forgotten here, and their leases end with them.
    public func runningAgents() throws(GatewayFailure) -> [AgentRecord] {
        let all: [AgentRecord]
        do {
            all = try read { db in try Row.fetchAll(db, sql: "SELECT * FROM agent ORDER BY started_at, request_id").map(AgentRecord.init(row:)) }
        } catch { throw Self.failure(error) }
        var live: [AgentRecord] = []
        for a in all {
            if a.process.isAlive { live.append(a) } else { try recordExit(requestID: a.requestID) }
        }
        return live
    }
}

extension AgentRecord {
    /// The agent as `agents --json` and `GET /v1/agents` show it.
    public func json(now: Int64) -> JSONValue {
        .object([
            "name": .string(name), "broker": .string(broker), "rule": .string(rule), "cli": .string(cli),
            "cwd": .string(cwd), "pid": .number(String(process.pid)), "started_at": .number(String(startedAt)),
            "uptime_seconds": .number(String(max(0, now - startedAt))), "sandbox": .string(profile),
            "layers": .array(layers.map { .string($0) }), "request_id": .string(requestID),
        ])
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
