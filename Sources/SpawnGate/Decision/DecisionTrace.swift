/// The stages of ``DecisionPipeline``, in the order it runs them.
public enum TraceStage: String, Sendable, CaseIterable {
    /// The envelope and payload parse (wire format).
    case parse
    /// The key is enrolled and not revoked, the signature verifies, `from` is the key's name.
    case signature
    /// `to` is this broker.
    case audience
    /// iat, exp, max_ttl, clock_skew.
    case window
    /// The hook's second opinion: the broker's spawn fields equal the signed ones.
    case request
    /// Policy-wide switches and the working directory.
    case policy
    /// The places the key (`from=`) or a rule (`sources:`) accepts the broker's requests from.
    case source
    /// One deny or allow rule.
    case rule
    /// Model, deny_args, argument shapes, task placement.
    case arguments
    /// The request's grant (an attenuated right of its broker): chain, lifetime, and what it allows.
    case grant
    /// The CLI's binary as it is on disk now.
    case binary
    /// The rule's sandbox profile against the layers this machine has.
    case sandbox
    case replay
    case rate
    case concurrency
    /// A rule that says `approve:`: the request is held for a person (or is approved or denied by one).
    case approval
    /// The decision is recorded (or, in a dry run, not).
    case audit
    /// After an allow: the agent was started, or not.
    case start
    /// The gateway itself (key store, state store) could not be used.
    case gateway
}

/// One step of a decision: a stage, what it looked at, what it concluded and why.
///
/// Steps are recorded only when tracing is asked for (`policy explain`); the normal path builds no strings.
public struct TraceStep: Sendable, Equatable, CustomStringConvertible {
    public let stage: TraceStage
    public let subject: String
    public let verdict: String
    public let why: String
    public init(_ stage: TraceStage, _ subject: String, _ verdict: String, _ why: String) {
        self.stage = stage; self.subject = subject; self.verdict = verdict; self.why = why
    }
    public var description: String { "\(subject): \(verdict): \(why)" }
}

/// `policy explain`'s lines under their earlier name.
public typealias ExplainStep = TraceStep

/// Every stage a decision ran, in order.
public struct DecisionTrace: Sendable, Equatable {
    public var steps: [TraceStep]
    public init(_ steps: [TraceStep] = []) { self.steps = steps }
    public var stages: [TraceStage] { steps.map(\.stage) }
}

/// Collects steps when tracing, and does nothing (no strings built: the arguments are autoclosures) when not.
struct TraceRecorder {
    private(set) var steps: [TraceStep]?
    init(_ on: Bool) { steps = on ? [] : nil }
    var on: Bool { steps != nil }
    mutating func note(_ stage: TraceStage, _ subject: @autoclosure () -> String, _ verdict: String, _ why: @autoclosure () -> String) {
        if steps != nil { steps!.append(TraceStep(stage, subject(), verdict, why())) }
    }
    mutating func append(_ more: [TraceStep]) { if steps != nil { steps! += more } }
}
