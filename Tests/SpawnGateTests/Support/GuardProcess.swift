import Foundation
import Testing
@testable import SpawnGate

#if canImport(Glibc)
import Glibc
#endif

/// `spawngate relay guard` as a real process (in its own process group, signals at their defaults), on a free
/// loopback port, in front of `upstream`. Stopped with SIGTERM, as an operator or systemd would.
// @unchecked: `pid` is set in init and cleared by `stop()`, both called from the test that owns the guard.
final class GuardProcess: @unchecked Sendable {
    let home: String
    let url: String
    let output: String
    private(set) var pid: pid_t?

    init(home: String, upstream: String, caFile: String? = nil, environment extra: [String: String] = [:], extraArgs: [String] = []) throws {
        self.home = home
        output = home + "/guard-\(UUID().uuidString.prefix(8))"
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "RELAY_API_KEY")
        env.merge(extra) { $1 }
        var argv = [TestSupport.binary, "relay", "guard", "--home", home, "--upstream", upstream, "--listen", "127.0.0.1:0"] + extraArgs
        if let caFile { argv += ["--ca-file", caFile] }
        let p = try RealRelay.start(argv, environment: env, cwd: home, output: output)
        pid = p
        let out = output + ".out", err = output + ".err"
        do {
            url = try RealRelay.waitFor("the relay guard's address line", within: 30) {
                guard RealRelay.isRunning(p) else {
                    throw RealRelay.Failure("the relay guard exited: \((try? String(contentsOfFile: err, encoding: .utf8)) ?? "")")
                }
                guard let text = try? String(contentsOfFile: out, encoding: .utf8), let r = text.range(of: "listening on http://") else { return nil }
                return String(text[text.index(r.lowerBound, offsetBy: "listening on ".count)...].prefix { !$0.isWhitespace && $0 != "," })
            }
        } catch {
            RealRelay.kill(p, within: 5)
            throw error
        }
    }

    deinit { stop() }

    var stderr: String { (try? String(contentsOfFile: output + ".err", encoding: .utf8)) ?? "" }
    var running: Bool { pid.map(RealRelay.isRunning) ?? false }

    /// SIGTERM, and how it ended: its exit status, or nil if it had to be killed after `within` seconds.
    @discardableResult
    func stop(within seconds: Double = 10) -> Int32? {
        guard let p = pid else { return nil }
        pid = nil
        var status: Int32 = 0
        guard waitpid(p, &status, WNOHANG) == 0 else { return (status >> 8) & 0xff }
        kill(p, SIGTERM)
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if waitpid(p, &status, WNOHANG) == p { return (status >> 8) & 0xff }
            usleep(20_000)
        }
        kill(-p, SIGKILL)
        waitpid(p, &status, 0)
        return nil
    }

    /// `GET /_spawngate/v1/health`.
    func health() throws -> [String: Any] {
        try RealRelay.http("GET", url + "/_spawngate/v1/health", timeout: 5).json as? [String: Any] ?? [:]
    }

    func waitForMailbox(within seconds: Double = 30) throws {
        _ = try RealRelay.waitFor("the relay guard's mailbox to be online", within: seconds) {
            (try? self.health())?["mailbox"] as? String == "online" ? true : nil
        }
    }

    /// The home's audit lines, parsed.
    func auditLines() -> [[String: Any]] {
        guard let text = try? String(contentsOfFile: home + "/audit.log", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// Waits for an audit line with `reason` whose detail contains `text`; answers it.
    @discardableResult
    func waitForAudit(_ reason: String, containing text: String, within seconds: Double = 30) throws -> [String: Any] {
        do {
            return try RealRelay.waitFor("an audit line '\(reason)' containing '\(text)'", within: seconds) {
                self.auditLines().first { ($0["reason"] as? String) == reason && (($0["detail"] as? String) ?? "").contains(text) }
            }
        } catch {
            let seen = auditLines().map { "\($0["reason"] ?? "?"): \($0["detail"] ?? "")" }.joined(separator: "\n  ")
            throw RealRelay.Failure("\(error); the audit log has:\n  \(seen)\nthe guard's log:\n\(stderr)")
        }
    }
}
