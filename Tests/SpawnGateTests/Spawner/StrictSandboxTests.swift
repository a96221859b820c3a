import Foundation
import Testing
@testable import SpawnGate

/// `strict` from inside a real bubblewrap sandbox. The gateway lives under /var/tmp, as a real one would live
/// outside /tmp, so hiding its home is the profile's doing and not a side effect of the private /tmp. Every probe
/// is run again without the sandbox, where it must succeed.
@Suite("Strict sandbox (bubblewrap)", .enabled(if: SandboxSupport.bubblewrapProblem == nil, "bubblewrap cannot make namespaces on this machine; see 'spawngate doctor'"))
struct StrictSandboxTests {
    static func prepareProject(_ g: Gateway) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: g.app + "/.git/hooks", withIntermediateDirectories: true)
        try "[core]\n".write(toFile: g.app + "/.git/config", atomically: true, encoding: .utf8)
        try fm.createDirectory(atPath: g.app + "/.claude", withIntermediateDirectories: true)
        try "{}\n".write(toFile: g.app + "/.claude/settings.json", atomically: true, encoding: .utf8)
    }

    @Test func theFencesHoldInsideStrict() throws {
        let g = try Gateway(rule: ["sandbox: strict"], cli: ["protected: [.claude/settings.json]"], base: "/var/tmp")
        defer { try? FileManager.default.removeItem(atPath: g.dir) }
        try Self.prepareProject(g)
        let tag = UUID().uuidString
        let hostMarker = "/tmp/spawngate-host-\(tag)"
        let outside = "/var/tmp/spawngate-outside-\(tag)"
        let tmpWrite = "/tmp/spawngate-agent-\(tag)"
        try "x".write(toFile: hostMarker, atomically: true, encoding: .utf8)
        defer { for p in [hostMarker, outside, tmpWrite] { unlink(p) } }
        try g.script("""
            echo ok > inside.txt && echo wrote-inside
            echo ok > \(tmpWrite) && echo wrote-tmp
            test -e \(hostMarker) && echo SEES-HOST-TMP
            echo x > \(outside) && echo WROTE-OUTSIDE
            test -e \(g.vps.identityKey) && echo SEES-GATEWAY-KEY
            echo x > .git/hooks/pre-commit && echo WROTE-HOOK
            echo x >> .git/config && echo WROTE-GIT-CONFIG
            echo x > .claude/settings.json && echo WROTE-SETTINGS
            mv .git/hooks .git/hooks-moved && echo MOVED-HOOKS
            mv .git .git-moved && echo MOVED-GIT
            test -e /proc/\(getpid()) && echo SEES-HOST-PIDS
            unshare -U true 2>/dev/null && echo UNSHARE-OK
            python3 -c 'import ctypes; print("PTRACE", ctypes.CDLL(None, use_errno=True).ptrace(0, 0, 0, 0), ctypes.get_errno())'
            """)
        let (status, out) = try SandboxTests.run(g)
        #expect(status == 0, "\(out)")
        #expect(out.contains("wrote-inside") && out.contains("wrote-tmp"), "\(out)")
        let breaches = ["SEES-HOST-TMP", "WROTE-OUTSIDE", "SEES-GATEWAY-KEY", "WROTE-HOOK", "WROTE-GIT-CONFIG",
                        "WROTE-SETTINGS", "MOVED-HOOKS", "MOVED-GIT", "SEES-HOST-PIDS"]
        for breach in breaches + ["UNSHARE-OK"] {
            #expect(!out.contains(breach), "\(breach): \(out)")
        }
        #expect(out.contains("PTRACE -1 1"), "seccomp reaches the agent through bwrap: \(out)")
        #expect(!FileManager.default.fileExists(atPath: tmpWrite), "the agent's /tmp is private")
        #expect(try String(contentsOfFile: g.app + "/.git/config", encoding: .utf8) == "[core]\n")
        #expect(!FileManager.default.fileExists(atPath: g.app + "/.git/hooks/pre-commit"))

        // The same probes without the sandbox: each one gets through, so each refusal above is strict's doing.
        // (Host pids excepted: every profile, none included, now runs agents in a pid namespace of their own
        // with its own /proc; ContainmentTests covers that.)
        try g.writePolicy(rule: ["sandbox: none"], cli: ["protected: [.claude/settings.json]"])
        let control = try SandboxTests.run(g).output
        for breach in breaches where breach != "SEES-HOST-PIDS" {
            #expect(control.contains(breach), "\(breach) without the sandbox: \(control)")
        }
    }

    @Test func networkNoneLeavesOnlyItsOwnLoopback() throws {
        let g = try Gateway(rule: ["sandbox: strict", "network: none"], base: "/var/tmp")
        defer { try? FileManager.default.removeItem(atPath: g.dir) }
        let listener = try TCPListener()
        defer { listener.close() }
        try g.script("""
            python3 -c 'import socket; s = socket.socket(); s.settimeout(2); print("CONNECTED" if s.connect_ex(("127.0.0.1", \(listener.port))) == 0 else "no-route")'
            """)
        let p = try g.pipeline()
        let spawn = try #require(p.decide(g.envelope()).authorized)
        let agent = try LocalSpawner(home: g.vps, environment: [:]).start(spawn, output: .logFiles)
        #expect(agent.layers.contains("netns") && agent.layers.contains("bwrap"), "\(agent.layers)")
        _ = Supervisor.wait(agent, maxRuntime: nil)
        let out = try String(contentsOfFile: try #require(agent.stdoutLog), encoding: .utf8)
        #expect(out.contains("no-route"), "\(out)")
        // `strict` with the network shared reaches the host's listener.
        try g.writePolicy(rule: ["sandbox: strict"])
        #expect(try SandboxTests.run(g).output.contains("CONNECTED"))
    }

    /// A protected path that is a symlink could be swapped by the agent (the link, not its target, is in the
    /// writable cwd), so strict refuses to start rather than protect nothing.
    @Test func aProtectedSymlinkIsRefused() throws {
        let g = try Gateway(rule: ["sandbox: strict"], cli: ["protected: [.claude/settings.json]"], base: "/var/tmp")
        defer { try? FileManager.default.removeItem(atPath: g.dir) }
        try FileManager.default.createDirectory(atPath: g.app + "/.claude", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: g.app + "/.claude/settings.json", withDestinationPath: "/etc/hostname")
        let spawn = try #require(try g.pipeline().decide(g.envelope()).authorized)
        let error = try #require(throws: GatewayFailure.self) { try LocalSpawner(home: g.vps).start(spawn, output: .logFiles) }
        #expect(error.message.contains("symbolic link") && error.message.contains(".claude/settings.json"), "\(error.message)")
        // A .git that is a link is refused the same way: protecting its target would leave the link replaceable.
        unlink(g.app + "/.claude/settings.json")
        try FileManager.default.createDirectory(atPath: g.dir + "/elsewhere/.git/hooks", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: g.app + "/.git", withDestinationPath: g.dir + "/elsewhere/.git")
        let again = try #require(try g.pipeline().decide(g.envelope()).authorized)
        let gitError = try #require(throws: GatewayFailure.self) { try LocalSpawner(home: g.vps).start(again, output: .logFiles) }
        #expect(gitError.message.contains("/.git is a symbolic link"), "\(gitError.message)")
    }
}

/// A TCP listener on 127.0.0.1 with a kernel-chosen port; connections complete in the backlog without accept.
final class TCPListener {
    let fd: Int32
    let port: UInt16

    init() throws {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(s, sa, len) == 0 && listen(s, 16) == 0 && getsockname(s, sa, &len) == 0
            }
        }
        fd = s
        try #require(ok, "cannot listen on 127.0.0.1")
        port = UInt16(bigEndian: addr.sin_port)
    }

    func close() { _ = Glibc.close(fd) }
}
