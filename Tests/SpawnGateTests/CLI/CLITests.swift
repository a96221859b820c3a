import Foundation
import Testing
@testable import SpawnGate

/// The real binary, its output and its exit codes (0 allowed, 1 denied, 2 cannot decide, 64 usage).
@Suite("Command line")
struct CLITests {
    struct Setup {
        let dir = TestSupport.tempDir("cli")
        var laptop: String { dir + "/laptop" }
        var vps: String { dir + "/vps" }

        init() throws {
            #expect(try TestSupport.spawngate(["init", "--name", "mac-laptop", "--home", dir + "/laptop"]).status == 0)
            #expect(try TestSupport.spawngate(["init", "--name", "vps-broker", "--home", dir + "/vps"]).status == 0)
            let show = try TestSupport.spawngate(["key", "show", "--home", dir + "/laptop"])
            let fp = String(show.stdout.split(separator: "\n")[1])
            let enroll = try TestSupport.spawngate(["key", "enroll", "mac-laptop", "--file", dir + "/laptop/identity.pub", "--fingerprint", fp, "--home", dir + "/vps"])
            #expect(enroll.status == 0, "\(enroll.stderr)")
        }

        func sign(_ extra: [String] = []) throws -> [UInt8] {
            let out = try TestSupport.spawngate(["sign", "--home", laptop, "--to", "vps-broker", "--name", "coder", "--cli", "claude", "--task", "Implement the plan"] + extra)
            #expect(out.status == 0, "\(out.stderr)")
            return Array(out.stdout.utf8)
        }
    }

    @Test func signAndVerifyExitCodes() throws {
        let s = try Setup()
        let env = try s.sign()
        let ok = try TestSupport.spawngate(["verify", "--home", s.vps, "-"], stdin: env)
        #expect(ok.status == 0)
        #expect(ok.stdout.hasPrefix("allow"))
        let json = try TestSupport.spawngate(["verify", "--json", "--home", s.vps], stdin: env)
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(obj["decision"] as? String == "allow")
        #expect(obj["broker"] as? String == "mac-laptop")
        // Addressed to vps-broker, presented to the laptop: one-line reason, exit 1.
        let wrong = try TestSupport.spawngate(["verify", "--home", s.laptop], stdin: env)
        #expect(wrong.status == 1)
        #expect(wrong.stdout.split(separator: "\n").count == 1)
        #expect(wrong.stdout.hasPrefix("deny unknown_key:"))
        let garbage = try TestSupport.spawngate(["verify", "--home", s.vps], stdin: Array("{not json".utf8))
        #expect(garbage.status == 1)
        #expect(garbage.stdout.hasPrefix("deny malformed:"))
    }

    @Test func gatewayFailureExitsTwo() throws {
        let s = try Setup()
        let env = try s.sign()
        try "ssh-ed25519 broken\n".write(toFile: s.vps + "/keys/revoked/x.pub", atomically: true, encoding: .utf8)
        let out = try TestSupport.spawngate(["verify", "--home", s.vps], stdin: env)
        #expect(out.status == 2)
        #expect(out.stderr.contains("x.pub"))
        let noHome = try TestSupport.spawngate(["verify", "--home", s.dir + "/nowhere"], stdin: env)
        #expect(noHome.status == 2)
        #expect(noHome.stderr.contains("spawngate init"))
    }

    @Test func usageErrorsExit64() throws {
        #expect(try TestSupport.spawngate(["sign", "--bogus"]).status == 64)
        #expect(try TestSupport.spawngate(["key", "enroll", "x", "--key", "k", "--fingerprint", "MD5:aa"]).status == 64)
    }

    @Test func enrollmentRefusalsAreSentences() throws {
        let s = try Setup()
        let other = SigningKey.generate().publicKey
        let out = try TestSupport.spawngate(["key", "enroll", "mac-laptop", "--key", other.line(comment: "x"), "--fingerprint", other.fingerprint.description, "--home", s.vps])
        #expect(out.status == 1)
        #expect(out.stderr.contains("already bound to another key"))
        let list = try TestSupport.spawngate(["key", "list", "--home", s.vps])
        #expect(list.stdout.contains("mac-laptop\tSHA256:"))
        #expect(list.stdout.contains("\tenrolled\t"))
    }

    @Test func refusesWorldReadableIdentity() throws {
        let s = try Setup()
        chmod(s.laptop + "/identity.key", 0o644)
        let out = try TestSupport.spawngate(["sign", "--home", s.laptop, "--to", "vps-broker", "--name", "c", "--cli", "claude"])
        // This machine's own key cannot be used: 2, as verify, check and spawn say for the same error.
        #expect(out.status == 2)
        #expect(out.stderr.contains("chmod 600"))
        #expect(out.stdout.isEmpty)
    }

    /// Deciding needs this broker's name, not its private key: `check` and `policy explain` read identity.pub only
    /// (least privilege, and a fresh `check` spends no time parsing the key). The key file must still be there and
    /// private: a home whose key others can read cannot act, whatever the command.
    @Test func decidingNeverReadsThePrivateKey() throws {
        let s = try Setup()
        let request = try s.sign()
        // Bytes no parser takes, still mode 0600: anything that read the key would fail on it.
        try Data("not a key\n".utf8).write(to: URL(fileURLWithPath: s.vps + "/identity.key"))
        chmod(s.vps + "/identity.key", 0o600)
        let check = try TestSupport.spawngate(["check", "--home", s.vps, "-"], stdin: request)
        #expect(check.status == 1 && check.stdout.contains("\"decision\":\"deny\"") && !check.stdout.contains("internal_error"),
                "decided without the key: \(check.status) \(check.stdout) \(check.stderr)")
        let explain = try TestSupport.spawngate(["policy", "explain", "--home", s.vps, "-"], stdin: request)
        #expect(explain.stdout.contains("addressed to vps-broker"), "\(explain.stdout) \(explain.stderr)")
        // What signs still reads it, and says what is wrong with it.
        let show = try TestSupport.spawngate(["sign", "--home", s.vps, "--to", "mac-laptop", "--name", "c", "--cli", "claude"])
        #expect(show.status == 2 && show.stderr.contains("identity.key"), "\(show.stderr)")
        // A key file others can read still stops a decision.
        chmod(s.vps + "/identity.key", 0o644)
        let open = try TestSupport.spawngate(["check", "--home", s.vps, "-"], stdin: request)
        #expect(open.status == 2 && open.stderr.contains("chmod 600"), "\(open.status) \(open.stderr)")
    }

    @Test func privateKeyIsNeverPrinted() throws {
        let s = try Setup()
        let secret = try String(contentsOfFile: s.laptop + "/identity.key", encoding: .utf8).split(separator: "\n")[1]
        for args in [["key", "show"], ["key", "show", "--json"], ["key", "list"]] {
            let out = try TestSupport.spawngate(args + ["--home", s.laptop])
            #expect(!out.stdout.contains(secret) && !out.stderr.contains(secret))
        }
    }
}
