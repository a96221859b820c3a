import Foundation
import Testing
@testable import SpawnGate

@Suite("Policy commands")
struct PolicyCLITests {
    @Test func checkReportsEveryProblemAndExitsOne() throws {
        let dir = TestSupport.tempDir("pcli")
        let path = dir + "/p.yaml"
        try Files.writeAtomically(path, Array("version: 1\nmax_ttl: 2 min\nrules:\n  - name: r\n    brokers: [a]\n    clis: [nope]\n    cwd: [/w]\n".utf8), mode: 0o600)
        let out = try TestSupport.spawngate(["policy", "check", path])
        #expect(out.status == 1)
        #expect(out.stdout == """
            \(path):2:10: error: max_ttl must be a duration like 30s, 2m, 1h or 1d, from 1s to 86400s; got '2 min'
            \(path):6:12: error: rule 'r': clis: 'nope' is not defined under clis:

            """)
    }

    /// T42: a CLI's binary where an agent may write (inside a cwd an allow rule can name, or a writable: path)
    /// could be replaced by an agent and run at the next spawn. `policy check` refuses it with the file, line and
    /// column of `path:`, as written and after resolving symlinks, with `~/` as the gateway user's home.
    @Test func binariesAnAgentCouldReplaceAreRefused() throws {
        let dir = TestSupport.tempDir("place")
        let home = dir + "/home"
        for d in ["/srv/app/tools", "/srv/worktrees/x/bin", "/bin", "/opt/agent/bin", "/home/.claude/local"] {
            try FileManager.default.createDirectory(atPath: dir + d, withIntermediateDirectories: true)
        }
        for f in ["/srv/app/tools/claude", "/srv/worktrees/x/bin/claude", "/opt/agent/bin/claude", "/home/.claude/local/claude", "/bin/claude"] {
            try "#!/bin/sh\n".write(toFile: dir + f, atomically: true, encoding: .utf8)
            chmod(dir + f, 0o755)
        }
        #expect(symlink(dir + "/srv/app/tools/claude", dir + "/bin/to-app") == 0)
        #expect(symlink(dir + "/home/.claude/local/claude", dir + "/bin/to-home") == 0)
        func check(path: String, cwd: String = "\(dir)/srv/app/**", writable: String = "") throws -> TestSupport.Output {
            let file = dir + "/p.yaml"
            let text = """
                version: 1
                accept_remote_spawn: true
                clis:
                  claude:
                    path: \(path)
                    args: [[]]
                \(writable.isEmpty ? "" : "    writable: [\"\(writable)\"]\n")rules:
                  - name: r
                    brokers: [mac-laptop]
                    clis: [claude]
                    cwd: [\(cwd)]

                """
            try Files.writeAtomically(file, Array(text.utf8), mode: 0o600)
            return try TestSupport.run(TestSupport.binary, ["policy", "check", file], environment: ["HOME": home, "PATH": "/usr/bin:/bin"])
        }
        func refused(_ out: TestSupport.Output, _ words: [String]) {
            let first = out.stdout.split(separator: "\n").first.map(String.init) ?? ""
            #expect(out.status == 1 && first.hasPrefix("\(dir)/p.yaml:5:11: error: clis.claude.path: ") && first.contains("could replace the binary")
                    && first.contains("install the CLI outside every allowed cwd and writable: path"), "\(out.stdout) \(out.stderr)")
            for w in words { #expect(first.contains(w), "\(w) in \(first)") }
        }
        // Inside an allowed tree, as written.
        refused(try check(path: dir + "/srv/app/tools/claude"), ["lies inside \(dir)/srv/app, a working directory that rule 'r' allows"])
        // A one-level pattern names the directory the binary is under.
        refused(try check(path: dir + "/srv/worktrees/x/bin/claude", cwd: "\(dir)/srv/worktrees/*"), ["lies inside \(dir)/srv/worktrees/x"])
        // Behind a symlink that leads into the allowed tree.
        refused(try check(path: dir + "/bin/to-app"), ["\(dir)/bin/to-app, which resolves to \(dir)/srv/app/tools/claude"])
        // In a writable: path, absolute or under ~/ (the gateway user's home).
        refused(try check(path: dir + "/opt/agent/bin/claude", writable: dir + "/opt/agent"), ["which clis.claude.writable lists"])
        refused(try check(path: dir + "/bin/to-home", writable: "~/.claude"), ["resolves to \(home)/.claude/local/claude", "lies inside \(home)/.claude"])
        // Outside all of them: accepted.
        let fine = try check(path: dir + "/bin/claude", writable: "~/.claude")
        #expect(fine.status == 0, "\(fine.stdout) \(fine.stderr)")
    }

    @Test func shippedExamplesCheckAndTest() throws {
        for name in ["vps-broker", "mini-pc", "mac-laptop"] {
            let path = TestSupport.packageRoot + "/policy/examples/\(name).yaml"
            let check = try TestSupport.spawngate(["policy", "check", path])
            #expect(check.status == 0, "\(check.stdout)")
            let test = try TestSupport.spawngate(["policy", "test", path])
            #expect(test.status == 0)
            #expect(test.stdout.hasSuffix(" passed, 0 failed\n"))
        }
    }

    @Test func failingTestExitsOneWithTheAssertion() throws {
        let dir = TestSupport.tempDir("pcli2")
        let path = dir + "/p.yaml"
        try Files.writeAtomically(path, Array(PolicyLifecycleTests.text.utf8), mode: 0o600)
        let out = try TestSupport.spawngate(["policy", "test", path])
        #expect(out.status == 1)
        #expect(out.stdout.contains(":15:5: FAIL: mac-laptop claude /etc: expected allow, got cwd_not_allowed by rule r"))
        #expect(out.stdout.hasSuffix("1 passed, 1 failed\n"))
        #expect(try TestSupport.spawngate(["policy", "check", path]).status == 1)
    }

    /// explain on a signed envelope: the signature line, every rule, the binary check, the decision.
    @Test func explainsASignedRequest() throws {
        let s = try CLITests.Setup()
        let bin = s.dir + "/bin"
        let app = s.dir + "/srv/app"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: app, withIntermediateDirectories: true)
        try Files.writeAtomically(bin + "/claude", Array("#!/bin/sh\n".utf8), mode: 0o755)
        chmod(bin + "/claude", 0o755)
        let real = try PathResolver.filesystem.resolve(s.dir).get()
        let policy = """
            version: 1
            accept_remote_spawn: true
            clis:
              claude: {path: \(real)/bin/claude, args: [[]]}
            rules:
              - {name: laptop, brokers: [mac-laptop], clis: [claude], cwd: ["\(real)/srv/**"]}

            """
        try Files.writeAtomically(s.vps + "/policy/policy.yaml", Array(policy.utf8), mode: 0o600)
        let env = try s.sign(["--cwd", app])
        let out = try TestSupport.spawngate(["policy", "explain", "--home", s.vps, "-"], stdin: env)
        #expect(out.status == 0, "\(out.stdout)\(out.stderr)")
        let lines = out.stdout.split(separator: "\n")
        // One line per stage of the pipeline, as `check --dry-run` runs them.
        #expect(lines.first?.hasPrefix("signature: ok: signed by mac-laptop") == true)
        #expect(lines.contains { $0.hasPrefix("audience: ok: addressed to vps-broker") })
        #expect(lines.contains { $0.hasPrefix("window: ok: ") })
        #expect(lines.contains { $0.hasPrefix("binary of 'claude': ok: ") })
        #expect(lines.contains { $0.hasPrefix("sandbox 'standard': ok: ") })
        #expect(lines.contains { $0.hasPrefix("replay: ok: ") })
        #expect(lines.contains { $0 == "audit: skipped: a dry run consumes no nonce, rate token or lease, and writes nothing" })
        #expect(lines.contains { $0.hasPrefix("allow rule 'laptop' (line 6): match") })
        #expect(lines.last?.hasPrefix("decision: allow by rule laptop: argv [\"\(real)/bin/claude\", \"--\", \"Implement the plan\"]") == true)
        // The binary made writable after the policy was written: explain shows the deny.
        chmod(bin + "/claude", 0o777)
        let bad = try TestSupport.spawngate(["policy", "explain", "--home", s.vps, "-"], stdin: env)
        #expect(bad.status == 1)
        #expect(bad.stdout.contains("decision: deny cli_not_allowed"))
    }

    @Test func explainFromFlags() throws {
        let path = TestSupport.packageRoot + "/policy/examples/vps-broker.yaml"
        let out = try TestSupport.spawngate(["policy", "explain", "--policy", path, "--lexical", "--from", "mini-pc", "--cli", "claude", "--cwd", "/srv/app"])
        #expect(out.status == 1)
        #expect(out.stdout.hasSuffix("decision: deny no_matching_rule: no rule allows broker 'mini-pc' to spawn anything here\n"))
        #expect(try TestSupport.spawngate(["policy", "explain", "--from", "x"]).status == 64)
    }

    /// verify takes max_ttl and clock_skew from the policy; a broken policy means it cannot decide.
    @Test func verifyUsesThePolicyWindow() throws {
        let s = try CLITests.Setup()
        try Files.writeAtomically(s.vps + "/policy/policy.yaml", Array("version: 1\nmax_ttl: 10s\n".utf8), mode: 0o600)
        let env = try s.sign(["--ttl", "60"])
        let out = try TestSupport.spawngate(["verify", "--home", s.vps], stdin: env)
        #expect(out.status == 1)
        #expect(out.stdout.hasPrefix("deny ttl_too_long"))
        try Files.writeAtomically(s.vps + "/policy/policy.yaml", Array("version: 1\nmax_tt: 10s\n".utf8), mode: 0o600)
        let broken = try TestSupport.spawngate(["verify", "--home", s.vps], stdin: env)
        #expect(broken.status == 2)
        #expect(broken.stderr.contains("did you mean 'max_ttl'"))
    }
}
