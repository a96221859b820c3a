import Foundation
import Testing
@testable import SpawnGate
#if canImport(Glibc)
import Glibc
#endif

/// A running `spawngate dashboard`: the URL it printed as its first line, and raw HTTP to it (every header as given,
/// Host included, so the tests can send what a hostile page or a rebinding DNS name would).
final class DashboardProcess {
    let process = Process()
    let url: String
    let port: UInt16
    let secret: String
    let errLog: String
    var authority: String { "127.0.0.1:\(port)" }

    init(home: String, _ extra: [String] = []) throws {
        errLog = home + "/dashboard-\(UUID().uuidString.prefix(8)).err"
        FileManager.default.createFile(atPath: errLog, contents: nil)
        process.executableURL = URL(fileURLWithPath: TestSupport.binary)
        process.arguments = ["dashboard", "--home", home] + extra
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle(forWritingAtPath: errLog)
        try process.run()
        var line = Data()
        while line.last != 10 {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line += chunk
        }
        let first = String(decoding: line, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? ""
        // The first line is the URL, with the secret in its fragment (43 base64url characters: 256 bits).
        guard let m = first.wholeMatch(of: /http:\/\/127\.0\.0\.1:(\d+)\/#s=([A-Za-z0-9_-]{43})/), let p = UInt16(m.1) else {
            throw GatewayFailure("the dashboard's first line is not its URL: '\(first)' \((try? String(contentsOfFile: errLog, encoding: .utf8)) ?? "")")
        }
        url = first; port = p; secret = String(m.2)
    }

    var stderr: String { (try? String(contentsOfFile: errLog, encoding: .utf8)) ?? "" }
    deinit { kill() }
    func kill() {
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    struct Answer {
        let status: Int
        let headers: [(String, String)]
        let body: String
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:] }
        var error: String { json["error"] as? String ?? body }
    }

    /// One request as the page sends it, unless told otherwise: the right Host, the secret, no Origin.
    func send(_ method: String = "GET", _ path: String, host: String?? = .none, origin: String? = nil, secret: String?? = .none,
              contentType: String? = "application/json", body: String = "", extra: [String] = []) throws -> Answer {
        var lines = ["\(method) \(path) HTTP/1.1"]
        if let h = host ?? authority { lines.append("Host: \(h)") }
        lines += extra
        if let origin { lines.append("Origin: \(origin)") }
        if let s = secret ?? self.secret { lines.append("X-Spawngate-Secret: \(s)") }
        if method == "POST", let contentType { lines.append("Content-Type: \(contentType)") }
        lines.append("Content-Length: \(body.utf8.count)")
        lines.append("Connection: close")
        return try Self.raw(port: port, Array((lines.joined(separator: "\r\n") + "\r\n\r\n" + body).utf8))
    }

    static func raw(port: UInt16, _ request: [UInt8]) throws -> Answer {
        let fd = try #require(try? HTTPClient.connect(.tcp(host: "127.0.0.1", port: port), timeout: 5), "cannot connect to the dashboard on port \(port)")
        defer { close(fd) }
        var tv = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
            if n <= 0 { break }   // the server may close early on a body it refuses
            sent += n
        }
        var data = [UInt8](), buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            data += buffer[0..<n]
        }
        let text = String(decoding: data, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { return Answer(status: 0, headers: [], body: text) }
        let head = text[..<split.lowerBound].components(separatedBy: "\r\n")
        let status = Int(head.first?.split(separator: " ").dropFirst().first ?? "") ?? 0
        let headers = head.dropFirst().compactMap { l -> (String, String)? in
            guard let c = l.firstIndex(of: ":") else { return nil }
            return (String(l[..<c]), l[l.index(after: c)...].trimmingCharacters(in: .whitespaces))
        }
        var body = String(text[split.upperBound...])
        if headers.contains(where: { $0.0.lowercased() == "transfer-encoding" && $0.1 == "chunked" }) { body = Self.unchunk(body) }
        return Answer(status: status, headers: headers, body: body)
    }

    static func unchunk(_ s: String) -> String {
        var out = "", rest = Substring(s)
        while let nl = rest.range(of: "\r\n"), let size = Int(rest[..<nl.lowerBound], radix: 16), size > 0 {
            let start = nl.upperBound
            let bytes = Array(rest[start...].utf8)
            out += String(decoding: bytes.prefix(size), as: UTF8.self)
            rest = Substring(String(decoding: bytes.dropFirst(size + 2), as: UTF8.self))
        }
        return out
    }
}

