import Foundation
import Testing
@testable import SpawnGate

#if canImport(Glibc)
import Glibc
#endif

/// The relay launcher's socket, both ends hostile in turn (issue 27: the launcher is a small C program that
/// carries out the start its gateway prepared). The gateway's end: only the ticket's holder, started by a broker's
/// worker, gets the start, and anything else leaves the ticket good or the slot freed. The launcher's end: a
/// malformed answer from whatever sits at the socket is refused in a sentence: no crash, nothing started, nothing
/// exec'd.
@Suite("Launch channel")
struct LaunchChannelTests {
    static let launcher = (TestSupport.binary as NSString).deletingLastPathComponent + "/spawngate-launch"

    /// The gateway waiting for its launcher on a thread of its own; `outcome` once it stops.
    // @unchecked: `result` is written by the waiting thread before `done` is signalled, and read only after.
    final class Waiting: @unchecked Sendable {
        private var result: AgentService.Outcome??
        private let done = DispatchSemaphore(value: 0)

        init(_ g: Gateway, seconds: Double) throws {
            let p = try g.pipeline()
            let spawn = try #require(p.decide(g.envelope()).authorized)
            let secret = LaunchTicket.secret()
            self.secret = secret
            self.spawn = spawn
            self.pipeline = p
            path = LaunchChannel.path(home: g.vps, requestID: spawn.request.requestID)
            let listener = try LaunchChannel.Listener(path: path)
            let service = AgentService(spawner: LocalSpawner(home: g.vps), state: p.state)
            let deadline = Supervisor.monotonic() + seconds
            Thread { [self] in
                result = .some(service.awaitLauncher(spawn, at: listener, secret: secret, launcher: LaunchChannelTests.launcher,
                                                     until: deadline, redeem: { p.redeem($0) }))
                done.signal()
            }.start()
        }
        let secret: String
        let spawn: AuthorizedSpawn
        let pipeline: DecisionPipeline
        let path: String

        var outcome: AgentService.Outcome? { done.wait(); return result! }
    }

    /// T129: a process that is not a broker's worker (here the test runner's child) shows the right ticket: the
    /// start is refused, the refusal reported, the slot freed, nothing started. Before it, a connection with the
    /// wrong ticket is turned away without using the right one up.
    @Test func onlyABrokersWorkerGetsTheStartAndAWrongTicketUsesNothing() throws {
        let g = try Gateway(rule: ["spawner: agent-relay", "sandbox: standard", "max_concurrent: 1"], now: SystemClock().now())
        let w = try Waiting(g, seconds: 20)
        let wrong = try TestSupport.run(Self.launcher, [w.path, String(repeating: "A", count: 43)])
        #expect(wrong.status == 1 && wrong.stderr.contains("not the launch ticket"), "\(wrong.stderr)")
        let stolen = try TestSupport.run(Self.launcher, [w.path, w.secret])
        #expect(stolen.status == 1 && stolen.stderr.contains("must be started by an Agent Relay broker's worker"), "\(stolen.stderr)")
        guard case .failed(let why, _, _)? = w.outcome else { Issue.record("a launcher outside a worker must not start"); return }
        #expect(why.contains("broker"))
        #expect(try w.pipeline.state.runningAgents().isEmpty)
        #expect(try w.pipeline.decide(g.envelope(), mode: .dryRun).reason == .allowed, "the slot is free again")
    }

    /// Nobody comes: the wait ends at its deadline, and the socket is gone with its listener.
    @Test func noLauncherMeansNoStart() throws {
        let g = try Gateway(rule: ["spawner: agent-relay", "sandbox: standard"], now: SystemClock().now())
        let w = try Waiting(g, seconds: 0.3)
        #expect(w.outcome == nil)
    }

    /// The launcher, given a ticket for a socket nobody listens at (the gateway stopped waiting), says so.
    @Test func aLauncherWithNoGatewayStartsNothing() throws {
        let out = try TestSupport.run(Self.launcher, [TestSupport.tempDir("nogw") + "/launch-x.sock", "-ticket"])
        #expect(out.status == 1 && out.stderr.contains("cannot reach the gateway"), "\(out.stderr)")
        let usage = try TestSupport.run(Self.launcher, [])
        #expect(usage.status == 64 && usage.stderr.contains("usage: spawngate-launch SOCKET TICKET"))
    }

