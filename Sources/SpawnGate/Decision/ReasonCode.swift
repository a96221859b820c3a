/// Stable reason codes (PRODUCT.md): scripts and brokers match on these strings, so they never change meaning.
public enum ReasonCode: String, CaseIterable, Sendable, Codable {
    case allowed
    case malformed
    case badSignature = "bad_signature"
    case unknownKey = "unknown_key"
    case revokedKey = "revoked_key"
    case wrongAudience = "wrong_audience"
    case expired
    case notYetValid = "not_yet_valid"
    case ttlTooLong = "ttl_too_long"
    case replay
    case remoteSpawnDisabled = "remote_spawn_disabled"
    case noMatchingRule = "no_matching_rule"
    case deniedByRule = "denied_by_rule"
    case cliNotAllowed = "cli_not_allowed"
    case argsNotAllowed = "args_not_allowed"
    case cwdNotAllowed = "cwd_not_allowed"
    case envNotAllowed = "env_not_allowed"
    case rateLimited = "rate_limited"
    case concurrencyLimit = "concurrency_limit"
    case auditUnavailable = "audit_unavailable"
    case internalError = "internal_error"
    /// Allowed, but the agent did not start or died within its rule's startup check (exit status and last output
    /// in the receipt). Nothing is running.
    case startFailed = "start_failed"

    /// The stage that refuses with this code (nil for `allowed`, which no stage refuses with). Exhaustive, so a
    /// new code cannot be added without saying where it comes from.
    public var stage: TraceStage? {
        switch self {
        case .allowed: nil
        case .malformed: .parse
        case .badSignature, .unknownKey, .revokedKey: .signature
        case .wrongAudience: .audience
        case .expired, .notYetValid, .ttlTooLong: .window
        case .remoteSpawnDisabled: .policy
        case .noMatchingRule, .deniedByRule, .cliNotAllowed, .cwdNotAllowed: .rule
        case .argsNotAllowed, .envNotAllowed: .arguments
        case .replay: .replay
        case .rateLimited: .rate
        case .concurrencyLimit: .concurrency
        case .auditUnavailable: .audit
        case .startFailed: .start
        case .internalError: .gateway
        }
    }
}

/// A refusal, as a value. What the requester learns: the code, one sentence, and the rule that decided.
public struct Denial: Sendable, Equatable, Error {
    public let reason: ReasonCode
    public let detail: String
    public let rule: String?

    public init(_ reason: ReasonCode, _ detail: String, rule: String? = nil) {
        precondition(reason != .allowed)
        self.reason = reason
        self.detail = detail
        self.rule = rule
    }
}
