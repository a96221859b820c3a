import Foundation
import Testing
@testable import SpawnGate

/// `check`, `hook` and `audit` as real processes deciding at once against one home: the replay, rate and
/// concurrency steps must hold across processes, survive SIGKILL at any point, and fail closed.
@Suite("Decisions across processes")
struct DecisionCLITests {
    /// A gateway on the real clock (the CLI has no other).
    static func live(_ rule: [String] = []) throws -> Gateway { try Gateway(rule: rule, now: SystemClock().now()) }

    static func write(_ bytes: [UInt8], _ path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// Runs `spawngate check` on each file, `parallel` at a time; returns each file's exit status.
    static func checkAll(_ g: Gateway, _ files: [String], parallel: Int) throws -> [String: Int32] {
        let list = g.dir + "/files.txt"
        try files.joined(separator: "\n").write(toFile: list, atomically: true, encoding: .utf8)
        let script = #"xargs -P "$3" -n 1 sh -c '"$0" check --home "$1" "$2" > "$2.out" 2>/dev/null; echo "$2 $?"' "$1" "$2" < "$4""#
        let out = try TestSupport.run("/bin/bash", ["-c", script, "bash", TestSupport.binary, g.vps.root, String(parallel), list])
        var codes: [String: Int32] = [:]
        for line in out.stdout.split(separator: "\n") {
            let parts = line.split(separator: " ")
            codes[String(parts[0])] = Int32(parts[1])!
        }
        return codes
    }

    /// T5 across processes: one envelope submitted 1,000 times by 8 processes at once is allowed exactly once;
    /// a later process (a restarted gateway) still refuses it.
    @Test func replayFromEightProcessesIsAllowedExactlyOnce() throws {
        let g = try Self.live()
        let file = g.dir + "/request.json"
        try Self.write(g.envelope(), file)
        let list = g.dir + "/files.txt"
        try Array(repeating: file, count: 1000).joined(separator: "\n").write(toFile: list, atomically: true, encoding: .utf8)
        let script = #"xargs -P 8 -n 1 sh -c '"$0" check --home "$1" "$2" >/dev/null 2>&1; echo $?' "$1" "$2" < "$3""#
        let out = try TestSupport.run("/bin/bash", ["-c", script, "bash", TestSupport.binary, g.vps.root, list])
        let codes = out.stdout.split(separator: "\n")
        #expect(codes.count == 1000)
        #expect(codes.filter { $0 == "0" }.count == 1, "exactly one allow")
        #expect(codes.filter { $0 == "1" }.count == 999, "every other submission denied, none failed to decide")
        let lines = try g.auditLines()
        #expect(lines.count == 1000)
        #expect(lines.filter { $0["decision"] as? String == "allow" }.count == 1)
        #expect(Set(lines.compactMap { $0["reason"] as? String }) == ["allowed", "replay"])
        #expect(try g.check(Array(Data(contentsOf: URL(fileURLWithPath: file)))).decision["reason"] as? String == "replay")
        #expect(try g.cli(["audit", "verify"]).status == 0)
    }

    /// 50 requests at once against `max_concurrent: 2`: exactly two leases. A lease ends when the broker says
    /// the agent exited, or when the process it reported dies.
    @Test func fiftyParallelRequestsGetTwoLeases() throws {
        let g = try Self.live(["max_concurrent: 2"])
        var files: [String] = []
        for i in 0..<50 {
            let f = g.dir + "/r\(i).json"
            try Self.write(g.envelope(), f)
            files.append(f)
        }
        let codes = try Self.checkAll(g, files, parallel: 50)
        #expect(codes.count == 50)
        #expect(codes.values.filter { $0 == 0 }.count == 2)
        #expect(codes.values.filter { $0 == 1 }.count == 48)
        let allowed = try codes.filter { $0.value == 0 }.keys.sorted().map { f in
            try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: f + ".out"))) as? [String: Any])["request_id"] as! String
        }
        let denied = try String(contentsOfFile: codes.first { $0.value == 1 }!.key + ".out", encoding: .utf8)
        #expect(denied.contains("\"concurrency_limit\""))

        // The broker reports the first agent's process; the second agent exits.
        let agent = Process()
        agent.executableURL = URL(fileURLWithPath: "/bin/sleep")
        agent.arguments = ["60"]
        try agent.run()
        #expect(try g.cli(["hook", "started", "--request", allowed[0], "--pid", String(agent.processIdentifier)]).status == 0)
        #expect(try g.cli(["hook", "exited", "--request", allowed[1]]).status == 0)
        let unknown = try g.cli(["hook", "exited", "--request", allowed[1]])
        #expect(unknown.status == 1)
        #expect(unknown.stderr.contains("no lease"))
        #expect(try g.check(g.envelope()).status == 0, "the exited agent's slot is free")
        #expect(try g.check(g.envelope()).decision["reason"] as? String == "concurrency_limit")
        kill(agent.processIdentifier, SIGKILL)
        agent.waitUntilExit()
        #expect(try g.check(g.envelope()).status == 0, "the dead process's slot is freed")
    }

    /// SIGKILL at random points over many decisions: the chain stays verifiable, no allow that reached the
    /// requester is missing from the log, and no nonce is ever allowed twice.
    @Test func sigkillAtRandomPointsLosesNothing() throws {
        let g = try Self.live()
        let pool = (0..<12).map { _ in g.envelope() }
        var files: [String] = []
        for (i, env) in pool.enumerated() {
            files.append(g.dir + "/p\(i).json")
            try Self.write(env, files[i])
        }
        var allowedToRequester: [String] = []
        var killed = 0
        for i in 0..<90 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: TestSupport.binary)
            p.arguments = ["check", "--home", g.vps.root, files[i % files.count]]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            usleep(UInt32.random(in: 0...40_000))
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            if p.terminationReason == .uncaughtSignal { killed += 1 }
            if p.terminationReason == .exit && p.terminationStatus == 0 {
                allowedToRequester.append(try Envelope.parse(pool[i % pool.count]).get().requestID)
            }
        }
        // Every envelope once more, undisturbed.
        for (i, env) in pool.enumerated() {
            let (status, d) = try g.check(env)
            #expect(status == 0 || d["reason"] as? String == "replay", "\(d)")
            if status == 0 { allowedToRequester.append(try Envelope.parse(pool[i]).get().requestID) }
        }
        let verify = try g.cli(["audit", "verify"])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        let allows = try g.auditLines().filter { $0["decision"] as? String == "allow" }
        let allowedNonces = allows.compactMap { $0["nonce"] as? String }
        #expect(Set(allowedNonces).count == allowedNonces.count, "a nonce was allowed twice")
        #expect(Set(allowedToRequester).count == allowedToRequester.count, "a requester was told allow twice for one request")
        let logged = Set(allows.compactMap { $0["request_id"] as? String })
        #expect(Set(allowedToRequester).isSubset(of: logged), "an allow reached the requester without being in the log")
        #expect(allowedNonces.count <= pool.count)
        print("crash test: \(killed) of 90 decisions killed mid-flight; \(allows.count) allows logged for \(pool.count) envelopes")
    }

    /// A full disk (a file-size limit) at the audit append: `audit_unavailable`, exit 2, no partial line, and the
    /// request is not consumed. Both a refused write and a short one are exercised.
    @Test func auditAppendFailingForSpaceDeniesAndLeavesNothingHalfWritten() throws {
        let g = try Self.live()
        func logSize() throws -> Int { try FileManager.default.attributesOfItem(atPath: g.vps.auditLog)[.size] as! Int }
        // Decide until the log ends 24–424 bytes short of a KiB boundary, so a limit at that boundary cuts the
        // next line (about 650 bytes) short.
        repeat { #expect(try g.check(g.envelope()).status == 0) } while try !(600..<1000).contains(logSize() % 1024)
        // Hold a connection, as a running gateway would: SQLite's shared-memory file then exists at full size and
        // the child needs to grow no file but the audit log.
        let held = try StateStore.open(g.vps.stateDB)
        let size = try logSize()
        let file = g.dir + "/next.json"
        try Self.write(g.envelope(), file)
        // bash counts `ulimit -f` in KiB: below the current size every write fails; at the next boundary, a short write.
        for limit in [size / 1024, size / 1024 + 1] {
            let out = try TestSupport.run("/bin/bash", ["-c", #"ulimit -f "$3"; exec "$0" check --home "$1" "$2""#,
                                                        TestSupport.binary, g.vps.root, file, String(limit)])
            #expect(out.status == 2, "\(out.stdout) \(out.stderr)")
            #expect(out.stdout.contains("\"audit_unavailable\""), "\(out.stdout)")
            #expect(out.stderr.contains("audit log"))
            #expect(try FileManager.default.attributesOfItem(atPath: g.vps.auditLog)[.size] as! Int == size, "nothing half-written")
        }
        #expect(try g.cli(["audit", "verify"]).status == 0)
        let retry = try g.cli(["check", file])
        #expect(retry.status == 0, "the refused request was not consumed: \(retry.stdout)")
        _ = held
    }

    @Test func missingOrCorruptStateStoreExitsTwoWithInternalError() throws {
        let g = try Self.live()
        let env = g.envelope()
        try FileManager.default.removeItem(atPath: g.vps.stateDB)
        let missing = try g.check(env)
        #expect(missing.status == 2)
        #expect(missing.decision["reason"] as? String == "internal_error")
        #expect((missing.decision["detail"] as? String)?.contains("init --state") == true)
        #expect(!FileManager.default.fileExists(atPath: g.vps.stateDB))

        let create = try g.cli(["init", "--state"])
        #expect(create.status == 0, "\(create.stderr)")
        #expect(try g.cli(["init", "--state"]).status == 1, "never replaces a store")
        #expect(try g.check(env).status == 0)

        let garbage = [UInt8](repeating: 0x41, count: 8192)
        try Self.write(garbage, g.vps.stateDB)
        let corrupt = try g.check(g.envelope())
        #expect(corrupt.status == 2)
        #expect(corrupt.decision["reason"] as? String == "internal_error")
        #expect(corrupt.decision["decision"] as? String == "deny")
    }

    /// T23 from the operator's side: `audit verify` names the first bad line; a truncated log also stops
    /// decisions until the operator rotates it.
    @Test func auditVerifyNamesTamperingAndTruncationStopsDecisions() throws {
        let g = try Self.live()
        for _ in 0..<4 { _ = try g.check(g.envelope()) }
        var lines = try String(contentsOfFile: g.vps.auditLog, encoding: .utf8).split(separator: "\n").map(String.init)
        let original = lines
        lines[1] = lines[1].replacingOccurrences(of: "\"allow\"", with: "\"deny\"")
        try (lines.joined(separator: "\n") + "\n").write(toFile: g.vps.auditLog, atomically: false, encoding: .utf8)
        let edited = try g.cli(["audit", "verify"])
        #expect(edited.status == 1)
        #expect(edited.stderr.contains("audit.log:3:"), "\(edited.stderr)")

        try (original.prefix(3).joined(separator: "\n") + "\n").write(toFile: g.vps.auditLog, atomically: false, encoding: .utf8)
        let truncated = try g.cli(["audit", "verify"])
        #expect(truncated.status == 1)
        #expect(truncated.stderr.contains("truncated"))
        let refused = try g.check(g.envelope())
        #expect(refused.status == 2)
        #expect(refused.decision["reason"] as? String == "audit_unavailable")

        let rotate = try g.cli(["audit", "rotate"])
        #expect(rotate.status == 0)
        #expect(rotate.stdout.contains("broken"))
        #expect(try g.check(g.envelope()).status == 0)
        #expect(try g.cli(["audit", "verify"]).status == 0)
        let tail = try g.cli(["audit", "tail", "-n", "1", "--json"])
        #expect(tail.stdout.split(separator: "\n").count == 1)
        #expect(tail.stdout.contains("\"prev\":\"\(AuditLog.genesis)\""))
    }

    /// `--dry-run` from the command line: the decision as it would be, nothing consumed or written.
    @Test func dryRunFromTheCommandLine() throws {
        let g = try Self.live()
        let env = g.envelope()
        #expect(try g.check(env, ["--dry-run"]).status == 0)
        #expect(try g.check(env, ["--dry-run"]).status == 0)
        #expect(!FileManager.default.fileExists(atPath: g.vps.auditLog))
        #expect(try g.check(env).status == 0)
        #expect(try g.check(env, ["--dry-run"]).decision["reason"] as? String == "replay")
    }

    /// An envelope over 64 KiB is `malformed` (exit 1) whether it comes in a file or on standard input, with the
    /// same answer both ways, for every command that reads one: reading a file used to stop at the limit with an
    /// error (exit 2, "cannot decide"). (T48)
    @Test func oversizedEnvelopeIsMalformedFromAFileOrStandardInput() throws {
        let g = try Self.live()
        let big = Array(#"{"v":1,"payload":""#.utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: Envelope.maxSize) + Array(#""}"#.utf8)
        let file = g.dir + "/big.json"
        try Self.write(big, file)
        for command in [["check"], ["check", "--dry-run"], ["verify", "--json"], ["exec"], ["policy", "explain"]] {
            let fromFile = try g.cli(command + [file])
            let fromStdin = try g.cli(command + ["-"], stdin: big)
            #expect(fromFile.status == 1 && fromStdin.status == 1, "\(command): file \(fromFile.status) \(fromFile.stderr), stdin \(fromStdin.status) \(fromStdin.stderr)")
            #expect(fromFile.stdout == fromStdin.stdout && fromFile.stderr == fromStdin.stderr, "\(command): the same answer both ways")
            #expect((fromFile.stdout + fromFile.stderr).contains("malformed"), "\(command): \(fromFile.stdout) \(fromFile.stderr)")
        }
        // The hook reads standard input only; its bound is that of a hook input.
        let hook = try g.cli(["hook", "pre-spawn"], stdin: [UInt8](repeating: UInt8(ascii: " "), count: HookInput.maxSize + 1))
        #expect(hook.status == 1 && hook.stdout.contains("\"malformed\""), "\(hook.stdout) \(hook.stderr)")
    }

    /// `hook pre-spawn`: both input shapes, and the broker's fields checked against the signed ones.
    @Test func hookPreSpawnContract() throws {
        let g = try Self.live()
        let bare = try g.cli(["hook", "pre-spawn"], stdin: g.envelope())
        #expect(bare.status == 0, "\(bare.stdout)\(bare.stderr)")
        let env = String(decoding: g.envelope(), as: UTF8.self)
        let agree = #"{"envelope":\#(env),"spawn":{"name":"coder","cli":"claude","task":"Implement the plan","cwd":"\#(g.app)"}}"#
        #expect(try g.cli(["hook", "pre-spawn"], stdin: Array(agree.utf8)).status == 0)
        let other = String(decoding: g.envelope(), as: UTF8.self)
        let differ = #"{"envelope":\#(other),"spawn":{"name":"coder","cli":"claude","task":"Implement the plan","cwd":"/"}}"#
        let out = try g.cli(["hook", "pre-spawn"], stdin: Array(differ.utf8))
        #expect(out.status == 1)
        #expect(out.stdout.contains("\"malformed\""))
        let junk = try g.cli(["hook", "pre-spawn"], stdin: Array("{\"envelope\":1,\"spawn\":{}}".utf8))
        #expect(junk.status == 1)
        #expect(junk.stdout.contains("\"malformed\""))
        #expect(try g.auditLines().count == 4, "every hook decision is audited, malformed input included")
    }

    /// The wire format held to the byte through the whole pipeline: requests signed by the independent
    /// implementation are decided on their merits by `check`, and its hostile variants get their reasons.
    @Test func independentImplementationThroughCheck() throws {
        let g = try Self.live()
        let seed = g.dir + "/ref.seed"
        let key = try TestSupport.python(InteropTests.script, ["keygen", "--seed-out", seed, "--name", "ref-laptop"])
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(key.stdout.utf8)) as? [String: String])
        let (pub, _) = try PublicKey.parseLine(obj["pub"]!)
        try g.vps.keyStore.enroll(name: "ref-laptop", key: pub, expected: Fingerprint(obj["fingerprint"]!)!)
        let now = SystemClock().now()
        func sign(_ extra: [String]) throws -> [UInt8] {
            let out = try TestSupport.python(InteropTests.script, [
                "sign", "--seed", seed, "--from", "ref-laptop", "--to", "vps-broker", "--name", "coder", "--cli", "claude",
                "--task", "Implement the plan", "--iat", String(now), "--exp", String(now + 60)] + extra)
            #expect(out.status == 0, "\(out.stderr)")
            return Array(out.stdout.utf8)
        }
        let cases: [([String], String)] = [
            (["--cwd", g.app], "allowed"),
            (["--cwd", g.app, "--arg=--model", "--arg", "opus"], "allowed"),
            (["--cwd", "/etc"], "cwd_not_allowed"),
            (["--cwd", g.app, "--arg=--yolo"], "args_not_allowed"),
            (["--cwd", g.app, "--to", "mini-pc"], "wrong_audience"),
            (["--cwd", g.app, "--cli", "codex"], "cli_not_allowed"),
        ]
        for (extra, want) in cases {
            let (status, d) = try g.check(try sign(extra))
            #expect(d["reason"] as? String == want, "\(extra): \(d)")
            #expect(status == (want == "allowed" ? 0 : 1))
        }
        let list = try TestSupport.python(InteropTests.script, ["sign", "--mutate", "list"])
        for kind in list.stdout.split(separator: "\n").map({ $0.split(separator: "\t").map(String.init) }) {
            let (status, d) = try g.check(try sign(["--cwd", g.app, "--mutate", kind[0]]))
            #expect(d["reason"] as? String == kind[1], "mutation \(kind[0])")
            #expect(status == 1)
        }
    }

    /// `exec`: the agent runs in the foreground on this terminal and its exit status is ours; a denial starts
    /// nothing and puts the decision on standard error; the lease is released when the agent exits.
    @Test func execRunsTheApprovedAgentAndReturnsItsStatus() throws {
        let g = try Self.live(["max_concurrent: 1"])
        try g.script("echo \"agent: $*\"; exit 3")
        let out = try g.cli(["exec", "-"], stdin: g.envelope())
        #expect(out.status == 3, "\(out.stderr)")
        #expect(out.stdout == "agent: -- Implement the plan\n")
        #expect(try g.cli(["exec", "-"], stdin: g.envelope()).status == 3, "the lease ended with the agent")
        let denied = try g.cli(["exec", "-"], stdin: g.envelope(g.request(cwd: "/etc")))
        #expect(denied.status == 1)
        #expect(denied.stdout.isEmpty)
        #expect(denied.stderr.contains("\"cwd_not_allowed\""))
    }
}
