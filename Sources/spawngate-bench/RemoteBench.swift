import Foundation
import SpawnGate

/// Two brokers on this machine, as the demo has them: a laptop that asks and a VPS whose gateway decides.
struct BenchBrokers {
    let dir: String, exe: String
    let laptop: String, vps: String, app: String
    let laptopKey: SigningKey

    /// The VPS allows the laptop to start /usr/bin/true in `app` under `sandbox`.
    init(_ name: String, exe: String, sandbox: SandboxProfile) throws {
        dir = NSTemporaryDirectory() + "spawngate-bench-\(name)-\(getpid())"
        self.exe = exe
        laptop = dir + "/laptop"; vps = dir + "/vps"
        try FileManager.default.createDirectory(atPath: dir + "/app", withIntermediateDirectories: true)
        app = try PathResolver.filesystem.resolve(dir + "/app").get()
        Proc.must([exe, "init", "--home", laptop, "--name", "mac-laptop"], in: dir)
        Proc.must([exe, "init", "--home", vps, "--name", "vps-broker"], in: dir)
        laptopKey = try Home(root: laptop).loadIdentity().key
        try Home(root: vps).keyStore.enroll(name: "mac-laptop", key: laptopKey.publicKey, expected: laptopKey.publicKey.fingerprint)
        try Bench.truePolicy([Bench.trueRule("laptop-bench", cwd: app, sandbox: sandbox)])
            .write(toFile: Home(root: vps).policyFile, atomically: true, encoding: .utf8)
    }

    /// Starts the VPS's `spawngate serve` with `args`; returns its pid once it listens.
    func serve(_ args: [String]) -> (pid: pid_t, log: String) {
        let log = dir + "/serve.log"
        let pid = Proc.start([exe, "serve", "--home", vps] + args, log: log)
        guard Proc.awaitText("listening on", in: log) != nil else {
            Proc.stop(pid)
            fatalError("spawngate serve did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
        return (pid, log)
    }

    func cleanUp() { try? FileManager.default.removeItem(atPath: dir) }
}

/// A private sshd on 127.0.0.1 with temporary host and client keys, and a temporary login account whose only key
/// is `command="/usr/bin/true",restrict`: the way users start agents on another machine today.
struct PrivateSSHD {
    static let user = "spawngate-bench"
    let dir: String, port: Int, pid: pid_t
    private let madeRunDir: Bool, madeUser: Bool

    /// Nil, with the reason, when this machine cannot run one (no sshd, not root).
    static func start(in dir: String) -> Result<PrivateSSHD, BenchSkip> {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/sshd") else { return .failure(BenchSkip("no /usr/sbin/sshd (apt-get install openssh-server; make bench installs it)")) }
        guard getuid() == 0 else { return .failure(BenchSkip("sshd needs root to log a user in (run make bench as root)")) }
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        Proc.must(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir + "/host_ed25519"], in: dir)
        Proc.must(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir + "/client_key"], in: dir)
        let madeUser = Proc.run(["/usr/bin/id", user]).status != 0
        if madeUser {
            // A plain account with /bin/sh, so no rc file adds to SSH's time; '*' is no password, but not locked.
            Proc.must(["/usr/sbin/useradd", "--system", "-M", "-d", "/", "-s", "/bin/sh", user], in: dir)
            Proc.must(["/usr/sbin/usermod", "-p", "*", user], in: dir)
        }
        let madeRunDir = !FileManager.default.fileExists(atPath: "/run/sshd")
        if madeRunDir { mkdir("/run/sshd", 0o755) }
        let port = Proc.freePort()
        let clientPub = (try? String(contentsOfFile: dir + "/client_key.pub", encoding: .utf8)) ?? ""
        let hostPub = ((try? String(contentsOfFile: dir + "/host_ed25519.pub", encoding: .utf8)) ?? "").split(separator: " ").prefix(2).joined(separator: " ")
        try? "command=\"/usr/bin/true\",restrict \(clientPub)".write(toFile: dir + "/authorized_keys", atomically: true, encoding: .utf8)
        try? "[127.0.0.1]:\(port) \(hostPub)\n".write(toFile: dir + "/known_hosts", atomically: true, encoding: .utf8)
        try? """
            Port \(port)
            ListenAddress 127.0.0.1
            HostKey \(dir)/host_ed25519
            PidFile none
            AuthorizedKeysFile \(dir)/authorized_keys
            AllowUsers \(user)
            StrictModes no
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            UsePAM no
            UseDNS no
            PrintMotd no
            LogLevel ERROR
            MaxStartups 100:30:200

            """.write(toFile: dir + "/sshd_config", atomically: true, encoding: .utf8)
        try? """
            Host bench
              HostName 127.0.0.1
              Port \(port)
              User \(user)
              IdentityFile \(dir)/client_key
              IdentitiesOnly yes
              UserKnownHostsFile \(dir)/known_hosts
              StrictHostKeyChecking yes
              BatchMode yes
              ControlMaster no
              ControlPath none
              LogLevel ERROR

            """.write(toFile: dir + "/ssh_config", atomically: true, encoding: .utf8)
        let pid = Proc.start(["/usr/sbin/sshd", "-D", "-e", "-f", dir + "/sshd_config"], log: dir + "/sshd.log")
        let deadline = Bench.now() + 10_000_000_000
        while !Proc.accepts(port) && Bench.now() < deadline { usleep(10_000) }
        let sshd = PrivateSSHD(dir: dir, port: port, pid: pid, madeRunDir: madeRunDir, madeUser: madeUser)
        guard Proc.accepts(port) else {
            sshd.stop()
            return .failure(BenchSkip("sshd did not start: \((try? String(contentsOfFile: dir + "/sshd.log", encoding: .utf8)) ?? "")"))
        }
        // The forced command must be what runs, whatever the client asks for.
        let probe = dir + "/probe.log"
        let r = Proc.run(sshd.command("echo should-not-run"), log: probe)
        let out = (try? String(contentsOfFile: probe, encoding: .utf8)) ?? ""
        guard r.status == 0, !out.contains("should-not-run") else {
            sshd.stop()
            return .failure(BenchSkip("the ssh probe failed (exit \(r.status)): \(out)"))
        }
        return .success(sshd)
    }