/// A connection kept open, read as it comes (a live-update stream).
final class OpenStream {
    let fd: Int32
    var received = ""
    init(port: UInt16, _ request: String) throws {
        fd = try #require(try? HTTPClient.connect(.tcp(host: "127.0.0.1", port: port), timeout: 5))
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let bytes = Array(request.utf8)
        try #require(bytes.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) } == bytes.count)
    }
    deinit { close(fd) }

    /// Reads until `marker` has arrived (true), the peer closes or `seconds` pass (false).
    func read(until marker: String, within seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !received.contains(marker) && Date() < deadline {
            let n = Glibc.read(fd, &buffer, buffer.count)
            if n == 0 { return received.contains(marker) }
            if n > 0 { received += String(decoding: buffer[0..<n], as: UTF8.self) }
        }
        return received.contains(marker)
    }
}

/// Headless Chromium (Debian's `chromium`) driven over the DevTools pipe by Tests/Interop/browser.py.
enum Browser {
    static let chromium = "/usr/bin/chromium"
    static let script = TestSupport.packageRoot + "/Tests/Interop/browser.py"

    static func run(_ url: String, _ steps: [[String: Any]]) throws -> [Any] {
        try #require(FileManager.default.isExecutableFile(atPath: chromium), "no \(chromium): install Debian's chromium package (make deps does)")
        let input = try JSONSerialization.data(withJSONObject: steps)
        let out = try TestSupport.run("/usr/bin/timeout", ["170", "/usr/bin/python3", script, chromium, url], stdin: [UInt8](input))
        #expect(out.status == 0, "browser driver: \(out.stderr)")
        return try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [Any], "stdout: \(out.stdout) stderr: \(out.stderr)")
    }
    static func eval(_ js: String) -> [String: Any] { ["op": "eval", "js": js] }
    static func wait(_ js: String, _ timeout: Double = 20) -> [String: Any] { ["op": "wait", "js": js, "timeout": timeout] }
}

@Suite("dashboard (spawngate dashboard)")
struct DashboardTests {
    typealias Remote = ServeTests.Remote

