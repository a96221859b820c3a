/// Every operation a gateway answers, in one table: how it is addressed over HTTP, what it takes, and where it can be
/// reached. The transports (`serve`'s HTTP listener, the hook socket, the relay guard's mailbox) route from this
/// table and the client (``RemoteGateway``) addresses by it; none keeps a list of its own. Adding an operation is a
/// case here and its handler in the server's `Gateway.answer`.
public enum GatewayOperation: String, Sendable, CaseIterable {
    /// A signed spawn request (sealed to the target's key) in; a receipt out.
    case spawn
    /// A signed control request (sealed) to stop the requester's agents of a name; a receipt out.
    case release
    /// A signed control request in a header: the requester's own agents, in a receipt.
    case agents
    /// A signed control request in a header: one of the requester's agents' output, in a receipt.
    case logs
    /// An enrollment request (a key with proof of possession); kept pending, trusted for nothing.
    case enroll
    /// This gateway's public key line.
    case identity
    /// Whether it runs, its broker name and its policy's hash.
    case health
    /// Prometheus text.
    case metrics
    /// A broker hook's input (`spawngate hook pre-spawn`): only on the Unix socket, where the kernel names the caller.
    case hook
    /// Approving or denying a held request (`spawngate approve` / `deny`): only on the Unix socket, where the kernel
    /// names the person doing it.
    case settle

    /// What the request carries.
    public enum Input: Sendable {
        /// The HTTP body.
        case body
        /// The `Spawngate-Request` header's value (base64url of a signed control request).
        case requestHeader
        case none
    }

    public var method: String {
        switch self {
        case .spawn, .release, .enroll, .hook, .settle: "POST"
        case .agents, .logs, .identity, .health, .metrics: "GET"
        }
    }

    public var path: String {
        switch self {
        case .health: "/healthz"
        case .metrics: "/metrics"
        default: "/v1/" + rawValue
        }
    }

    public var input: Input {
        switch self {
        case .spawn, .release, .enroll, .hook, .settle: .body
        case .agents, .logs: .requestHeader
        case .identity, .health, .metrics: .none
        }
    }

    /// Answered on `serve`'s TCP listener, to other machines.
    public var onNetwork: Bool { self != .hook && self != .settle }

    /// Answered on the hook socket (this machine's broker hooks and monitoring).
    public var onHookSocket: Bool { self == .hook || self == .settle || self == .health || self == .metrics }

    /// Carried through the Agent Relay workspace (``RelayWire``): the signed operations a peer may ask.
    public var throughWorkspace: Bool { self == .spawn || self == .release || self == .agents || self == .logs }

    /// Spends a token of the source's pre-authentication allowance before anything is read or decided.
    public var spendsAllowance: Bool { throughWorkspace || self == .enroll }

    /// The operation at `path`, whatever the method (so a wrong method can be told from an unknown path).
    public init?(path: String) {
        guard let op = Self.allCases.first(where: { $0.path == path }) else { return nil }
        self = op
    }
}

/// A gateway's answer to one operation, as a value: a signed receipt, a document, or a refusal before any decision.
/// No transport's status code is in it; ``wireStatus`` maps it for HTTP and for the workspace wire, which carries
/// the same numbers.
public enum GatewayAnswer: Sendable, Equatable {
    /// A signed receipt (sealed to the requester when it is known): the only answer that proves anything.
    case receipt([UInt8])
    /// Taken but not decided: an enrollment request kept pending (its JSON).
    case pending([UInt8])
    /// Something to read that proves nothing: the identity line, health, metrics.
    case document(contentType: String, body: [UInt8])
    /// Refused before any decision, unsigned.
    case refused(Refusal)

    public struct Refusal: Sendable, Equatable {
        public enum Kind: Sendable, Equatable {
            /// Not a request this operation can read (a missing header, a body that is not one).
            case malformed
            /// Over the size an operation accepts.
            case tooLarge
            /// The source's allowance is spent, or a share of a bounded table is full.
            case tooMany
            /// The gateway failed; the sentence is fixed and the details are in its log.
            case internalError
            /// The gateway cannot take it now (busy, offline).
            case unavailable
        }
        public let kind: Kind
        public let message: String
        public init(_ kind: Kind, _ message: String) { self.kind = kind; self.message = message }
    }

    public static func refused(_ kind: Refusal.Kind, _ message: String) -> GatewayAnswer { .refused(Refusal(kind, message)) }

    /// The status code HTTP and the workspace wire give this answer.
    public var wireStatus: Int {
        switch self {
        case .receipt, .document: 200
        case .pending: 202
        case .refused(let r):
            switch r.kind {
            case .malformed: 400
            case .tooLarge: 413
            case .tooMany: 429
            case .internalError: 500
            case .unavailable: 503
            }
        }
    }

    public var contentType: String {
        if case .document(let type, _) = self { return type }
        return "application/json"
    }

    /// The bytes HTTP and the workspace wire carry: a refusal as `{"error": sentence}`.
    public var wireBody: [UInt8] {
        switch self {
        case .receipt(let b), .pending(let b), .document(_, let b): b
        case .refused(let r): JSONWriter.object([("error", .string(r.message))]) + [10]
        }
    }
}
