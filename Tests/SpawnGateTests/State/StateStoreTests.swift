import Foundation
import GRDB
import GRDBSQLite
import Testing
@testable import SpawnGate

@Suite("State store schema")
struct StateStoreTests {
    /// Every commit is fsynced: the connection runs with synchronous=FULL (GRDB's WAL set-up would leave NORMAL,
    /// under which a power cut can forget committed nonces), on a new store and on a reopened one. Also on 0600.
    @Test func commitsAreFsyncedAndTheFileIsPrivate() throws {
        let path = TestSupport.tempDir("state") + "/state.db"
        for store in [try StateStore.create(path), try StateStore.open(path)] {
            #expect(try store.read { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") } == 2)
            #expect(try store.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") } == "wal")
        }
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
    }

    /// A read is a snapshot that is always rolled back: whatever a reader does is never kept.
    @Test func aReadKeepsNothing() throws {
        let store = try StateStore.create(TestSupport.tempDir("state") + "/state.db")
        try store.read { db in try db.execute(sql: "INSERT INTO nonce VALUES ('SHA256:x', 'n1', 9999999999)") }
        #expect(try store.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM nonce") } == 0)
    }

    /// Issue 27: a read leaves the decisions' prepared statements prepared. GRDB's own `read` toggled
    /// `PRAGMA query_only`, which expires every prepared statement, so each dry run (and the decision after it)
    /// recompiled them; SQLite counts each such recompilation.
    @Test func aReadDoesNotExpireThePreparedStatements() throws {
        let store = try StateStore.create(TestSupport.tempDir("state") + "/state.db")
        let sql = "SELECT tat_ms FROM bucket WHERE broker = ? AND rule = ?"
        func reprepared() throws -> Int32 {
            try store.write { db in
                let statement = try db.cachedStatement(sql: sql)
                _ = try Int64.fetchOne(statement, arguments: ["b", "r"])
                return sqlite3_stmt_status(statement.sqliteStatement, SQLITE_STMTSTATUS_REPREPARE, 0)
            }
        }
        let before = try reprepared()
        for _ in 0..<3 { _ = try store.read { db in try Int.fetchOne(db.cachedStatement(sql: "SELECT count(*) FROM nonce")) } }
        #expect(try reprepared() == before, "a read made SQLite recompile a statement the next decision uses")
    }

    /// F19: a store others can write could be emptied of its nonces; the gateway refuses to decide with it.
    @Test func aStoreOthersCanWriteIsRefused() throws {
        let path = TestSupport.tempDir("state") + "/state.db"
        _ = try StateStore.create(path)
        chmod(path, 0o666)
        #expect(throws: GatewayFailure.self) { try StateStore.open(path) }
        chmod(path, 0o600)
        _ = try StateStore.open(path)
    }

    /// A store made by the previous release (schema v1 only) is brought up to date when opened, keeping its
    /// nonces: an upgrade must not forget which requests were already used.
    @Test func aStoreFromTheEarlierSchemaIsUpgradedInPlace() throws {
        let path = TestSupport.tempDir("state") + "/state.db"
        do {
            let q = try DatabaseQueue(path: path)
            try q.write { db in
                try db.execute(sql: """
                    CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
                    INSERT INTO grdb_migrations VALUES ('v1');
                    CREATE TABLE nonce (fingerprint TEXT NOT NULL, nonce TEXT NOT NULL, keep_until INTEGER NOT NULL,
                        PRIMARY KEY (fingerprint, nonce)) WITHOUT ROWID;
                    CREATE TABLE bucket (broker TEXT NOT NULL, rule TEXT NOT NULL, tat_ms INTEGER NOT NULL,
                        PRIMARY KEY (broker, rule)) WITHOUT ROWID;
                    CREATE TABLE lease (request_id TEXT PRIMARY KEY NOT NULL, broker TEXT NOT NULL, rule TEXT NOT NULL,
                        name TEXT NOT NULL, pid INTEGER, pid_start INTEGER, expires_at INTEGER, created_at INTEGER NOT NULL);
                    CREATE TABLE audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), hash TEXT NOT NULL,
                        lines INTEGER NOT NULL, size INTEGER NOT NULL);
                    INSERT INTO audit_head VALUES (1, 'genesis', 0, 0);
                    INSERT INTO nonce VALUES ('SHA256:x', 'n1', 9999999999);
                    """)
            }
        }
        chmod(path, 0o600)
        let store = try StateStore.open(path)
        #expect(try store.runningAgents().isEmpty, "the agent table exists now")
        let nonces = try store.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM nonce") }
        #expect(nonces == 1)
        // A store that is not ours at all is still refused.
        let foreign = TestSupport.tempDir("state") + "/state.db"
        try DatabaseQueue(path: foreign).write { db in try db.execute(sql: "CREATE TABLE other (x)") }
        chmod(foreign, 0o600)
        #expect(throws: GatewayFailure.self) { try StateStore.open(foreign) }
    }
}