    /// The issue's story in a real browser: vps-broker's dashboard (its own gateway is a peer under its own name,
    /// so it comes first), the second broker in the selector (mini-pc), spawn there, see it, release it.
    @Test func browserSpawnsOnTheSecondBrokerAndReleasesIt() throws {
        let m = try HandoffTests.Mesh()
        defer { m.stop() }
        let g = m.g
        // The VPS's own gateway as its own peer (its key enrolled there too, so it can list its own agents).
        let vps = try g.vps.loadIdentity()
        try g.vps.keyStore.enroll(name: "vps-broker", key: vps.key.publicKey, expected: vps.key.publicKey.fingerprint)
        #expect(try g.cli(try TestSupport.peerAdd("vps-broker", home: g.vps, url: m.r.serve.url)).status == 0)
        // Decisions to show: the laptop's start on vps-broker, a denial, and a denial whose detail is hostile HTML.
        _ = try m.startOnVPS()
        #expect(try m.r.spawn(cwd: "/etc").status == 1)
        let hostile = "/srv/<img src=x onerror=\"document.title='pwned'\">"
        #expect(try m.r.spawn(cwd: hostile).status == 1)
        // Embedded tests for the policy section.
        let policy = try String(contentsOfFile: g.vps.policyFile, encoding: .utf8) + """

            tests:
              - request: {from: mac-laptop, cli: claude, cwd: \(g.app)}
                expect: allow
              - request: {from: mac-laptop, cli: claude, cwd: /etc}
                expect: cwd_not_allowed

            """
        try policy.write(toFile: g.vps.policyFile, atomically: true, encoding: .utf8)
        chmod(g.vps.policyFile, 0o600)

        let d = try DashboardProcess(home: g.vps.root)
        defer { d.kill() }
        let screenshot = ProcessInfo.processInfo.environment["SPAWNGATE_DASHBOARD_SCREENSHOT"] ?? (g.dir + "/dashboard.png")
        let running = "tr[data-broker=\"mini-pc\"][data-agent=\"coder\"][data-state=\"running\"]"
        let out = try Browser.run(d.url, [
            Browser.wait("document.querySelectorAll('#spawn-broker option').length === 2 && document.querySelectorAll('#decisions tbody tr').length >= 3"),
            // Updated by the live-update stream (server-sent events), not by reloading.
            Browser.wait("document.getElementById('status').textContent.startsWith('live, ')"),
            Browser.eval("[...document.querySelectorAll('#spawn-broker option')].map(o => o.value)"),
            Browser.eval("location.hash"),
            Browser.eval("""
                (() => {
                  document.getElementById('spawn-open').click();
                  const select = document.getElementById('spawn-broker');
                  select.selectedIndex = 1;
                  select.dispatchEvent(new Event('change'));
                  document.getElementById('spawn-name').value = 'coder';
                  document.getElementById('spawn-cli').value = 'claude';
                  document.getElementById('spawn-task').value = 'Implement the plan';
                  document.getElementById('spawn-cwd').value = \(String(decoding: try JSONSerialization.data(withJSONObject: [g.app]), as: UTF8.self))[0];
                  document.getElementById('spawn-submit').click();
                  return select.value;
                })()
                """),
            Browser.wait("(r => r.className !== 'dim' && r.textContent)(document.getElementById('spawn-result'))"),
            Browser.wait("(r => r && r.textContent)(document.querySelector('\(running)'))"),
            Browser.eval("document.getElementById('spawn-cancel').click(); document.getElementById('spawn-dialog').open"),
            ["op": "screenshot", "path": screenshot],
            Browser.eval("document.querySelector('\(running) button.release').click(); true"),
            Browser.wait("!document.querySelector('\(running)') && document.getElementById('message').textContent"),
            // Text from requests is shown as text: the hostile cwd is in the table, and no element was made of it.
            Browser.eval("[document.querySelectorAll('img').length, document.title, document.querySelector('#decisions tbody').textContent.includes('<img src=x onerror=')]"),
            Browser.eval("document.getElementById('policy-status').textContent + ' | ' + document.getElementById('policy-tests').textContent"),
        ])
        try #require(out.count == 14, "\(out)")
        #expect(out[1] as? Bool == true, "no live update arrived: \(out[1])")
        #expect(out[2] as? [String] == ["vps-broker", "mini-pc"], "this broker first, then the other: \(out[2])")
        #expect(out[3] as? String == "", "the secret is taken out of the address bar")
        #expect(out[4] as? String == "mini-pc")
        let result = out[5] as? String ?? "\(out[5])"
        #expect(result.hasPrefix("started coder on mini-pc: pid ") && result.contains("receipt verified"), "\(result) \(d.stderr) \(m.miniServe.stderr)")
        let row = out[6] as? String ?? "\(out[6])"
        #expect(row.contains("mini-pc") && row.contains("coder") && row.contains(g.app) && row.contains("running"), "\(row)")
        #expect(out[7] as? Bool == false, "the dialog closed")
        #expect((out[8] as? Int ?? 0) > 1000, "a screenshot was taken")
        #expect(out[10] as? String == "released coder on mini-pc (receipt verified)", "\(out[10])")
        let shown = out[11] as? [Any] ?? []
        #expect(shown.first as? Int == 0 && shown.dropFirst().first as? String == "spawngate dashboard" && shown.last as? Bool == true, "\(shown)")
        let policyText = out[12] as? String ?? ""
        #expect(policyText.hasPrefix("ok ") && policyText.contains("2 test(s) passed, 0 failed") && policyText.contains("ok: mac-laptop claude"), "\(policyText)")
        let problems = ((out[13] as? [String: Any])?["problems"] as? [String]) ?? []
        #expect(problems.isEmpty, "the page logged errors (a CSP violation, a failed load): \(problems)")

        // What mini-pc itself says: started by vps-broker's signed request under its rule, then released.
        let there = try m.onMini()
        #expect(there.count == 1 && there.first?["state"] as? String == "exited", "\(there)")
        let lines = try TestSupport.spawngate(["audit", "tail", "--json", "-n", "10", "--home", m.mini.root]).stdout
        #expect(lines.contains("\"broker\":\"vps-broker\"") && lines.contains("allowed by rule 'vps-app'") && lines.contains("release of agent 'coder' by vps-broker"), "\(lines)")
    }

