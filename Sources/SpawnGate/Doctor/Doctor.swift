import Foundation
import CSpawn
#if canImport(Glibc)
import Glibc
#endif

/// `spawngate doctor`: what this machine can enforce, whether the home's files are safe, and whether the policy
/// can be applied here. Every problem comes with the one thing to do about it.
public enum Doctor {
    public struct Finding: Sendable, Equatable {
        public enum Severity: String, Sendable { case ok, warn, fail }
        public let severity: Severity
        public let subject: String
        public let message: String

        public var line: String {
            let tag = switch severity { case .ok: "ok  "; case .warn: "warn"; case .fail: "FAIL" }
            return "\(tag)  \(subject): \(message)"
        }
    }

    /// What the machine offers, independent of any home.
    public static func layers(landlockABI: Int? = SandboxSupport.landlockABI, seccomp: Bool = SandboxSupport.seccomp,
                              bubblewrapProblem: String? = SandboxSupport.bubblewrapProblem,
                              containmentProblem: String? = SandboxSupport.containmentProblem) -> [Finding] {
        var out: [Finding] = []
        if let abi = landlockABI {
            out.append(Finding(severity: .ok, subject: "landlock", message: "ABI \(abi) (standard's write fence)"))
        } else {
            out.append(Finding(severity: .warn, subject: "landlock", message: "unavailable, so 'standard' cannot run here: \(SandboxSupport.landlockMissing)"))
        }
        out.append(seccomp
            ? Finding(severity: .ok, subject: "seccomp", message: "filters accepted")
            : Finding(severity: .warn, subject: "seccomp", message: "unavailable, so 'standard' and 'strict' cannot run here: \(SandboxSupport.seccompMissing)"))
        if let bubblewrapProblem {
            out.append(Finding(severity: .warn, subject: "bubblewrap", message: bubblewrapProblem + " ('strict' cannot run here)"))
        } else {
            out.append(Finding(severity: .ok, subject: "bubblewrap", message: "\(SandboxSupport.bubblewrapPath ?? "bwrap") makes user, pid, ipc, uts and network namespaces (strict)"))
        }
        if let containmentProblem {
            out.append(Finding(severity: .warn, subject: "containment", message: containmentProblem + " (no agent can be started here)"))
        } else {
            out.append(Finding(severity: .ok, subject: "containment", message: "each agent gets a pid and mount namespace of its own under an init (nothing it starts outlives it)"))
        }
        var core = rlimit()
        out.append(getrlimit(__rlimit_resource_t(CSPAWN_RLIMIT_CORE), &core) == 0
            ? Finding(severity: .ok, subject: "rlimits", message: "settable (agents get the rule's limits and no core dumps)")
            : Finding(severity: .warn, subject: "rlimits", message: "getrlimit failed: \(errnoText())"))
        return out
    }

    /// The home's files: secrets private, configuration not writable by others, state present.
    public static func files(_ home: Home) -> [Finding] {
        var out: [Finding] = []
        guard Files.exists(home.root) else {
            return [Finding(severity: .fail, subject: "home", message: "\(home.root) does not exist; create it with 'spawngate init --name NAME', or point --home (or $SPAWNGATE_HOME) at an existing one")]
        }
        func check(_ subject: String, _ path: String, secret: Bool, required: Bool = true, fix: String = "run 'spawngate init' in a new home, or restore it from a backup") {
            guard Files.exists(path) else {
                if required { out.append(Finding(severity: .fail, subject: subject, message: "\(path) is missing; \(fix)")) }
                return
            }
            do {
                if secret { try Files.checkPrivate(path) } else { try Files.checkNotWritableByOthers(path) }
                out.append(Finding(severity: .ok, subject: subject, message: path))
            } catch {
                out.append(Finding(severity: .fail, subject: subject, message: error.message))
            }
        }
        check("home", home.root, secret: false)
        check("identity key", home.identityKey, secret: true)
        check("keys", home.keysDir, secret: false)
        check("policy", home.policyFile, secret: false)
        check("state", home.stateDB, secret: true, fix: "if it was lost, wait max_ttl + clock_skew, then run 'spawngate init --state'")
        check("audit log", home.auditLog, secret: false, required: false)
        return out
    }

