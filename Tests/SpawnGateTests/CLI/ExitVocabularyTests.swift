import ArgumentParser
import Foundation
import Testing
@testable import SpawnGate
import SpawnGateCLI
#if canImport(Glibc)
import Glibc
#endif

/// Issue 24, "one exit vocabulary": every command and every executable maps its outcome through the one table
/// `check` uses (0 allowed or done, 1 denied or refused, 2 cannot decide or no verified answer, 64 usage), run here
/// as real processes, one outcome class at a time.
@Suite("One exit vocabulary")
struct ExitVocabularyTests {
    /// The decision fixture's two homes; the laptop has a peer `dead` whose gateway is not there, and the VPS's key
    /// and fingerprint to add as a peer.
    struct World {
        let g: Gateway
        let dead: String
        var laptopHome: String { g.dir + "/mac-laptop" }
        var vpsLine: String { (try? String(contentsOfFile: g.vps.root + "/identity.pub", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "" }
        var vpsFingerprint: String { (try? g.vps.loadIdentity().key.publicKey.fingerprint.description) ?? "" }

        init() throws {
            g = try DecisionCLITests.live()
            dead = "http://127.0.0.1:\(try ExitVocabularyTests.closedPort())"
            // `dead` has the VPS's key, so only the network stands between it and an answer.
            let added = try laptop(["peer", "add", "dead", "--url", dead, "--key", vpsLine, "--fingerprint", vpsFingerprint])
            try #require(added.status == 0, "\(added.stderr)")
        }

        func laptop(_ args: [String]) throws -> TestSupport.Output {
            try TestSupport.spawngate(args + ["--home", laptopHome])
        }
    }

    /// A loopback port nothing listens on: bound, then closed.
    static func closedPort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        try #require(ok)
        return UInt16(bigEndian: addr.sin_port)
    }

    /// Each row: a command line (run with the laptop's home, `FP` the VPS's fingerprint, `KEY` its key line, `DEAD`
    /// the unreachable gateway) and the status it must exit with. Rows marked "was N" exited N before issue 24.
    static let table: [(String, [String], Int32)] = [
        // Usage: argument-parser's 64, in each executable.
        // --help and --version are argument-parser's own commands: printed, 0, through every executable's main.
        ("--help", ["check", "--help"], 0),
        ("serve --help", ["serve", "--help"], 0),
        ("mcp --help", ["mcp", "--help"], 0),
        ("dashboard --help", ["dashboard", "--help"], 0),
        ("relay guard --help", ["relay", "guard", "--help"], 0),
        ("serve --version", ["serve", "--version"], 0),
        ("an unknown option", ["check", "--no-such-option"], 64),
        ("a bad value", ["check", "--source", "10.0.0.1", "-"], 64),
        ("serve: an unknown option", ["serve", "--no-such-option"], 64),
        ("serve: a bad value", ["serve", "--listen", "nowhere"], 64),
        ("mcp: an unknown option", ["mcp", "--no-such-option"], 64),
        ("mcp: a bad value", ["mcp", "--timeout", "99"], 64),
        ("dashboard: an unknown option", ["dashboard", "--no-such-option"], 64),
        ("dashboard: a bad value", ["dashboard", "--listen", "10.0.0.1:80"], 64),
        ("relay guard: an unknown option", ["relay", "guard", "--no-such-option"], 64),
        ("relay guard: a bad value", ["relay", "guard", "--upstream", "ftp://relay.example"], 64),
        ("peer add: a url with a path (was 1)", ["peer", "add", "vps-broker", "--url", "http://127.0.0.1:7717/v1/spawn", "--key", "KEY", "--fingerprint", "FP"], 64),
        ("peer add: an https url (was 1)", ["peer", "add", "vps-broker", "--url", "https://vps.example:7717", "--key", "KEY", "--fingerprint", "FP"], 64),
        ("peer add: a --key that is not a key line (was 1)", ["peer", "add", "vps-broker", "--url", "http://127.0.0.1:7717", "--key", "ssh-rsa AAAA x", "--fingerprint", "FP"], 64),
        ("peer add: a relay: peer without --key (was 1)", ["peer", "add", "vps-broker", "--url", "relay:vps-broker", "--fingerprint", "FP"], 64),
        ("key enroll: a --key that is not a key line (was 1)", ["key", "enroll", "vps-broker", "--key", "not a key", "--fingerprint", "FP"], 64),
        ("key request: a --url that is not http:// (was 1)", ["key", "request", "--broker", "vps-broker", "--url", "ftp://vps.example"], 64),
        // Refused: 1.
        ("handoff of an agent that is not running here", ["handoff", "coder", "--broker", "dead"], 1),
        ("logs of an unknown agent", ["logs", "coder"], 1),
        ("release of an unknown agent", ["release", "coder"], 1),
        ("peer add with a fingerprint that does not match", ["peer", "add", "vps-broker", "--url", "http://127.0.0.1:7717", "--key", "KEY", "--fingerprint", "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"], 1),
        // Cannot decide, no verified answer: 2.
        ("spawn to an unreachable peer", ["spawn", "coder", "claude", "task", "--broker", "dead"], 2),
        ("logs --broker to an unreachable peer", ["logs", "coder", "--broker", "dead"], 2),
        ("agents --broker to an unreachable peer", ["agents", "--broker", "dead"], 2),
        ("spawn to a peer peers.yaml does not have", ["spawn", "coder", "claude", "task", "--broker", "nowhere"], 2),
        ("key request to a peer peers.yaml does not have (was 1)", ["key", "request", "--broker", "nowhere"], 2),
        ("key request to an unreachable gateway", ["key", "request", "--broker", "dead"], 2),
        ("peer add, fetching the key from an unreachable gateway (was 1)", ["peer", "add", "vps-broker", "--url", "DEAD", "--fingerprint", "FP"], 2),
    ]

