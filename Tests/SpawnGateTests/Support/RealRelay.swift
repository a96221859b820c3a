import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The real Agent Relay broker (v6.0.0 or v14.0.0, unpacked by `make relay` into `.build-relay/`), run offline in a
/// fresh project directory against `Tests/Interop/relaycast_standin.py`, a stand-in for the Relaycast cloud.
///
/// Nothing is written in the real home (HOME is a temp dir: v14 keeps its logs and node tokens there), telemetry is
/// off, and every Relaycast URL points at the stand-in on 127.0.0.1. Every process it starts carries a marker in its
/// environment, so `stop()` finds and kills all of them, including CLIs the broker started in their own PTY sessions.
// @unchecked: the urls, pids and `stopped` are set in init and by `stop()`, called from the test that owns it.
final class RealRelay: @unchecked Sendable {
    enum Version: String, CaseIterable, Sendable, CustomStringConvertible {
        case v6, v14

        var binary: String { "\(TestSupport.packageRoot)/.build-relay/\(rawValue)/agent-relay-broker" }
        /// Where the broker writes `{url, port, api_key, pid}`, relative to its working directory.
        var connectionFile: String { self == .v6 ? ".agent-relay/connection.json" : ".agentworkforce/relay/connection.json" }
        var isInstalled: Bool { access(binary, X_OK) == 0 }
        var description: String { rawValue }

        static var allInstalled: Bool { allCases.allSatisfy(\.isInstalled) }
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    static let interop = TestSupport.packageRoot + "/Tests/Interop"
    /// The probe CLI (`Tests/Interop/relay_probe_cli.sh`): records argv, environment names, cwd, TTY and input.
    static let probe = interop + "/relay_probe_cli.sh"

    let version: Version
    /// This run's private directory: `project/` (the broker's cwd), `home/`, `probe/` (the probe's records), logs.
    let root: String
    let project: String
    let home: String
    let probeDir: String
    let standinURL: String
    let standinLog: String
    /// The broker's API (from its connection file) and the key it wants in `X-API-Key`.
    private(set) var url = ""
    let apiKey: String
    /// `NAME=VALUE` in the environment of the broker and everything it starts.
    let marker: String

    private var standin: pid_t?
    private var broker: pid_t?
    private var stopped = false

    /// The URL the broker uses as its Relaycast: the stand-in's, or a relay guard's in front of it.
    private(set) var relaycastURL = ""

