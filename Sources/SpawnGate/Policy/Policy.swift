/// A loaded, validated policy. Values of this type exist only when the file parsed without errors; whether its
/// embedded tests pass is checked by ``PolicyLoader/loadForDecisions(_:)`` before it is ever applied.
public struct Policy: Sendable {
    /// Whether a local caller with this uid may use the gateway's Unix socket.
    public func admitsHookUser(_ uid: UInt32, gatewayUID: UInt32) -> Bool {
        guard let hookUsers else { return uid == gatewayUID }
        return hookUsers.contains(uid)
    }

    public let file: String
    /// SHA-256 of the file's bytes, lowercase hex: which policy decided is recorded with every decision.
    public let hash: String
    public let acceptRemoteSpawn: Bool
    public let window: ValidityWindow
    /// Uids allowed on the gateway's Unix socket (`hook_users`); nil means the gateway's own uid only, and an
    /// empty list means nobody.
    public let hookUsers: [UInt32]?
    public let clis: [String: CLIEntry]
    public let rules: [Rule]
    public let tests: [PolicyTest]
    let allowIndex: RuleIndex
    let denyIndex: RuleIndex

    init(file: String, hash: String, acceptRemoteSpawn: Bool, window: ValidityWindow, hookUsers: [UInt32]? = nil,
         clis: [String: CLIEntry], rules: [Rule], tests: [PolicyTest]) {
        self.file = file; self.hash = hash; self.acceptRemoteSpawn = acceptRemoteSpawn; self.window = window
        self.hookUsers = hookUsers
        self.clis = clis; self.rules = rules; self.tests = tests
        allowIndex = RuleIndex(rules, effect: .allow)
        denyIndex = RuleIndex(rules, effect: .deny)
    }
}

/// A program that may ever be started, and the argument shapes it may be started with.
public struct CLIEntry: Sendable {
    /// How the request's task text reaches the program. It never becomes an option.
    public enum TaskDelivery: Sendable, Equatable {
        /// As the last argument, after `--`, so the program cannot read it as a flag.
        case afterDoubleDash
        /// On standard input.
        case stdin
        /// In the named environment variable.
        case environment(String)
        /// This CLI takes no task; a request with one is refused.
        case none
    }

    public let name: String
    public let path: String
    public let sha256: [UInt8]?
    /// Allowed argv shapes after the program; each is matched element by element and must match entirely.
    public let args: [[ArgPattern]]
    public let denyArgs: [ArgPattern]
    public let env: [String]
    public let task: TaskDelivery
    /// When set, a request's `model` becomes `[modelFlag, model]` in front of its args (then matched like any args).
    public let modelFlag: String?
    /// When true, `--flag=value` is split into `--flag`, `value` before matching; otherwise the two forms differ.
    public let splitEquals: Bool
    /// Extra paths the agent may write under the sandbox (its own state directory).
    public let writable: [String]
    /// Files inside the working directory the agent may not change (its settings files), kept read-only by `strict`.
    public let protected: [String]
    public let line: Int
    /// Where `path:`'s value is, for errors about the binary's place.
    var pathLine = 0, pathColumn = 0
}

/// A rule: who (brokers) may start what (clis) where (cwd), how often and how isolated.
public struct Rule: Sendable {
    public enum Effect: String, Sendable { case allow, deny }
    public enum Brokers: Sendable, Equatable {
        case any
        case named(Set<String>)
        func contains(_ b: String) -> Bool { if case .named(let s) = self { return s.contains(b) }; return true }
    }