    @Test(arguments: table)
    func eachOutcomeExitsWithItsStatus(_ what: String, _ args: [String], _ status: Int32) throws {
        let w = try World()
        let argv = args.map { $0.replacingOccurrences(of: "FP", with: w.vpsFingerprint).replacingOccurrences(of: "KEY", with: w.vpsLine)
            .replacingOccurrences(of: "DEAD", with: w.dead) }
        let out = try w.laptop(argv)
        #expect(out.status == status, "\(what): \(argv.joined(separator: " ")) exited \(out.status): \(out.stdout) \(out.stderr)")
        // Whatever the status, one sentence says why (argument-parser's "Error: …" for usage).
        #expect(out.status == 0 || !out.stderr.isEmpty || !out.stdout.isEmpty, "\(what) said nothing")
    }

    // MARK: Signed answers: the target's reason decides the status, on every command

    /// A signed answer from a target that could not decide (internal_error, audit_unavailable) is 2, and a signed
    /// refusal is 1, for `logs --broker` as for `spawn`. `logs` said 1 for any signed refusal.
    @Test(arguments: [(ReasonCode.internalError, Int32(2)), (.auditUnavailable, 2), (.unknownKey, 1)])
    func aSignedAnswerExitsWithItsReasonsStatus(_ reason: ReasonCode, _ status: Int32) throws {
        let w = try World()
        let peer = try SigningPeer(answering: reason, requester: w.g.laptop.key.publicKey)
        defer { peer.stop() }
        #expect(try w.laptop(["peer", "add", "signer", "--url", peer.url, "--key", peer.line, "--fingerprint", peer.fingerprint]).status == 0)
        for args in [["spawn", "coder", "claude", "task", "--broker", "signer"], ["logs", "coder", "--broker", "signer"],
                     ["agents", "--broker", "signer"]] {
            let out = try w.laptop(args)
            #expect(out.status == status, "\(args.joined(separator: " ")): \(out.status) \(out.stdout) \(out.stderr)")
            #expect((out.stdout + out.stderr).contains(reason.rawValue), "the reason is shown: \(out.stdout) \(out.stderr)")
        }
    }

    /// `handoff`: refused here 1, a target that cannot be reached 2, a target whose signed answer says it could not
    /// decide 2 (it said 1: any signed answer was "denied"), a target that denies 1. The agent keeps running here.
    @Test func handoffExitsAsSpawnDoes() throws {
        let r = try ServeTests.Remote()
        defer { r.serve.kill() }
        let started = try r.spawn()
        try #require(started.status == 0, "\(started.stdout) \(started.stderr) \(r.serve.stderr)")
        let pid = try ServeTests.Remote.pid(started)
        let vps = { (args: [String]) throws -> TestSupport.Output in try r.g.cli(args) }
        let dead = "http://127.0.0.1:\(try Self.closedPort())"
        // A peer of the VPS that is not there (any key: nothing is ever verified from it).
        let other = SigningKey.generate().publicKey
        #expect(try vps(["peer", "add", "dead", "--url", dead, "--key", other.line(comment: "dead"), "--fingerprint", other.fingerprint.description]).status == 0)
        let unreachable = try vps(["handoff", "coder", "--broker", "dead", "--force"])
        #expect(unreachable.status == 2, "\(unreachable.stdout) \(unreachable.stderr)")
        #expect(unreachable.stderr.contains("unreachable") && unreachable.stderr.contains("keeps running here"), "\(unreachable.stderr)")

        let vpsKey = try r.g.vps.loadIdentity().key.publicKey
        for (reason, status) in [(ReasonCode.auditUnavailable, Int32(2)), (.internalError, 2), (.cwdNotAllowed, 1)] {
            let peer = try SigningPeer(answering: reason, requester: vpsKey)
            defer { peer.stop() }
            let name = "signer-\(reason.rawValue.replacingOccurrences(of: "_", with: "-"))"
            #expect(try vps(["peer", "add", name, "--url", peer.url, "--key", peer.line, "--fingerprint", peer.fingerprint]).status == 0)
            let out = try vps(["handoff", "coder", "--broker", name, "--force"])
            #expect(out.status == status, "\(reason): \(out.status) \(out.stdout) \(out.stderr)")
            #expect(out.stdout.contains("not moved to \(name): \(reason.rawValue): "), "\(out.stdout)")
        }
        #expect(ProcessIdentity.of(pid: pid) != nil, "the agent still runs here")
        #expect(try vps(["handoff", "nobody", "--broker", "dead"]).status == 1, "refused here: no such agent")
        #expect(try vps(["release", "coder"]).status == 0)
    }

