import CSpawn
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A started agent: its process (pid and start time) and where its output goes.
public struct SpawnedAgent: Sendable {
    public let process: ProcessIdentity
    public let name: String
    public let profile: SandboxProfile
    public let layers: [String]
    /// Per-agent log files, when output goes to files.
    public let stdoutLog: String?
    public let stderrLog: String?
    public var pid: Int32 { process.pid }
}

/// Starts an ``AuthorizedSpawn`` (nothing else) as a sandboxed process: cleared environment plus only the policy's
/// variables, the approved absolute path and argv, the approved cwd re-checked in the child, a new session, no
/// inherited descriptors, rlimits, no_new_privs, and for `standard` (and `strict`) Landlock write rules and a
/// seccomp deny-list. See SECURITY.md for what each profile does and does not stop.
public struct LocalSpawner: Sendable {
    public enum Output: Sendable {
        /// The agent shares this process's standard output and error (a broker-owned PTY).
        case inherit
        /// Standard output and error go to `agents/NAME/<request>.out` and `.err` under the home.
        case logFiles
        /// These descriptors (the relay launcher: the broker's PTY, and a pipe it copies to the PTY).
        case descriptors(stdout: Int32, stderr: Int32)
    }

    public let home: Home
    /// The gateway's environment: the only source of the variables the policy passes through.
    public let environment: [String: String]
    /// Variables passed on whatever the policy says, because the start path itself needs them (the relay
    /// launcher: TERM, which the broker sets for its PTY). Never one the environment denylist names.
    public let passThrough: [String]
    /// The agent ends when this process dies (the relay launcher: the broker's worker is the agent). A gateway's
    /// agents otherwise outlive it, to be listed and released by the next one.
    public let diesWithStarter: Bool

    public init(home: Home, environment: [String: String] = ProcessInfo.processInfo.environment, passThrough: [String] = [],
                diesWithStarter: Bool = false) {
        self.home = home
        self.environment = environment
        self.passThrough = passThrough.filter { EnvironmentPolicy.refusal($0) == nil }
        self.diesWithStarter = diesWithStarter
    }

    /// The agent's environment: exactly the policy's variables that are set here, plus its private TMPDIR and
    /// the task variable when the CLI takes its task that way.
    func environment(for spawn: AuthorizedSpawn, tmp: String?) -> [String] {
        var env: [String] = []
        for name in spawn.match.env { if let v = environment[name] { env.append("\(name)=\(v)") } }
        for name in passThrough where !spawn.match.env.contains(name) { if let v = environment[name] { env.append("\(name)=\(v)") } }
        if let tmp { env.append("TMPDIR=\(tmp)") }
        if let t = spawn.match.envTask { env.append("\(t.name)=\(t.value)") }
        return env
    }

    /// Paths the agent may write under `standard`: the cwd, its private tmp, the CLI's own state paths, and the
    /// terminal devices.
    /// (The cwd itself is added by descriptor: see ``openApprovedDirectory(_:)``.)
    func writablePaths(for spawn: AuthorizedSpawn, tmp: String) -> [String] {
        var paths = [tmp, "/dev/null"] + cliWritablePaths(for: spawn)
        if Files.exists("/dev/tty") { paths.append("/dev/tty") }
        return paths
    }

    /// The CLI's `writable:` paths that exist, with `~/` meaning the gateway user's home.
    func cliWritablePaths(for spawn: AuthorizedSpawn) -> [String] {
        let userHome = environment["HOME"] ?? "/root"
        return spawn.match.cli.writable
            .map { $0.hasPrefix("~/") ? userHome + String($0.dropFirst(1)) : $0 }
            .filter { Files.exists($0) }
    }