    /// A dashboard on the laptop, whose one peer is vps-broker: a spawn the target denies (cwd /etc) proves a
    /// request got through (it is audited there); a refused request adds nothing to the target's log.
    struct Laptop {
        let r: Remote
        let d: DashboardProcess
        init() throws {
            r = try Remote()
            d = try DashboardProcess(home: r.laptopHome)
        }
        func stop() { d.kill(); r.serve.kill() }
        var deniedSpawn: String { #"{"broker":"vps-broker","name":"coder","cli":"claude","cwd":"/etc"}"# }
        func decided() throws -> Int { try r.g.auditLines().count }

        /// The control: the same request, as the page sends it, is decided by the target.
        func control(origin: String? = nil) throws {
            let before = try decided()
            let ok = try d.send("POST", "/api/spawn", origin: origin, body: deniedSpawn)
            #expect(ok.status == 200 && ok.json["reason"] as? String == "cwd_not_allowed", "\(ok.status) \(ok.body)")
            #expect(try decided() == before + 1)
            #expect(try d.send("GET", "/api/state", origin: origin).status == 200)
        }
    }

    @Test func callsWithoutTheSecretAreRefused() throws {
        let l = try Laptop()
        defer { l.stop() }
        let before = try l.decided()
        let state = try l.d.send("GET", "/api/state", secret: .some(nil))
        #expect(state.status == 401 && state.error.contains("no secret"), "\(state.status) \(state.body)")
        #expect(state.json["brokers"] == nil)
        let spawn = try l.d.send("POST", "/api/spawn", secret: .some(nil), body: l.deniedSpawn)
        #expect(spawn.status == 401, "\(spawn.status) \(spawn.body)")
        #expect(try l.d.send("POST", "/api/release", secret: .some(nil), body: #"{"broker":"vps-broker","name":"coder"}"#).status == 401)
        #expect(try l.decided() == before, "nothing reached the target")
        // The page itself holds no data and needs no secret; the secret is read from the URL's fragment.
        #expect(try l.d.send("GET", "/", secret: .some(nil)).status == 200)
        try l.control()
    }

    @Test func aWrongSecretIsRefused() throws {
        let l = try Laptop()
        defer { l.stop() }
        let before = try l.decided()
        let s = l.d.secret
        let wrong = String(s.dropLast()) + (s.last == "A" ? "B" : "A")
        // Another start's secret, one character off, a prefix, the secret twice, and the secret in the query string.
        for bad in [wrong, String(s.prefix(16)), s + s, ""] {
            let state = try l.d.send("GET", "/api/state", secret: .some(bad))
            #expect(state.status == 401 && state.json["brokers"] == nil, "\(bad): \(state.status) \(state.body)")
            #expect(try l.d.send("POST", "/api/spawn", secret: .some(bad), body: l.deniedSpawn).status == 401)
        }
        #expect(try l.d.send("GET", "/api/state?s=\(s)", secret: .some(nil)).status == 401)
        #expect(try l.d.send("GET", "/api/state", secret: .some(nil), extra: ["X-Spawngate-Secret: \(s)", "X-Spawngate-Secret: \(wrong)"]).status == 401)
        #expect(try l.decided() == before, "nothing reached the target")
        let other = try DashboardProcess(home: l.r.laptopHome)
        defer { other.kill() }
        #expect(other.secret != s, "a secret per start")
        #expect(try other.send("GET", "/api/state", secret: .some(s)).status == 401, "the last start's secret is no good")
        try l.control()
    }

    /// A page on another origin (a hostile site, another port of this machine) is refused even with the secret.
    @Test func aForeignOriginIsRefused() throws {
        let l = try Laptop()
        defer { l.stop() }
        let before = try l.decided()
        for origin in ["http://evil.example", "null", "http://localhost:\(l.d.port)", "http://127.0.0.1:\(l.d.port + 1)", "https://127.0.0.1:\(l.d.port)"] {
            let spawn = try l.d.send("POST", "/api/spawn", origin: origin, body: l.deniedSpawn)
            #expect(spawn.status == 403 && spawn.error.contains("another origin"), "\(origin): \(spawn.status) \(spawn.body)")
            #expect(try l.d.send("GET", "/api/state", origin: origin).status == 403)
        }
        #expect(try l.decided() == before, "nothing reached the target")
        try l.control(origin: "http://\(l.d.authority)")
    }

    /// DNS rebinding: a hostile name resolved to 127.0.0.1 reaches the port, but its requests carry its own name.
    @Test func aForeignHostIsRefused() throws {
        let l = try Laptop()
        defer { l.stop() }
        let before = try l.decided()
        for host in ["evil.example:\(l.d.port)", "localhost:\(l.d.port)", "127.0.0.1", "127.0.0.1:\(l.d.port + 1)", "127.0.0.2:\(l.d.port)"] {
            let spawn = try l.d.send("POST", "/api/spawn", host: .some(host), body: l.deniedSpawn)
            #expect(spawn.status == 403 && spawn.error.contains("Host header must be"), "\(host): \(spawn.status) \(spawn.body)")
            #expect(try l.d.send("GET", "/", host: .some(host)).status == 403)
        }
        // The right Host and then a second, foreign one.
        let twice = try l.d.send("POST", "/api/spawn", body: l.deniedSpawn, extra: ["Host: evil.example:\(l.d.port)"])
        #expect(twice.status == 403, "\(twice.status) \(twice.body)")
        #expect(try l.decided() == before, "nothing reached the target")
        try l.control()
    }

