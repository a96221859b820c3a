import GRDB
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The gateway's durable memory: seen nonces, rate buckets, concurrency leases and the audit chain head, in one
/// SQLite database (WAL, `synchronous=FULL`). Every decision that changes state runs in one IMMEDIATE
/// transaction, so several processes deciding at once are serialised by SQLite's write lock: the replay, rate and
/// concurrency checks and their updates are atomic across processes.
///
/// A missing or unreadable store is a failure to decide, never a fresh start: starting empty would forget which
/// nonces were used and let a captured request run again.
public final class StateStore: Sendable {
    public let path: String
    let queue: DatabaseQueue

    private init(path: String, queue: DatabaseQueue) {
        self.path = path
        self.queue = queue
    }

    private static var configuration: Configuration {
        var c = Configuration()
        c.journalMode = .wal
        // Concurrent deciders wait for the write lock rather than fail; 30 s is far beyond any real decision.
        c.busyMode = .timeout(30)
        return c
    }

    /// GRDB sets `synchronous = NORMAL` when it turns WAL on, after any `prepareDatabase` has run, and under NORMAL a
    /// commit is not fsynced: a power cut could forget a nonce the audit log already shows as used. So FULL is set on
    /// the open connection, and checked.
    private static func makeDurable(_ queue: DatabaseQueue) throws {
        try queue.inDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            guard try Int.fetchOne(db, sql: "PRAGMA synchronous") == 2 else {
                throw GatewayFailure("SQLite did not accept synchronous=FULL, so commits would not be durable")
            }
        }
    }

    private static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE nonce (
                    fingerprint TEXT NOT NULL, nonce TEXT NOT NULL, keep_until INTEGER NOT NULL,
                    PRIMARY KEY (fingerprint, nonce)) WITHOUT ROWID;
                CREATE INDEX nonce_keep_until ON nonce(keep_until);
                CREATE TABLE bucket (
                    broker TEXT NOT NULL, rule TEXT NOT NULL, tat_ms INTEGER NOT NULL,
                    PRIMARY KEY (broker, rule)) WITHOUT ROWID;
                CREATE TABLE lease (
                    request_id TEXT PRIMARY KEY NOT NULL, broker TEXT NOT NULL, rule TEXT NOT NULL, name TEXT NOT NULL,
                    pid INTEGER, pid_start INTEGER, expires_at INTEGER, created_at INTEGER NOT NULL);
                CREATE INDEX lease_owner ON lease(broker, rule);
                CREATE TABLE audit_head (
                    id INTEGER PRIMARY KEY CHECK (id = 1), hash TEXT NOT NULL, lines INTEGER NOT NULL, size INTEGER NOT NULL);
                """)
            try db.execute(sql: "INSERT INTO audit_head (id, hash, lines, size) VALUES (1, ?, 0, 0)", arguments: [AuditLog.genesis])
        }
        // Agents the gateway started itself (exec, serve), so `agents` and `release` reach them across restarts.
        m.registerMigration("v2") { db in
            try db.execute(sql: """
                CREATE TABLE agent (
                    request_id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, broker TEXT NOT NULL, rule TEXT NOT NULL,
                    cli TEXT NOT NULL, cwd TEXT NOT NULL, profile TEXT NOT NULL, layers TEXT NOT NULL,
                    pid INTEGER NOT NULL, pid_start INTEGER NOT NULL, started_at INTEGER NOT NULL, log TEXT);
                CREATE INDEX agent_name ON agent(name);
                """)
        }
        // max_runtime's deadline is kept with the agent, so it holds across a restart of the gateway.
        m.registerMigration("v3") { db in
            try db.execute(sql: "ALTER TABLE agent ADD COLUMN deadline INTEGER")
        }
        // Launch tickets for relay workers, and agents kept for a while after they exit (status, when).
        m.registerMigration("v4") { db in
            try db.execute(sql: """
                CREATE TABLE ticket (
                    hash TEXT PRIMARY KEY NOT NULL, request_id TEXT NOT NULL, envelope BLOB NOT NULL,
                    decided_at INTEGER NOT NULL, rule TEXT NOT NULL, lease_id TEXT, expires_at INTEGER NOT NULL,
                    redeemed_at INTEGER, pid INTEGER, started_at INTEGER, layers TEXT, failure TEXT,
                    exit_status INTEGER, tail TEXT);
                CREATE INDEX ticket_request ON ticket(request_id);
                ALTER TABLE agent ADD COLUMN exited_at INTEGER;
                ALTER TABLE agent ADD COLUMN exit_status INTEGER;
                ALTER TABLE agent ADD COLUMN backend TEXT NOT NULL DEFAULT 'local';
                """)
        }
        // The signed request each agent was started from (its payload, as verified), so `handoff` can start the
        // same task elsewhere: the audit log keeps only the final argv and cwd. Forgotten with the agent.
        m.registerMigration("v5-handoff") { db in
            try db.execute(sql: """
                CREATE TABLE agent_request (request_id TEXT PRIMARY KEY NOT NULL, payload BLOB NOT NULL) WITHOUT ROWID;
                """)
        }
        // Where a ticket's request came from, so its redemption re-checks the sources of rules and keys alike.
        m.registerMigration("v6-source") { db in
            try db.execute(sql: "ALTER TABLE ticket ADD COLUMN source TEXT")
        }
        // Uses of grants (each block with a max), and requests held for a person's approval.
        m.registerMigration("v7-grants-approvals") { db in
            try db.execute(sql: """
                CREATE TABLE grant_use (
                    block_id TEXT NOT NULL, issuer TEXT NOT NULL, uses INTEGER NOT NULL, keep_until INTEGER NOT NULL,
                    PRIMARY KEY (issuer, block_id)) WITHOUT ROWID;
                CREATE TABLE approval (
                    id TEXT PRIMARY KEY NOT NULL, request_id TEXT NOT NULL, broker TEXT NOT NULL, rule TEXT NOT NULL,
                    name TEXT NOT NULL, cli TEXT NOT NULL, cwd TEXT NOT NULL, argv TEXT NOT NULL, grant_id TEXT,
                    envelope BLOB NOT NULL, source TEXT NOT NULL, decided_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
                    state TEXT NOT NULL, decided_by TEXT, resolved_at INTEGER);
                CREATE INDEX approval_state ON approval(state, expires_at);
                """)
        }
        // Relay launch tickets live in the gateway's memory while it waits for the launcher (issue 27); the last lines
        // a relay worker wrote to standard error are kept with the agent, for `logs`.
        m.registerMigration("v8-tickets-in-memory") { db in
            try db.execute(sql: "ALTER TABLE agent ADD COLUMN tail TEXT; DROP TABLE IF EXISTS ticket;")
        }
        return m
    }

    /// Creates a new, empty store (mode 0600). Refuses to replace an existing one.
    public static func create(_ path: String) throws(GatewayFailure) -> StateStore {
        let fd = posixOpen(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw GatewayFailure("cannot create the state store \(path): \(errnoText())") }
        close(fd)
        do {
            let queue = try DatabaseQueue(path: path, configuration: configuration)
            try makeDurable(queue)
            try migrator.migrate(queue)
            return StateStore(path: path, queue: queue)
        } catch {
            throw GatewayFailure("cannot set up the state store \(path): \(error)")
        }
    }

    /// Opens the existing store. Missing, foreign-writable, corrupt, or from another schema: the gateway cannot decide.
    public static func open(_ path: String) throws(GatewayFailure) -> StateStore {
        guard Files.exists(path) else {
            throw GatewayFailure("the state store \(path) is missing, so used nonces cannot be told from new ones. If it was lost, wait max_ttl + clock_skew (every request signed before the loss has then expired) and run 'spawngate init --state' to create an empty one")
        }
        do { try Files.checkNotWritableByOthers(path) } catch { throw GatewayFailure(error.message) }
        do {
            let queue = try DatabaseQueue(path: path, configuration: configuration)
            try makeDurable(queue)
            let (applied, superseded) = try queue.read { db in
                (try migrator.appliedIdentifiers(db), try migrator.hasBeenSuperseded(db))
            }
            // A store made by an earlier version of this schema is brought up to date; anything else is foreign.
            guard applied.contains("v1"), !superseded else {
                throw GatewayFailure("the state store \(path) does not have the tables this version of spawngate uses; it was made by another version or is not a spawngate store")
            }
            // Only a store from an earlier version is written to; opening a current one stays read-only.
            if Set(applied) != Set(migrator.migrations) { try migrator.migrate(queue) }
            return StateStore(path: path, queue: queue)
        } catch let e as GatewayFailure {
            throw e
        } catch {
            throw GatewayFailure("the state store \(path) cannot be read (\(error)); restore it from a backup, or see 'spawngate init --state'")
        }
    }

    /// Runs `body` in one IMMEDIATE transaction: committed when it returns, rolled back when it throws.
    func write<T>(_ body: (Database) throws -> T) throws -> T {
        try queue.write(body)
    }

    /// Runs `body` in a snapshot (one DEFERRED transaction) that is always rolled back, so nothing it does can
    /// persist. Not GRDB's `read`: on a queue that also writes, that toggles `PRAGMA query_only`, and changing that
    /// flag expires every prepared statement, so each read recompiled the statements it and the next decision ran
    /// (a dry run's state read was 38 µs, most of it SQLite's parser and GRDB's authorizer; issue 27).
    func read<T>(_ body: (Database) throws -> T) throws -> T {
        try queue.inDatabase { db in
            var result: T?
            try db.inTransaction(.deferred) {
                result = try body(db)
                return .rollback
            }
            guard let result else { throw GatewayFailure("the state store's read transaction ended without running its reader") }
            return result
        }
    }

    // MARK: - Audit chain head

    static func auditHead(_ db: Database) throws -> AuditLog.Head {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT hash, lines, size FROM audit_head WHERE id = 1")) else {
            throw GatewayFailure("the state store has no audit chain head (was it edited?)")
        }
        return AuditLog.Head(hash: row["hash"], lines: row["lines"], size: row["size"])
    }

    static func setAuditHead(_ head: AuditLog.Head, _ db: Database) throws {
        try db.cachedStatement(sql: "UPDATE audit_head SET hash = ?, lines = ?, size = ? WHERE id = 1").execute(
                       arguments: [head.hash, head.lines, head.size])
    }

    /// Where the audit log must end, as last recorded.
    public func auditHead() throws(GatewayFailure) -> AuditLog.Head {
        do { return try read { try Self.auditHead($0) } } catch { throw Self.failure(error) }
    }

    /// Starts a new audit chain: the old log is moved aside and the head reset, under the write lock so no
    /// decision is appending meanwhile. Returns where the old log went.
    public func rotateAudit(_ log: AuditLog, time: Int64) throws(GatewayFailure) -> String? {
        do {
            return try write { db in
                let moved = try log.moveAside(time: time)
                try Self.setAuditHead(.empty, db)
                return moved
            }
        } catch { throw Self.failure(error) }
    }

    static func failure(_ error: any Error) -> GatewayFailure {
        (error as? GatewayFailure) ?? GatewayFailure("the state store cannot be used: \(error)")
    }
}

/// `open(2)`; inside `StateStore` the bare name means the static `open(_:)`.
private func posixOpen(_ path: String, _ flags: Int32, _ mode: mode_t) -> Int32 {
    open(path, flags, mode)
}
