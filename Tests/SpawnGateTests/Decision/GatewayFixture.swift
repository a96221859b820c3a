import Foundation
import Testing
@testable import SpawnGate

/// A settable clock: tests move time instead of sleeping.
// @unchecked: `ms` is read and written only under `lock`.
final class ManualClock: GateClock, @unchecked Sendable {
    private let lock = NSLock()
    private var ms: Int64
    init(_ seconds: Int64) { ms = seconds * 1000 }
    func now() -> Int64 { nowMilliseconds() / 1000 }
    func nowMilliseconds() -> Int64 { lock.withLock { ms } }
    func advance(seconds: Double) { lock.withLock { ms += Int64(seconds * 1000) } }
}

/// Two real homes (mac-laptop enrolled at vps-broker), a stand-in `claude` script, a project directory, and a
/// policy written for the test. Everything the pipeline touches is real: keys, policy file, SQLite, audit log.
struct Gateway {
    let dir: String
    let laptop: Identity
    let vps: Home
    let clock: ManualClock
    var app: String { dir + "/srv/app" }
    var claude: String { dir + "/bin/claude" }

    /// `rule` lines are added to the allow rule `laptop-app` (e.g. "rate: 10/minute").
    /// `base` is where the test directory is made; outside /tmp when the sandbox under test replaces /tmp.
    init(rule: [String] = [], cli: [String] = [], now: Int64 = 1_800_000_000, base: String = "/tmp") throws {
        dir = TestSupport.tempDir("gw", base: base)
        clock = ManualClock(now)
        (_, laptop) = try TestSupport.makeHome("mac-laptop", in: dir)
        (vps, _) = try TestSupport.makeHome("vps-broker", in: dir)
        try vps.keyStore.enroll(name: "mac-laptop", key: laptop.key.publicKey, expected: laptop.key.publicKey.fingerprint)
        try FileManager.default.createDirectory(atPath: app, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/bin", withIntermediateDirectories: true)
        try "#!/bin/sh\necho \"claude stand-in: $*\"\n".write(toFile: claude, atomically: true, encoding: .utf8)
        chmod(claude, 0o755)
        try writePolicy(rule: rule, cli: cli)
    }

    func writePolicy(rule: [String], cli: [String] = []) throws {
        let text = """
            version: 1
            accept_remote_spawn: true
            clis:
              claude:
                path: \(claude)
                args: [[], ["--model", "sonnet|opus"]]
            \(cli.map { "    " + $0 }.joined(separator: "\n"))
            rules:
              - name: laptop-app
                brokers: [mac-laptop, ref-laptop]
                clis: [claude]
                cwd: [\(app)/**]
            \(rule.map { "    " + $0 }.joined(separator: "\n"))
            """
        try text.write(toFile: vps.policyFile, atomically: true, encoding: .utf8)
        chmod(vps.policyFile, 0o600)
    }

    func pipeline() throws -> DecisionPipeline {
        try DecisionPipeline.open(home: vps, clock: clock)
    }

    /// Replaces the stand-in CLI with a shell script (run by /bin/sh, with no PATH but what it sets).
    func script(_ body: String) throws {
        try "#!/bin/sh\nPATH=/usr/local/bin:/usr/bin:/bin\n\(body)\n".write(toFile: claude, atomically: true, encoding: .utf8)
        chmod(claude, 0o755)
    }

    func request(cwd: String? = nil, args: [String]? = nil, nonce: [UInt8] = Sodium.randomBytes(16)) -> SpawnRequest {
        let iat = clock.now()
        return SpawnRequest(name: "coder", cli: "claude", task: "Implement the plan", cwd: cwd ?? app, args: args,
                            from: "mac-laptop", to: "vps-broker", iat: iat, exp: iat + 60, nonce: nonce)
    }

    func envelope(_ r: SpawnRequest? = nil, key: SigningKey? = nil) -> [UInt8] {
        Envelope.seal((r ?? request()).encoded(), with: key ?? laptop.key, domain: .request)
    }

    /// The b64u nonce inside an envelope, as the audit log and the state store record it.
    static func nonce(of envelope: [UInt8]) throws -> String {
        let payload = try Envelope.parse(envelope).get().payload
        return Base64.urlEncode(try SpawnRequest.parse(payload).get().nonce)
    }

    /// Runs `spawngate ARGS --home <vps>` with the envelope on standard input.
    func cli(_ args: [String], stdin: [UInt8] = []) throws -> TestSupport.Output {
        try TestSupport.spawngate(args + ["--home", vps.root], stdin: stdin)
    }

    /// `spawngate check -` on an envelope: the exit status and the decision JSON.
    func check(_ envelope: [UInt8], _ extra: [String] = []) throws -> (status: Int32, decision: [String: Any]) {
        let out = try cli(["check", "-"] + extra, stdin: envelope)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any], "stdout: \(out.stdout) stderr: \(out.stderr)")
        return (out.status, json)
    }

    var audit: AuditLog { AuditLog(path: vps.auditLog) }

    func auditLines() throws -> [[String: Any]] {
        guard FileManager.default.fileExists(atPath: vps.auditLog) else { return [] }
        return try String(contentsOfFile: vps.auditLog, encoding: .utf8).split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }
}

extension DecisionPipeline.Outcome {
    var reason: ReasonCode { decision.reason }
}
