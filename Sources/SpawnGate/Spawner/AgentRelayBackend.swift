import CSpawn
import Foundation

/// Where the local Agent Relay broker listens and the key its HTTP API wants, from the `connection.json` it
/// writes (`{url, port, api_key, pid}`, and v14's `operation_mode`; other fields are Agent Relay's business).
public struct AgentRelayConnection: Sendable, Equatable {
    public let url: URL
    public let apiKey: String
    public let file: String
    /// The broker's process, when the file names it (both versions do).
    public let pid: Int32?
    /// Which layout it was found in: `v6` (`.agent-relay/`) or `v14` (`.agentworkforce/relay/`).
    public let layout: String

    /// Where each broker version writes itself down, relative to its project directory.
    public static let layouts: [(name: String, path: String)] = [("v6", ".agent-relay/connection.json"),
                                                                 ("v14", ".agentworkforce/relay/connection.json")]

    /// The broker for `cwd`, as Agent Relay's own clients find it: `$AGENT_RELAY_STATE_DIR/connection.json`, else
    /// the nearest project directory at or above `cwd` holding either version's connection file.
    public static func find(cwd: String, environment: [String: String]) throws(GatewayFailure) -> AgentRelayConnection {
        if let dir = environment["AGENT_RELAY_STATE_DIR"], !dir.isEmpty {
            return try load(dir + "/connection.json", layout: Files.exists(dir + "/relay") ? "v14" : "v6")
        }
        var dir = cwd
        while true {
            for l in layouts where Files.exists(dir + "/" + l.path) { return try load(dir + "/" + l.path, layout: l.name) }
            guard dir != "/", let slash = dir.lastIndex(of: "/") else { break }
            dir = slash == dir.startIndex ? "/" : String(dir[..<slash])
        }
        throw GatewayFailure("no Agent Relay broker found for \(cwd): neither .agent-relay/connection.json (v6) nor .agentworkforce/relay/connection.json (v14) exists there or above; start the broker ('agent-relay up', or 'agent-relay-broker init') in the project directory, or set AGENT_RELAY_STATE_DIR")
    }