    /// Starts `spawn` in its sandbox here, its output as `output` says, its standard input `stdinFD` (or /dev/null).
    public func start(_ spawn: AuthorizedSpawn, output: Output, stdin stdinFD: Int32? = nil) throws(GatewayFailure) -> SpawnedAgent {
        let prepared = try prepare(spawn)
        var opened: [Int32] = []
        defer { for fd in opened { close(fd) } }
        func openFD(_ path: String, _ flags: Int32) throws(GatewayFailure) -> Int32 {
            let fd = open(path, flags | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else { throw GatewayFailure("cannot open \(path): \(errnoText())") }
            opened.append(fd)
            return fd
        }
        let inFD: Int32
        if let stdinFD { inFD = stdinFD } else { inFD = try openFD("/dev/null", O_RDONLY) }
        var outLog: String?, errLog: String?
        let outFD: Int32, errFD: Int32
        switch output {
        case .inherit:
            outFD = try dupFD(1, &opened)
            errFD = try dupFD(2, &opened)
        case .descriptors(let out, let err):
            outFD = try dupFD(out, &opened)
            errFD = try dupFD(err, &opened)
        case .logFiles:
            outLog = prepared.agentDir + "/\(prepared.tag).out"
            errLog = prepared.agentDir + "/\(prepared.tag).err"
            outFD = try openFD(outLog!, O_WRONLY | O_CREAT | O_APPEND)
            errFD = try openFD(errLog!, O_WRONLY | O_CREAT | O_APPEND)
        }
        var pid: pid_t = 0, stage: Int32 = 0, err: Int32 = 0
        let rc = prepared.withSpec(stdin: inFD, stdout: outFD, stderr: errFD, diesWithStarter: diesWithStarter) { cspawn_start(&$0, &pid, &stage, &err) }
        guard rc == 0 else { throw GatewayFailure(Self.explain(stage: stage, errno: err, spawn: spawn)) }
        return prepared.agent(pid: pid, stdoutLog: outLog, stderrLog: errLog)
    }

    /// Everything a start of `spawn` needs but its standard input and output, made and checked here: the agent's
    /// directories, the approved cwd opened without following symlinks, the Landlock ruleset, the seccomp
    /// program, bubblewrap's arguments, the environment and the limits. ``start(_:output:stdin:)`` runs it in this
    /// process; the relay launcher runs it in a broker's worker (``AgentService/startRelayWorker``), so the
    /// sandbox is made here in full either way, and the launcher only carries it out.
    public func prepare(_ spawn: AuthorizedSpawn) throws(GatewayFailure) -> PreparedStart {
        // The pipeline has refused any profile this machine cannot enforce before authorizing this spawn.
        let profile = spawn.match.rule.sandbox
        let name = spawn.request.request.name
        do { try Home.validateBrokerName(name) } catch {
            throw GatewayFailure("agent name '\(name)' cannot name a log directory: \(error.message)")
        }
        let agentDir = home.root + "/agents/" + name
        let tag = String(spawn.request.requestID.prefix(16))
        let tmp = agentDir + "/tmp-" + tag
        do {
            try Files.makeDirectory(home.root + "/agents", mode: 0o700)
            try Files.makeDirectory(agentDir, mode: 0o700)
            try Files.makeDirectory(tmp, mode: 0o700)
        } catch { throw GatewayFailure(error.message) }

        // Every descriptor opened here is the prepared start's once it exists; until then, closed on a failure.
        var opened: [Int32] = []
        var done = false
        defer { if !done { for fd in opened { close(fd) } } }
        // The approved cwd, opened once without following a symlink anywhere on its path: the Landlock rule, the
        // chdir, bwrap's bind and the check are all this one directory, whatever its path is renamed to later.
        let cwdFD = try Self.openApprovedDirectory(spawn.match.cwd)
        opened.append(cwdFD)
        var filter: [UInt8] = []
        if profile != .none {
            var program: UnsafeMutableRawPointer?
            let n = cspawn_seccomp_standard(&program)
            defer { free(program) }
            guard n > 0, let program else { throw GatewayFailure("cannot build the seccomp filter: \(errnoText())") }
            filter = Array(UnsafeRawBufferPointer(start: program, count: Int(n) * 8))
        }
        var landlockFD: Int32 = -1
        if profile == .standard {
            let paths = writablePaths(for: spawn, tmp: tmp)
            var bad: Int32 = -1
            landlockFD = withCStrings(paths) { ptrs in
                ptrs.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: paths.count + 1) {
                    cspawn_landlock_ruleset(cwdFD, $0, Int32(paths.count), &bad)
                }
            }
            guard landlockFD >= 0 else {
                let which = bad >= 0 && Int(bad) < paths.count ? " for \(paths[Int(bad)])" : (bad >= 0 ? " for \(spawn.match.cwd)" : "")
                throw GatewayFailure("cannot build the Landlock ruleset\(which): \(errnoText())")
            }
            opened.append(landlockFD)
        }

        // `strict`: the shim execs bwrap, which makes the namespaces, loads the same seccomp program (passed as a
        // pipe on fd 3) and then execs the agent; the cwd goes to bwrap as fd 4.
        var program = spawn.match.argv[0]
        var argv = spawn.match.argv
        var passFDs: [Int32] = []
        var cwdSlot: Int32 = -1
        if profile == .strict {
            guard let bwrap = SandboxSupport.bubblewrapPath else { throw GatewayFailure("bubblewrap is not installed") }
            let pipeFD = filter.withUnsafeBytes { b in b.withMemoryRebound(to: CChar.self) { cspawn_task_pipe($0.baseAddress!, $0.count) } }
            guard pipeFD >= 0 else { throw GatewayFailure("cannot pass the seccomp filter to bubblewrap: \(errnoText())") }
            opened.append(pipeFD)
            passFDs = [pipeFD]
            let options = try Bubblewrap.arguments(
                program: spawn.match.argv[0], cwd: spawn.match.cwd, tmp: tmp, gatewayHome: home.root,
                writable: cliWritablePaths(for: spawn),
                protected: spawn.match.cli.protected, network: spawn.match.rule.network,
                home: environment["HOME"], environment: environment)
            program = bwrap
            argv = [bwrap] + options + spawn.match.argv
            cwdSlot = Int32(Bubblewrap.cwdFD)
            filter = []
        }
        done = true
        return PreparedStart(
            spawn: spawn, agentDir: agentDir, tag: tag, cwdFD: cwdFD, landlockFD: landlockFD, passFDs: passFDs,
            program: program, argv: argv,
            environment: environment(for: spawn, tmp: profile == .none ? nil : (profile == .strict ? "/tmp" : tmp)),
            filter: filter, limits: Self.rlimits(spawn.match.rule.limits), cwdSlot: cwdSlot,
            // Root under `standard` gives up every capability (strict's bwrap drops its own).
            dropCaps: profile == .standard && geteuid() == 0, newUserns: geteuid() != 0)
    }

