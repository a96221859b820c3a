import Foundation

/// Where the local Agent Relay broker listens and the key its HTTP API wants, from the `connection.json` it
/// writes (`{url, port, api_key, pid}`; other fields are Agent Relay's business and are ignored).
public struct AgentRelayConnection: Sendable, Equatable {
    public let url: URL
    public let apiKey: String
    public let file: String

    /// The file Agent Relay's own client uses: `$AGENT_RELAY_STATE_DIR/connection.json`, else
    /// `<cwd>/.agent-relay/connection.json` (its `--cwd` picks the broker the same way).
    public static func file(cwd: String, environment: [String: String]) -> String {
        if let dir = environment["AGENT_RELAY_STATE_DIR"], !dir.isEmpty { return dir + "/connection.json" }
        return cwd + "/.agent-relay/connection.json"
    }

    public static func load(_ path: String) throws(GatewayFailure) -> AgentRelayConnection {
        let bytes: [UInt8]
        do { bytes = try Files.read(path, limit: 64 * 1024) } catch {
            throw GatewayFailure("no Agent Relay broker to hand the agent to: \(error.message); start one with 'agent-relay up' in that directory, or set AGENT_RELAY_STATE_DIR")
        }
        let value: JSONValue
        do { value = try StrictJSONReader.parse(bytes) } catch {
            throw GatewayFailure("\(path) is not valid JSON (\(error)); restart the Agent Relay broker so it rewrites it")
        }
        guard case .object(let o) = value, case .string(let u)? = o["url"], case .string(let key)? = o["api_key"], !key.isEmpty else {
            throw GatewayFailure("\(path) lacks the string fields 'url' and 'api_key'; restart the Agent Relay broker so it rewrites it")
        }
        // The broker is local by design. The file sits in a directory agents may write, so a URL elsewhere could
        // be a planted one that would receive the task: refused.
        guard let url = URL(string: u), url.scheme == "http", let host = url.host,
              ["127.0.0.1", "localhost", "::1", "[::1]"].contains(host) else {
            throw GatewayFailure("\(path) names the broker URL '\(u)', which is not http on this machine's loopback; spawngate hands agents only to a local broker")
        }
        return AgentRelayConnection(url: url, apiKey: key, file: path)
    }
}

/// The `spawner: agent-relay` backend: an approved request is forwarded to the local broker's `POST /api/spawn`,
/// which starts the agent itself (with its own PTY, channels and relay identity, and without spawngate's sandbox:
/// the policy loader accepts this backend only on rules that say `sandbox: none`).
public struct AgentRelayBackend: Sendable {
    public let connection: AgentRelayConnection
    public let timeout: Double

    public init(connection: AgentRelayConnection, timeout: Double = 10) {
        self.connection = connection
        self.timeout = timeout
    }

    /// What the broker answered to an accepted spawn.
    public struct Accepted: Sendable {
        public let status: Int
        public let body: String
    }

    /// The body Agent Relay's `listen_api_spawn` reads: the approved request's own fields, with the cwd the
    /// decision resolved.
    static func body(for spawn: AuthorizedSpawn) -> [UInt8] {
        let r = spawn.request.request
        var members: [(String, JSONWriter.Value)] = [("name", .string(r.name)), ("cli", .string(r.cli))]
        if let t = r.task { members.append(("task", .string(t))) }
        if let m = r.model { members.append(("model", .string(m))) }
        if let a = r.args { members.append(("args", .strings(a))) }
        if let c = r.channels { members.append(("channels", .strings(c))) }
        if let t = r.team { members.append(("team", .string(t))) }
        members.append(("cwd", .string(spawn.match.cwd)))
        return JSONWriter.object(members)
    }

    public func start(_ spawn: AuthorizedSpawn) throws(GatewayFailure) -> Accepted {
        let url = connection.url
        let port = UInt16(url.port ?? 80)
        let base = url.path.hasSuffix("/") ? String(url.path.dropLast()) : url.path
        let response: HTTPClient.Response
        do {
            let host = (url.host ?? "127.0.0.1").trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            response = try HTTPClient.exchange(.tcp(host: host, port: port), method: "POST", path: base + "/api/spawn",
                                           headers: [("Content-Type", "application/json"), ("X-API-Key", connection.apiKey)],
                                           body: Self.body(for: spawn), timeout: timeout)
        } catch {
            throw GatewayFailure("the Agent Relay broker at \(url.absoluteString) (from \(connection.file)) did not answer: \(error.message); is it running?")
        }
        let text = String(decoding: response.body.prefix(2048), as: UTF8.self)
        guard (200..<300).contains(response.status) else {
            let hint = response.status == 401 || response.status == 403 ? " (the api_key in \(connection.file) was refused; restart the broker so it rewrites the file)" : ""
            throw GatewayFailure("the Agent Relay broker refused the spawn with HTTP \(response.status)\(hint): \(text)")
        }
        return Accepted(status: response.status, body: text)
    }
}
