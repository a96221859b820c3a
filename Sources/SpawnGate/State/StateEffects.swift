import GRDB

/// What an allowed request changes in the state store. The pipeline computes these from the verified request and
/// the matching rule; ``StateStore`` checks and applies them together in one transaction, or not at all
/// (`--dry-run` only checks them).
public enum StateEffect: Sendable, Equatable {
    /// Remember (key, nonce) until the request can no longer be valid, so it is never accepted twice.
    case consumeNonce(fingerprint: String, nonce: String, keepUntil: Int64)
    /// Take one token from the (broker, rule) bucket: GCRA with one emission interval and a burst.
    case takeToken(broker: String, rule: String, intervalMilliseconds: Int64, burst: Int64)
    /// Hold one of at most `max` concurrency slots of (broker, rule) until the lease ends.
    case takeLease(LeaseRequest)
    /// Count one use of a grant's block that has a max (keyed by the issuing key and the block's id).
    case useGrant(issuer: String, blockID: String, name: String, max: Int64, keepUntil: Int64)
    /// Keep a request held for approval.
    case holdApproval(HeldRequest)
    /// Settle a held request: `approved`, `denied` (by a person) or `expired`. A request that is no longer pending,
    /// or (unless it is being expired) whose time is up, is refused.
    case settleApproval(id: String, to: HeldRequest.State, by: String?)
}

/// A concurrency slot being asked for. Until a process is bound to it, a lease ends at `expiresAt`.
public struct LeaseRequest: Sendable, Equatable {
    public let requestID: String
    public let broker: String
    public let rule: String
    public let name: String
    public let max: Int64
    public let expiresAt: Int64
}

/// A lease as stored: who holds the slot, and how it ends (its process exits, or it expires).
public struct Lease: Sendable, Equatable {
    public let requestID: String
    public let broker: String
    public let rule: String
    public let name: String
    public let process: ProcessIdentity?
    public let expiresAt: Int64?
    public let createdAt: Int64

    /// A lease bound to a process lives exactly as long as that process; an unbound one until it expires.
    func isLive(now: Int64) -> Bool {
        if let process { return process.isAlive }
        if let expiresAt { return now < expiresAt }
        return false
    }

    init(_ row: Row) {
        requestID = row["request_id"]; broker = row["broker"]; rule = row["rule"]; name = row["name"]
        let pid: Int32? = row["pid"], start: Int64? = row["pid_start"]
        process = pid.map { ProcessIdentity(pid: $0, startTime: start ?? 0) }
        expiresAt = row["expires_at"]; createdAt = row["created_at"]
    }
}

/// What checking the effects concluded: the first denial, or the writes that apply them all. The writes run in the
/// same transaction, later (after the audit append); a dry run never runs them.
enum Admission {
    case denied(Denial)
    case admitted(apply: () throws -> Void)

    var denial: Denial? { if case .denied(let d) = self { return d }; return nil }
}