    /// Opens `path` (the decision's canonical cwd) as an O_PATH directory descriptor without following any
    /// symlink, and checks that the kernel names it by that same path. A component swapped for a symlink since
    /// the decision is refused (ELOOP), never followed.
    static func openApprovedDirectory(_ path: String) throws(GatewayFailure) -> Int32 {
        let fd = cspawn_open_dir(path)
        guard fd >= 0 else {
            let e = errno
            let why = e == ELOOP ? "a component of it is now a symlink (it was swapped after the decision)" : String(cString: strerror(e))
            throw GatewayFailure("cannot open the approved working directory \(path): \(why); refusing to start")
        }
        #if os(Linux)
        let named = Files.readLink("/proc/self/fd/\(fd)") ?? ""
        guard named == path else {
            close(fd)
            throw GatewayFailure("the approved working directory \(path) is now \(named.isEmpty ? "unnamed" : named) (it was moved after the decision); refusing to start")
        }
        #endif
        return fd
    }

    /// A descriptor from which the agent reads its task (CLIs with `task: stdin`).
    public static func taskInput(_ task: String) throws(GatewayFailure) -> Int32 {
        let bytes = Array(task.utf8)
        let fd = bytes.withUnsafeBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: max(b.count, 1)) { cspawn_task_pipe($0, b.count) }
        }
        guard fd >= 0 else { throw GatewayFailure("cannot pass the task on standard input: \(errnoText())") }
        return fd
    }

    private func dupFD(_ fd: Int32, _ opened: inout [Int32]) throws(GatewayFailure) -> Int32 {
        let d = fcntl(fd, F_DUPFD_CLOEXEC, 3)
        guard d >= 0 else { throw GatewayFailure("cannot pass standard output to the agent: \(errnoText())") }
        opened.append(d)
        return d
    }

    static func rlimits(_ l: ResourceLimits) -> [cspawn_rlimit] {
        var out: [cspawn_rlimit] = []
        func add(_ r: Int, _ v: Int64?) { if let v { out.append(cspawn_rlimit(resource: Int32(r), value: UInt64(v))) } }
        add(CSPAWN_RLIMIT_CPU, l.cpuSeconds)
        add(CSPAWN_RLIMIT_AS, l.memoryBytes)
        add(CSPAWN_RLIMIT_NOFILE, l.openFiles)
        add(CSPAWN_RLIMIT_NPROC, l.processes)
        add(CSPAWN_RLIMIT_FSIZE, l.fileSizeBytes)
        // No core dumps: they would write the agent's memory (API keys) to disk.
        out.append(cspawn_rlimit(resource: Int32(CSPAWN_RLIMIT_CORE), value: 0))
        return out
    }

    static func explain(stage: Int32, errno e: Int32, spawn: AuthorizedSpawn) -> String {
        let why = String(cString: strerror(e))
        switch UInt32(stage) {
        case CSPAWN_CHDIR.rawValue: return "cannot enter the approved working directory \(spawn.match.cwd): \(why)"
        case CSPAWN_CWD_CHANGED.rawValue:
            return "the approved working directory \(spawn.match.cwd) no longer resolves to itself (a symlink was swapped in after the decision); refusing to start"
        case CSPAWN_EXEC.rawValue:
            let program = spawn.match.rule.sandbox == .strict ? (SandboxSupport.bubblewrapPath ?? "bwrap") : spawn.match.argv[0]
            return "cannot execute \(program): \(why)"
        case CSPAWN_LANDLOCK.rawValue: return "cannot enforce Landlock: \(why)"
        case CSPAWN_SECCOMP.rawValue: return "cannot install the seccomp filter: \(why)"
        case CSPAWN_RLIMIT.rawValue: return "cannot set a resource limit: \(why)"
        case CSPAWN_NO_NEW_PRIVS.rawValue: return "cannot set no_new_privs: \(why)"
        case CSPAWN_FORK.rawValue: return "cannot fork: \(why)"
        case CSPAWN_NAMESPACE.rawValue: return "cannot give the agent a pid namespace of its own: \(why); \(SandboxSupport.containmentFix)"
        case CSPAWN_CAPS.rawValue: return "cannot drop the agent's capabilities: \(why)"
        case CSPAWN_INIT.rawValue:
            let dir = ((Files.readLink("/proc/self/exe") ?? "?") as NSString).deletingLastPathComponent
            return "cannot run spawngate-init, the agents' init, from \(dir): \(why); install it next to this program ('make install' puts them together)"
        default: return "the agent could not be started (stage \(stage)): \(why)"
        }
    }
}

