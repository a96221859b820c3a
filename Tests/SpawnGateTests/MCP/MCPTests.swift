import Foundation
import Testing
@testable import SpawnGate
#if canImport(Glibc)
import Glibc
#endif

/// A release line of the reference MCP client (PyPI `mcp`): `make py` (scripts/install-py.sh) pins one of each in its
/// own venv, and the tests that exercise the protocol run once per line.
enum MCPClientLine: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case v1, v2
    /// The venv's interpreter: mcp 1.x in .build-py/venv, mcp 2.x in .build-py/venv2.
    var python: String { TestSupport.packageRoot + (self == .v1 ? "/.build-py/venv/bin/python" : "/.build-py/venv2/bin/python") }
    /// The major version the client must report (`mcp_client.py` prints `importlib.metadata.version("mcp")`).
    var major: Int { self == .v1 ? 1 : 2 }
    var testDescription: String { "mcp \(major).x client" }
}

/// The reference MCP client (`Tests/Interop/mcp_client.py` on PyPI `mcp`, in a venv `make py` makes) driving
/// `spawngate mcp` over stdio.
enum MCPClient {
    static let script = TestSupport.packageRoot + "/Tests/Interop/mcp_client.py"

    /// Runs `steps` in one session of `spawngate mcp --home HOME EXTRA…` with the client of `line`; returns the
    /// per-step results. Bounded: the whole session is killed after 90 s.
    static func run(home: String, line: MCPClientLine = .v1, _ steps: [[String: Any]], extra: [String] = []) throws -> [Any] {
        try session(home: home, line: line, steps, extra: extra).results
    }

    /// `run`, also returning the connection the client reports first: `server`, the negotiated `protocol`, the
    /// `client` package version (checked here against `line`) and the `handshake` (`initialize` or `discover`).
    /// `auto` connects as 2.x's `mcp.Client` in mode='auto' rather than `ClientSession`; `wrap` goes before the
    /// server's argv (e.g. a shell that records its input).
    static func session(home: String, line: MCPClientLine = .v1, _ steps: [[String: Any]], extra: [String] = [],
                        auto: Bool = false, wrap: [String] = []) throws -> (connection: [String: Any], results: [Any]) {
        try #require(FileManager.default.isExecutableFile(atPath: line.python),
                     "no \(line) venv at \(line.python): run 'make py' (scripts/install-py.sh)")
        let input = try JSONSerialization.data(withJSONObject: steps)
        let argv = ["90", line.python, script] + (auto ? ["--auto"] : []) + wrap + [TestSupport.binary, "mcp", "--home", home] + extra
        let out = try TestSupport.run("/usr/bin/timeout", argv, stdin: [UInt8](input))
        #expect(out.status == 0, "\(line): client exited \(out.status): \(out.stderr)")
        let all = try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [Any],
                               "\(line): stdout: \(out.stdout) stderr: \(out.stderr)")
        let connection = try #require(all.first as? [String: Any], "\(line): no connection in \(out.stdout)")
        #expect(connection["server"] as? String == "spawngate", "\(line): \(connection)")
        let version = connection["client"] as? String ?? "?"
        #expect(version.hasPrefix("\(line.major)."), "\(line) ran mcp \(version), from \(line.python)")
        return (connection, Array(all.dropFirst()))
    }

    static func call(_ tool: String, _ args: [String: Any] = [:]) -> [String: Any] { ["op": "call", "tool": tool, "args": args] }
}

/// A call's result as the client saw it.
struct ToolResult {
    let raw: [String: Any]
    init(_ any: Any) throws { raw = try #require(any as? [String: Any], "not a call result: \(any)") }
    var isError: Bool { raw["is_error"] as? Bool ?? false }
    var text: String { raw["text"] as? String ?? "protocol error: \(raw["protocol_error"] ?? "?")" }
    var structured: [String: Any] { raw["structured"] as? [String: Any] ?? [:] }
    var elapsed: Double { raw["elapsed"] as? Double ?? 0 }
    var finishedAt: Double { raw["finished_at"] as? Double ?? 0 }
}

/// A TCP listener that takes connections (the kernel completes them) and never answers: a target that hangs.
final class SilentListener {
    let fd: Int32
    let port: UInt16
    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        try #require(bound == 0 && listen(fd, 64) == 0)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        port = UInt16(bigEndian: addr.sin_port)
    }
    deinit { close(fd) }
}