    public static func load(_ path: String, layout: String = "v6") throws(GatewayFailure) -> AgentRelayConnection {
        // The file sits where agents may write: read as data, a regular file only, without blocking (a FIFO in its
        // place would hold the start, and the gateway's thread, for ever).
        let bytes: [UInt8]
        do throws(OperatorError) {
            guard let read = try Files.readRegular(path, limit: 64 * 1024) else { throw OperatorError("\(path) does not exist") }
            bytes = read
        } catch {
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
        // The file sits where agents may write: a planted one could point at a listener of the agent's own, which
        // would receive the task and the launch ticket. When it names the broker's pid, that process must be a
        // running agent-relay-broker of this user.
        var pid: Int32?
        if let n = o["pid"]?.safeInteger, n > 0, n < Int64(Int32.max) {
            pid = Int32(n)
            #if os(Linux)
            var st = stat()
            let exe = Files.readLink("/proc/\(n)/exe") ?? ""
            guard stat("/proc/\(n)", &st) == 0, st.st_uid == getuid(),
                  exe.split(separator: "/").last?.hasPrefix("agent-relay-broker") == true else {
                throw GatewayFailure("\(path) names pid \(n), which is not a running agent-relay-broker of this user (\(exe.isEmpty ? "no such process" : exe)); restart the Agent Relay broker so it rewrites the file")
            }
            // And the port must be that broker's: a planted file could name the real broker's pid beside a port
            // the agent listens on.
            let port = url.port ?? 80
            guard listens(pid: Int32(n), port: port) else {
                throw GatewayFailure("\(path) names pid \(n) (an agent-relay-broker) but port \(port), on which that process does not listen; restart the Agent Relay broker so it rewrites the file")
            }
            #endif
        }
        return AgentRelayConnection(url: url, apiKey: key, file: path, pid: pid, layout: layout)
    }
}

#if os(Linux)
/// Whether process `pid` holds a TCP socket listening on `port`: the inodes of listening sockets on that port
/// (/proc/net/tcp and tcp6, state 0A) against the socket links among /proc/PID/fd. Read as data, bounded.
func listens(pid: Int32, port: Int) -> Bool {
    var inodes = Set<String>()
    // The kernel's socket diagnostics list only listening sockets (well under a millisecond); /proc/net/tcp lists
    // every socket of the machine, which took several milliseconds of each relay worker's start.
    var found = [UInt](repeating: 0, count: 64)
    let n = found.withUnsafeMutableBufferPointer { cspawn_listening_inodes(Int32(port), $0.baseAddress, Int32($0.count)) }
    if n >= 0 { inodes = Set(found.prefix(Int(n)).map { String($0) }) }
    for table in n >= 0 ? [] : ["/proc/net/tcp", "/proc/net/tcp6"] {
        guard let bytes = try? Files.read(table, limit: 16 << 20) else { continue }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n").dropFirst() {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count > 9, f[3] == "0A", let colon = f[1].lastIndex(of: ":"),
                  Int(f[1][f[1].index(after: colon)...], radix: 16) == port else { continue }
            inodes.insert(String(f[9]))
        }
    }
    guard !inodes.isEmpty, let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { return false }
    return fds.prefix(65_536).contains { fd in
        guard let link = Files.readLink("/proc/\(pid)/fd/\(fd)"), link.hasPrefix("socket:["), link.hasSuffix("]") else { return false }
        return inodes.contains(String(link.dropFirst(8).dropLast()))
    }
}
#endif

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

    /// The body Agent Relay's `listen_api_spawn` reads. `cli` is the launcher's command line (the broker splits it
    /// shell-style and adds nothing to a path); the approved argv, model and arguments stay with the ticket, so
    /// neither the broker's permission-bypass flags nor its credential-bearing `--mcp-config` reach the agent.
    /// The broker types the task into the PTY and joins the channels itself.
    static func body(for spawn: AuthorizedSpawn, cli: String) -> [UInt8] {
        let r = spawn.request.request
        var members: [(String, JSONWriter.Value)] = [("name", .string(r.name)), ("cli", .string(cli))]
        if let t = r.task { members.append(("task", .string(t))) }
        if let c = r.channels { members.append(("channels", .strings(c))) }
        if let t = r.team { members.append(("team", .string(t))) }
        members.append(("cwd", .string(spawn.match.cwd)))
        return JSONWriter.object(members)
    }

    /// A command line the broker splits back into exactly `argv` (POSIX shell quoting).
    public static func commandLine(_ argv: [String]) -> String {
        argv.map { a in
            a.allSatisfy({ $0.isLetter || $0.isNumber || "-_./=:@%+,".contains($0) }) && !a.isEmpty ? a : "'" + a.replacingOccurrences(of: "'", with: "'\\''") + "'"
        }.joined(separator: " ")
    }

    public func start(_ spawn: AuthorizedSpawn, cli: String) throws(GatewayFailure) -> Accepted {
        try request("POST", "/api/spawn", body: Self.body(for: spawn, cli: cli))
    }

    /// Asks the broker to forget a worker (it answers 200 for unknown names too). The body is `{}`: v6 reads the
    /// body of every request sent as JSON and refuses an empty one with 400, which left the worker registered.
    @discardableResult
    public func remove(name: String) -> Result<Accepted, GatewayFailure> {
        let escaped = name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? name
        do { return .success(try request("DELETE", "/api/spawned/" + escaped, body: Array("{}".utf8))) } catch { return .failure(error) }
    }

    private func request(_ method: String, _ path: String, body: [UInt8]?) throws(GatewayFailure) -> Accepted {
        let url = connection.url
        let port = UInt16(url.port ?? 80)
        let base = url.path.hasSuffix("/") ? String(url.path.dropLast()) : url.path
        let response: HTTPClient.Response
        do {
            let host = (url.host ?? "127.0.0.1").trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            response = try HTTPClient.exchange(.tcp(host: host, port: port), method: method, path: base + path,
                                           headers: [("Content-Type", "application/json"), ("X-API-Key", connection.apiKey)],
                                           body: body ?? [], timeout: timeout)
        } catch {
            throw GatewayFailure("the Agent Relay broker at \(url.absoluteString) (from \(connection.file)) did not answer: \(error.message); is it running?")
        }
        let text = String(decoding: response.body.prefix(2048), as: UTF8.self)
        guard (200..<300).contains(response.status) else {
            let hint = response.status == 401 || response.status == 403 ? " (the api_key in \(connection.file) was refused; restart the broker so it rewrites the file)" : ""
            throw GatewayFailure("the Agent Relay broker refused \(method) \(path) with HTTP \(response.status)\(hint): \(text)")
        }
        return Accepted(status: response.status, body: text)
    }
}