    /// T132: whatever sits at the supervisor's end of the connection (a supervisor killed mid-report, or something
    /// else holding the descriptor) answers the watching gateway with no report, a cut or malformed one, or a
    /// length past the limit. Each is `ended` (the start is reported failed), read within its bound: never a crash,
    /// an allocation of the claimed length or a wait past the startup check. A well-formed report is read as sent.
    @Test func theWatchReadsEveryMalformedEndReportAsEnded() throws {
        func pair() throws -> (gateway: LaunchChannel.Connection, supervisor: LaunchChannel.Connection) {
            var fds: [Int32] = [-1, -1]
            try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
            return (LaunchChannel.Connection(fd: fds[0]), LaunchChannel.Connection(fd: fds[1]))
        }
        func header(_ n: UInt32) -> [UInt8] { withUnsafeBytes(of: n) { Array($0) } }
        let shapes: [(String, (LaunchChannel.Connection) -> Void)] = [
            ("closed with no report", { _ in }),
            ("one word", { $0.send(["0"]) }),
            ("three words", { $0.send(["0", "tail", "more"]) }),
            ("a status that is not a number", { $0.send(["zero", "tail"]) }),
            ("a status past Int32", { $0.send(["4294967296", "tail"]) }),
            ("a frame cut short", { $0.write(header(100) + Array("0\u{0}ta".utf8)) }),
            ("a length past the limit", { $0.write(header(UInt32(LaunchChannel.maxFrame + 1)) + [0]) }),
            ("a length of zero", { $0.write(header(0)) }),
            ("no closing NUL", { $0.write(header(3) + Array("0\u{0}x".utf8)) }),
        ]
        for (name, send) in shapes {
            var (gateway, supervisor): (LaunchChannel.Connection, LaunchChannel.Connection?) = try pair()
            send(supervisor!)
            supervisor = nil  // closed: the supervisor is gone
            let t0 = Supervisor.monotonic()
            #expect(gateway.readReport(within: 5) == .ended, "\(name)")
            #expect(Supervisor.monotonic() - t0 < 3, "\(name): read within its bound")
        }
        // Nothing said and nothing closed: the startup check passes (the agent still runs).
        let (quiet, open) = try pair()
        #expect(quiet.readReport(within: 0.2) == LaunchChannel.Connection.Report.none)
        // The supervisor's own report, with its terminal's last lines.
        open.send(["3", "last words\n"])
        #expect(quiet.readReport(within: 5) == .exited(status: 3, tail: "last words\n"))
    }