@Suite("MCP server (spawngate mcp) driven by the reference client")
struct MCPTests {
    typealias Remote = ServeTests.Remote

    /// The handshake and `tools/list`. Both lines offer 2025-11-25 in `initialize`, which swift-sdk 0.12.1 accepts.
    @Test(arguments: MCPClientLine.allCases)
    func listsTheToolsWithTheirSchemas(line: MCPClientLine) throws {
        let r = try Remote()
        defer { r.serve.kill() }
        let (connection, out) = try MCPClient.session(home: r.laptopHome, line: line, [["op": "list_tools"]])
        #expect(connection["protocol"] as? String == "2025-11-25" && connection["handshake"] as? String == "initialize", "\(line): \(connection)")
        let tools = try #require((out.first as? [String: Any])?["tools"] as? [[String: Any]])
        #expect(tools.map { $0["name"] as? String } == ["agent.add", "agent.list", "agent.remove", "broker.list", "agent.handoff"])
        let add = try #require(tools.first)
        let schema = try #require(add["inputSchema"] as? [String: Any])
        #expect(schema["required"] as? [String] == ["name", "cli"])
        #expect(schema["additionalProperties"] as? Bool == false)
        let properties = try #require(schema["properties"] as? [String: Any])
        #expect(Set(properties.keys) == ["name", "cli", "task", "broker", "cwd", "model", "args", "channels"])
        #expect((properties["args"] as? [String: Any])?["type"] as? String == "array")
        let description = try #require(add["description"] as? String)
        #expect(description.contains("reason code") && description.contains("do not retry"), "\(description)")
        let handoff = try #require(tools.last?["inputSchema"] as? [String: Any])
        #expect(handoff["required"] as? [String] == ["name", "broker"])
    }

    /// An argument is signed exactly as the agent wrote it, even when it looks like a data: URL. swift-sdk 0.12.1
    /// decodes such a JSON string as binary data (its issue #277), and turning that back into text changes its
    /// spelling ("data:,a%20b" comes back as "data:;base64,YSBi"): the gateway would sign and start a task the agent
    /// never wrote. Tasks are free text, so "data: migrate users, then orders" is no contrived example.
    @Test(arguments: MCPClientLine.allCases)
    func argumentsThatLookLikeDataURLsAreSignedAsWritten(line: MCPClientLine) throws {
        let r = try Remote()
        defer { r.serve.kill() }
        let tasks = ["data: migrate users, then orders", "data:,a%20b"]  // the fixture's rule allows two at once
        let out = try MCPClient.run(home: r.laptopHome, line: line, tasks.enumerated().map { i, task in
            MCPClient.call("agent.add", ["name": "coder\(i)", "cli": "claude", "task": task, "broker": "vps-broker", "cwd": r.g.app])
        })
        for (i, task) in tasks.enumerated() {
            let added = try ToolResult(out[i])
            #expect(!added.isError, "\(task): \(added.text) \(r.serve.stderr)")
        }
        let started = try r.g.auditLines().compactMap { $0["argv"] as? [String] }.compactMap(\.last)
        #expect(started == tasks, "the tasks as signed and started: \(started)")
    }