    func command(_ remote: String, kex: String? = nil) -> [String] {
        ["/usr/bin/ssh", "-F", dir + "/ssh_config"] + (kex.map { ["-o", "KexAlgorithms=\($0)"] } ?? []) + ["bench", remote]
    }

    func stop() {
        Proc.stop(pid)
        if madeUser { Proc.run(["/usr/sbin/userdel", Self.user]) }
        if madeRunDir { rmdir("/run/sshd") }
    }
}

struct BenchSkip: Error { let why: String; init(_ why: String) { self.why = why } }

extension Bench {
    /// Remote spawn end to end over loopback (`spawngate spawn` → `serve` → start under `standard` → verified
    /// receipt) against the same start through SSH with a forced command, measured interleaved.
    static func remoteVersusSSH(exe: String, _ row: (String, String) -> Void, _ section: (String) -> Void) throws {
        let b = try BenchBrokers("remote", exe: exe, sandbox: .standard)
        defer { b.cleanUp() }
        let (serve, log) = b.serve(["--listen", "127.0.0.1:0"])
        defer { Proc.stop(serve) }
        let url = (try String(contentsOfFile: log, encoding: .utf8)).split(separator: "\n").first { $0.contains("listening on") }!
            .split(separator: " ").last!
        let vpsKey = try Home(root: b.vps).loadIdentity().key.publicKey
        Proc.must([exe, "peer", "add", "vps-broker", "--url", String(url), "--key", vpsKey.line(comment: "vps-broker"),
                   "--fingerprint", vpsKey.fingerprint.description, "--home", b.laptop], in: b.dir)
        let spawn = [exe, "spawn", "coder", "true", "Implement the plan", "--broker", "vps-broker", "--cwd", b.app, "--home", b.laptop]

        let sshd: PrivateSSHD?
        switch PrivateSSHD.start(in: b.dir + "/ssh") {
        case .success(let s): sshd = s
        case .failure(let skip):
            sshd = nil
            row("remote spawn vs SSH", "SSH not measured: \(skip.why)")
        }
        defer { sshd?.stop() }

        // An agent calling MCP: `spawngate mcp` stays running, so each agent.add is one JSON-RPC round trip.
        let mcp = try MCPSession([exe, "mcp", "--home", b.laptop])
        defer { mcp.stop() }
        let rounds = 31
        var ours: [Double] = [], sshDefault: [Double] = [], sshCurve: [Double] = [], viaMCP: [Double] = [], started: [Double] = []
        for i in 0..<(rounds + 3) {
            // The client's process start alone: the same binary parsing a command and stopping at once.
            let v = Proc.run([exe, "verify", "--home", "/nonexistent/spawngate-bench", "/dev/null"])
            if i >= 3 { started.append(v.ns) }
            let r = Proc.run(spawn)
            guard r.status == 0 else { fatalError("spawngate spawn failed (exit \(r.status)); run it by hand: \(spawn.joined(separator: " "))") }
            let t0 = now()
            let added = try mcp.call("agent.add", ["name": "coder", "cli": "true", "task": "Implement the plan", "broker": "vps-broker", "cwd": b.app])
            guard added.contains("\"isError\":false") || !added.contains("isError") else { fatalError("agent.add failed: \(added.prefix(400))") }
            if i >= 3 { viaMCP.append(Double(now() - t0)) }
            var d = 0.0, c = 0.0
            if let sshd {
                let a = Proc.run(sshd.command("Implement the plan")), k = Proc.run(sshd.command("Implement the plan", kex: "curve25519-sha256"))
                guard a.status == 0, k.status == 0 else { fatalError("ssh failed (exit \(a.status), \(k.status))") }
                (d, c) = (a.ns, k.ns)
            }
            if i >= 3 { ours.append(r.ns); sshDefault.append(d); sshCurve.append(c) }  // 3 warm-up rounds
        }
        row("remote spawn end to end over loopback: `spawngate spawn` → `serve` → start under `standard` → verified receipt",
            String(format: "%.1f ms", ours.median / 1e6))
        row("a fresh `spawngate` that parses its command and stops (the client's process start alone), interleaved", String(format: "%.1f ms", started.median / 1e6))
        row("the same through `spawngate mcp`: an agent's `agent.add` to vps-broker (the MCP server already running; one tools/call)",
            String(format: "%.1f ms (%.1f× faster than `spawngate spawn`)", viaMCP.median / 1e6, ours.median / viaMCP.median))
        let (tm, mm) = target("`agent.add` through `spawngate mcp` to a second gateway is faster than `spawn --broker`",
                              measured: String(format: "%.1f ms against %.1f ms", viaMCP.median / 1e6, ours.median / 1e6), met: viaMCP.median < ours.median)
        row(tm, mm)
        defer { policyCurve(b, url: String(url), spawn: spawn, section) }
        guard sshd != nil else { return }
        row("the same start through `ssh` with a `command=…,restrict` key (no sandbox), OpenSSH's default key exchange",
            String(format: "%.1f ms (spawngate is %.1f× faster)", sshDefault.median / 1e6, sshDefault.median / ours.median))
        row("the same through `ssh -o KexAlgorithms=curve25519-sha256` (SSH's fastest here)",
            String(format: "%.1f ms (spawngate is %.1f× faster)", sshCurve.median / 1e6, sshCurve.median / ours.median))
        let rest = ours.median - started.median - viaMCP.median
        let (t, m) = target("remote spawn ≥ 30× faster than the same start through SSH (default key exchange), ≥ 20× with curve25519-sha256",
                            measured: String(format: "%.1f× against OpenSSH's default key exchange, %.1f× against curve25519-sha256",
                                             sshDefault.median / ours.median, sshCurve.median / ours.median),
                            met: sshDefault.median / ours.median >= 30 && sshCurve.median / ours.median >= 20,
                            where: String(format: "30× SSH's default exchange needs %.1f ms; the fresh `spawngate spawn` took %.1f ms, of which "
                                          + "starting its process (the same binary parsing a command and stopping at once) %.1f ms. The exchange itself "
                                          + "(sign, seal, HTTP, the target's decision, commit, sandboxed start and signed receipt) through an "
                                          + "already running client (`agent.add`) %.1f ms; ",
                                          sshDefault.median / 30 / 1e6, ours.median / 1e6, started.median / 1e6, viaMCP.median / 1e6)
                                + (rest >= 0.1e6
                                   ? String(format: "the remaining %.1f ms are the fresh client reading its home (peers, identity) and the first use of its libraries", rest / 1e6)
                                   : String(format: "the two add up to the whole (%+.1f ms apart, within the runs' spread): the process start is the part a fresh client adds", rest / 1e6)))
        row(t, m)
    }

