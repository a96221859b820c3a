import Foundation
import SpawnGate

/// `make bench`: side-by-side measurements in one run, printed as a table and written to bench/results.md.
/// Ratios are the point; absolute times depend on the machine (recorded with the results).
@main
struct Bench {
    /// A line for the targets section: the issue's target, what was measured, and whether it was met.
    /// `where` says, for a target not met, where the time goes, from figures measured in this same run.
    static func target(_ what: String, measured: String, met: Bool, where breakdown: String? = nil) -> (String, String) {
        ("TARGET:" + what, "\(measured): \(met ? "met" : "**not met**")" + (met ? "" : breakdown.map { Self.whereMark + $0 } ?? ""))
    }
    /// Separates a target's result from its breakdown inside a row (a control character no text contains).
    static let whereMark = "\u{1F}"

    /// A policy whose only CLI is /usr/bin/true: what is measured is getting an agent started, not what it does.
    static func truePolicy(_ rules: [String]) -> String {
        "version: 1\naccept_remote_spawn: true\nclis:\n  true: {path: /usr/bin/true, args: [[]]}\nrules:\n"
            + rules.map { "  - \($0)\n" }.joined()
    }

    /// An allow rule for mac-laptop to start `true` in `cwd`, with limits no benchmark reaches.
    static func trueRule(_ name: String, cwd: String, sandbox: SandboxProfile) -> String {
        "{name: \(name), brokers: [mac-laptop], clis: [true], cwd: [\(cwd)], sandbox: \(sandbox.rawValue), rate: 100000/second, burst: 100000}"
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Median of `rounds` rounds, each timing `batch` calls, in nanoseconds per call.
    static func measure(rounds: Int = 31, batch: Int, _ body: (Int) -> Void) -> Double {
        var samples: [Double] = []
        var i = 0
        for _ in 0..<3 { for _ in 0..<batch { body(i); i += 1 } }  // warm-up
        for _ in 0..<rounds {
            let t0 = now()
            for _ in 0..<batch { body(i); i += 1 }
            samples.append(Double(now() - t0) / Double(batch))
        }
        samples.sort()
        return samples[samples.count / 2]
    }

    /// A policy of `rules` allow rules spread over `brokers` brokers, plus a few wildcard deny rules.
    static func bigPolicy(rules: Int, brokers: Int) -> String {
        var y = "version: 1\naccept_remote_spawn: true\nclis:\n"
        for c in ["claude", "codex", "gemini"] { y += "  \(c):\n    path: /usr/local/bin/\(c)\n    args: [[], [\"--model\", \"sonnet|opus\"], [\"--resume\", \"*\"]]\n    deny_args: [\"--dangerously-skip-permissions\"]\n" }
        y += "rules:\n"
        for d in 0..<5 { y += "  - {name: deny-\(d), effect: deny, brokers: [\"*\"], cwd: [/forbidden\(d)/**]}\n" }
        for i in 0..<rules {
            y += "  - {name: r\(i), brokers: [b\(i % brokers)], clis: [\(["claude", "codex", "gemini"][i % 3])], cwd: [/w/b\(i % brokers)/p\(i)/**], rate: 20/hour, max_concurrent: 3}\n"
        }
        return y
    }

    /// Starting an agent: plain posix_spawn of /usr/bin/true vs the spawner under each profile. Decisions are made
    /// beforehand (this times only start and wait), and it runs first, while this process is small: fork(2) copies
    /// the page tables, so a bench process holding 10,000-rule policies would charge the spawner for them.
    static func agentStarts(_ row: (String, String) -> Void) throws {
        let dir = NSTemporaryDirectory() + "spawngate-bench-spawn-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let home = dir + "/home"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        _ = try Home.initialize(at: home, name: "vps-broker")
        let laptop = SigningKey.generate()
        try Home(root: home).keyStore.enroll(name: "mac-laptop", key: laptop.publicKey, expected: laptop.publicKey.fingerprint)
        try FileManager.default.createDirectory(atPath: dir + "/srv/app", withIntermediateDirectories: true)
        let realApp = try PathResolver.filesystem.resolve(dir + "/srv/app").get()
        var profileApps: [SandboxProfile: String] = [:]
        var profileRules: [String] = []
        for profile in [SandboxProfile.none, .standard, .strict] {
            let d = realApp + "/" + profile.rawValue
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
            profileApps[profile] = d
            profileRules.append(trueRule("p-\(profile.rawValue)", cwd: d, sandbox: profile))
        }
        try truePolicy(profileRules).write(toFile: home + "/policy/policy.yaml", atomically: true, encoding: .utf8)
        let spawnPipeline = try DecisionPipeline.open(home: Home(root: home))
        let spawner = LocalSpawner(home: Home(root: home), environment: [:])
        let plainNs = measure(rounds: 21, batch: 20) { _ in
            var pid: pid_t = 0
            var argv: [UnsafeMutablePointer<CChar>?] = [strdup("/usr/bin/true"), strdup("--"), strdup("Implement the plan"), nil]
            defer { for a in argv { free(a) } }
            guard posix_spawn(&pid, "/usr/bin/true", nil, nil, &argv, nil) == 0 else { fatalError("posix_spawn failed") }
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        row("start an agent: plain posix_spawn + wait of /usr/bin/true", String(format: "%.2f ms", plainNs / 1e6))
        for profile in [SandboxProfile.none, .standard, .strict] {
            if !SandboxSupport.missing(for: profile).isEmpty {
                row("start an agent under `\(profile.rawValue)`", "not measured: \(SandboxSupport.missing(for: profile).joined(separator: "; "))")
                continue
            }
            let t = SystemClock().now()
            let spawns: [AuthorizedSpawn] = (0..<(24 * 20)).map { _ in
                let e = Envelope.seal(SpawnRequest(name: "bench", cli: "true", task: "Implement the plan", cwd: profileApps[profile]!,
                                                   from: "mac-laptop", to: "vps-broker", iat: t, exp: t + 60).encoded(), with: laptop, domain: .request)
                guard let a = spawnPipeline.decide(e).authorized else { fatalError("profile benchmark request denied") }
                return a
            }
            var k = 0
            let ns = measure(rounds: 21, batch: 20) { _ in
                let agent = try! spawner.start(spawns[k], output: .inherit)
                k += 1
                guard Supervisor.wait(agent, maxRuntime: nil) == 0 else { fatalError("the agent failed under \(profile.rawValue)") }
            }
            row("start an agent under `\(profile.rawValue)`", String(format: "%.2f ms (+%.2f ms, %.1f× plain)", ns / 1e6, (ns - plainNs) / 1e6, ns / plainNs))
        }

    }

    static func main() throws {
        var rows: [(String, String)] = []
        var sections: [String] = []
        func row(_ name: String, _ value: String) {
            rows.append((name, value))
            print("\(name): \(value.replacingOccurrences(of: whereMark, with: "; where the time goes: "))")
            fflush(nil)
        }
        func section(_ markdown: String) { sections.append(markdown); print(markdown); fflush(nil) }
        let exe = CommandLine.arguments.count > 2 ? CommandLine.arguments[2] : nil
        // SPAWNGATE_BENCH_ONLY=daemon,remote,… runs some parts (for profiling); results.md comes from a whole run.
        let only = ProcessInfo.processInfo.environment["SPAWNGATE_BENCH_ONLY"].map { Set($0.split(separator: ",").map(String.init)) }
        func runs(_ part: String) -> Bool { only?.contains(part) ?? true }
        if runs("starts") { try agentStarts(row) }
        if runs("memory") { try agentMemory(section) }
        if let exe {
            if runs("remote") { try remoteVersusSSH(exe: exe, row, section) }
            if runs("daemon") { try daemonCurve(exe: exe, row, section) }
        }
        guard runs("decision") else { return }

        // Profiling one path (SPAWNGATE_BENCH_PROFILE, below) skips the policy-size measurements.
        let profiling = ProcessInfo.processInfo.environment["SPAWNGATE_BENCH_PROFILE"] != nil
        if !profiling {
            // 1. Policy evaluation at 10,000 rules / 1,000 brokers (lexical paths: the engine alone).
            let text = bigPolicy(rules: 10_000, brokers: 1_000)
            let t0 = now()
            let policy = try PolicyLoader.parse(text, file: "bench.yaml").get()
            let loadMs = Double(now() - t0) / 1e6
            let engine = PolicyEngine(policy: policy, resolver: .lexical)
            let requests: [PolicyRequest] = (0..<1000).map { k in
                let i = (k * 7919) % 10_000
                return PolicyRequest(broker: "b\(i % 1000)", cli: ["claude", "codex", "gemini"][i % 3], cwd: "/w/b\(i % 1000)/p\(i)/src", args: ["--model", "opus"])
            }
            var allowed = 0
            let evalNs = measure(batch: 1000) { k in if case .allow = engine.evaluate(requests[k % 1000]) { allowed += 1 } }
            precondition(allowed > 0, "benchmark requests must be allowed, or it measures the wrong path")
            let denyNs = measure(batch: 1000) { k in
                _ = engine.evaluate(PolicyRequest(broker: "b\(k % 1000)", cli: "claude", cwd: "/nowhere/\(k % 10)"))
            }
            row("policy load, 10,000 rules / 1,000 brokers", String(format: "%.0f ms", loadMs))
            row("policy evaluation, allow (median per decision)", String(format: "%.2f µs", evalNs / 1000))
            row("policy evaluation, deny after scanning a broker's rules", String(format: "%.2f µs", denyNs / 1000))
        }

        // 2. The same with real path canonicalization (realpath on an existing directory).
        let dir = NSTemporaryDirectory() + "spawngate-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir + "/w/app/src", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let realDir = try PathResolver.filesystem.resolve(dir).get()
        if !profiling {
            let fsPolicy = try PolicyLoader.parse(bigPolicy(rules: 10_000, brokers: 1_000) + "  - {name: real, brokers: [b7], clis: [claude], cwd: [\(realDir)/w/app/**]}\n", file: "b.yaml").get()
            let fsEngine = PolicyEngine(policy: fsPolicy, resolver: .filesystem)
            let fsReq = PolicyRequest(broker: "b7", cli: "claude", cwd: realDir + "/w/app/src", args: [])
            guard case .allow = fsEngine.evaluate(fsReq) else { fatalError("filesystem benchmark request was denied") }
            let fsNs = measure(batch: 1000) { _ in _ = fsEngine.evaluate(fsReq) }
            row("policy evaluation with realpath(3) of the cwd", String(format: "%.2f µs", fsNs / 1000))
        }

        // 3. Raw libsodium verify vs our verification (parse envelope, key lookup on disk, verify, parse payload).
        let home = dir + "/home"
        let vps = try Home.initialize(at: home, name: "vps-broker")
        _ = vps
        let laptop = SigningKey.generate()
        try Home(root: home).keyStore.enroll(name: "mac-laptop", key: laptop.publicKey, expected: laptop.publicKey.fingerprint)
        let request = SpawnRequest(name: "coder", cli: "claude", task: "Implement the plan", cwd: "/srv/app",
                                   from: "mac-laptop", to: "vps-broker", iat: 1_800_000_000, exp: 1_800_000_060)
        let payload = request.encoded()
        let sig = laptop.sign(payload, domain: .request)
        let verifyNs = measure(rounds: 15, batch: 500) { _ in
            precondition(laptop.publicKey.isValidSignature(sig, domain: .request, message: payload))
        }
        let envelope = Envelope.seal(payload, with: laptop, domain: .request)
        let verifier = RequestVerifier(audience: "vps-broker", keys: Home(root: home).keyStore, clock: FixedClock(1_800_000_010))
        let fullNs = measure(rounds: 15, batch: 500) { _ in
            guard case .verified = try! verifier.verify(envelope) else { fatalError("benchmark envelope refused") }
        }
        // serve's key store: parsed keys kept, each lookup re-checks the files with stat(2).
        let cachedVerifier = RequestVerifier(audience: "vps-broker", keys: KeyStore(home: Home(root: home), cached: true), clock: FixedClock(1_800_000_010))
        let cachedNs = measure(rounds: 15, batch: 500) { _ in
            guard case .verified = try! cachedVerifier.verify(envelope) else { fatalError("benchmark envelope refused") }
        }
        row("libsodium verify (raw, domain-prefixed message)", String(format: "%.1f µs", verifyNs / 1000))
        row("request verification, key files read and parsed each time (`check`)", String(format: "%.1f µs (%.2f× raw verify)", fullNs / 1000, fullNs / verifyNs))
        row("request verification, cached key store (`serve`)", String(format: "%.1f µs (%.2f× raw verify)", cachedNs / 1000, cachedNs / verifyNs))

        // 4. The whole decision pipeline on a real home: verify, policy (realpath), binary check, then the state
        // transaction. Dry run reads the state store only; a durable decision also fsyncs the audit line and commits.
        let app = dir + "/srv/app", bin = dir + "/bin"
        try FileManager.default.createDirectory(atPath: app, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        try "#!/bin/sh\nexit 0\n".write(toFile: bin + "/claude", atomically: true, encoding: .utf8)
        chmod(bin + "/claude", 0o755)
        let realApp = try PathResolver.filesystem.resolve(app).get()
        let policyText = """
            version: 1
            accept_remote_spawn: true
            clis:
              claude: {path: \(try PathResolver.filesystem.resolve(bin).get())/claude, args: [[]]}
            rules:
              - {name: laptop-app, brokers: [mac-laptop], clis: [claude], cwd: [\(realApp)/**], rate: 100000/second, burst: 100000}
            """
        try policyText.write(toFile: home + "/policy/policy.yaml", atomically: true, encoding: .utf8)
        chmod(home + "/policy/policy.yaml", 0o600)
        // The real clock: the `spawngate check` processes below share this state store and have no other.
        // The key store is serve's (cached); `check` reads the files, as measured above.
        let opened = try DecisionPipeline.open(home: Home(root: home))
        let pipeline = DecisionPipeline(audience: "vps-broker", keys: KeyStore(home: Home(root: home), cached: true), policy: opened.policy,
                                        state: opened.state, audit: opened.audit)
        func fresh(_ n: Int) -> [[UInt8]] {
            let t = SystemClock().now()
            return (0..<n).map { _ in
                Envelope.seal(SpawnRequest(name: "coder", cli: "claude", task: "Implement the plan", cwd: realApp, from: "mac-laptop",
                                           to: "vps-broker", iat: t, exp: t + 60).encoded(), with: laptop, domain: .request)
            }
        }
        let dryEnvelopes = fresh(1)
        switch ProcessInfo.processInfo.environment["SPAWNGATE_BENCH_PROFILE"] {
        case "decision"?:
            // For `perf record`: dry-run decisions and nothing else, for 5 seconds.
            let end = now() + 5_000_000_000
            while now() < end { _ = pipeline.decide(dryEnvelopes[0], mode: .dryRun) }
            return
        case "read"?:
            // For `perf record`: the dry run's state read alone, for 5 seconds.
            let p = pipeline.prepare(dryEnvelopes[0], mode: .dryRun)
            let end = now() + 5_000_000_000
            while now() < end { _ = pipeline.commit([p]) }
            return
        case "group"?:
            // For `perf record`: groups of 64 durable decisions, 100 groups.
            for _ in 0..<100 { _ = pipeline.commit(fresh(64).map { pipeline.prepare($0) }) }
            return
        default: break
        }
        let dryNs = measure(rounds: 15, batch: 500) { _ in
            guard pipeline.decide(dryEnvelopes[0], mode: .dryRun).decision.allowed else { fatalError("benchmark request denied") }
        }
        let durableEnvelopes = fresh((15 + 3) * 100)  // rounds plus the 3 warm-up batches
        var next = 0
        let durableNs = measure(rounds: 15, batch: 100) { _ in
            let d = pipeline.decide(durableEnvelopes[next]).decision
            next += 1
            guard d.allowed else { fatalError("benchmark request denied: \(d.detail)") }
        }
        // Group commit in one process: 64 decisions prepared, then recorded in one transaction with one audit write.
        let group = 64
        let grouped = fresh((15 + 3) * 4 * group)
        var g = 0
        let groupNs = measure(rounds: 15, batch: 4) { _ in
            let outcomes = pipeline.commit(grouped[g..<(g + group)].map { pipeline.prepare($0) })
            g += group
            guard outcomes.allSatisfy(\.decision.allowed) else { fatalError("benchmark request denied in a group") }
        } / Double(group)
        // The dry run in parts, each measured on its own: `prepare` is the decision up to the state store (verify,
        // policy with realpath, binary and sandbox checks); the state read is the same dry run, prepared once, read
        // against the state store (`commit` of a dry run reads and writes nothing).
        let prepareNs = measure(rounds: 15, batch: 500) { _ in _ = pipeline.prepare(dryEnvelopes[0], mode: .dryRun) }
        let preparedDry = pipeline.prepare(dryEnvelopes[0], mode: .dryRun)
        let readNs = measure(rounds: 15, batch: 500) { _ in
            guard pipeline.commit([preparedDry])[0].decision.allowed else { fatalError("benchmark request denied") }
        }
        row("whole decision, dry run (verify, policy with realpath, binary check, state read)", String(format: "%.1f µs (%.2f× raw verify)", dryNs / 1000, dryNs / verifyNs))
        row("the decision without its state read (`prepare`: verify, policy with realpath, binary and sandbox checks)",
            String(format: "%.1f µs (%.2f× raw verify)", prepareNs / 1000, prepareNs / verifyNs))
        row("the dry run's state read alone (a prepared dry run read against the state store: one rolled-back read transaction)",
            String(format: "%.1f µs", readNs / 1000))
        let (t1, m1) = target("whole in-process decision ≤ 1.3× raw libsodium verify, without durability",
                              measured: String(format: "%.2f× (dry run, serve's cached keys)", dryNs / verifyNs), met: dryNs / verifyNs <= 1.3,
                              where: String(format: "of the dry run's %.1f µs, each part measured on its own: raw verify %.1f µs; the rest of verification "
                                            + "(envelope and payload parse, the key store's stat of its files) %.1f µs; policy with realpath, the binary's "
                                            + "and the sandbox's checks %.1f µs; the state read (one SQLite read transaction) %.1f µs; the parts "
                                            + "measured apart sum to %.1f µs. 1.3× would leave %.1f µs for all but the verify",
                                            dryNs / 1000, verifyNs / 1000, (cachedNs - verifyNs) / 1000, (prepareNs - cachedNs) / 1000,
                                            readNs / 1000, (prepareNs + readNs) / 1000, verifyNs * 0.3 / 1000))
        row(t1, m1)
        row("whole decision, durable, one at a time (audit append + fsync, state commit + fsync each)", String(format: "%.2f ms (%.0f decisions/s)", durableNs / 1e6, 1e9 / durableNs))
        row("whole decision, durable, group commit of \(group) (one transaction, one audit write, 2 fsyncs per group), per decision",
            String(format: "%.1f µs (%.2f× raw verify; %.0f decisions/s on one core)", groupNs / 1000, groupNs / verifyNs, 1e9 / groupNs))

        // 5. `spawngate check` as a fresh process per request: the hook path.
        if let exe {
            let files: [String] = try fresh(31).enumerated().map { i, e in
                let f = dir + "/req\(i).json"
                try Data(e).write(to: URL(fileURLWithPath: f))
                return f
            }
            var times: [Double] = [], floor: [Double] = [], version: [Double] = [], opened: [Double] = []
            // The floor (issue 27): a static binary that does nothing, started and waited for the same way,
            // interleaved. Built here with the C compiler, as `true` is dynamic on Debian.
            let staticTrue = dir + "/static-true"
            let built = Proc.run(["/bin/sh", "-c", "printf 'int main(void){return 0;}' | cc -static -O2 -x c - -o '\(staticTrue)'"]).status == 0
            for f in files {
                let r = Proc.run([exe, "check", "--home", home, f])
                guard r.status == 0 else { fatalError("spawngate check denied the benchmark request (status \(r.status))") }
                times.append(r.ns)
                if built { floor.append(Proc.run([staticTrue]).ns) }
                // The same binary parsing a command and stopping at once (a home that does not exist): the process's,
                // the Swift runtime's and the libraries' start, and argument parsing.
                version.append(Proc.run([exe, "verify", "--home", dir + "/no-such-home", "/dev/null"]).ns)
                // The same `check` given a request file that does not exist: it starts, opens the home (name, policy,
                // key store, state store) and stops at reading the request, so the decision is what `check` adds to it.
                let o = Proc.run([exe, "check", "--home", home, dir + "/no-such-request.json"])
                guard o.status == 2 else { fatalError("spawngate check with a missing request file exited \(o.status), not 2") }
                opened.append(o.ns)
            }
            times.sort(); floor.sort(); version.sort(); opened.sort()
            row("`spawngate check` as a fresh process (the hook path), durable", String(format: "%.1f ms", times[times.count / 2] / 1e6))
            row("the floor: a static binary that does nothing, started and waited for the same way",
                built ? String(format: "%.2f ms (check is %.0f× it)", floor[floor.count / 2] / 1e6, times[times.count / 2] / floor[floor.count / 2])
                      : "not measured: no C compiler (cc) to build it")
            let (t, m) = target("`spawngate check` as a fresh process ≤ 15 ms median", measured: String(format: "%.1f ms", times[times.count / 2] / 1e6),
                                met: times[times.count / 2] <= 15e6)
            row(t, m)
            let checkNs = times[times.count / 2], versionNs = version[version.count / 2], floorNs = built ? floor[floor.count / 2] : 0
            let openedNs = opened[opened.count / 2]
            row("a fresh `spawngate` that parses its command and stops (`verify` with a home that does not exist), interleaved", String(format: "%.1f ms", versionNs / 1e6))
            row("a fresh `spawngate check` that opens the home and stops (a request file that does not exist), interleaved", String(format: "%.1f ms", openedNs / 1e6))
            let (t5, m5) = target("`spawngate check` as a fresh process ≤ 5 ms median (the next step)", measured: String(format: "%.1f ms", checkNs / 1e6),
                                  met: checkNs <= 5e6,
                                  where: String(format: "of %.1f ms, each step a fresh process of its own, interleaved: starting a process that does "
                                                + "nothing %.2f ms (the floor); the Swift runtime, dynamic loading and relocation, Foundation's start and "
                                                + "argument parsing (a `spawngate verify` that stops at once, less the floor) %.1f ms; opening the home (this "
                                                + "broker's name, the policy's parse, SQLite's open and schema check, less that) %.1f ms; the decision, its "
                                                + "audit and commit and the answer (less that) %.1f ms, where the same durable decision in a running process "
                                                + "takes %.1f ms (above): the rest is first use in a fresh process (the key store, the sandbox probe, "
                                                + "SQLite's statements compiled anew)",
                                                checkNs / 1e6, floorNs / 1e6, (versionNs - floorNs) / 1e6, (openedNs - versionNs) / 1e6,
                                                (checkNs - openedNs) / 1e6, durableNs / 1e6))
            row(t5, m5)
        }

        var uts = utsname()
        uname(&uts)
        let machine = withUnsafeBytes(of: &uts.machine) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        let release = withUnsafeBytes(of: &uts.release) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        var md = "# spawngate benchmarks\n\nMeasured by `make bench` (release build) on \(ProcessInfo.processInfo.activeProcessorCount) cores, \(machine), Linux \(release). "
        md += "In-process figures are the median of 15–31 rounds of 4–1,000 calls; whole processes (spawn, ssh, check) the median "
        md += "of 31 runs after 3 warm-up runs, spawngate and ssh interleaved. Everything was measured in this one run. "
        md += "How to read it: [README.md](README.md).\n\n## Targets (issues 7, 19 and 27)\n\n"
        md += "For each target not met, where the time goes, from figures measured in this run.\n\n"
        md += "| target | measured | where the time goes |\n|---|---|---|\n"
        for (k, v) in rows where k.hasPrefix("TARGET:") {
            let parts = v.components(separatedBy: whereMark)
            md += "| \(k.dropFirst(7)) | \(parts[0]) | \(parts.count > 1 ? parts[1] : "") |\n"
        }
        md += "\n## All measurements\n\n| what | median |\n|---|---|\n"
        for (k, v) in rows where !k.hasPrefix("TARGET:") { md += "| \(k) | \(v) |\n" }
        for s in sections { md += "\n" + s }
        if CommandLine.arguments.count > 1, CommandLine.arguments[1] != "-" {
            try md.write(toFile: CommandLine.arguments[1], atomically: true, encoding: .utf8)
            print("written to \(CommandLine.arguments[1])")
        }
    }
}