    /// The whole story through a real gateway: add on vps-broker by `broker`, list it, remove it.
    @Test(arguments: MCPClientLine.allCases)
    func addListAndRemoveOnAnotherGateway(line: MCPClientLine) throws {
        let r = try Remote()
        defer { r.serve.kill() }
        let out = try MCPClient.run(home: r.laptopHome, line: line, [
            MCPClient.call("agent.add", ["name": "coder", "cli": "claude", "task": "Implement the plan", "broker": "vps-broker", "cwd": r.g.app]),
            MCPClient.call("agent.list", ["broker": "vps-broker"]),
        ])
        let added = try ToolResult(out[0])
        #expect(!added.isError, "\(added.text) \(r.serve.stderr)")
        #expect(added.text.hasPrefix("started coder on vps-broker: pid ") && added.text.contains("receipt verified"), "\(added.text)")
        let facts = added.structured
        #expect(facts["decision"] as? String == "allow" && facts["reason"] as? String == "allowed" && facts["sandbox"] as? String == "standard")
        #expect(facts["broker"] as? String == "vps-broker" && (facts["layers"] as? [String])?.isEmpty == false && facts["request_id"] is String)
        let pid = try #require(facts["pid"] as? Int)
        let identity = try #require(ProcessIdentity.of(pid: Int32(pid)), "the agent runs")

        let listed = try ToolResult(out[1])
        #expect(!listed.isError && listed.text.contains("coder: claude in \(r.g.app), pid \(pid)"), "\(listed.text)")
        let agents = try #require(listed.structured["agents"] as? [[String: Any]])
        #expect(agents.count == 1 && agents.first?["pid"] as? Int == pid && agents.first?["state"] as? String == "running")

        let later = try MCPClient.run(home: r.laptopHome, line: line, [
            MCPClient.call("agent.remove", ["name": "coder", "broker": "vps-broker"]),
            MCPClient.call("agent.list", ["broker": "vps-broker"]),
        ])
        let removed = try ToolResult(later[0])
        #expect(!removed.isError && removed.text == "released coder on vps-broker (pid \(pid))", "\(removed.text)")
        #expect(!identity.isAlive, "the agent was stopped")
        let after = try ToolResult(later[1])
        #expect((after.structured["agents"] as? [[String: Any]])?.first?["state"] as? String == "exited", "\(after.raw)")

        // Through the same pipeline: audited on the target like a `spawn`.
        #expect(try r.g.auditLines().contains { ($0["detail"] as? String)?.hasPrefix("allowed by rule 'laptop-app'") == true })
    }

    @Test(arguments: MCPClientLine.allCases)
    func denialIsAToolErrorStartingWithTheReasonCode(line: MCPClientLine) throws {
        let r = try Remote()
        defer { r.serve.kill() }
        let out = try MCPClient.run(home: r.laptopHome, line: line, [
            MCPClient.call("agent.add", ["name": "coder", "cli": "claude", "broker": "vps-broker", "cwd": "/etc"]),
            MCPClient.call("agent.remove", ["name": "nobody", "broker": "vps-broker"]),
        ])
        let denied = try ToolResult(out[0])
        #expect(denied.isError)
        #expect(denied.text.hasPrefix("cwd_not_allowed: "), "\(denied.text)")
        #expect(denied.text.contains("do not retry"), "\(denied.text)")
        #expect(denied.structured["decision"] as? String == "deny" && denied.structured["reason"] as? String == "cwd_not_allowed")
        #expect(denied.structured["pid"] == nil)
        let none = try ToolResult(out[1])
        #expect(none.isError && none.text.hasPrefix("not_running: "), "\(none.text)")
    }

    /// Three calls to a target that never answers hold no thread of the message loop: a fourth, to a gateway that
    /// answers, comes back first, and each hanging call ends as a tool error within its timeout.
    @Test func silentTargetTimesOutWhileAnotherCallIsAnswered() throws {
        let r = try Remote()
        defer { r.serve.kill() }
        let silent = try SilentListener()
        let (other, _) = try TestSupport.makeHome("silent", in: r.g.dir)
        let added = try r.laptop(try TestSupport.peerAdd("silent", home: other, url: "http://127.0.0.1:\(silent.port)"))
        #expect(added.status == 0, "\(added.stderr)")
        let hang = MCPClient.call("agent.list", ["broker": "silent"])
        let out = try MCPClient.run(home: r.laptopHome, [
            ["op": "concurrent", "calls": [hang, hang, hang, MCPClient.call("agent.list", ["broker": "vps-broker"])]],
            MCPClient.call("broker.list"),
        ], extra: ["--timeout", "2"])
        let results = try #require(out[0] as? [Any]).map(ToolResult.init)
        let answered = results[3]
        #expect(!answered.isError, "\(answered.text)")
        for h in results.prefix(3) {
            #expect(h.isError && h.text.hasPrefix("no verified answer from silent"), "\(h.text)")
            // Timed by the client across a real `spawngate mcp` process, so the upper bound is generous: without
            // the timeout the call would hang until the session is killed at 90 s.
            #expect(h.elapsed >= 1.5 && h.elapsed < 30, "bounded by the timeout: \(h.elapsed)")
            #expect(answered.finishedAt < h.finishedAt, "the answering gateway's call was not held up: \(answered.finishedAt) vs \(h.finishedAt)")
        }
        let brokers = try ToolResult(out[1])
        let rows = try #require(brokers.structured["brokers"] as? [[String: Any]])
        #expect(rows.first { $0["name"] as? String == "vps-broker" }?["answers"] as? Bool == true, "\(brokers.text)")
        #expect(rows.first { $0["name"] as? String == "silent" }?["answers"] as? Bool == false, "\(brokers.text)")
    }