    /// The policy: loads, its tests pass, its binaries are safe, and every profile it asks for can run here.
    public static func policy(_ home: Home, listen: String? = nil,
                              missing: (SandboxProfile) -> [String] = { SandboxSupport.missing(for: $0) }) -> [Finding] {
        guard Files.exists(home.policyFile) else { return [] }  // reported with the files
        let policy: Policy
        switch PolicyLoader.load(home.policyFile) {
        case .failure(let e):
            return [Finding(severity: .fail, subject: "policy", message: "does not load:\n\(e.description)\nfix it, then run 'spawngate policy check'")]
        case .success(let p): policy = p
        }
        var out: [Finding] = []
        let results = PolicyTestRunner.run(policy)
        let failed = results.filter { !$0.passed }
        if failed.isEmpty {
            out.append(Finding(severity: .ok, subject: "policy", message: results.isEmpty ? "loads (it has no embedded tests)" : "loads; its \(results.count) embedded test\(results.count == 1 ? "" : "s") pass"))
        } else {
            out.append(Finding(severity: .fail, subject: "policy", message: "\(failed.count) embedded test(s) fail, so the gateway refuses every request; run 'spawngate policy test'"))
        }
        if !policy.acceptRemoteSpawn {
            out.append(Finding(severity: .warn, subject: "policy", message: "accept_remote_spawn is not true: every request is denied (remote_spawn_disabled)"))
        }
        for cli in policy.clis.values.sorted(by: { $0.name < $1.name }) {
            if let problem = BinaryCheck.problem(cli) {
                out.append(Finding(severity: .warn, subject: "cli \(cli.name)", message: "\(problem); requests for it are denied (cli_not_allowed)"))
            }
        }
        var seen = Set<SandboxProfile>()
        for rule in policy.rules where rule.effect == .allow {
            let gaps = missing(rule.sandbox)
            if gaps.isEmpty { seen.insert(rule.sandbox); continue }
            out.append(Finding(severity: .fail, subject: "rule \(rule.name)", message: "asks for sandbox '\(rule.sandbox.rawValue)', but this machine lacks \(gaps.joined(separator: " and ")); every request it allows is refused with internal_error until that is fixed or the rule asks for another profile"))
        }
        for profile in seen.sorted(by: { $0.rawValue < $1.rawValue }) {
            out.append(Finding(severity: .ok, subject: "sandbox \(profile.rawValue)", message: "every layer it needs works here"))
        }
        if let listen, let keys = try? home.keyStore.entries() { out += sourceBinding(policy, keys: keys, listen: listen) }
        return out
    }

    /// On a listener beyond loopback, each allow rule should say where its brokers' requests come from (its own
    /// `sources:`, or every broker it names has a key bound with `key bind`): otherwise a stolen key works from
    /// any address that reaches the port. `serve` prints the same warnings when it starts.
    public static func sourceBinding(_ policy: Policy, keys: [KeyStore.Entry], listen: String) -> [Finding] {
        let host = listen.hasPrefix("[") ? String(listen.dropFirst().prefix { $0 != "]" }) : String(listen[..<(listen.lastIndex(of: ":") ?? listen.endIndex)])
        if IPAddress.namesLoopback(host) { return [] }
        let bound = Set(keys.filter { $0.status == .enrolled && $0.sources != nil }.map(\.name))
        var out: [Finding] = []
        for rule in policy.rules where rule.effect == .allow && rule.sources == nil {
            let unbound: [String]
            switch rule.brokers {
            case .any: unbound = ["every broker (\"*\")"]
            case .named(let names): unbound = names.subtracting(bound).sorted()
            }
            guard !unbound.isEmpty else { continue }
            out.append(Finding(severity: .warn, subject: "rule \(rule.name)",
                               message: "takes requests from \(unbound.joined(separator: ", ")) at any address that reaches \(listen); name where they come from with sources: [ADDRESS] in the rule, or 'spawngate key bind NAME --sources ADDRESS' (refused requests get source_not_allowed)"))
        }
        if out.isEmpty, policy.rules.contains(where: { $0.effect == .allow }) {
            out.append(Finding(severity: .ok, subject: "sources", message: "every allow rule's brokers are bound to the places their requests come from"))
        }
        return out
    }