    /// Remote spawn latency against the size of the target's policy: the same request, allowed by the last rule,
    /// behind 10 to 10,000 rules (a tenth of them the requester's own, for other directories). Each policy is
    /// loaded by the running gateway's watcher, as an operator's edit would be.
    static func policyCurve(_ b: BenchBrokers, url: String, spawn: [String], _ section: (String) -> Void) {
        let policyFile = Home(root: b.vps).policyFile
        func policyHash() -> String? {
            guard let u = URL(string: url), let host = u.host, let port = u.port,
                  let r = try? HTTPClient.exchange(.tcp(host: host, port: UInt16(port)), method: "GET", path: "/healthz", timeout: 5),
                  case .object(let o)? = try? StrictJSONReader.parse(r.body), case .string(let h)? = o["policy"] else { return nil }
            return h
        }
        var md = "## Remote spawn latency against policy size\n\n"
        md += "`spawngate spawn` end to end (as above, `standard`), the median of 15 after 3 warm-up runs, with the allowing rule last "
        md += "behind the others; a tenth of the rules are the requester's own for other directories, the rest other brokers'.\n\n"
        md += "| rules | remote spawn |\n|---|---|\n"
        for n in [10, 100, 1_000, 10_000] {
            var rules: [String] = []
            for i in 0..<(n - 1) {
                let broker = i % 10 == 0 ? "mac-laptop" : "b\(i % 997)"
                rules.append("{name: r\(i), brokers: [\(broker)], clis: [true], cwd: [/w/p\(i)/**], sandbox: standard, rate: 20/hour}")
            }
            rules.append(trueRule("laptop-bench", cwd: b.app, sandbox: .standard))
            let before = policyHash()
            try? truePolicy(rules).write(toFile: policyFile, atomically: true, encoding: .utf8)
            let deadline = now() + 30_000_000_000
            while policyHash() == before && now() < deadline { usleep(50_000) }
            var times: [Double] = []
            for i in 0..<18 {
                let r = Proc.run(spawn)
                guard r.status == 0 else { fatalError("spawngate spawn failed under a \(n)-rule policy (exit \(r.status))") }
                if i >= 3 { times.append(r.ns) }
            }
            md += String(format: "| %d | %.1f ms |\n", n, times.median / 1e6)
        }
        section(md)
    }
}