/// A start made ready by ``LocalSpawner/prepare(_:)``: it owns the descriptors it opened, closed with it.
public final class PreparedStart: Sendable {
    public let spawn: AuthorizedSpawn
    let agentDir: String
    let tag: String
    /// The approved directory (O_PATH), the Landlock ruleset or -1, and what the program inherits at 3, 4, ….
    public let cwdFD: Int32
    public let landlockFD: Int32
    public let passFDs: [Int32]
    public let program: String
    public let argv: [String]
    public let environment: [String]
    /// The seccomp program (8 bytes an instruction), or empty.
    public let filter: [UInt8]
    public let limits: [cspawn_rlimit]
    /// Where bwrap finds the cwd descriptor, or -1.
    public let cwdSlot: Int32
    public let dropCaps: Bool
    public let newUserns: Bool

    init(spawn: AuthorizedSpawn, agentDir: String, tag: String, cwdFD: Int32, landlockFD: Int32, passFDs: [Int32],
         program: String, argv: [String], environment: [String], filter: [UInt8], limits: [cspawn_rlimit], cwdSlot: Int32,
         dropCaps: Bool, newUserns: Bool) {
        self.spawn = spawn; self.agentDir = agentDir; self.tag = tag
        self.cwdFD = cwdFD; self.landlockFD = landlockFD; self.passFDs = passFDs
        self.program = program; self.argv = argv; self.environment = environment
        self.filter = filter; self.limits = limits; self.cwdSlot = cwdSlot
        self.dropCaps = dropCaps; self.newUserns = newUserns
    }