    /// Arguments the tool's schema refuses go through both clients untouched and come back as tool errors.
    @Test(arguments: MCPClientLine.allCases)
    func badArgumentsAreToolErrors(line: MCPClientLine) throws {
        let r = try Remote()
        defer { r.serve.kill() }
        let cases: [([String: Any], String, String)] = [
            (MCPClient.call("agent.add", ["cli": "claude", "broker": "vps-broker"]), "invalid arguments: agent.add needs 'name'", "missing name"),
            (MCPClient.call("agent.add", ["name": 3, "cli": "claude"]), "invalid arguments: 'name' must be a string, not a number", "wrong type"),
            (MCPClient.call("agent.add", ["name": "", "cli": "claude"]), "invalid arguments: 'name' must not be empty", "empty"),
            (MCPClient.call("agent.add", ["name": "a", "cli": "claude", "sandbox": "none"]), "invalid arguments: agent.add takes no argument 'sandbox'", "unknown field"),
            (MCPClient.call("agent.add", ["name": "a", "cli": "claude", "args": "--yolo"]), "invalid arguments: 'args' must be an array of strings, not a string", "args not a list"),
            (MCPClient.call("agent.add", ["name": "a", "cli": "claude", "args": ["ok", ["x"]]]), "invalid arguments: 'args'[1] must be a string, not an array", "args element"),
            (MCPClient.call("agent.remove", ["broker": "vps-broker"]), "invalid arguments: agent.remove needs 'name'", "remove without name"),
            (MCPClient.call("agent.handoff", ["name": "coder"]), "invalid arguments: agent.handoff needs 'broker'", "handoff without broker"),
            (MCPClient.call("broker.list", ["verbose": true]), "invalid arguments: broker.list takes no argument 'verbose'", "broker.list takes none"),
            (MCPClient.call("agent.spawn", ["name": "a"]), "invalid arguments: there is no tool 'agent.spawn'", "unknown tool"),
            (MCPClient.call("agent.add", ["name": "a", "cli": "claude", "broker": "nowhere"]), "cannot send: no peer named 'nowhere'", "unknown broker"),
        ]
        let out = try MCPClient.run(home: r.laptopHome, line: line, cases.map(\.0) + [["op": "list_tools"]])
        for (i, c) in cases.enumerated() {
            let result = try ToolResult(out[i])
            #expect(result.isError && result.text.hasPrefix(c.1), "\(c.2): \(result.text)")
        }
        #expect((out.last as? [String: Any])?["tools"] != nil, "the server still answers")
        #expect(try r.g.auditLines().isEmpty, "nothing reached the target")
    }

