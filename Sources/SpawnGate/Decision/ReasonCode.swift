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
    /// Signed by an enrolled key, but sent from a place its key (`from=`) or the rule (`sources:`) does not
    /// accept it from.
    case sourceNotAllowed = "source_not_allowed"
    /// The request carries a grant that does not verify: a block not signed by the requesting broker's key or by
    /// the key its predecessor names, a missing or wrong proof, or a block of the wrong shape.
    case grantInvalid = "grant_invalid"
    /// The request carries a grant outside its lifetime.
    case grantExpired = "grant_expired"
    /// The request is outside what its grant allows (target, cli, cwd, arguments), or the grant's uses are spent.
    case grantExceeded = "grant_exceeded"
    /// The grant was revoked by its issuer (refused on the requesting side, before anything is signed).
    case grantRevoked = "grant_revoked"
    /// Allowed up to the start, and held until a person approves (`spawngate approve ID`) or it expires.
    case approvalPending = "approval_pending"
    /// A person refused a held request (`spawngate deny ID`).
    case approvalDenied = "approval_denied"
    /// A held request was not approved in time, or no longer passes the policy in force; it never starts.
    case approvalExpired = "approval_expired"

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
        case .sourceNotAllowed: .source
        case .rateLimited: .rate
        case .concurrencyLimit: .concurrency
        case .auditUnavailable: .audit
        case .startFailed: .start
        case .internalError: .gateway
        case .grantInvalid, .grantExpired, .grantExceeded, .grantRevoked: .grant
        case .approvalPending, .approvalDenied, .approvalExpired: .approval
        }
    }

    /// The exit status of `verify`, `check`, `hook pre-spawn`, `exec` (when nothing ran) and `spawn` for this
    /// outcome (PRODUCT.md): 0 allowed, 1 denied, 2 the gateway could not decide.
    public var exitStatus: CommandStatus {
        switch self {
        case .allowed: .allowed
        case .internalError, .auditUnavailable: .cannotDecide
        // Allowed, but the agent died in its startup check: the request did not succeed, and the gateway did
        // decide, so it is a refusal of this attempt rather than a gateway failure.
        case .startFailed: .denied
        // Decided up to the start and held for a person: not started (yet), and not a refusal either.
        case .approvalPending: .pending
        case .grantInvalid, .grantExpired, .grantExceeded, .grantRevoked, .approvalDenied, .approvalExpired: .denied
        case .malformed, .badSignature, .unknownKey, .revokedKey, .wrongAudience, .expired, .notYetValid, .ttlTooLong,
             .replay, .remoteSpawnDisabled, .noMatchingRule, .deniedByRule, .cliNotAllowed, .argsNotAllowed,
             .cwdNotAllowed, .envNotAllowed, .rateLimited, .concurrencyLimit, .sourceNotAllowed: .denied
        }
    }

    /// Refused before the request could be shown to be an enrolled broker's own fresh request: not from an
    /// enrolled key, or not what its broker sends now (a captured request replayed, or one outside its window).
    /// The server charges these to the source's pre-authentication allowance, so resending one cannot flood the
    /// audit log.
    public var unauthenticated: Bool {
        switch self {
        case .malformed, .badSignature, .unknownKey, .revokedKey, .wrongAudience, .replay, .expired, .notYetValid, .ttlTooLong: true
        // From a place the broker does not send from: a captured request resent from elsewhere, or a stolen key.
        case .sourceNotAllowed: true
        // Signed by the broker's own key: a grant that does not verify is its broker's doing, not a stranger's.
        case .grantInvalid, .grantExpired, .grantExceeded, .grantRevoked, .approvalPending, .approvalDenied, .approvalExpired: false
        case .allowed, .remoteSpawnDisabled, .noMatchingRule, .deniedByRule, .cliNotAllowed, .argsNotAllowed, .cwdNotAllowed,
             .envNotAllowed, .rateLimited, .concurrencyLimit, .auditUnavailable, .internalError, .startFailed: false
        }
    }

    /// The gateway itself failed: the text is for its operator, not the requester.
    public var isGatewayFailure: Bool { exitStatus == .cannotDecide }

    /// Reasons the policy stage can give (embedded policy tests may expect only these).
    public var givenByPolicy: Bool {
        switch stage {
        case .policy?, .rule?, .arguments?, .source?: true
        // A policy test that states a grant can be outside it.
        default: self == .grantExceeded
        }
    }
}

/// The exit statuses of every command (PRODUCT.md). Anything but 0 means: do not spawn.
public enum CommandStatus: Int32, Sendable, CaseIterable {
    case allowed = 0
    /// Refused: the request, or the operator's command, was turned down (malformed input included).
    case denied = 1
    /// This gateway or machine could not decide or act: broken config, missing home, unreadable files, state
    /// store or audit log unusable, a peer that gave no verified answer.
    case cannotDecide = 2
    /// Held for a person's approval on the target: not started yet (`approval_pending`, with the approval's id).
    case pending = 3
    /// Bad flags (argument-parser's own status).
    case usage = 64

    /// The one mapping from an error to an exit status, used by every command. Unknown errors cannot decide
    /// (fail closed: never 0, and never reported as a mere refusal of the request).
    public init(for error: any Error) {
        switch error {
        case let d as Denial: self = d.reason.exitStatus
        case let e as OperatorError: self = e.kind == .refused ? .denied : .cannotDecide
        case is GatewayFailure: self = .cannotDecide
        case let e as RemoteError: self = e.kind == .unboundDenial ? .denied : .cannotDecide
        case let e as Handoff.Failure:
            switch e.kind {
            case .refused: self = .denied
            case .cannotDecide: self = .cannotDecide
            // TARGET's verified answer: its reason's status, as `spawn` gives it (a target that could not decide
            // is 2 here too); a start it reported but its listing does not show (an allow receipt) is refused.
            case .denied: self = e.receipt.map { $0.allowed ? .denied : $0.reason.exitStatus } ?? .denied
            }
        default: self = .cannotDecide
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