    /// The Agent Relay brokers that `spawner: agent-relay` rules would hand agents to: looked for as the start
    /// path looks (from each such rule's cwd, and from `from`, the current directory), with the version each
    /// writes itself down as, whether its API answers, and what that version does to a CLI that cannot start.
    public static func relay(_ home: Home, from: String? = nil, environment: [String: String] = [:]) -> [Finding] {
        var places: [String] = []
        if let from { places.append(from) }
        if case .success(let policy) = PolicyLoader.load(home.policyFile) {
            for rule in policy.rules where rule.effect == .allow && rule.spawner == .agentRelay {
                places += (rule.cwd ?? []).map(\.literalPrefix)
            }
        }
        var out: [Finding] = []
        var seen = Set<String>()
        for place in places where !place.isEmpty {
            let connection: AgentRelayConnection
            do { connection = try AgentRelayConnection.find(cwd: place, environment: environment) } catch {
                if from != place { out.append(Finding(severity: .warn, subject: "agent relay", message: "for \(place): \(error.message)")) }
                continue
            }
            guard seen.insert(connection.file).inserted else { continue }
            let health = try? HTTPClient.exchange(.tcp(host: "127.0.0.1", port: UInt16(connection.url.port ?? 80)), method: "GET",
                                                  path: "/health", timeout: 2)
            let answers = health.map { (200..<300).contains($0.status) } ?? false
            let kind = connection.layout == "v6"
                ? "the v6 kind: it answers 200 to a spawn whose CLI cannot start, so only spawngate's launcher report is trusted for relay workers"
                : "v14 or later: it answers 500 when a worker dies during start-up"
            out.append(Finding(severity: answers ? .ok : .warn, subject: "agent relay",
                               message: "\(connection.file): broker pid \(connection.pid.map(String.init) ?? "?") at \(connection.url.absoluteString), \(kind); its API \(answers ? "answers" : "does not answer (is it running?)")"))
            if let pid = connection.pid { out.append(guardStatus(home, brokerPID: pid)) }
        }
        return out
    }

    /// Whether the broker `brokerPID` reaches Relaycast only through a relay guard: read from the Relaycast URLs in
    /// its environment (what it was started with), and from the guard answering at that address.
    public static func guardStatus(_ home: Home, brokerPID: Int32) -> Finding {
        let fix = "start 'spawngate relay guard', then restart the broker with RELAYCAST_BASE_URL, RELAY_BASE_URL and RELAYCAST_WS_URL pointing at it (README: \"Behind the relay guard\")"
        guard let raw = try? Files.read("/proc/\(brokerPID)/environ", limit: 1 << 20) else {
            return Finding(severity: .warn, subject: "relay guard", message: "cannot read broker pid \(brokerPID)'s environment (another user's process, or gone), so whether it is behind the guard is unknown")
        }
        var env: [String: String] = [:]
        for entry in raw.split(separator: 0) {
            let text = String(decoding: entry, as: UTF8.self)
            if let eq = text.firstIndex(of: "=") { env[String(text[..<eq])] = String(text[text.index(after: eq)...]) }
        }
        guard let base = env["RELAYCAST_BASE_URL"] ?? env["RELAY_BASE_URL"], let u = URLComponents(string: base), let host = u.host else {
            return Finding(severity: .warn, subject: "relay guard", message: "the broker is NOT behind the relay guard: it talks to the Relaycast cloud directly, so anyone holding the workspace key can start agents here, unchecked; \(fix)")
        }
        let loopback = IPAddress.namesLoopback(host)
        let health = loopback && u.scheme == "http"
            ? try? HTTPClient.exchange(.tcp(host: host == "localhost" ? "127.0.0.1" : host, port: UInt16(u.port ?? 80)), method: "GET", path: "/_spawngate/v1/health", timeout: 2)
            : nil
        guard let health, health.status == 200, case .object(let o)? = try? StrictJSONReader.parse(health.body),
              o["guard"] == .string("spawngate relay guard") else {
            return Finding(severity: .warn, subject: "relay guard", message: "the broker is NOT behind the relay guard: its Relaycast is \(base), where no relay guard answers, so anyone holding the workspace key can start agents here, unchecked; \(fix)")
        }
        if let ws = env["RELAYCAST_WS_URL"], let w = URLComponents(string: ws), w.host != u.host || w.port != u.port {
            return Finding(severity: .warn, subject: "relay guard", message: "the broker's HTTP goes through the relay guard at \(base), but its WebSocket URL \(ws) does not: spawn frames reach it unchecked; set RELAYCAST_WS_URL to the guard's address with ws:// and restart the broker")
        }
        var upstream = "?", mailbox = "?", name = "?"
        if case .string(let v)? = o["upstream"] { upstream = v }
        if case .string(let v)? = o["mailbox"] { mailbox = v }
        if case .string(let v)? = o["name"] { name = v }
        let mine = RelayGuardFile.load(home)?.url == base.trimmingCharacters(in: CharacterSet(charactersIn: "/")) ? "this home's" : "\(name)'s"
        // Where the mailbox's workspace key came from: the operator's RELAY_API_KEY, or the broker's traffic once
        // Relaycast accepted it; two accepted keys mean someone else spoke through the guard too.
        var key = "?"
        if case .string(let v)? = o["workspace_key"] { key = v }
        if key == "conflict" {
            return Finding(severity: .warn, subject: "relay guard", message: "the broker is behind \(mine) relay guard at \(base), but its workspace mailbox is offline: two different workspace keys were accepted by Relaycast through the guard, so one is not the broker's; restart 'spawngate relay guard' with RELAY_API_KEY set to the broker's workspace key")
        }
        return Finding(severity: .ok, subject: "relay guard", message: "the broker is behind \(mine) relay guard at \(base), which forwards to \(upstream) and drops spawn and terminal frames; its workspace mailbox is \(mailbox) (workspace key: \(key))")
    }


