import Foundation
import Testing
@testable import SpawnGate

/// T32–T36: under `strict`, nothing the agent writes runs as the operator at their next git command in or above
/// the cwd. Each layout is a real repository made with git; each attack is run inside strict, where it must fail,
/// and under `none`, where it must succeed (so the test fails when the defence is removed).
@Suite("Strict keeps git's code paths read-only", .enabled(if: SandboxSupport.bubblewrapProblem == nil && access("/usr/bin/git", X_OK) == 0,
                                                          "needs bubblewrap and git"))
struct StrictGitTests {
    static func git(_ dir: String, _ args: [String]) throws {
        let out = try TestSupport.run("/usr/bin/git", ["-C", dir] + args, environment: ["HOME": dir, "PATH": "/usr/bin:/bin", "GIT_CONFIG_NOSYSTEM": "1"])
        try #require(out.status == 0, "git \(args): \(out.stderr)")
    }

    /// Runs `attack` (which prints a word per success) under strict and under none; returns both outputs.
    static func both(_ g: Gateway, cwd: String, _ attack: String) throws -> (strict: String, none: String) {
        try g.script(attack)
        let strict = try SandboxTests.run(g, cwd: cwd).output
        try g.writePolicy(rule: ["sandbox: none"])
        let none = try SandboxTests.run(g, cwd: cwd).output
        try g.writePolicy(rule: ["sandbox: strict"])
        return (strict, none)
    }

    static func project(_ g: Gateway) throws {
        try Self.git(g.app, ["init", "-q", "."])
    }

    /// A worktree or submodule checkout: `.git` is a gitdir file, and the git directory it names is writable.
    @Test func aGitdirFileAndTheDirectoryItNames() throws {
        let g = try Gateway(rule: ["sandbox: strict"], base: "/var/tmp")
        defer { try? FileManager.default.removeItem(atPath: g.dir) }
        let store = g.app + "/store.git"
        try Self.git(g.app, ["init", "-q", "--separate-git-dir", store, "."])
        let (strict, none) = try Self.both(g, cwd: g.app, """
            echo x > \(store)/hooks/post-checkout && echo WROTE-HOOK
            echo '[core]' >> \(store)/config && echo WROTE-CONFIG
            echo 'gitdir: /tmp/elsewhere' > .git && echo REPOINTED
            """)
        for word in ["WROTE-HOOK", "WROTE-CONFIG", "REPOINTED"] {
            #expect(!strict.contains(word), "\(word) inside strict: \(strict)")
            #expect(none.contains(word), "\(word) without the sandbox: \(none)")
        }
    }

    /// Submodules' git directories live in .git/modules: their config and hooks run for `git status` too.
    @Test func submoduleGitDirectories() throws {
        let g = try Gateway(rule: ["sandbox: strict"], base: "/var/tmp")
        defer { try? FileManager.default.removeItem(atPath: g.dir) }
        try Self.project(g)
        try FileManager.default.createDirectory(atPath: g.app + "/.git/modules/lib/hooks", withIntermediateDirectories: true)
        try "[core]\n".write(toFile: g.app + "/.git/modules/lib/config", atomically: true, encoding: .utf8)
        let (strict, none) = try Self.both(g, cwd: g.app, """
            echo '[core] fsmonitor = touch /tmp/owned' >> .git/modules/lib/config && echo WROTE-SUB-CONFIG
            echo x > .git/modules/lib/hooks/pre-commit && echo WROTE-SUB-HOOK
            mkdir -p .git/modules/new && echo MADE-SUB
            """)
        for word in ["WROTE-SUB-CONFIG", "WROTE-SUB-HOOK", "MADE-SUB"] {
            #expect(!strict.contains(word), "\(word) inside strict: \(strict)")
            #expect(none.contains(word), "\(word) without the sandbox: \(none)")
        }
    }

    /// core.hooksPath inside the worktree (husky, lefthook), and a config included from the worktree.
    @Test func hooksPathAndIncludesInsideTheWorktree() throws {
        let g = try Gateway(rule: ["sandbox: strict"], base: "/var/tmp")
        defer { try? FileManager.default.removeItem(atPath: g.dir) }
        try Self.project(g)
        try FileManager.default.createDirectory(atPath: g.app + "/.husky", withIntermediateDirectories: true)
        try "[user]\n".write(toFile: g.app + "/team.gitconfig", atomically: true, encoding: .utf8)
        try Self.git(g.app, ["config", "core.hooksPath", ".husky"])
        try Self.git(g.app, ["config", "include.path", "../team.gitconfig"])
        let (strict, none) = try Self.both(g, cwd: g.app, """
            echo x > .husky/pre-commit && echo WROTE-HUSKY
            echo '[core] pager = touch /tmp/owned' >> team.gitconfig && echo WROTE-INCLUDE
            """)
        for word in ["WROTE-HUSKY", "WROTE-INCLUDE"] {
            #expect(!strict.contains(word), "\(word) inside strict: \(strict)")
            #expect(none.contains(word), "\(word) without the sandbox: \(none)")
        }
        // A hooksPath that does not exist yet inside the cwd would be the agent's to create: refused at start.
        try Self.git(g.app, ["config", "core.hooksPath", ".lefthook"])
        let p = try g.pipeline()
        let spawn = try #require(p.decide(g.envelope(g.request(cwd: g.app))).authorized)
        let error = try #require(throws: GatewayFailure.self) { try LocalSpawner(home: g.vps).start(spawn, output: .logFiles) }
        #expect(error.message.contains(".lefthook") && error.message.contains("create it"), "\(error.message)")
    }

    /// A cwd below the repository's top: `git init` there would give the operator's next git command in the cwd
    /// a repository of the agent's making.
    @Test func aNewRepositoryInTheCwd() throws {
        let g = try Gateway(rule: ["sandbox: strict"], base: "/var/tmp")
        defer { try? FileManager.default.removeItem(atPath: g.dir) }
        try Self.project(g)
        let sub = g.app + "/pkg"
        try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
        let (strict, none) = try Self.both(g, cwd: sub, """
            git init -q . 2>/dev/null && echo INITED
            mkdir -p .git/hooks 2>/dev/null && echo x > .git/hooks/post-checkout && echo PLANTED
            """)
        #expect(!strict.contains("INITED") && !strict.contains("PLANTED"), "\(strict)")
        #expect(none.contains("INITED"), "\(none)")
    }

    /// Agent Relay's connection file (the broker's API key) and MCP config (the workspace key), in the cwd and
    /// above it, are empty inside strict.
    @Test func agentRelaySecretsAreHidden() throws {
        let g = try Gateway(rule: ["sandbox: strict"], base: "/var/tmp")
        defer { try? FileManager.default.removeItem(atPath: g.dir) }
        let fm = FileManager.default
        for dir in [g.app + "/.agent-relay", g.dir + "/srv/.agentworkforce/relay"] {
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try #"{"api_key":"br_SECRET1"}"#.write(toFile: dir + "/connection.json", atomically: true, encoding: .utf8)
        }
        try #"{"RELAY_API_KEY":"rk_live_SECRET2"}"#.write(toFile: g.app + "/.mcp.json", atomically: true, encoding: .utf8)
        let (strict, none) = try Self.both(g, cwd: g.app, """
            cat .agent-relay/connection.json ../.agentworkforce/relay/connection.json .mcp.json 2>/dev/null
            """)
        #expect(!strict.contains("SECRET"), "\(strict)")
        #expect(none.contains("br_SECRET1") && none.contains("rk_live_SECRET2"), "\(none)")
    }
}