    deinit {
        close(cwdFD)
        if landlockFD >= 0 { close(landlockFD) }
        for fd in passFDs { close(fd) }
    }

    /// Calls `body` with the C spec of this start, its stdio set.
    func withSpec<R>(stdin: Int32, stdout: Int32, stderr: Int32, diesWithStarter: Bool, _ body: (inout cspawn_spec) -> R) -> R {
        withCStrings(argv) { argvPtrs in
            withCStrings(environment) { envPtrs in
                limits.withUnsafeBufferPointer { lim in
                    passFDs.withUnsafeBufferPointer { pass in
                        filter.withUnsafeBytes { f in
                            var spec = cspawn_spec()
                            spec.stdin_fd = stdin; spec.stdout_fd = stdout; spec.stderr_fd = stderr
                            spec.rlimits = lim.baseAddress; spec.n_rlimits = Int32(lim.count)
                            spec.landlock_fd = landlockFD
                            spec.filter = f.isEmpty ? nil : f.baseAddress; spec.filter_len = UInt16(f.count / 8)
                            spec.pass_fds = pass.baseAddress; spec.n_pass = Int32(pass.count)
                            spec.cwd_fd_slot = cwdSlot
                            spec.cwd_fd = cwdFD
                            spec.drop_caps = dropCaps ? 1 : 0
                            spec.new_userns = newUserns ? 1 : 0
                            spec.die_with_parent = diesWithStarter ? 1 : 0
                            return program.withCString { path in
                                spawn.match.cwd.withCString { cwd in
                                    spec.path = path; spec.cwd = cwd
                                    spec.argv = UnsafePointer(argvPtrs); spec.envp = UnsafePointer(envPtrs)
                                    return body(&spec)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The agent this start became, as process `pid`.
    public func agent(pid: Int32, stdoutLog: String? = nil, stderrLog: String? = nil) -> SpawnedAgent {
        // The child is in its own session; its start time makes the identity safe against pid reuse.
        let identity = ProcessIdentity.of(pid: pid) ?? ProcessIdentity(pid: pid, startTime: 0)
        let profile = spawn.match.rule.sandbox
        return SpawnedAgent(process: identity, name: spawn.request.request.name, profile: profile,
                            layers: SandboxSupport.layers(for: profile, network: spawn.match.rule.network),
                            stdoutLog: stdoutLog, stderrLog: stderrLog)
    }
}

/// NULL-terminated C string arrays for the duration of `body`.
func withCStrings<R>(_ strings: [String], _ body: (UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    var ptrs: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) } + [nil]
    defer { for p in ptrs { free(p) } }
    return ptrs.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
}
