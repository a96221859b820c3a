import Foundation
import SpawnGate

extension Bench {
    /// Durable decisions per second of a running `spawngate serve`: concurrent hook requests over its Unix socket
    /// (the broker's pre-spawn hook path: a full decision, audited and committed, with nothing started), so many
    /// decisions share each commit.
    static func daemonThroughput(exe: String, clients: Int = 16, requests: Int = 30_000, _ row: (String, String) -> Void) throws {
        let b = try BenchBrokers("daemon", exe: exe, sandbox: .none)
        defer { b.cleanUp() }
        let socket = b.dir + "/gate.sock"
        let (serve, _) = b.serve(["--socket", socket])
        defer { Proc.stop(serve) }

        let t = SystemClock().now()
        let envelopes: [[UInt8]] = (0..<requests).map { _ in
            Envelope.seal(SpawnRequest(name: "coder", cli: "true", task: "Implement the plan", cwd: b.app, from: "mac-laptop",
                                       to: "vps-broker", iat: t, exp: t + 120).encoded(), with: b.laptopKey, domain: .request)
        }
        let next = Counter(), allowed = Counter()
        let lastRefusal = Shared(""), resent = Counter()
        let latencies = Shared([Double]())
        let done = DispatchGroup()
        let serverCPU0 = cpuSeconds(of: serve), clientCPU0 = ownCPUSeconds()
        let t0 = now()
        for _ in 0..<clients {
            done.enter()
            // Threads, not Dispatch: concurrentPerform would run only as many clients as there are cores.
            let thread = Thread {
                var mine: [Double] = []
                while case let i = next.take(), i < requests {
                    let s = now()
                    var answer = ""
                    // A connection cut at accept (the per-source cap counts a closed connection until the server has
                    // seen it close) never reached a decision, so it is sent again. Had one been decided, the resend
                    // would be a replay and the run would fail below.
                    for attempt in 0..<20 {
                        do throws(HTTPClient.Failure) {
                            let r = try HTTPClient.exchange(.unix(path: socket), method: "POST", path: "/v1/hook", body: envelopes[i], timeout: 30)
                            answer = "HTTP \(r.status): " + String(decoding: r.body, as: UTF8.self)
                            break
                        } catch {
                            answer = error.message
                            if case .timedOut = error { break }
                            guard attempt < 19 else { break }
                            _ = resent.take()
                        }
                    }
                    mine.append(Double(now() - s))
                    if answer.hasPrefix("HTTP 200"), answer.contains("\"decision\":\"allow\"") { _ = allowed.take() } else { lastRefusal.set(answer) }
                }
                latencies.update { $0 += mine }
                done.leave()
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        done.wait()
        let seconds = Double(now() - t0) / 1e9
        let serverCPU = cpuSeconds(of: serve) - serverCPU0, clientCPU = ownCPUSeconds() - clientCPU0
        guard allowed.value == requests else { fatalError("only \(allowed.value) of \(requests) hook decisions were allowed; the last refusal: \(lastRefusal.get())") }
        // The reaper publishes the commit counts every 0.2 s.
        usleep(300_000)
        let metrics = (try? HTTPClient.exchange(.unix(path: socket), method: "GET", path: "/metrics", timeout: 5)).map { String(decoding: $0.body, as: UTF8.self) } ?? ""
        func metric(_ name: String) -> Double {
            metrics.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ").last!) } ?? .nan
        }
        let groups = metric("spawngate_commit_groups_total"), decided = metric("spawngate_committed_decisions_total")
        let verify = Proc.run([exe, "audit", "verify", "--home", b.vps])
        guard verify.status == 0 else { fatalError("the audit log does not verify after the daemon benchmark") }
        row("daemon: durable decisions through `serve`'s Unix socket (hook requests, \(clients) concurrent clients, \(requests) requests)",
            String(format: "%.0f decisions/s (median latency %.1f ms; %.1f decisions per commit; %d connections refused at the per-source cap and sent again)",
                   Double(requests) / seconds, latencies.get().median / 1e6, decided / groups, resent.value))
        row("daemon: CPU per decision, `serve` / the \(clients) clients (2 cores give 2,000,000 µs per second)",
            String(format: "%.0f µs / %.0f µs", serverCPU / Double(requests) * 1e6, clientCPU / Double(requests) * 1e6))
        let (goal, m) = target("a daemon keeps ≥ 5,000 durable decisions/s on 2 cores (group commit)",
                            measured: String(format: "%.0f/s through the Unix socket, clients on the same 2 cores", Double(requests) / seconds),
                            met: Double(requests) / seconds >= 5000)
        row(goal, m)
    }
}

/// User plus system CPU time of process `pid`, in seconds, from /proc.
func cpuSeconds(of pid: pid_t) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return .nan }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    // After the command: state is field 3, utime and stime are fields 14 and 15.
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return .nan }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// This process's user plus system CPU time, in seconds.
func ownCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

/// A shared counter: `take` returns the value before adding one.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func take() -> Int { lock.lock(); defer { lock.unlock() }; n += 1; return n - 1 }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}


/// A value written by several threads.
final class Shared<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ value: T) { self.value = value }
    func set(_ v: T) { lock.lock(); value = v; lock.unlock() }
    func update(_ change: (inout T) -> Void) { lock.lock(); change(&value); lock.unlock() }
    func get() -> T { lock.lock(); defer { lock.unlock() }; return value }
}