    @Test func badInputIsAClearClientError() throws {
        let l = try Laptop()
        defer { l.stop() }
        let before = try l.decided()
        let cases: [(String, String, String?, String, Int, String)] = [
            ("POST", "/api/spawn", "application/json", #"{"broker":"vps-broker","name":"a","cli":"claude","sandbox":"none"}"#, 400, "spawn takes no field 'sandbox'"),
            ("POST", "/api/spawn", "application/json", #"{"broker":"vps-broker","cli":"claude"}"#, 400, "spawn needs 'name'"),
            ("POST", "/api/spawn", "application/json", #"{"broker":"vps-broker","name":3,"cli":"claude"}"#, 400, "'name' must be a string, not a number"),
            ("POST", "/api/spawn", "application/json", #"{"broker":"vps-broker","name":"a","cli":"claude","args":"--yolo"}"#, 400, "'args' must be an array of strings"),
            ("POST", "/api/spawn", "application/json", #"{"broker":"vps-broker","name":"a","name":"b","cli":"claude"}"#, 400, "not valid JSON"),
            ("POST", "/api/spawn", "application/json", "[1,2]", 400, "must be a JSON object"),
            ("POST", "/api/spawn", "application/json", "{", 400, "not valid JSON"),
            ("POST", "/api/spawn", "application/json", #"{"broker":"nowhere","name":"a","cli":"claude"}"#, 400, "cannot send: no peer named 'nowhere'"),
            ("POST", "/api/spawn", "text/plain", l.deniedSpawn, 415, "Content-Type: application/json"),
            ("POST", "/api/spawn", nil, l.deniedSpawn, 415, "Content-Type: application/json"),
            ("POST", "/api/spawn", "application/json", "{\"task\":\"" + String(repeating: "x", count: 100_000) + "\"}", 413, "over 65536 bytes"),
            ("GET", "/api/spawn", nil, "", 405, "takes POST"),
            ("POST", "/api/release", "application/json", #"{"broker":"vps-broker","name":"a","pid":1}"#, 400, "release takes no field 'pid'"),
            ("POST", "/api/release", "application/json", #"{"broker":"vps-broker"}"#, 400, "release needs broker and name"),
            ("GET", "/api/nothing", nil, "", 404, "not found: GET /api/nothing"),
            ("DELETE", "/api/spawn", nil, "", 404, "not found: DELETE /api/spawn"),
        ]
        for c in cases {
            let a = try l.d.send(c.0, c.1, contentType: c.2, body: c.3)
            #expect(a.status == c.4 && a.error.contains(c.5), "\(c.0) \(c.1) \(c.3.prefix(80)): \(a.status) \(a.body)")
            #expect(a.header("Content-Type") == "application/json" && a.json["error"] is String, "\(a.headers) \(a.body)")
        }
        #expect(try l.decided() == before, "nothing reached the target")
        #expect(l.d.process.isRunning)
        try l.control()
    }

    @Test func pageAndAnswersCarryTheSecurityHeaders() throws {
        let l = try Laptop()
        defer { l.stop() }
        for path in ["/", "/app.js", "/app.css", "/api/state", "/nothing"] {
            let a = try l.d.send("GET", path)
            #expect(a.header("Content-Security-Policy")?.hasPrefix("default-src 'none'; script-src 'self'; style-src 'self';") == true, "\(path): \(a.headers)")
            #expect(a.header("Content-Security-Policy")?.contains("frame-ancestors 'none'") == true)
            #expect(a.header("X-Frame-Options") == "DENY" && a.header("Referrer-Policy") == "no-referrer" && a.header("X-Content-Type-Options") == "nosniff")
            #expect(a.header("Cache-Control") == "no-store")
        }
        let page = try l.d.send("GET", "/")
        #expect(page.status == 200 && page.header("Content-Type") == "text/html; charset=utf-8")
        // Nothing is loaded from another origin: no absolute URL in the page, its script or its style.
        for path in ["/", "/app.js", "/app.css"] {
            let body = try l.d.send("GET", path).body
            #expect(!body.contains("http:") && !body.contains("https:") && !body.contains("//cdn"), "\(path)")
        }
        let state = try l.d.send("GET", "/api/state")
        #expect(state.status == 200)
        let brokers = try #require(state.json["brokers"] as? [[String: Any]])
        #expect(brokers.map { $0["name"] as? String } == ["mac-laptop", "vps-broker"], "this broker first, though it is not a peer")
        #expect(brokers[0]["configured"] as? Bool == false && (brokers[0]["detail"] as? String)?.contains("spawngate peer add mac-laptop") == true)
        #expect(brokers[1]["answers"] as? Bool == true, "\(brokers[1])")
    }

    @Test func refusesAnAddressOtherThanLoopback() throws {
        let (home, _) = try TestSupport.makeHome("mac-laptop", in: TestSupport.tempDir("dash"))
        for listen in ["0.0.0.0:0", "192.168.1.10:8080", "localhost:0", "[::]:0", "100.64.0.2:7718"] {
            let out = try TestSupport.spawngate(["dashboard", "--home", home.root, "--listen", listen])
            #expect(out.status == 64 && out.stderr.contains("loopback only"), "\(listen): \(out.status) \(out.stderr)")
            #expect(out.stdout.isEmpty)
        }
    }

    /// Live updates: server-sent events with the secret only, at most four streams at once, and none of them
    /// holds up SIGTERM (graceful shutdown ends them).
    @Test func liveUpdatesAreBoundedAndEndAtShutdown() throws {
        let l = try Laptop()
        defer { l.stop() }
        let d = l.d
        func request(_ secret: String?) -> String {
            "GET /api/events HTTP/1.1\r\nHost: \(d.authority)\r\n" + (secret.map { "X-Spawngate-Secret: \($0)\r\n" } ?? "") + "\r\n"
        }
        let refused = try OpenStream(port: d.port, request(nil))
        #expect(refused.read(until: "\r\n\r\n", within: 5) && refused.received.hasPrefix("HTTP/1.1 401"), "\(refused.received)")
        var open: [OpenStream] = []
        for _ in 0..<4 {
            let s = try OpenStream(port: d.port, request(d.secret))
            #expect(s.read(until: "event: state\ndata: {", within: 15), "\(s.received)")
            open.append(s)
        }
        let first = open[0].received
        #expect(first.hasPrefix("HTTP/1.1 200") && first.lowercased().contains("content-type: text/event-stream"), "\(first)")
        #expect(first.contains("\"brokers\":[") && first.contains("\"name\":\"vps-broker\""), "\(first)")
        let fifth = try OpenStream(port: d.port, request(d.secret))
        #expect(fifth.read(until: "\r\n\r\n", within: 5) && fifth.received.hasPrefix("HTTP/1.1 429"), "\(fifth.received)")

        // A change reaches an open stream without asking: a new decision on this broker's own log shows up.
        #expect(!open[1].received.contains("\"reason\":\"malformed\""))
        let checked = try TestSupport.spawngate(["check", "--home", l.r.laptopHome], stdin: Array("junk".utf8))
        #expect(checked.status == 1, "\(checked.stdout) \(checked.stderr)")
        #expect(open[1].read(until: "\"reason\":\"malformed\"", within: 15), "the new decision was not pushed: \(open[1].received.suffix(300))")

        Glibc.kill(d.process.processIdentifier, SIGTERM)
        for _ in 0..<500 where d.process.isRunning { usleep(10_000) }
        #expect(!d.process.isRunning, "four open streams held up SIGTERM for 5 s")
        if !d.process.isRunning { #expect(d.process.terminationStatus == 0, "\(d.stderr)") }
    }

    /// SIGTERM stops it through the service group's graceful shutdown.
    @Test func stopsOnSigterm() throws {
        let (home, _) = try TestSupport.makeHome("mac-laptop", in: TestSupport.tempDir("dash"))
        let d = try DashboardProcess(home: home.root)
        #expect(try d.send("GET", "/").status == 200)
        Glibc.kill(d.process.processIdentifier, SIGTERM)
        for _ in 0..<500 where d.process.isRunning { usleep(10_000) }
        #expect(!d.process.isRunning, "still running 5 s after SIGTERM")
        if !d.process.isRunning { #expect(d.process.terminationStatus == 0, "\(d.stderr)") }
    }
}
