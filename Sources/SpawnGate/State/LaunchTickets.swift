import Foundation
import GRDB

/// A single-use ticket that lets the launcher an Agent Relay broker runs (`spawngate launch --ticket T`) start
/// exactly one authorized spawn inside its sandbox. The broker holds only the ticket: the state store keeps its
/// SHA-256, the envelope as verified, when it was decided, the rule and the lease. A ticket is good once, for
/// ``LaunchTicket/lifetime`` seconds; the launcher reports back here what started, or why not, and how it ended.
public struct LaunchTicket: Sendable {
    public static let lifetime: Int64 = 60

    public let requestID: String
    public let envelope: [UInt8]
    public let decidedAt: Int64
    public let rule: String
    public let leaseID: String?
    /// Where the request that issued it came from ("local", "workspace" or an address), so that redemption
    /// re-checks the policy with the same source; nil for a ticket from before the column existed.
    public var source: String? = nil

    /// A new ticket's secret (what the broker is given) and its hash (what is stored).
    public static func mint() -> (secret: String, hash: String) {
        let secret = Base64.urlEncode(Sodium.randomBytes(32))
        return (secret, hash(secret))
    }

    static func hash(_ secret: String) -> String { Sodium.sha256(Array(secret.utf8)).hex }
}

/// What became of a ticket, as the launcher reported it.
public struct LaunchReport: Sendable, Equatable {
    public var redeemed = false
    public var started: Receipt.Started?
    /// Why nothing started (ticket refused, policy changed, exec failed).
    public var failure: String?
    public var exitStatus: Int32?
    /// The last lines the agent wrote to standard error before it exited.
    public var tail: String?
}

extension StateStore {
    /// Stores a ticket for `spawn` (its hash only).
    public func issueTicket(hash: String, for spawn: AuthorizedSpawn, now: Int64) throws(GatewayFailure) {
        do {
            try write { db in
                try db.execute(sql: """
                    INSERT INTO ticket (hash, request_id, envelope, decided_at, rule, lease_id, expires_at, source)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [hash, spawn.request.requestID, Data(spawn.envelope), spawn.decidedAt,
                                     spawn.match.rule.name, spawn.leaseID, now + LaunchTicket.lifetime, spawn.source.description])
                try db.execute(sql: "DELETE FROM ticket WHERE expires_at < ?", arguments: [now - 86400])
            }
        } catch { throw Self.failure(error) }
    }

    /// Takes the ticket whose secret is `secret`, once: nil when it is unknown, used or expired.
    public func redeemTicket(_ secret: String, now: Int64) throws(GatewayFailure) -> LaunchTicket? {
        do {
            return try write { db in
                let hash = LaunchTicket.hash(secret)
                try db.execute(sql: "UPDATE ticket SET redeemed_at = ? WHERE hash = ? AND redeemed_at IS NULL AND expires_at >= ?",
                               arguments: [now, hash, now])
                guard db.changesCount == 1, let row = try Row.fetchOne(db, sql: "SELECT * FROM ticket WHERE hash = ?", arguments: [hash]) else {
                    return nil
                }
                return LaunchTicket(requestID: row["request_id"], envelope: [UInt8](row["envelope"] as Data), decidedAt: row["decided_at"],
                                    rule: row["rule"], leaseID: row["lease_id"], source: row["source"])
            }
        } catch { throw Self.failure(error) }
    }

    /// The launcher's report, field by field (a nil leaves what is there).
    public func report(ticketFor requestID: String, started: Receipt.Started? = nil, failure: String? = nil,
                       exitStatus: Int32? = nil, tail: String? = nil) throws(GatewayFailure) {
        do {
            try write { db in
                if let started {
                    try db.execute(sql: "UPDATE ticket SET pid = ?, started_at = ?, layers = ? WHERE request_id = ?",
                                   arguments: [started.pid, started.startedAt, started.layers.joined(separator: ","), requestID])
                }
                if let failure { try db.execute(sql: "UPDATE ticket SET failure = ? WHERE request_id = ?", arguments: [failure, requestID]) }
                if let exitStatus { try db.execute(sql: "UPDATE ticket SET exit_status = ? WHERE request_id = ?", arguments: [exitStatus, requestID]) }
                if let tail { try db.execute(sql: "UPDATE ticket SET tail = ? WHERE request_id = ?", arguments: [tail, requestID]) }
            }
        } catch { throw Self.failure(error) }
    }

    /// What the launcher has reported so far for `requestID`'s ticket.
    public func launchReport(_ requestID: String) throws(GatewayFailure) -> LaunchReport {
        do {
            return try read { db in
                guard let row = try Row.fetchOne(db, sql: "SELECT * FROM ticket WHERE request_id = ?", arguments: [requestID]) else {
                    return LaunchReport()
                }
                var r = LaunchReport()
                r.redeemed = (row["redeemed_at"] as Int64?) != nil
                if let pid = row["pid"] as Int32?, let at = row["started_at"] as Int64? {
                    r.started = Receipt.Started(pid: pid, startedAt: at, layers: (row["layers"] as String? ?? "").split(separator: ",").map(String.init))
                }
                r.failure = row["failure"]
                r.exitStatus = row["exit_status"]
                r.tail = row["tail"]
                return r
            }
        } catch { throw Self.failure(error) }
    }

    /// A ticket that must not be redeemed any more (the gateway stopped waiting for it).
    public func voidTicket(for requestID: String) throws(GatewayFailure) {
        do {
            try write { db in
                try db.execute(sql: "UPDATE ticket SET expires_at = 0 WHERE request_id = ? AND redeemed_at IS NULL", arguments: [requestID])
            }
        } catch { throw Self.failure(error) }
    }
}