    /// What a 2.x host does by default (`mcp.Client`, mode='auto'), recorded on the wire: it first probes
    /// `server/discover` at protocol 2026-07-28, which swift-sdk 0.12.1 does not know and answers with -32601 (method
    /// not found); the client takes that as a handshake-era server and, on the same connection, makes the
    /// `initialize` handshake at 2025-11-25, which the server accepts. A server that answered the probe otherwise,
    /// or dropped the connection on it, would show here.
    @Test func v2DefaultClientProbesDiscoverThenFallsBackToTheHandshake() throws {
        let home = TestSupport.tempDir("mcp-auto")
        defer { try? FileManager.default.removeItem(atPath: home) }
        #expect(try TestSupport.spawngate(["init", "--home", home, "--name", "mac-laptop"]).status == 0)
        let wire = home + "/wire"
        // The server behind a shell that copies what goes in (wire.in) and what comes out (wire.out).
        let (connection, out) = try MCPClient.session(home: home, line: .v2, [["op": "list_tools"], MCPClient.call("broker.list")],
                                                      auto: true, wrap: ["/bin/sh", "-c", #"tee "$0.in" | "$@" | tee "$0.out""#, wire])
        #expect(connection["handshake"] as? String == "initialize" && connection["protocol"] as? String == "2025-11-25", "\(connection)")
        #expect(((out.first as? [String: Any])?["tools"] as? [Any])?.count == 5, "\(out)")
        let listed = try ToolResult(out[1])
        #expect(!listed.isError && listed.structured["self"] as? String == "mac-laptop", "\(listed.text)")

        func messages(_ path: String) throws -> [[String: Any]] {
            try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
                .map { try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any], "\($0)") }
        }
        let sent = try messages(wire + ".in"), answered = try messages(wire + ".out")
        try #require(sent.count >= 2 && answered.count >= 2, "in: \(sent) out: \(answered)")
        let probe = sent[0], handshake = sent[1]
        let meta = (probe["params"] as? [String: Any])?["_meta"] as? [String: Any]
        #expect(probe["method"] as? String == "server/discover" && meta?["io.modelcontextprotocol/protocolVersion"] as? String == "2026-07-28", "\(probe)")
        let refusal = answered.first { ($0["id"] as? Int) == (probe["id"] as? Int) }
        #expect((refusal?["error"] as? [String: Any])?["code"] as? Int == -32601, "\(String(describing: refusal))")
        #expect(handshake["method"] as? String == "initialize", "\(handshake)")
        #expect((handshake["params"] as? [String: Any])?["protocolVersion"] as? String == "2025-11-25", "\(handshake)")
    }

    /// No broker: through this machine's own gateway, which must be a peer under this broker's own name.
    @Test func noBrokerMeansThisMachinesOwnGateway() throws {
        let r = try Remote()
        defer { r.serve.kill() }
        let missing = try ToolResult(try MCPClient.run(home: r.g.vps.root, [MCPClient.call("agent.list")])[0])
        #expect(missing.isError && missing.text.contains("spawngate peer add vps-broker --url http://127.0.0.1:7717"), "\(missing.text)")

        // The VPS's own gateway as its own peer (and its key enrolled there, so it can sign to itself).
        let vps = try r.g.vps.loadIdentity()
        try r.g.vps.keyStore.enroll(name: "vps-broker", key: vps.key.publicKey, expected: vps.key.publicKey.fingerprint)
        let added = try r.g.cli(try TestSupport.peerAdd("vps-broker", home: r.g.vps, url: r.serve.url))
        #expect(added.status == 0, "\(added.stderr)")
        let out = try MCPClient.run(home: r.g.vps.root, [MCPClient.call("agent.list"), MCPClient.call("agent.list", ["broker": "vps-broker"])])
        for any in out {
            let here = try ToolResult(any)
            #expect(!here.isError && here.structured["broker"] as? String == "vps-broker", "\(here.text)")
        }
    }
}

/// `spawngate mcp`'s own stdio reader (`LineTransport`, which replaced the SDK's polling one): messages are split
/// at newlines however they arrive, and a line without end cannot grow the server's memory without bound.
@Suite("MCP over stdio: the line reader")
struct MCPLineReaderTests {
    /// Runs `spawngate mcp` with `input` on its standard input, from a file (so the server stopping early cannot
    /// break a pipe in the test process); its error output and status.
    static func session(_ input: [UInt8]) throws -> (status: Int32, stderr: String) {
        let home = TestSupport.tempDir("mcp-lines")
        defer { try? FileManager.default.removeItem(atPath: home) }
        #expect(try TestSupport.spawngate(["init", "--home", home, "--name", "mac-laptop"]).status == 0)
        try Data(input).write(to: URL(fileURLWithPath: home + "/input"))
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        server.arguments = ["30", TestSupport.binary, "mcp", "--home", home]
        server.standardInput = FileHandle(forReadingAtPath: home + "/input")
        server.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        let errors = Pipe()
        server.standardError = errors
        try server.run()
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        server.waitUntilExit()
        return (server.terminationStatus, text)
    }

