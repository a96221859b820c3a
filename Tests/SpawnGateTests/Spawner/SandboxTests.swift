import Foundation
import Testing
@testable import SpawnGate

/// Each fence, tested from inside a real sandboxed process; each test also runs the same probe where the layer
/// is absent (profile `none` or no spawner at all), so it fails if the layer is removed.
@Suite("Sandboxed spawner")
struct SandboxTests {
    /// Decides and runs the stand-in CLI under the gateway's rule; returns the exit status and its stdout+stderr.
    static func run(_ g: Gateway, environment: [String: String] = [:], grace: Double = Supervisor.grace,
                    cwd: String? = nil) throws -> (status: Int32, output: String) {
        let p = try g.pipeline()
        let outcome = p.decide(g.envelope(g.request(cwd: cwd)))
        let spawn = try #require(outcome.authorized, "\(outcome.decision.detail)")
        let agent = try LocalSpawner(home: g.vps, environment: environment).start(spawn, output: .logFiles)
        let status = Supervisor.wait(agent, maxRuntime: spawn.match.rule.maxRuntime, grace: grace)
        let out = try String(contentsOfFile: try #require(agent.stdoutLog), encoding: .utf8)
        let err = try String(contentsOfFile: try #require(agent.stderrLog), encoding: .utf8)
        return (status, out + err)
    }

    @Test func writesOutsideTheWorkingDirectoryAreRefused() throws {
        let g = try Gateway(rule: ["sandbox: standard"])
        let outside = g.dir + "/outside.txt"
        try g.script("""
            echo ok > inside.txt && echo wrote-inside
            echo ok > "$TMPDIR/t" && echo wrote-tmp
            echo x > \(outside) && echo WROTE-OUTSIDE
            mkdir \(g.dir)/newdir && echo MADE-DIR
            exit 0
            """)
        let (status, out) = try Self.run(g)
        #expect(status == 0)
        #expect(out.contains("wrote-inside") && out.contains("wrote-tmp"), "\(out)")
        #expect(!out.contains("WROTE-OUTSIDE") && !out.contains("MADE-DIR"), "\(out)")
        #expect(!FileManager.default.fileExists(atPath: outside))
        // Without the layer the same write succeeds: the fence is the profile's doing.
        try g.writePolicy(rule: ["sandbox: none"])
        #expect(try Self.run(g).output.contains("WROTE-OUTSIDE"))
    }

    /// A profile whose layer this machine lacks is refused at decision time, before anything is recorded as
    /// allowed; it is never run as a weaker one. The pipeline is given a probe that stands for such a machine.
    @Test func aProfileThatCannotBeEnforcedIsRefused() throws {
        let g = try Gateway(rule: ["sandbox: strict"])
        var p = try g.pipeline()
        p.missingLayers = { $0 == .strict ? ["bubblewrap (not installed)"] : [] }
        let o = p.decide(g.envelope())
        #expect(o.reason == .internalError)
        #expect(o.exitCode == 2)
        #expect(o.decision.detail.contains("bubblewrap") && o.decision.detail.contains("spawngate doctor"))
        #expect(o.authorized == nil)
        #expect(try g.auditLines().map { $0["decision"] as? String } == ["deny"], "recorded as refused, not allowed")
        // The same request on a machine that has the layer is allowed.
        p.missingLayers = { _ in [] }
        #expect(p.decide(g.envelope()).reason == .allowed)
    }

    /// What each profile needs, for machines lacking one layer at a time.
    @Test func layerRequirementsPerProfile() {
        #expect(SandboxSupport.missing(for: .none, landlockABI: nil, seccomp: false, bubblewrapProblem: "x").isEmpty)
        #expect(SandboxSupport.missing(for: .standard, landlockABI: nil, seccomp: true, bubblewrapProblem: nil).first?.contains("Landlock") == true)
        #expect(SandboxSupport.missing(for: .standard, landlockABI: 3, seccomp: false, bubblewrapProblem: nil).first?.contains("seccomp") == true)
        #expect(SandboxSupport.missing(for: .standard, landlockABI: 3, seccomp: true, bubblewrapProblem: "x").isEmpty)
        #expect(SandboxSupport.missing(for: .strict, landlockABI: nil, seccomp: true, bubblewrapProblem: "no bwrap") == ["no bwrap"])
    }

    @Test func ptraceAndUserNamespacesAreRefused() throws {
        let g = try Gateway(rule: ["sandbox: standard"])
        try g.script("""
            unshare -U true && echo UNSHARE-OK || echo unshare-refused
            python3 -c 'import ctypes; print("PTRACE", ctypes.CDLL(None, use_errno=True).ptrace(0, 0, 0, 0), ctypes.get_errno())'
            """)
        let (_, out) = try Self.run(g)
        #expect(out.contains("unshare-refused"), "\(out)")
        #expect(out.contains("PTRACE -1 1"), "ptrace must fail with EPERM: \(out)")
        try g.writePolicy(rule: ["sandbox: none"])
        let control = try Self.run(g).output
        #expect(control.contains("PTRACE 0 0"), "\(control)")
        if !control.contains("UNSHARE-OK") { print("note: this machine refuses unprivileged user namespaces even unsandboxed") }
    }

    /// The seccomp program's less obvious rules: another architecture's system-call table (`int 0x80`) and the
    /// x32 numbers kill the process, clone3 reports ENOSYS (so libc falls back to clone, whose flags the filter
    /// sees), and packet, VM and raw IP sockets are refused while ordinary TCP still works.
    @Test func foreignSyscallRoutesAndDangerousSocketsAreClosed() throws {
        let g = try Gateway(rule: ["sandbox: standard"])
        let probe = g.app + "/syscall_probe.py"
        try FileManager.default.copyItem(atPath: TestSupport.packageRoot + "/Tests/Probes/syscall_probe.py", toPath: probe)
        try g.script(["int80", "x32", "clone3", "sockets"].map { "python3 \(probe) \($0); echo \"\($0) status $?\"" }.joined(separator: "\n"))
        let (_, out) = try Self.run(g)
        #expect(out.contains("int80 status 159") && !out.contains("INT80"), "killed by SIGSYS: \(out)")
        #expect(out.contains("x32 status 159") && !out.contains("X32"), "killed by SIGSYS: \(out)")
        #expect(out.contains("CLONE3 -1 38"), "ENOSYS: \(out)")
        for family in ["PACKET", "VSOCK", "RAW4", "RAW6"] { #expect(out.contains("\(family) -1 1\n"), "\(family) refused with EPERM: \(out)") }
        #expect(out.contains("TCP ok"), "\(out)")

        // Without the filter each route reaches the kernel (as root the socket families open; elsewhere the
        // kernel's own refusal is not EPERM-by-filter for all of them, so only the routes are compared).
        try g.writePolicy(rule: ["sandbox: none"])
        let control = try Self.run(g).output
        #expect(control.contains("INT80 ") && control.contains("int80 status 0"), "\(control)")
        #expect(control.contains("X32 ") && control.contains("x32 status 0"), "\(control)")
        #expect(!control.contains("CLONE3 -1 38"), "\(control)")
        if getuid() == 0 { #expect(control.contains("PACKET ok") && control.contains("RAW4 ok"), "\(control)") }
    }

    /// no_new_privs: a setuid binary runs with the caller's privileges. (As root, a binary setuid to `nobody`
    /// would otherwise *change* the effective uid, which is just as observable.)
    @Test func setuidBinariesGainNothing() throws {
        let g = try Gateway(rule: ["sandbox: none"])
        let suid = g.dir + "/bin/suid-id"
        try FileManager.default.copyItem(atPath: "/usr/bin/id", toPath: suid)
        chown(suid, 65534, 65534)
        chmod(suid, 0o4755)
        let direct = try TestSupport.run(suid, ["-u"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        try #require(direct != String(getuid()), "setuid bits do not work here (nosuid mount?); nothing to test")
        try g.script("\(suid) -u")
        let (_, out) = try Self.run(g)
        #expect(out.trimmingCharacters(in: .whitespacesAndNewlines) == String(getuid()), "\(out)")
    }

    @Test func descriptorsAndEnvironmentDoNotLeak() throws {
        let g = try Gateway(rule: ["sandbox: standard"], cli: ["env: [POLICY_VAR]"])
        let leaked = open("/etc/hostname", O_RDONLY)  // no O_CLOEXEC: inherited unless the spawner closes it
        defer { close(leaked) }
        try g.script("""
            ls /proc/self/fd | tr '\\n' ' '; echo
            cat /proc/self/environ | tr '\\0' '\\n' | cut -d= -f1 | grep -vx PWD | sort | tr '\\n' ' '; echo
            """)
        let (_, out) = try Self.run(g, environment: ["POLICY_VAR": "v", "SECRET_TOKEN": "s", "LD_PRELOAD": "/x.so", "HOME": "/root"])
        let lines = out.split(separator: "\n").map(String.init)
        #expect(lines.first?.trimmingCharacters(in: .whitespaces) == "0 1 2 3", "only stdio (and ls's own directory fd): \(out)")
        #expect(lines.dropFirst().first?.trimmingCharacters(in: .whitespaces) == "POLICY_VAR TMPDIR", "\(out)")
    }

    @Test func resourceLimitsAreInForce() throws {
        let g = try Gateway(rule: ["sandbox: none", "limits: {open_files: 64, file_size: 1M}"])
        try g.script("ulimit -n; ulimit -c; ulimit -f")
        let (_, out) = try Self.run(g)
        #expect(out.split(separator: "\n") == ["64", "0", "2048"], "\(out)")
    }

    /// The runtime limit kills the whole group, including a grandchild that ignores TERM.
    @Test func maxRuntimeKillsGrandchildrenThatIgnoreTerm() throws {
        let g = try Gateway(rule: ["sandbox: none", "max_runtime: 1s"])
        try g.script("""
            sh -c 'trap "" TERM; exec sleep 30.125' &
            trap "" TERM
            sleep 30
            """)
        let (status, _) = try Self.run(g, grace: 0.3)
        #expect(status == 128 + SIGKILL, "killed after TERM was ignored")
        #expect(TestSupport.gone("sleep 30.125"), "the grandchild is gone")
    }

    /// The approved cwd is a path the decision resolved; if a symlink is swapped in afterwards, the child notices
    /// that it is somewhere else and refuses to exec.
    @Test func cwdSwappedForASymlinkAfterTheDecisionIsRefused() throws {
        let g = try Gateway(rule: ["sandbox: none"])
        let sub = g.app + "/sub"
        try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
        try g.script("echo RAN in $(pwd)")
        let p = try g.pipeline()
        let spawn = try #require(p.decide(g.envelope(g.request(cwd: sub))).authorized)
        try FileManager.default.moveItem(atPath: sub, toPath: sub + "-old")
        try FileManager.default.createSymbolicLink(atPath: sub, withDestinationPath: g.dir + "/bin")
        let error = try #require(throws: GatewayFailure.self) { try LocalSpawner(home: g.vps).start(spawn, output: .logFiles) }
        #expect(error.message.contains("symlink"))
    }
}