extension StateStore {
    /// Checks every effect against the current state, in order replay → rate → concurrency. A denied request
    /// changes nothing.
    static func admit(_ effects: [StateEffect], nowMilliseconds: Int64, _ db: Database) throws -> Admission {
        let now = nowMilliseconds / 1000
        var writes: [() throws -> Void] = []
        for effect in effects {
            switch effect {
            case .consumeNonce(let fp, let nonce, let keepUntil):
                if try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM nonce WHERE fingerprint = ? AND nonce = ?"), arguments: [fp, nonce]) != nil {
                    return .denied(Denial(.replay, "this request (nonce \(nonce)) was already accepted; sign a new one"))
                }
                writes.append {
                    try db.cachedStatement(sql: "INSERT INTO nonce (fingerprint, nonce, keep_until) VALUES (?, ?, ?)").execute(arguments: [fp, nonce, keepUntil])
                }

            case .takeToken(let broker, let rule, let interval, let burst):
                // GCRA: the bucket is one "theoretical arrival time"; a request fits while it is at most
                // (burst - 1) intervals ahead of now.
                let stored = try Int64.fetchOne(db.cachedStatement(sql: "SELECT tat_ms FROM bucket WHERE broker = ? AND rule = ?"), arguments: [broker, rule])
                let tat = max(stored ?? nowMilliseconds, nowMilliseconds)
                let tolerance = (burst - 1) * interval
                if tat - nowMilliseconds > tolerance {
                    let wait = tat - nowMilliseconds - tolerance
                    return .denied(Denial(.rateLimited, "\(broker) has used its rate under rule '\(rule)'; the next request fits in \(Self.seconds(wait))", rule: rule))
                }
                writes.append {
                    try db.cachedStatement(sql: "INSERT INTO bucket (broker, rule, tat_ms) VALUES (?, ?, ?) ON CONFLICT (broker, rule) DO UPDATE SET tat_ms = excluded.tat_ms")
                        .execute(arguments: [broker, rule, tat + interval])
                }

            case .useGrant(let issuer, let blockID, let name, let max, let keepUntil):
                let used = try Int64.fetchOne(db.cachedStatement(sql: "SELECT uses FROM grant_use WHERE issuer = ? AND block_id = ?"), arguments: [issuer, blockID]) ?? 0
                if used >= max {
                    return .denied(Denial(.grantExceeded, "grant '\(name)' has been used \(used) time\(used == 1 ? "" : "s") here, its max; its issuer can add a new one with 'spawngate grant add'"))
                }
                writes.append {
                    try db.cachedStatement(sql: "INSERT INTO grant_use (issuer, block_id, uses, keep_until) VALUES (?, ?, 1, ?) ON CONFLICT (issuer, block_id) DO UPDATE SET uses = uses + 1")
                        .execute(arguments: [issuer, blockID, keepUntil])
                }

            case .holdApproval(let held):
                writes.append { try held.insert(db) }

            case .settleApproval(let id, let to, let by):
                guard let held = try HeldRequest.fetch(id, db) else {
                    return .denied(Denial(.approvalExpired, "no request is held here as \(id); 'spawngate approvals' lists them"))
                }
                guard held.state == .pending else {
                    return .denied(Denial(.approvalExpired, "request \(id) is no longer waiting: it was \(held.state.rawValue)\(held.decidedBy.map { " by \($0)" } ?? "")", rule: held.rule))
                }
                if to != .expired, now >= held.expiresAt {
                    return .denied(Denial(.approvalExpired, "request \(id) waited its time (until \(held.expiresAt)) and expired; the requester can ask again", rule: held.rule))
                }
                writes.append {
                    try db.cachedStatement(sql: "UPDATE approval SET state = ?, decided_by = ?, resolved_at = ? WHERE id = ? AND state = 'pending'")
                        .execute(arguments: [to.rawValue, by, now, id])
                }

            case .takeLease(let want):
                let leases = try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM lease WHERE broker = ? AND rule = ?"), arguments: [want.broker, want.rule]).map(Lease.init)
                let dead = leases.filter { !$0.isLive(now: now) }
                let live = leases.count - dead.count
                if live >= want.max {
                    return .denied(Denial(.concurrencyLimit, "\(want.broker) already has \(live) live agent\(live == 1 ? "" : "s") under rule '\(want.rule)' (max_concurrent \(want.max)); release one or wait for one to exit", rule: want.rule))
                }
                writes.append {
                    // Leases whose process is gone or whose time is up are freed here, under the write lock.
                    for d in dead { try db.cachedStatement(sql: "DELETE FROM lease WHERE request_id = ?").execute(arguments: [d.requestID]) }
                    try db.cachedStatement(sql: "INSERT INTO lease (request_id, broker, rule, name, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?)")
                        .execute(arguments: [want.requestID, want.broker, want.rule, want.name, want.expiresAt, now])
                }
            }
        }
        return .admitted(apply: {
            for w in writes { try w() }
            // Nonces of requests that can no longer be valid are forgotten.
            try db.cachedStatement(sql: "DELETE FROM nonce WHERE keep_until < ?").execute(arguments: [now])
            try db.cachedStatement(sql: "DELETE FROM grant_use WHERE keep_until < ?").execute(arguments: [now])
        })
    }

    static func seconds(_ ms: Int64) -> String {
        let s = (ms + 999) / 1000
        return s == 1 ? "1 second" : "\(s) seconds"
    }

    /// Records a nonce that an audit line says was accepted but whose transaction never committed (the deciding
    /// process died in between): it must never be accepted again.
    static func rememberNonce(fingerprint: String, nonce: String, keepUntil: Int64, _ db: Database) throws {
        try db.cachedStatement(sql: "INSERT OR IGNORE INTO nonce (fingerprint, nonce, keep_until) VALUES (?, ?, ?)").execute(arguments: [fingerprint, nonce, keepUntil])
    }

    // MARK: - Leases, for the commands that bind and end them

    /// Binds a lease to the process the broker started for it; it then ends when that process exits.
    public func bindLease(requestID: String, to process: ProcessIdentity) throws(GatewayFailure) -> Bool {
        do {
            return try write { db in
                try db.execute(sql: "UPDATE lease SET pid = ?, pid_start = ?, expires_at = NULL WHERE request_id = ?",
                               arguments: [process.pid, process.startTime, requestID])
                return db.changesCount == 1
            }
        } catch { throw Self.failure(error) }
    }

    /// Ends a lease (the agent exited). False when there was none.
    public func releaseLease(requestID: String) throws(GatewayFailure) -> Bool {
        do {
            return try write { db in
                try db.cachedStatement(sql: "DELETE FROM lease WHERE request_id = ?").execute(arguments: [requestID])
                return db.changesCount == 1
            }
        } catch { throw Self.failure(error) }
    }
}