    public let name: String
    public let effect: Effect
    public let brokers: Brokers
    /// nil only on a deny rule that did not say (it then applies to every CLI); `["*"]` is written as nil too.
    public let clis: Set<String>?
    /// nil only on a deny rule that did not say (it then applies everywhere).
    public let cwd: [PathPattern]?
    /// Where requests this rule applies to must come from (`sources:`); nil means anywhere. On an allow rule a
    /// request from elsewhere is refused with `source_not_allowed`; a deny rule applies only to these places.
    public let sources: [SourcePattern]?
    public let rate: Rate?
    public let burst: Int64
    public let maxConcurrent: Int64?
    public let sandbox: SandboxProfile
    public let maxRuntime: Int64?
    public let limits: ResourceLimits
    public let spawner: SpawnerBackend
    public let network: NetworkAccess
    /// Seconds a started agent is watched before the receipt says it started (`startup_check`).
    public let startupCheck: Int64
    public static let defaultStartupCheck: Int64 = 1
    /// Held for a person before it starts (`approve:`); nil starts at once.
    public let approval: Approval?
    public let line: Int

    /// `approve:` of a rule: who may approve (Unix user names on this machine; nil: any user the gateway's socket
    /// admits), and how long a held request waits before it expires.
    public struct Approval: Sendable, Equatable {
        public var by: [String]?
        public var within: Int64
        public static let defaultWithin: Int64 = 600
        public func admits(_ user: String) -> Bool { by?.contains(user) ?? true }
    }

    func appliesTo(cli: String) -> Bool { clis?.contains(cli) ?? true }
}

/// An embedded test: a request and the decision it must get.
public struct PolicyTest: Sendable {
    public let request: PolicyRequest
    /// `allowed` for `expect: allow`.
    public let expect: ReasonCode
    public let rule: String?
    public let line: Int
    public let column: Int
}

/// What the policy decides on: the verified requester and the fields of its request that shape the process.
public struct PolicyRequest: Sendable, Equatable {
    public var broker: String
    public var cli: String
    public var cwd: String?
    public var args: [String]
    public var model: String?
    public var task: String?
    /// Where the request came from. nil only when a launch ticket is redeemed: the decision that issued it
    /// checked the source, and the launcher's own place says nothing about the requester's.
    public var source: RequestSource?
    /// The places the signing key is bound to (its `from=` in keys/), when it is bound.
    public var keySources: [SourcePattern]?
    /// The limits of the grant the request is made under (each block's), checked after the policy; nil: no grant.
    public var grant: [GrantLimit]?

    public init(broker: String, cli: String, cwd: String?, args: [String] = [], model: String? = nil, task: String? = nil,
                source: RequestSource? = .local, keySources: [SourcePattern]? = nil) {
        self.broker = broker; self.cli = cli; self.cwd = cwd; self.args = args; self.model = model; self.task = task
        self.source = source; self.keySources = keySources
    }

    /// Every caller says where the request came from: there is no default for a verified request.
    public init(_ verified: VerifiedRequest, source: RequestSource?) {
        let r = verified.request
        self.init(broker: verified.broker, cli: r.cli, cwd: r.cwd, args: r.args ?? [], model: r.model, task: r.task,
                  source: source, keySources: verified.keySources)
        self.grant = verified.grant?.limits
    }
}

/// Rules by broker name, so a decision looks at the rules that name its broker (plus `"*"` rules) in file order,
/// not at every rule: 10,000 rules over 1,000 brokers cost about ten rule checks per decision.
struct RuleIndex: Sendable {
    private var byBroker: [String: [Int]] = [:]
    private var wildcard: [Int] = []

    init(_ rules: [Rule], effect: Rule.Effect) {
        for (i, r) in rules.enumerated() where r.effect == effect {
            switch r.brokers {
            case .any: wildcard.append(i)
            case .named(let names): for n in names { byBroker[n, default: []].append(i) }
            }
        }
    }

    /// Rule indices in file order.
    func candidates(_ broker: String) -> [Int] {
        let named = byBroker[broker] ?? []
        if wildcard.isEmpty { return named }
        if named.isEmpty { return wildcard }
        var out: [Int] = []
        out.reserveCapacity(named.count + wildcard.count)
        var i = 0, j = 0
        while i < named.count || j < wildcard.count {
            if j == wildcard.count || (i < named.count && named[i] < wildcard[j]) { out.append(named[i]); i += 1 } else { out.append(wildcard[j]); j += 1 }
        }
        return out
    }
}