/// A running `spawngate mcp` over stdio: newline-delimited JSON-RPC, as an agent's MCP client speaks it.
final class MCPSession {
    let process = Process()
    private let input = Pipe(), output = Pipe()
    private var buffered: [UInt8] = []
    private var nextID = 1

    init(_ argv: [String]) throws {
        process.executableURL = URL(fileURLWithPath: argv[0])
        process.arguments = Array(argv.dropFirst())
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        _ = try request("initialize", #"{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"spawngate-bench","version":"1"}}"#)
        send(#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
    }

    private func send(_ line: String) { input.fileHandleForWriting.write(Data((line + "\n").utf8)) }

    /// Sends a request and returns the text of the answer with the same id.
    func request(_ method: String, _ params: String) throws -> String {
        let id = nextID
        nextID += 1
        send(#"{"jsonrpc":"2.0","id":\#(id),"method":"\#(method)","params":\#(params)}"#)
        while true {
            while let nl = buffered.firstIndex(of: 10) {
                let line = String(decoding: buffered[..<nl], as: UTF8.self)
                buffered.removeFirst(nl + 1)
                if line.contains("\"id\":\(id)") { return line }
            }
            let chunk = output.fileHandleForReading.availableData
            guard !chunk.isEmpty else { throw GatewayFailure("spawngate mcp closed its output") }
            buffered += chunk
        }
    }

    func call(_ tool: String, _ arguments: [String: String]) throws -> String {
        let args = JSONWriter.object(arguments.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })
        return try request("tools/call", #"{"name":"\#(tool)","arguments":\#(String(decoding: args, as: UTF8.self))}"#)
    }

    func stop() {
        try? input.fileHandleForWriting.close()
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }
}
