/// Value syntaxes of the policy file: durations, rates, sizes, and the sandbox profile names.
public enum PolicyValues {
    /// `30s`, `2m`, `1h`, `1d` → seconds. A unit is required: a bare `30` could mean anything.
    public static func duration(_ text: String) -> Int64? {
        guard let unit = text.last, let n = Int64(text.dropLast()), n >= 0, text.dropLast().allSatisfy(\.isNumber) else { return nil }
        switch unit {
        case "s": return n
        case "m": return n.multipliedReportingOverflow(by: 60).overflow ? nil : n * 60
        case "h": return n.multipliedReportingOverflow(by: 3600).overflow ? nil : n * 3600
        case "d": return n.multipliedReportingOverflow(by: 86400).overflow ? nil : n * 86400
        default: return nil
        }
    }

    /// `512M`, `4GiB`, `100KB`, `1024` → bytes (binary multiples).
    static func size(_ text: String) -> Int64? {
        var t = Substring(text)
        for suffix in ["iB", "B"] where t.hasSuffix(suffix) { t = t.dropLast(suffix.count); break }
        var mult: Int64 = 1
        if let u = t.last, let m = ["K": Int64(1) << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40][String(u)] {
            mult = m
            t = t.dropLast()
        }
        guard !t.isEmpty, t.allSatisfy(\.isNumber), let n = Int64(t), n > 0 else { return nil }
        let (v, overflow) = n.multipliedReportingOverflow(by: mult)
        return overflow ? nil : v
    }
}

/// `rate: N/second|minute|hour|day`: at most N requests per period, enforced as GCRA with `burst`.
public struct Rate: Sendable, Equatable, CustomStringConvertible {
    public let count: Int64
    public let periodSeconds: Int64

    /// The emission interval, in milliseconds: one request is admitted every `interval` once the burst is spent.
    public var intervalMilliseconds: Int64 { periodSeconds * 1000 / count }

    static func parse(_ text: String) -> Rate? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].allSatisfy(\.isNumber), let n = Int64(parts[0]), n > 0, n <= 1_000_000 else { return nil }
        let periods: [String: Int64] = ["second": 1, "minute": 60, "hour": 3600, "day": 86400]
        guard let p = periods[String(parts[1])] else { return nil }
        return Rate(count: n, periodSeconds: p)
    }

    public var description: String {
        let names: [Int64: String] = [1: "second", 60: "minute", 3600: "hour", 86400: "day"]
        return "\(count)/\(names[periodSeconds] ?? "\(periodSeconds)s")"
    }
}

/// How much isolation an approved agent gets (see SECURITY.md for what each stops and does not stop).
public enum SandboxProfile: String, Sendable, CaseIterable {
    case none, standard, strict
}

/// Who starts an approved agent: spawngate's own sandboxed spawner, or the local Agent Relay broker.
public enum SpawnerBackend: String, Sendable, CaseIterable {
    case local
    case agentRelay = "agent-relay"
}

/// What network an agent has: the host's, or (strict only) a namespace holding nothing but its own loopback.
public enum NetworkAccess: String, Sendable, CaseIterable {
    case shared, none
}

/// Resource limits applied to an agent (rlimits and a wall-clock limit).
public struct ResourceLimits: Sendable, Equatable {
    public var cpuSeconds: Int64?
    public var memoryBytes: Int64?
    public var openFiles: Int64?
    public var processes: Int64?
    public var fileSizeBytes: Int64?
    public init() {}
}
