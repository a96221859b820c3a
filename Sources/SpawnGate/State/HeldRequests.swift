import Foundation
import GRDB

/// A request held for a person's approval (a rule that says `approve:`): everything the decision concluded, and
/// the envelope as verified, so approving it checks it again (keys, policy, binary, sandbox) exactly as a launch
/// ticket's redemption does. Kept in the state store, so `spawngate approvals` lists them without the daemon.
public struct HeldRequest: Sendable, Equatable {
    public enum State: String, Sendable { case pending, approved, denied, expired }

    /// What people type: the first 16 hex digits of the request id.
    public let id: String
    public let requestID: String
    public let broker: String
    public let rule: String
    public let name: String
    public let cli: String
    public let cwd: String
    public let argv: [String]
    public let grantID: String?
    public let envelope: [UInt8]
    public let source: String
    public let decidedAt: Int64
    public let expiresAt: Int64
    public let state: State
    public let decidedBy: String?

    public static func id(of requestID: String) -> String { String(requestID.prefix(16)) }

    /// Whether `text` could be an approval id at all (so a typo is told apart from an unknown id).
    public static func isID(_ text: String) -> Bool {
        text.utf8.count == 16 && text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    /// The state as of `now`: a pending request whose time is up is expired, whether or not the sweep has run.
    public func state(now: Int64) -> State { state == .pending && now >= expiresAt ? .expired : state }

    init(id: String, requestID: String, broker: String, rule: String, name: String, cli: String, cwd: String, argv: [String],
         grantID: String?, envelope: [UInt8], source: String, decidedAt: Int64, expiresAt: Int64, state: State = .pending,
         decidedBy: String? = nil) {
        self.id = id; self.requestID = requestID; self.broker = broker; self.rule = rule; self.name = name; self.cli = cli
        self.cwd = cwd; self.argv = argv; self.grantID = grantID; self.envelope = envelope; self.source = source
        self.decidedAt = decidedAt; self.expiresAt = expiresAt; self.state = state; self.decidedBy = decidedBy
    }

    init(_ row: Row) {
        let argvText: String = row["argv"]
        var argv: [String] = []
        if case .array(let items)? = try? StrictJSONReader.parse(Array(argvText.utf8)) {
            argv = items.compactMap { if case .string(let s) = $0 { s } else { nil } }
        }
        self.init(id: row["id"], requestID: row["request_id"], broker: row["broker"], rule: row["rule"], name: row["name"],
                  cli: row["cli"], cwd: row["cwd"], argv: argv, grantID: row["grant_id"], envelope: [UInt8](row["envelope"] as Data),
                  source: row["source"], decidedAt: row["decided_at"], expiresAt: row["expires_at"],
                  state: State(rawValue: row["state"]) ?? .expired, decidedBy: row["decided_by"])
    }

    func insert(_ db: Database) throws {
        try db.execute(sql: """
            INSERT INTO approval (id, request_id, broker, rule, name, cli, cwd, argv, grant_id, envelope, source, decided_at, expires_at, state)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')
            """, arguments: [id, requestID, broker, rule, name, cli, cwd, String(decoding: JSONWriter.encode(.array(argv.map { .string($0) })), as: UTF8.self),
                             grantID, Data(envelope), source, decidedAt, expiresAt])
    }

    static func fetch(_ id: String, _ db: Database) throws -> HeldRequest? {
        try Row.fetchOne(db, sql: "SELECT * FROM approval WHERE id = ?", arguments: [id]).map(HeldRequest.init)
    }

    /// One line of JSON for `spawngate approvals --json` and the dashboard.
    public func json(now: Int64) -> JSONValue {
        var o: [String: JSONValue] = [
            "id": .string(id), "request_id": .string(requestID), "broker": .string(broker), "rule": .string(rule),
            "name": .string(name), "cli": .string(cli), "cwd": .string(cwd), "argv": .array(argv.map { .string($0) }),
            "decided_at": .number(String(decidedAt)), "expires_at": .number(String(expiresAt)), "state": .string(state(now: now).rawValue),
        ]
        o["grant"] = grantID.map { .string($0) } ?? .null
        o["by"] = decidedBy.map { .string($0) } ?? .null
        return .object(o)
    }
}

extension StateStore {
    /// Held requests, newest first: those still waiting, and those settled in the last `recent` seconds.
    public func heldRequests(now: Int64, recent: Int64 = 3600) throws(GatewayFailure) -> [HeldRequest] {
        do {
            return try read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM approval WHERE state = 'pending' OR resolved_at >= ? OR expires_at >= ? ORDER BY decided_at DESC LIMIT 500",
                                 arguments: [now - recent, now - recent]).map(HeldRequest.init)
            }
        } catch { throw Self.failure(error) }
    }

    public func heldRequest(_ id: String) throws(GatewayFailure) -> HeldRequest? {
        do { return try read { db in try HeldRequest.fetch(id, db) } } catch { throw Self.failure(error) }
    }

    /// Held requests still marked pending whose time is up: the sweep records each as expired.
    func overdueHeldRequests(now: Int64) throws(GatewayFailure) -> [HeldRequest] {
        do {
            return try read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM approval WHERE state = 'pending' AND expires_at <= ? LIMIT 256", arguments: [now]).map(HeldRequest.init)
            }
        } catch { throw Self.failure(error) }
    }
}
