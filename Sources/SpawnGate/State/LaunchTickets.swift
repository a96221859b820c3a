/// What lets the relay launcher an Agent Relay broker runs (`spawngate-launch SOCKET TICKET`) have exactly one
/// authorized spawn started in its worker: the ticket's secret, which the broker holds on the worker's command line,
/// and what the gateway waiting at SOCKET keeps in memory while it waits (never on disk: the socket, and so the
/// ticket, go with that wait). The launcher shows the secret once; the gateway then redeems the decision again
/// (``DecisionPipeline/redeem(_:)``) against what could have changed since: the key, the policy, the binary.
public struct LaunchTicket: Sendable {
    public let requestID: String
    public let envelope: [UInt8]
    public let decidedAt: Int64
    public let rule: String
    public let leaseID: String?
    /// Where the request that issued it came from ("local", "workspace" or an address), so that redemption
    /// re-checks the policy with the same source.
    public var source: String?

    /// The ticket for an authorized spawn.
    public init(for spawn: AuthorizedSpawn) {
        requestID = spawn.request.requestID
        envelope = spawn.envelope
        decidedAt = spawn.decidedAt
        rule = spawn.match.rule.name
        leaseID = spawn.leaseID
        source = spawn.source.description
    }

    /// A new ticket's secret: 32 random bytes, base64url.
    public static func secret() -> String { Base64.urlEncode(Sodium.randomBytes(32)) }
}