    // MARK: A relay worker that does not start

    /// The same outcome whichever path started it: `exec` here, `serve` for `spawn --broker`, and the relay
    /// guard's mailbox for `spawn --broker` to a `relay:` peer each give `start_failed` and exit 1. The VPS has no
    /// Agent Relay broker, so the worker cannot start. `exec` said 2, with no reason code.
    @Test func aRelayWorkerThatDoesNotStartIsStartFailedOnEveryPath() throws {
        let g = try DecisionCLITests.live(["sandbox: standard", "spawner: agent-relay", "max_concurrent: 1"])
        let exec = try g.cli(["exec", "-"], stdin: g.envelope())
        #expect(exec.status == 1, "\(exec.stdout) \(exec.stderr)")
        let decision = try #require(exec.stderr.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.dropFirst("spawngate: ".count).utf8)) as? [String: Any]
        }.first, "the decision JSON on standard error: \(exec.stderr)")
        #expect(decision["reason"] as? String == "start_failed" && decision["decision"] as? String == "deny", "\(decision)")
        #expect((decision["detail"] as? String)?.contains("no Agent Relay broker found") == true, "\(decision)")
        #expect(try g.check(g.envelope(), ["--dry-run"]).status == 0, "the slot is free again")

        let laptop = { (args: [String]) throws -> TestSupport.Output in try TestSupport.spawngate(args + ["--home", g.dir + "/mac-laptop"]) }
        let spawnArgs = ["spawn", "coder", "claude", "Implement the plan", "--broker", "vps-broker", "--cwd", g.app, "--json"]
        func receiptReason(_ out: TestSupport.Output) -> String? {
            (try? JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any])?["reason"] as? String
        }

        let serve = try ServeProcess(home: g.vps)
        defer { serve.kill() }
        #expect(try laptop(try TestSupport.peerAdd("vps-broker", home: g.vps, url: serve.url)).status == 0)
        let viaServe = try laptop(spawnArgs)
        #expect(viaServe.status == 1 && receiptReason(viaServe) == "start_failed", "\(viaServe.stdout) \(viaServe.stderr) \(serve.stderr)")
        serve.kill()

        let dir = TestSupport.tempDir("relay-exit")
        let standin = try MailboxKeyTests.StandIn(dir)
        let key = try standin.workspaceKey()
        let target = try GuardProcess(home: g.vps.root, upstream: standin.url, environment: ["RELAY_API_KEY": key])
        let requester = try GuardProcess(home: g.dir + "/mac-laptop", upstream: standin.url, environment: ["RELAY_API_KEY": key])
        defer { requester.stop(); target.stop() }
        try target.waitForMailbox()
        try requester.waitForMailbox()
        #expect(try laptop(try TestSupport.peerAdd("vps-broker", home: g.vps, url: "relay:vps-broker")).status == 0)
        let viaMailbox = try laptop(spawnArgs)
        #expect(viaMailbox.status == 1 && receiptReason(viaMailbox) == "start_failed", "\(viaMailbox.stdout) \(viaMailbox.stderr) \(target.stderr)")
    }

    /// A local agent this gateway cannot start at all (here its agents/ directory cannot be made) is the gateway's
    /// own fault: internal_error, exit 2, from `exec` (it printed a sentence, no decision) as in serve's receipt.
    @Test func aLocalAgentThatCannotStartIsInternalErrorOnEveryPath() throws {
        let g = try DecisionCLITests.live(["sandbox: standard"])
        FileManager.default.createFile(atPath: g.vps.root + "/agents", contents: Data("not a directory".utf8))
        let exec = try g.cli(["exec", "-"], stdin: g.envelope())
        #expect(exec.status == 2, "\(exec.stdout) \(exec.stderr)")
        #expect(exec.stderr.contains("\"reason\":\"internal_error\"") && exec.stderr.contains("but not started: "), "\(exec.stderr)")

        let serve = try ServeProcess(home: g.vps)
        defer { serve.kill() }
        let laptop = g.dir + "/mac-laptop"
        #expect(try TestSupport.spawngate(try TestSupport.peerAdd("vps-broker", home: g.vps, url: serve.url) + ["--home", laptop]).status == 0)
        let spawn = try TestSupport.spawngate(["spawn", "coder", "claude", "task", "--broker", "vps-broker", "--cwd", g.app, "--json", "--home", laptop])
        let receipt = try JSONSerialization.jsonObject(with: Data(spawn.stdout.utf8)) as? [String: Any]
        #expect(spawn.status == 2 && receipt?["reason"] as? String == "internal_error", "\(spawn.stdout) \(spawn.stderr)")
    }

    // MARK: The mapping itself

    /// What escapes a command's `run()`: argument-parser's own outcomes pass, anything else takes the library's
    /// status; an error no command expected cannot decide (2), where argument-parser would have said 1.
    @Test func whatARunThrowsIsMappedOnce() {
        struct Unexpected: Error {}
        #expect(Exit.forRun(Unexpected()) as? ExitCode == ExitCode(2))
        #expect(Exit.forRun(OperatorError("refused")) as? ExitCode == ExitCode(1))
        #expect(Exit.forRun(RemoteError(.unreachable, "x")) as? ExitCode == ExitCode(2))
        #expect(Exit.forRun(Denial(.replay, "x")) as? ExitCode == ExitCode(1))
        #expect(Exit.forRun(ExitCode(7)) as? ExitCode == ExitCode(7), "the agent's own status passes")
        #expect(Exit.forRun(ValidationError("bad")) is ValidationError, "usage stays argument-parser's 64")
        #expect(Exit.forRun(CleanExit.message("x")) is CleanExit)
        #expect(Exit.of(.startFailed) == ExitCode(1) && Exit.of(.auditUnavailable) == ExitCode(2))
    }
}