    /// This home's relay guard's workspace mailbox, if a guard runs for it: what it sent and what Relaycast refused
    /// (the workspace's message budget is shared by everyone holding the key), and the signs of someone else using
    /// a gateway's mailbox name: messages that do not verify, and the mailbox's own token replaced.
    public static func mailbox(_ home: Home) -> [Finding] {
        guard let guardFile = RelayGuardFile.load(home), let endpoint = guardFile.endpoint else { return [] }
        guard let health = try? HTTPClient.exchange(endpoint, method: "GET", path: "/_spawngate/v1/health", timeout: 2), health.status == 200,
              case .object(let o)? = try? StrictJSONReader.parse(health.body), case .object(let stats)? = o["stats"] else {
            return [Finding(severity: .warn, subject: "relay mailbox", message: "this home's relay guard (pid \(guardFile.pid), \(guardFile.url)) does not answer its health check; restart 'spawngate relay guard'")]
        }
        func n(_ k: String) -> Int64 { stats[k]?.safeInteger ?? 0 }
        var name = RelayWire.mailbox(guardFile.name), state = "?"
        if case .string(let v)? = o["mailbox_name"] { name = v }
        if case .string(let v)? = o["mailbox"] { state = v }
        var out = [Finding(severity: state == "online" ? .ok : .warn, subject: "relay mailbox",
                           message: "\(name) is \(state): \(n("sent")) messages sent (\(n("send_failures")) failed posts), \(n("requests")) requests sent, \(n("answers")) answers given (\(n("duplicates")) retries answered again), \(n("resyncs")) resyncs (\(n("replayed")) events replayed), \(n("withheld")) messages and frames withheld or dropped (audited)")]
        if n("rate_limited") > 0 {
            out.append(Finding(severity: .warn, subject: "relay mailbox", message: "Relaycast refused \(n("rate_limited")) of \(name)'s messages with HTTP 429 (last asked to wait \(n("last_retry_after")) s): the workspace is over its message rate limit, which everyone holding the workspace key spends; each remote spawn costs two messages"))
        }
        if case .object(let unverified)? = stats["unverified"] {
            for (sender, count) in unverified.sorted(by: { $0.key < $1.key }) {
                out.append(Finding(severity: .warn, subject: "relay mailbox", message: "\(count.safeInteger ?? 0) workspace messages from \(TerminalText.escaped(String(sender.prefix(64)))) did not verify and were not trusted: \(sender.hasPrefix("spawngate-") ? "someone other than that gateway may hold the mailbox name \(TerminalText.escaped(String(sender.prefix(64)))) in the workspace (or it runs another spawngate version)" : "they are not from a spawngate gateway")"))
            }
        }
        if n("token_replaced") > 0 {
            out.append(Finding(severity: .warn, subject: "relay mailbox", message: "\(name)'s token was replaced \(n("token_replaced")) times by someone else registering that name in the workspace: another holder of the workspace key is using this gateway's mailbox name; nothing it sends verifies, but requests for this machine may reach it; rotate the workspace key"))
        }
        return out
    }

    /// `listen`: the address `serve` listens on (doctor's --listen), to check source binding against it.
    public static func examine(_ home: Home, from: String? = nil, environment: [String: String] = [:], listen: String? = nil) -> [Finding] {
        layers() + files(home) + policy(home, listen: listen) + relay(home, from: from, environment: environment) + mailbox(home)
    }
}