    @Test func messagesInOneWriteAreEachAnswered() throws {
        let home = TestSupport.tempDir("mcp-lines")
        defer { try? FileManager.default.removeItem(atPath: home) }
        #expect(try TestSupport.spawngate(["init", "--home", home, "--name", "mac-laptop"]).status == 0)
        // rawSession writes the handshake and the request in one write.
        let answers = try Self.rawSession(home: home, [#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#], answers: 2)
        let text = "\(answers)"
        #expect(answers.count == 2, "\(text)")
        #expect(answers.contains { $0["id"] as? Int == 1 && $0["result"] != nil })
        let tools = answers.first { $0["id"] as? Int == 2 }.flatMap { ($0["result"] as? [String: Any])?["tools"] as? [[String: Any]] } ?? []
        #expect(tools.contains { $0["name"] as? String == "agent.add" }, "\(text)")
    }

    /// The seam behind the exact arguments: a tool call the strict reader refuses (here a duplicate "id", which the
    /// SDK lets through) reaches the tool as the SDK decoded it, and an argument it made binary is refused in a
    /// sentence, never re-encoded and signed.
    @Test func aToolCallTheStrictReaderRefusesNeverSignsAChangedText() throws {
        let home = TestSupport.tempDir("mcp-exact")
        defer { try? FileManager.default.removeItem(atPath: home) }
        #expect(try TestSupport.spawngate(["init", "--home", home, "--name", "mac-laptop"]).status == 0)
        func call(_ id: Int, _ arguments: String, duplicateID: Bool) -> String {
            #"{"jsonrpc":"2.0","id":\#(id),"method":"tools/call","params":{"name":"agent.add","arguments":\#(arguments)}"#
                + (duplicateID ? #","id":\#(id)}"# : "}")
        }
        let answers = try Self.rawSession(home: home, [
            call(2, #"{"name":"c","cli":"claude","task":"data:,a%20b","broker":"vps-broker"}"#, duplicateID: true),
            call(3, #"{"name":"c","cli":"claude","task":"data:,a%20b","broker":"nowhere"}"#, duplicateID: false),
        ], answers: 3)
        func text(_ id: Int) -> String {
            let result = answers.first { $0["id"] as? Int == id }?["result"] as? [String: Any]
            return ((result?["content"] as? [[String: Any]])?.first?["text"] as? String) ?? "no answer to \(id): \(answers)"
        }
        // A line the strict reader refuses (a duplicate member) goes the SDK's way: its binary reading is refused.
        #expect(text(2).contains("'task' looks like a data: URL") && text(2).contains("exact text is lost"), "\(text(2))")
        // The same arguments in a well-formed line are read as written and go on to the broker lookup.
        #expect(text(3).contains("no peer named 'nowhere'") && !text(3).contains("data: URL"), "\(text(3))")
    }

    /// `spawngate mcp` on `home` given the initialize handshake and `lines`, each its own message, all in one write;
    /// the first `answers` JSON-RPC answers (the handshake's included), bounded by 20 s.
    static func rawSession(home: String, _ lines: [String], answers count: Int) throws -> [[String: Any]] {
        let server = Process()
        server.executableURL = URL(fileURLWithPath: TestSupport.binary)
        server.arguments = ["mcp", "--home", home]
        let input = Pipe(), output = Pipe()
        server.standardInput = input
        server.standardOutput = output
        server.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try server.run()
        defer { if server.isRunning { server.terminate() }; server.waitUntilExit() }
        let initialize = #"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#
        let all = [initialize, #"{"jsonrpc":"2.0","method":"notifications/initialized"}"#] + lines
        input.fileHandleForWriting.write(Data((all.joined(separator: "\n") + "\n").utf8))
        var text = ""
        let deadline = Date().addingTimeInterval(20)
        while text.split(separator: "\n").count < count && Date() < deadline {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        try? input.fileHandleForWriting.close()
        return text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    @Test func aLineWithoutEndEndsTheSessionWithAReason() throws {
        let out = try Self.session([UInt8](repeating: UInt8(ascii: "a"), count: 5 << 20))
        #expect(out.status != 124, "ended by itself, not by the 30 s timeout")
        #expect(out.stderr.contains("over 4194304 bytes without a newline"), "\(out.stderr.prefix(500))")
    }
}
