import Foundation
import Testing
@testable import SpawnGate
import CSpawn
#if canImport(Glibc)
import Glibc
#endif

/// An agent that wants out: every process it starts is the agent until it is gone, it reaches nothing outside its
/// own tree, and its fence is the directory it runs in. Each test runs real agents against real gateways and, where
/// it can, the same attack without the defence, so it fails when the defence is removed.
@Suite("Containment of agents")
struct ContainmentTests {
    /// The state letter of a host process (`T` when stopped).
    static func state(_ pid: Int32) -> String? {
        guard let stat = FileManager.default.contents(atPath: "/proc/\(pid)/stat"),
              let close = stat.lastIndex(of: UInt8(ascii: ")")), close + 2 < stat.count else { return nil }
        return String(UnicodeScalar(stat[close + 2]))
    }

    /// T25: the cwd is swapped for a symlink (to the gateway's policy directory, say) and back while the agent
    /// starts, as another agent of the same broker whose cwd is the parent could do. The Landlock fence, the
    /// chdir and the check are one directory opened without following symlinks, so the agent never gets write
    /// access anywhere else, however the race falls.
    @Test func aSwappedCwdNeverMovesTheFence() throws {
        let g = try Gateway(rule: ["sandbox: standard"])
        let work = g.app + "/work", decoy = g.app + "/work-link", secret = g.dir + "/policy-stand-in"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: secret, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: decoy, withDestinationPath: secret)
        try g.script("echo x > \(secret)/pwned-$(date +%s%N) 2>/dev/null && echo BREACH")
        let spawn = try #require(try g.pipeline().decide(g.envelope(g.request(cwd: work))).authorized)
        let stop = Atomic(false), swaps = Atomic(0)
        let racer = Thread {
            // renameat2(RENAME_EXCHANGE): `work` is the real directory, then the symlink, then the directory…
            // A pause between swaps keeps both states common at any instant (a tight loop on a loaded machine
            // leaves the start path almost no moment with the real directory in place).
            while !stop.value { _ = cspawn_rename_exchange(work, decoy); swaps.value += 1; usleep(100) }
        }
        racer.start()
        var started = 0, breaches = 0
        var refusals: [String: Int] = [:]
        for attempt in 0..<600 where attempt < 150 || started < 20 {
            // Each attempt waits for the racer to swap once or twice more: a refusal takes microseconds, so on a
            // loaded machine a racer descheduled with the symlink in place once saw hundreds of attempts refused
            // in a row (CI: 594 of 600) and the test proved nothing about the starts that find the directory.
            let from = swaps.value, steps = Int.random(in: 1...2)
            while swaps.value < from + steps { usleep(50) }
            let agent: SpawnedAgent
            do { agent = try LocalSpawner(home: g.vps).start(spawn, output: .logFiles) } catch {
                refusals[String(error.message.prefix(120)), default: 0] += 1
                continue
            }
            started += 1
            _ = Supervisor.wait(agent, maxRuntime: 10)
            if (try? String(contentsOfFile: agent.stdoutLog ?? "", encoding: .utf8))?.contains("BREACH") == true { breaches += 1 }
        }
        stop.value = true
        while !racer.isFinished { usleep(1000) }
        let planted = (try? FileManager.default.contentsOfDirectory(atPath: secret)) ?? []
        #expect(breaches == 0 && planted.isEmpty, "\(breaches) of \(started) agents wrote into the swapped-in directory")
        #expect(started > 0, "some starts found the real directory in place: \(refusals)")
    }

    /// T26: an agent that leaves a `setsid` child and a plain background child and exits frees its slot only
    /// because nothing of it is left: under `serve`, with max_concurrent 1, three such agents in a row leave no
    /// process behind (before, each left two and all three were admitted).
    @Test func childrenThatLeaveTheSessionDieWithTheirAgentUnderServe() throws {
        let r = try ServeTests.Remote(rule: ["max_concurrent: 1", "sandbox: standard"], agent: """
            setsid sh -c 'exec sleep 300.25' </dev/null >/dev/null 2>&1 &
            sleep 300.5 </dev/null >/dev/null 2>&1 &
            exit 0
            """)
        defer { r.serve.kill() }
        for round in 1...3 {
            let out = try r.spawn()
            #expect(out.status == 0, "round \(round): \(out.stdout) \(out.stderr)")
            #expect(TestSupport.gone("sleep 300.25") && TestSupport.gone("sleep 300.5"), "round \(round): the agent's children outlived it")
            try ServeTests.Remote.eventually("the slot is freed") { try r.running().isEmpty }
        }
    }

    /// T27: while the agent runs, its setsid child holds the slot with it, and `release` ends both.
    @Test func aRunningAgentsWholeTreeHoldsTheSlotAndIsReleased() throws {
        let r = try ServeTests.Remote(rule: ["max_concurrent: 1", "sandbox: standard"], agent: """
            setsid sh -c 'trap "" TERM; exec sleep 301.25' </dev/null >/dev/null 2>&1 &
            exec sleep 301.5
            """)
        defer { r.serve.kill() }
        #expect(try r.spawn().status == 0)
        #expect(try r.spawn().stdout.contains("concurrency_limit"), "one agent at a time")
        #expect(TestSupport.pids(withCommandLine: "sleep 301.25").count == 1)
        let released = try r.laptop(["release", "coder", "--broker", "vps-broker"])
        #expect(released.status == 0, "\(released.stderr)")
        #expect(TestSupport.gone("sleep 301.25") && TestSupport.gone("sleep 301.5"), "release reaches the setsid child that ignores TERM")
    }

    /// T28: max_runtime's deadline is in the state store: a gateway killed and started again still stops the
    /// agent (and everything it started) on time.
    @Test func maxRuntimeHoldsAcrossAGatewayRestart() throws {
        let r = try ServeTests.Remote(rule: ["sandbox: standard", "max_runtime: 2s"], agent: """
            setsid sh -c 'exec sleep 302.25' </dev/null >/dev/null 2>&1 &
            exec sleep 302.5
            """)
        #expect(try r.spawn().status == 0)
        r.serve.kill()
        #expect(!TestSupport.pids(withCommandLine: "sleep 302.5").isEmpty, "the agent outlives the gateway")
        let again = try ServeProcess(home: r.g.vps)
        defer { again.kill() }
        // Real processes stopped by a real serve process's reaper: waits with generous bounds (they return as soon
        // as the processes are gone); without the deadline both would sleep for 300 s.
        #expect(TestSupport.gone("sleep 302.5", within: 30) && TestSupport.gone("sleep 302.25", within: 10), "the restarted gateway enforced the deadline")
    }

    /// T108 (issue 27): every agent's init is spawngate-init, a small static program the start execs, not a copy
    /// of the gateway: it holds none of the gateway's memory (the resident size of a fork of the test process was
    /// tens of MiB), its command line, which anyone on the machine can read, carries no environment, its own
    /// environment is empty, and no dynamic loader ran for it (a static binary reads no LD_PRELOAD).
    @Test func theInitIsASmallExecdProgram() throws {
        let g = try Gateway(rule: ["sandbox: standard"])
        try g.script("exec sleep 303.5")
        let spawn = try #require(try g.pipeline().decide(g.envelope(g.request())).authorized)
        let agent = try LocalSpawner(home: g.vps, environment: ["PATH": "/usr/bin:/bin", "SECRET_TOKEN": "s3cr3t-value"],
                                     passThrough: ["SECRET_TOKEN"]).start(spawn, output: .logFiles)
        defer { _ = Supervisor.stop(agent.process, grace: 0.2) }
        let pid = agent.process.pid
        #expect(Files.readLink("/proc/\(pid)/exe")?.hasSuffix("/spawngate-init") == true, "\(Files.readLink("/proc/\(pid)/exe") ?? "?")")
        let cmdline = String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data(), as: UTF8.self)
        #expect(!cmdline.isEmpty && !cmdline.contains("PATH=") && !cmdline.contains("s3cr3t-value"), "\(cmdline)")
        #expect(((try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ"))) ?? Data([1])).isEmpty, "the init's own environment is empty")
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let rss = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? Int.max
        #expect(rss < 8 * 1024, "the init's resident size is \(rss) KiB")
        // The agent itself still gets its environment, as before.
        let child = try RealRelay.waitFor("the agent under its init", within: 5) { TestSupport.pids(withCommandLine: "sleep 303.5").first }
        let environ = String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(child)/environ"))) ?? Data(), as: UTF8.self)
        #expect(environ.contains("SECRET_TOKEN=s3cr3t-value"), "the agent got its environment: \(environ.replacingOccurrences(of: "\0", with: " "))")
        // Static: an ELF without a PT_INTERP program header (no loader reads the agent's LD_* or GLIBC_TUNABLES).
        let exe = try #require(Files.readLink("/proc/\(pid)/exe"))
        let elf = [UInt8](try Data(contentsOf: URL(fileURLWithPath: exe)))
        func word(_ at: Int, _ size: Int) -> Int { (0..<size).reduce(0) { $0 | Int(elf[at + $1]) << (8 * $1) } }
        let phoff = word(0x20, 8), phentsize = word(0x36, 2), phnum = word(0x38, 2)
        #expect(phnum > 0 && !(0..<phnum).contains { word(phoff + $0 * phentsize, 4) == 3 }, "spawngate-init is linked statically")
    }

    /// Without spawngate-init next to the gateway, nothing starts, under any profile, and the decision says what
    /// is missing and where (a gateway copied without it would otherwise fail every start at the last moment).
    @Test func aMissingInitRefusesEveryStartSayingWhy() throws {
        let g = try DecisionCLITests.live(["sandbox: none"])
        let lonely = g.dir + "/lonely-bin"
        try FileManager.default.createDirectory(atPath: lonely, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: TestSupport.binary, toPath: lonely + "/spawngate")
        let request = g.dir + "/request.json"
        try DecisionCLITests.write(g.envelope(), request)
        let exec = try TestSupport.run(lonely + "/spawngate", ["exec", request, "--home", g.vps.root])
        #expect(exec.status == 2, "\(exec.stdout) \(exec.stderr)")
        #expect((exec.stdout + exec.stderr).contains("spawngate-init, every agent's init, next to this program in \(lonely)"), "\(exec.stdout) \(exec.stderr)")
    }

    /// T29: a `standard` agent cannot signal anything outside its own tree: not by pid (it lives in a pid
    /// namespace of its own) and not through a pidfd made from /proc (its /proc shows only its own processes, and
    /// pidfd_send_signal is refused). The same script run outside the sandbox stops the victim.
    @Test func agentsCannotSignalOutsideTheirTree() throws {
        let victim = Process()
        victim.executableURL = URL(fileURLWithPath: "/bin/sleep")
        victim.arguments = ["303.5"]
        try victim.run()
        defer { victim.terminate(); kill(victim.processIdentifier, SIGCONT); kill(victim.processIdentifier, SIGKILL); victim.waitUntilExit() }
        let pid = victim.processIdentifier
        let g = try Gateway(rule: ["sandbox: standard"])
        let attack = """
            kill -STOP \(pid) 2>/dev/null && echo KILLED
            python3 -c '
            import os, signal
            try:
                fd = os.open("/proc/\(pid)", os.O_RDONLY)
                signal.pidfd_send_signal(fd, signal.SIGSTOP)
                print("PIDFD-SENT")
            except Exception as e:
                print("pidfd refused", type(e).__name__)
            '
            """
        try g.script(attack)
        let (_, out) = try SandboxTests.run(g)
        #expect(!out.contains("KILLED") && !out.contains("PIDFD-SENT"), "\(out)")
        #expect(Self.state(pid) != "T", "the victim is not stopped")
        // Without the sandbox the same script stops it.
        let control = try TestSupport.run("/bin/sh", ["-c", attack])
        #expect(control.stdout.contains("KILLED"), "\(control.stdout)")
        #expect(Self.state(pid) == "T")
    }

    /// T30: an agent is not admitted on the hook socket, though it runs as the gateway's own uid: it is in
    /// another pid namespace. The same requests from outside any agent are decided. Two requests pipelined in one
    /// write (decided as one batch) are each refused too.
    @Test func agentsAreNotAdmittedOnTheHookSocket() throws {
        let g = try DecisionCLITests.live(["sandbox: standard", "max_concurrent: 4"])
        let socket = g.dir + "/gate.sock"
        let ask = """
            python3 -c '
            import socket
            s = socket.socket(socket.AF_UNIX)
            s.connect("\(socket)")
            s.sendall(b"POST /v1/hook HTTP/1.1\\r\\nHost: gate\\r\\nContent-Length: 2\\r\\n\\r\\n{}"
                      + b"POST /v1/hook HTTP/1.1\\r\\nHost: gate\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\n{}")
            got = b""
            while True:
                b = s.recv(65536)
                if not b: break
                got += b
            print("STATUS", " ".join(p.split()[0].decode() for p in got.split(b"HTTP/1.1 ")[1:]))
            '
            """
        try g.script(ask + " > \(g.app)/asked.txt 2>&1")
        let serve = try ServeProcess(home: g.vps, ["--socket", socket])
        defer { serve.kill() }
        try ServeTests.Remote.eventually("the socket listens") { (try? HTTPClient.exchange(.unix(path: socket), method: "GET", path: "/healthz", timeout: 1)) != nil }
        #expect(try TestSupport.spawngate(try TestSupport.peerAdd("vps-broker", home: g.vps, url: serve.url) + ["--home", g.dir + "/mac-laptop"]).status == 0)
        let out = try TestSupport.spawngate(["spawn", "coder", "claude", "x", "--broker", "vps-broker", "--cwd", g.app, "--home", g.dir + "/mac-laptop"])
        #expect(out.status == 0, "\(out.stdout) \(out.stderr)")
        try ServeTests.Remote.eventually("the agent asked") { ((try? String(contentsOfFile: g.app + "/asked.txt", encoding: .utf8)) ?? "").contains("STATUS") }
        #expect(try String(contentsOfFile: g.app + "/asked.txt", encoding: .utf8).contains("STATUS 403 403"))
        let control = try TestSupport.run("/bin/sh", ["-c", ask])
        #expect(control.stdout.contains("STATUS 200 200"), "the same requests from outside an agent are decided: \(control.stdout) \(control.stderr)")
    }

    /// T31: the agent cannot read the gateway's environment (every API key, not only the policy's) or find the
    /// gateway's processes at all: its /proc is its own namespace's.
    @Test func agentsCannotReadTheGatewaysEnvironment() throws {
        let g = try DecisionCLITests.live(["sandbox: standard"])
        try g.script("""
            for f in /proc/[0-9]*/environ; do grep -qs canary-7f3e "$f" && echo "FOUND $f"; done
            ls /proc | grep -c '^[0-9]' > \(g.app)/count.txt
            exit 0
            """)
        let request = g.dir + "/request.json"
        try DecisionCLITests.write(g.envelope(), request)
        let exec = try TestSupport.run(TestSupport.binary, ["exec", request, "--home", g.vps.root],
                                       environment: ["SECRET_CANARY": "canary-7f3e", "PATH": "/usr/bin:/bin"])
        #expect(exec.status == 0, "\(exec.stderr)")
        #expect(!exec.stdout.contains("FOUND"), "\(exec.stdout)")
        let count = Int(try String(contentsOfFile: g.app + "/count.txt", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 99
        #expect(count <= 4, "the agent sees only its own processes (init, shell, ls, grep): \(count)")
    }
}

extension ContainmentTests {
    static let nobody = "65534"
    static func asNobody(_ command: [String], environment: [String: String] = ["PATH": "/usr/bin:/bin"]) throws -> TestSupport.Output {
        try TestSupport.run("/usr/bin/setpriv", ["--reuid", nobody, "--regid", nobody, "--clear-groups"] + command, environment: environment)
    }

    /// T54: a gateway that is not root gets the same containment, through a user namespace: the agent's setsid and
    /// background children end with it, it sees only its own processes, and it cannot stop a process of its own
    /// uid outside its tree nor write outside its cwd. The same script run as that user outside the sandbox does
    /// stop the victim. (The other containment tests run the gateway as root, which needs no user namespace.)
    @Test(.enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"), "needs root to become another user"),
          arguments: ["standard", "strict"])
    func containmentHoldsForAGatewayThatIsNotRoot(profile: String) throws {
        let victim = Process()
        victim.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        victim.arguments = ["--reuid", Self.nobody, "--regid", Self.nobody, "--clear-groups", "/bin/sleep", "304.5"]
        try victim.run()
        defer { kill(victim.processIdentifier, SIGCONT); kill(victim.processIdentifier, SIGKILL); victim.waitUntilExit() }
        let pid = victim.processIdentifier
        // Outside /tmp, which strict replaces with its own.
        let g = try Gateway(rule: ["sandbox: \(profile)"], now: SystemClock().now(), base: "/var/tmp")
        let attack = """
            setsid sh -c 'exec sleep 304.25' </dev/null >/dev/null 2>&1 &
            sleep 304.75 </dev/null >/dev/null 2>&1 &
            kill -STOP \(pid) 2>/dev/null && echo KILLED
            touch \(g.dir)/outside.txt 2>/dev/null && echo WROTE-OUTSIDE
            echo "procs $(ls /proc | grep -c '^[0-9]')"
            exit 0
            """
        try g.script(attack)
        let request = g.dir + "/request.json"
        try DecisionCLITests.write(g.envelope(), request)
        let chown = try TestSupport.run("/bin/chown", ["-R", "\(Self.nobody):\(Self.nobody)", g.dir])
        #expect(chown.status == 0, "\(chown.stderr)")

        let exec = try Self.asNobody([TestSupport.binary, "exec", request, "--home", g.vps.root])
        #expect(exec.status == 0, "\(exec.stdout) \(exec.stderr)")
        #expect(!exec.stdout.contains("KILLED") && !exec.stdout.contains("WROTE-OUTSIDE"), "\(exec.stdout)")
        let procs = exec.stdout.split(separator: "\n").first { $0.hasPrefix("procs ") }.flatMap { Int($0.dropFirst(6)) } ?? 99
        #expect(procs <= 8, "the agent sees only its own processes (init, shell, its two sleeps, the command substitution, ls, grep): \(exec.stdout)")
        #expect(TestSupport.gone("sleep 304.25") && TestSupport.gone("sleep 304.75"), "the agent's children outlived it")
        #expect(Self.state(pid) != "T", "the victim is not stopped")

        // Outside the sandbox, the same user stops the victim: the test can fail.
        let control = try Self.asNobody(["/bin/sh", "-c", "kill -STOP \(pid) 2>/dev/null && echo KILLED"])
        #expect(control.stdout.contains("KILLED"), "\(control.stdout) \(control.stderr)")
        // SIGSTOP takes effect asynchronously: on a loaded machine /proc can still say "R" just after kill(2).
        var state = Self.state(pid)
        for _ in 0..<100 where state != "T" { usleep(20_000); state = Self.state(pid) }
        #expect(state == "T")
    }
}

/// A flag shared with a racing thread.
// @unchecked: `_value` is read and written only under `lock`.
final class Atomic<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var _value: T
    init(_ value: T) { _value = value }
    var value: T {
        get { lock.withLock { _value } }
        set { lock.withLock { _value = newValue } }
    }
}