    /// T130: every start frame a hostile or broken gateway end could send that is not well formed is refused by
    /// the launcher in a sentence, exit 1: no crash, nothing started, the supervisor never exec'd. The template is
    /// a well-formed start whose supervisor would leave a mark.
    @Test func theLauncherRefusesMalformedStarts() throws {
        let dir = TestSupport.tempDir("frames")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let mark = dir + "/supervised"
        func frame(_ mutate: (inout [String]) -> Void) -> [String] {
            var w = ["start", "/bin/true", dir, "-1", "0", "1", "0", "0", "0", "-", "0", "1", "/bin/true", "0",
                     "3", "/bin/sh", "-c", "touch \(mark)"]
            mutate(&w)
            return w
        }
        let hostile: [(String, [String]?, [UInt8]?)] = [
            ("a frame cut short", nil, [200, 0, 0, 0, 65, 66]),
            ("a frame longer than the limit", nil, [0xff, 0xff, 0xff, 0x7f]),
            ("no words", nil, [0, 0, 0, 0]),
            ("no closing NUL", nil, [3, 0, 0, 0, 65, 66, 67]),
            ("an unknown verb", frame { $0[0] = "begin" }, nil),
            ("a refusal without its sentence", ["refuse"], nil),
            ("more descriptors claimed than sent", frame { $0[6] = "1" }, nil),
            ("a count that is not a number", frame { $0[10] = "x" }, nil),
            ("too many limits", frame { $0[10] = "99" }, nil),
            ("an argv count past the end", frame { $0[11] = "5000" }, nil),
            ("a negative argv count", frame { $0[11] = "-1" }, nil),
            ("an environment count past the end", frame { $0[13] = "40" }, nil),
            ("no supervisor", frame { $0 = Array($0.prefix(14)) + ["0"] }, nil),
            ("a word too many", frame { $0.append("extra") }, nil),
            ("a seccomp program of odd length", frame { $0[9] = "abc" }, nil),
            ("a seccomp program that is not hex", frame { $0[9] = String(repeating: "zz", count: 8) }, nil),
            ("a cwd slot out of range", frame { $0[3] = "100000" }, nil),
        ]
        for (what, words, raw) in hostile {
            let path = dir + "/launch-\(abs(what.hashValue % 100000)).sock"
            let listener = try LaunchChannel.Listener(path: path)
            let answered = DispatchSemaphore(value: 0)
            Thread {
                if let conn = listener.accept(within: 20) {
                    _ = conn.readWords(within: 5)
                    if let words {
                        // The cwd goes with a well-formed frame, as the gateway sends it.
                        let cwd = (try? LocalSpawner.openApprovedDirectory(dir)) ?? -1
                        conn.send(words, fds: [cwd])
                        close(cwd)
                    } else if let raw { conn.write(raw) }
                    // Held open: the launcher must not wait for more than it was promised.
                    _ = conn.readResult(within: 3)
                }
                answered.signal()
            }.start()
            let out = try TestSupport.run(Self.launcher, [path, "ticket"])
            answered.wait()
            #expect(out.status == 1, "\(what): exit \(out.status) \(out.stderr)")
            #expect(out.stderr.contains("not started"), "\(what): \(out.stderr)")
            #expect(!FileManager.default.fileExists(atPath: mark), "\(what): the supervisor ran")
        }
        // The template itself is well formed: the launcher starts it, reports, and with 'g' execs the supervisor.
        let path = dir + "/launch-good.sock"
        let listener = try LaunchChannel.Listener(path: path)
        let good = frame { _ in }
        Thread {
            guard let conn = listener.accept(within: 20) else { return }
            _ = conn.readWords(within: 5)
            let cwd = (try? LocalSpawner.openApprovedDirectory(dir)) ?? -1
            conn.send(good, fds: [cwd])
            close(cwd)
            if let r = conn.readResult(within: 10), r.pid > 0 { conn.write([UInt8(ascii: "g")]) }
            _ = conn.readWords(within: 1)
        }.start()
        _ = good
        let ok = try TestSupport.run(Self.launcher, [path, "ticket"])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(FileManager.default.fileExists(atPath: mark), "the well-formed template reaches its supervisor")
    }

    /// T131: an argument or variable with a NUL byte would split into two words and shift every count after it
    /// (the supervisor's command line included): the frame is not made.
    @Test func aNulByteNeverReachesTheFrame() throws {
        let g = try Gateway(rule: ["spawner: agent-relay", "sandbox: standard"])
        let p = try g.pipeline()
        let spawn = try #require(p.decide(g.envelope()).authorized)
        let prepared = try LocalSpawner(home: g.vps).prepare(spawn)
        #expect(LaunchChannel.startFrame(prepared, stdin: nil, supervisor: ["/x"]) != nil)
        // The same start with one word changed (a prepared start owns its descriptors: each gets its own cwd).
        func changed(argv: [String], environment: [String]) throws -> PreparedStart {
            PreparedStart(spawn: spawn, agentDir: prepared.agentDir, tag: prepared.tag, cwdFD: try LocalSpawner.openApprovedDirectory(spawn.match.cwd),
                          landlockFD: -1, passFDs: [], program: prepared.program, argv: argv, environment: environment,
                          filter: prepared.filter, limits: prepared.limits, cwdSlot: -1, dropCaps: false, newUserns: prepared.newUserns)
        }
        #expect(LaunchChannel.startFrame(try changed(argv: prepared.argv + ["a\u{0}1\u{0}/bin/sh"], environment: prepared.environment),
                                         stdin: nil, supervisor: ["/x"]) == nil)
        #expect(LaunchChannel.startFrame(try changed(argv: prepared.argv, environment: prepared.environment + ["X=\u{0}"]),
                                         stdin: nil, supervisor: ["/x"]) == nil)
    }
}