    /// `via`, given the stand-in's URL, starts whatever the broker should talk to instead (a relay guard) and
    /// answers its URL; the broker's RELAYCAST_BASE_URL, RELAY_BASE_URL and RELAYCAST_WS_URL then point there.
    init(_ version: Version, environment extra: [String: String] = [:], via: ((String) throws -> String)? = nil) throws {
        self.version = version
        root = TestSupport.tempDir("relay-\(version)")
        project = root + "/project"
        home = root + "/home"
        probeDir = root + "/probe"
        standinLog = root + "/standin.jsonl"
        for dir in [project, home, probeDir] { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        apiKey = "br_test_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        marker = "SPAWNGATE_REAL_RELAY_RUN=" + UUID().uuidString

        let s = try Self.start(["/usr/bin/env", "python3", Self.interop + "/relaycast_standin.py", "--log", standinLog],
                               environment: ProcessInfo.processInfo.environment, cwd: root, output: root + "/standin")
        standin = s
        let out = root + "/standin.out"
        do {
            standinURL = try Self.waitFor("the stand-in's first line", within: 20) {
                guard let text = try? String(contentsOfFile: out, encoding: .utf8),
                      let line = text.split(separator: "\n").first, line.hasPrefix("listening on ") else { return nil }
                return String(line.dropFirst("listening on ".count))
            }
        } catch {
            Self.kill(s, within: 5)
            throw error
        }

        let relaycast: String
        do { relaycast = try via?(standinURL) ?? standinURL } catch {
            Self.kill(s, within: 5)
            throw error
        }
        relaycastURL = relaycast
        var env: [String: String] = [
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin",
            "HOME": home,
            "AGENT_RELAY_TELEMETRY_DISABLED": "1",
            "DO_NOT_TRACK": "1",
            "DISABLE_AUTOUPDATER": "1",
            "RELAYCAST_BASE_URL": relaycast,
            "RELAY_BASE_URL": relaycast,
            "RELAYCAST_WS_URL": relaycast.replacingOccurrences(of: "http://", with: "ws://"),
            "RELAY_BROKER_API_KEY": apiKey,
            "PROBE_DIR": probeDir,
            "RUST_LOG": "info",
        ]
        if version == .v14 { env["AGENT_RELAY_MCP_COMMAND"] = "/usr/bin/env python3 \(Self.interop)/relay_mcp_stub.py" }
        let (markerName, markerValue) = Self.split(marker)
        env[markerName] = markerValue
        env.merge(extra) { $1 }

        do {
            let b = try Self.start([version.binary, "init", "--name", "vps-broker", "--api-port", "0", "--persist"],
                                   environment: env, cwd: project, output: root + "/broker")
            broker = b
            let connection = project + "/" + version.connectionFile
            url = try Self.waitFor("\(connection)", within: 30) {
                guard Self.isRunning(b) else { throw Failure("the \(version) broker exited; see \(self.root)/broker.out and broker.err") }
                guard let data = FileManager.default.contents(atPath: connection),
                      let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                      let url = obj["url"] as? String, obj["api_key"] as? String == self.apiKey else { return nil }
                return url
            }
            _ = try Self.waitFor("the broker's /health", within: 20) {
                (try? Self.http("GET", self.url + "/health", timeout: 2))?.status == 200 ? true : nil
            }
        } catch {
            stop()
            throw error
        }
    }

    deinit { stop() }

    /// Stops the stand-in (the upstream going away); ``startStandin()`` brings a new one back on the same port.
    func stopStandin() {
        if let s = standin { Self.kill(s, within: 5) }
        standin = nil
    }

    func startStandin() throws {
        let port = String(standinURL.split(separator: ":").last!)
        let out = root + "/standin2"
        try? FileManager.default.removeItem(atPath: out + ".out")
        let s = try Self.start(["/usr/bin/env", "python3", Self.interop + "/relaycast_standin.py", "--log", standinLog, "--port", port],
                               environment: ProcessInfo.processInfo.environment, cwd: root, output: out)
        standin = s
        _ = try Self.waitFor("the new stand-in's first line", within: 20) {
            (try? String(contentsOfFile: out + ".out", encoding: .utf8))?.contains("listening on ") == true ? true : nil
        }
    }

    /// The stand-in's workspace key (it keeps one workspace: any POST /v1/workspaces answers it).
    func workspaceKey() throws -> String {
        let ws = try Self.http("POST", standinURL + "/v1/workspaces", json: ["name": "tests"])
        guard let key = ((ws.json as? [String: Any])?["data"] as? [String: Any])?["api_key"] as? String else { throw Failure("no workspace key") }
        return key
    }

    /// Every direct message the stand-in carried, unredacted: (from, to, text).
    func directMessages() throws -> [(from: String, to: String, text: String)] {
        let list = try Self.http("GET", standinURL + "/_standin/dms").json as? [[String: Any]] ?? []
        return list.map { ($0["from"] as? String ?? "", $0["to"] as? String ?? "", $0["text"] as? String ?? "") }
    }

    /// Posts `text` to `to` as the agent `from`, through the stand-in's control API.
    func postMessage(from: String, to: String, text: String) throws {
        let r = try Self.http("POST", standinURL + "/_standin/message", json: ["from": from, "to": to, "text": text])
        guard r.status == 200 else { throw Failure("/_standin/message answered \(r.status): \(r.text)") }
    }

    /// Posts `text` to the channel `channel` as the agent `from`, through the stand-in's control API (as if that
    /// agent had called the channel message API).
    func postChannelMessage(from: String, channel: String, text: String) throws {
        let r = try Self.http("POST", standinURL + "/_standin/message", json: ["from": from, "channel": channel, "text": text])
        guard r.status == 200 else { throw Failure("/_standin/message answered \(r.status): \(r.text)") }
    }

    /// Stops the broker (its process group, then anything left that carries this run's marker, such as CLIs in their
    /// own PTY sessions) and the stand-in. Bounded: waits by polling, never longer than a few seconds per step.
    func stop() {
        guard !stopped else { return }
        stopped = true
        stopProcesses()
    }

    private func stopProcesses() {
        if let b = broker { Self.kill(b, within: 5) }
        for pid in processes() { Glibc.kill(pid, SIGKILL) }
        _ = try? Self.waitFor("every process of this run to exit", within: 5) { self.processes().isEmpty ? true : nil }
        if let s = standin { Self.kill(s, within: 5) }
    }

    /// Starts a process as the leader of a new process group, with every signal unblocked and at its default action.
    /// (A child of the test runner would otherwise inherit its blocked signals: a broker started with Foundation's
    /// Process never sees SIGTERM.) Standard output and error go to `output`.out and `output`.err.
    static func start(_ argv: [String], environment: [String: String], cwd: String, output: String) throws -> pid_t {
        // The shell only changes directory and execs (Swift's Glibc module has no posix_spawn_file_actions_addchdir_np).
        let argv = ["/bin/sh", "-c", "cd -- \"$0\" && exec \"$@\"", cwd] + argv
        var cargs = argv.map { strdup($0) } + [nil]
        var cenv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for a in cargs + cenv { free(a) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output + ".out", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, output + ".err", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setpgroup(&attr, 0)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, &attr, &cargs, &cenv)
        guard rc == 0 else { throw Failure("cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
        return pid
    }

    /// Whether our child `pid` still runs (reaps it once it has exited).
    static func isRunning(_ pid: pid_t) -> Bool {
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == 0
    }

    /// SIGTERM to the child's process group, SIGKILL if it is not gone within `seconds`; reaps it.
    static func kill(_ pid: pid_t, within seconds: Double) {
        guard isRunning(pid) else { return }
        Glibc.kill(-pid, SIGTERM)
        if (try? waitFor("pid \(pid) to exit", within: seconds, { isRunning(pid) ? nil : true })) == nil {
            Glibc.kill(-pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
    }

    /// Live processes (not zombies) whose environment carries this run's marker.
    func processes() -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        let needle = Array(marker.utf8)
        return entries.compactMap { pid_t($0) }.filter { pid in
            guard pid != getpid(), let env = FileManager.default.contents(atPath: "/proc/\(pid)/environ"),
                  let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")"), stat[stat.index(close, offsetBy: 2)] != "Z" else { return false }
            return env.split(separator: 0).contains { Array($0) == needle }
        }
    }

    /// TCP and UDP sockets held by this run's processes whose peer is not on loopback ("addr:port" lines). A snapshot:
    /// call it after the broker has done its work.
    func nonLoopbackSockets() -> [String] {
        var inodes = Set<String>()
        for pid in processes() {
            let fdDir = "/proc/\(pid)/fd"
            for fd in (try? FileManager.default.contentsOfDirectory(atPath: fdDir)) ?? [] {
                if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(fdDir)/\(fd)"),
                   target.hasPrefix("socket:[") { inodes.insert(String(target.dropFirst(8).dropLast())) }
            }
        }
        var found: [String] = []
        for table in ["tcp", "tcp6", "udp", "udp6"] {
            guard let text = try? String(contentsOfFile: "/proc/net/\(table)", encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let f = line.split(separator: " ")
                guard f.count > 9, inodes.contains(String(f[9])) else { continue }
                let remote = f[2].split(separator: ":")[0]
                let loopbackOrUnset = ["00000000", "0100007F", "00000000000000000000000000000000",
                                       "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"]
                if !loopbackOrUnset.contains(String(remote)) { found.append("\(table) \(f[2])") }
            }
        }
        return found
    }

    // MARK: the broker's API

    @discardableResult
    func spawn(name: String, cli: String, task: String, cwd: String?) throws -> HTTPResponse {
        var body: [String: Any] = ["name": name, "cli": cli, "task": task]
        if let cwd { body["cwd"] = cwd }
        // A broker that has written its connection file can still answer 503 "Broker is starting, please retry"
        // for a moment (seen under load): retried, as the message asks, for up to 20 s.
        var answer = try Self.http("POST", url + "/api/spawn", json: body, headers: ["X-API-Key": apiKey], timeout: 60)
        for _ in 0..<40 where answer.status == 503 && answer.text.contains("starting") {
            usleep(500_000)
            answer = try Self.http("POST", url + "/api/spawn", json: body, headers: ["X-API-Key": apiKey], timeout: 60)
        }
        return answer
    }

    @discardableResult
    func release(_ name: String) throws -> HTTPResponse {
        try Self.http("DELETE", url + "/api/spawned/\(name)", headers: ["X-API-Key": apiKey])
    }

    // MARK: the stand-in

    /// Sends one frame to every connected broker socket, or to those of one kind (`ws`, `node`, `terminal`); answers
    /// the ids of the sockets it reached.
    func push(_ frame: [String: Any], kind: String? = nil) throws -> [Int] {
        let r = try Self.http("POST", standinURL + "/_standin/push" + (kind.map { "?kind=\($0)" } ?? ""), json: frame)
        return (r.json as? [String: Any])?["sent_to"] as? [Int] ?? []
    }

    /// Posts a direct message to `to` through Relaycast's message API as the agent `from` (registered with the
    /// workspace key first), exactly as an agent's MCP server would.
    func sendDM(from: String, to: String, text: String) throws {
        let ws = try Self.http("POST", standinURL + "/v1/workspaces", json: ["name": "tests"])
        guard let key = ((ws.json as? [String: Any])?["data"] as? [String: Any])?["api_key"] as? String else { throw Failure("no workspace key") }
        let agent = try Self.http("POST", standinURL + "/v1/agents", json: ["name": from, "type": "agent"], headers: ["Authorization": "Bearer \(key)"])
        guard let token = ((agent.json as? [String: Any])?["data"] as? [String: Any])?["token"] as? String else { throw Failure("no agent token") }
        let sent = try Self.http("POST", standinURL + "/v1/dm", json: ["to": to, "text": text], headers: ["Authorization": "Bearer \(token)"])
        guard sent.status == 201 else { throw Failure("POST /v1/dm answered \(sent.status): \(sent.text)") }
    }

    /// Every request and socket frame the stand-in has seen.
    func standinRecords() throws -> [[String: Any]] {
        try Self.http("GET", standinURL + "/_standin/log").json as? [[String: Any]] ?? []
    }

    /// The stand-in's record of calls, as "METHOD /path" (WebSocket upgrades as "WS /path"), in order, deduplicated.
    func relaycastCalls() throws -> [String] {
        var seen: [String] = []
        for r in try standinRecords() where r["kind"] as? String == "http" {
            let call = (r["upgrade"] as? Bool == true ? "WS" : r["method"] as? String ?? "?") + " " + (r["path"] as? String ?? "?")
            if !seen.contains(call) { seen.append(call) }
        }
        return seen
    }

    // MARK: the probe's records

    struct ProbeRecord {
        let dir: String
        func text(_ file: String) -> String? { try? String(contentsOfFile: dir + "/" + file, encoding: .utf8) }
        func lines(_ file: String) -> [String]? {
            text(file).map { t in t.isEmpty ? [] : t.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init) }
        }
        var argv: [String]? { lines("argv") }
        var env: [String]? { lines("env") }
        var cwd: String? { lines("cwd")?.first }
        var tty: String? { lines("tty")?.first }
        var input: String { text("input") ?? "" }
        var pid: pid_t? { lines("pid")?.first.flatMap { pid_t($0) } }
        /// EPOCHREALTIME stamps: when the prompt was shown, and when the last line was typed.
        var readyAt: Double? { lines("ready")?.first.flatMap(Double.init) }
        var lastTypedAt: Double? { lines("typed")?.last?.split(separator: " ").first.flatMap { Double($0) } }
    }

    /// What the probe started as agent `name` recorded (with PROBE_DIR passed through; else under `<cwd>/.probe/`).
    func probe(_ name: String, cwd: String? = nil) -> ProbeRecord {
        ProbeRecord(dir: cwd.map { "\($0)/.probe/\(name)" } ?? "\(probeDir)/\(name)")
    }

    // MARK: helpers

    /// Polls `body` until it returns a value, for at most `seconds`; never sleeps for a fixed time to synchronise.
    static func waitFor<T>(_ what: String, within seconds: Double, _ body: () throws -> T?) throws -> T {
        let deadline = Date().addingTimeInterval(seconds)
        repeat {
            if let value = try body() { return value }
            usleep(50_000)
        } while Date() < deadline
        if let value = try body() { return value }
        throw Failure("timed out after \(seconds) s waiting for \(what)")
    }

    struct HTTPResponse {
        let status: Int
        let body: Data
        var text: String { String(decoding: body, as: UTF8.self) }
        var json: Any? { try? JSONSerialization.jsonObject(with: body) }
    }

    /// A minimal HTTP/1.1 client for loopback only (so no proxy setting or outside host can ever be involved).
    static func http(_ method: String, _ url: String, json: Any? = nil, headers: [String: String] = [:], timeout: Double = 30) throws -> HTTPResponse {
        guard let u = URL(string: url), u.scheme == "http", u.host == "127.0.0.1", let port = u.port else {
            throw Failure("not a loopback http URL: \(url)")
        }
        let body = try json.map { try JSONSerialization.data(withJSONObject: $0) } ?? Data()
        var path = u.path.isEmpty ? "/" : u.path
        if let q = u.query { path += "?" + q }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\nContent-Length: \(body.count)\r\n"
        if json != nil { head += "Content-Type: application/json\r\n" }
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        let request = Array((head + "\r\n").utf8) + Array(body)

        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure("socket: \(errno)") }
        defer { close(fd) }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw Failure("connect to \(url): errno \(errno)") }
        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure("send to \(url): errno \(errno)") }
            sent += n
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n == 0 { break }
            guard n > 0 else { throw Failure("no answer from \(method) \(url) within \(timeout) s (errno \(errno))") }
            response += buffer[0..<n]
        }
        guard let split = response.firstRange(of: Array("\r\n\r\n".utf8)) else { throw Failure("malformed answer from \(url)") }
        let headText = String(decoding: response[..<split.lowerBound], as: UTF8.self)
        let statusLine = headText.split(separator: "\r\n").first ?? ""
        let status = statusLine.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        var payload = Array(response[split.upperBound...])
        if headText.lowercased().contains("transfer-encoding: chunked") { payload = dechunk(payload) }
        return HTTPResponse(status: status, body: Data(payload))
    }

    private static func dechunk(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while let lineEnd = bytes[i...].firstRange(of: Array("\r\n".utf8)) {
            let size = Int(String(decoding: bytes[i..<lineEnd.lowerBound], as: UTF8.self).split(separator: ";")[0], radix: 16) ?? 0
            if size == 0 { break }
            let start = lineEnd.upperBound
            guard start + size <= bytes.count else { break }
            out += bytes[start..<(start + size)]
            i = start + size + 2
            if i >= bytes.count { break }
        }
        return out
    }

    private static func split(_ assignment: String) -> (String, String) {
        let parts = assignment.split(separator: "=", maxSplits: 1)
        return (String(parts[0]), String(parts[1]))
    }
}