/// A gateway stand-in that answers every signed request (spawn, agents, logs, release) with a receipt that verifies:
/// signed by its own key, bound to the request, sealed to the requester, saying `reason`. What a real gateway says
/// when it could not decide, without breaking one.
// @unchecked: the fd, key and port are set once, before the thread starts, and only read after.
final class SigningPeer: @unchecked Sendable {
    let key = SigningKey.generate()
    let url: String
    private let listener: Int32
    private let done = DispatchSemaphore(value: 0)

    var line: String { key.publicKey.line(comment: "signer") }
    var fingerprint: String { key.publicKey.fingerprint.description }

    init(answering reason: ReasonCode, requester: PublicKey) throws {
        let (fd, port) = try TestSupport.loopbackListener()
        listener = fd
        url = "http://127.0.0.1:\(port)"
        let (key, done) = (self.key, self.done)
        Thread {
            defer { done.signal() }
            while true {
                let c = accept(fd, nil, nil)
                guard c >= 0 else { return }
                Self.answer(c, reason: reason, key: key, requester: requester)
                close(c)
            }
        }.start()
    }

    private static func answer(_ c: Int32, reason: ReasonCode, key: SigningKey, requester: PublicKey) {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        var step = HTTPFraming.RequestStep.needMore
        while step == .needMore {
            let n = recv(c, &chunk, chunk.count, 0)
            guard n > 0 else { return }
            buffer += chunk[0..<n]
            step = HTTPFraming.request(buffer, maxHead: 16 * 1024, maxBody: 64 * 1024)
        }
        guard case .request(_, let body, _) = step else { return }
        // The signed request: in the Spawngate-Request header (agents, logs), else the sealed body.
        let head = String(decoding: buffer[..<(HTTPClient.endOfHead(buffer) ?? 0)], as: UTF8.self)
        let header = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("spawngate-request:") }
        let envelope: [UInt8]? = if let header {
            Base64.urlDecode(header.dropFirst("spawngate-request:".count).trimmingCharacters(in: .whitespaces))
        } else {
            try? SealedBody.open(body, with: key).get()
        }
        guard let envelope, let payload = try? Envelope.parse(envelope).get().payload else { return }
        let decision = Decision(reason: reason, detail: "the stand-in says \(reason.rawValue)", requestID: Sodium.sha256(payload).hex,
                                broker: "mac-laptop", fingerprint: requester.fingerprint.description)
        let sealed = SealedBody.seal(Receipt.issue(decision, started: nil, key: key), to: requester)
        let answer = Array("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(sealed.count)\r\nConnection: close\r\n\r\n".utf8) + sealed
        _ = answer.withUnsafeBytes { send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        done.wait()
    }
}
