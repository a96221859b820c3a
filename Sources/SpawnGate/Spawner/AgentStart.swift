#if canImport(Glibc)
import Glibc
#endif
import Foundation

extension AgentService {
    /// Where the relay launcher is: the `spawngate` beside the running executable (`spawngate` itself, or
    /// `spawngate-serve`, which is installed beside it).
    public static var defaultLauncher: String {
        let exe = Files.readLink("/proc/self/exe") ?? CommandLine.arguments[0]
        let dir = exe.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return (dir.isEmpty ? "." : dir) + "/spawngate"
    }

    /// `spawner: agent-relay`: the local Agent Relay broker starts a relay worker (its PTY, the task typed in, its
    /// messages delivered) whose program is spawngate's launcher with a single-use ticket; the launcher redeems
    /// the ticket and starts the approved argv under the rule's profile through this same service
    /// (`spawngate launch`). Waits for the launcher's report: started (then watches it for the rule's
    /// startup check) or why not. A broker that refuses, or never runs the launcher, frees the slot.
    /// The command line the broker's worker runs. The ticket is attached with `=`: a base64url ticket starts with
    /// `-` one time in 64, and as a separate word it would read as an option, so the launcher would refuse it
    /// ("Missing value for '--ticket'") and the gateway would wait out its whole launch timeout.
    public static func launcherCommandLine(_ launcher: String, home: String, ticket: String) -> String {
        AgentRelayBackend.commandLine([launcher, "launch", "--home", home, "--ticket=" + ticket])
    }

    public func startRelayWorker(_ spawn: AuthorizedSpawn, environment: [String: String], launcher: String = AgentService.defaultLauncher,
                                 timeout: Double = 20) -> Outcome {
        let requestID = spawn.request.requestID
        func failed(_ why: String, freeing: Bool = true) -> Outcome {
            if freeing, let lease = spawn.leaseID { _ = try? state.releaseLease(requestID: lease) }
            return .failed(why: why, exitStatus: nil, tail: nil)
        }
        let connection: AgentRelayConnection
        do { connection = try AgentRelayConnection.find(cwd: spawn.match.cwd, environment: environment) } catch { return failed(error.message) }
        let (secret, hash) = LaunchTicket.mint()
        do { try state.issueTicket(hash: hash, for: spawn, now: clock.now()) } catch { return failed(error.message) }
        let backend = AgentRelayBackend(connection: connection)
        let cli = Self.launcherCommandLine(launcher, home: spawner.home.root, ticket: secret)
        // The launcher signals each report it makes; without the socket, look every millisecond as before.
        let signal = LaunchSignal.Listener(path: LaunchSignal.path(home: spawner.home, requestID: requestID))
        func waitForReport(_ seconds: Double, polling: Double) {
            if let signal { signal.wait(seconds) } else { usleep(useconds_t(polling * 1e6)) }
        }
        do { _ = try backend.start(spawn, cli: cli) } catch {
            try? state.voidTicket(for: requestID)
            return failed(error.message)
        }
        // The broker answers before its worker runs (v6 says 200 even for a program that cannot start): only the
        // launcher's own report says what started.
        let deadline = Supervisor.monotonic() + timeout
        var report = LaunchReport()
        while true {
            report = (try? state.launchReport(requestID)) ?? report
            if report.started != nil || report.failure != nil { break }
            if Supervisor.monotonic() >= deadline {
                try? state.voidTicket(for: requestID)
                report = (try? state.launchReport(requestID)) ?? report
                if report.redeemed {  // redeemed just now: its report follows
                    waitForReport(0.25, polling: 0.001)
                    continue
                }
                backend.remove(name: spawn.request.request.name)
                return failed("the Agent Relay broker at \(connection.url.absoluteString) accepted the spawn but never ran the launcher within \(AgentService.seconds(timeout)); see the broker's log")
            }
            // Signalled, the report is read as soon as it is written; the bound only limits how stale a look at the
            // deadline can be.
            waitForReport(min(0.25, max(0.001, deadline - Supervisor.monotonic())), polling: 0.001)
        }
        if let failure = report.failure {
            backend.remove(name: spawn.request.request.name)
            return .failed(why: failure, exitStatus: report.exitStatus, tail: report.tail)
        }
        guard let started = report.started else { return failed("the launcher reported nothing") }
        // Watched for the rule's startup check: a CLI that dies young is reported with its status and output.
        let checkUntil = Supervisor.monotonic() + Double(spawn.match.rule.startupCheck)
        while Supervisor.monotonic() < checkUntil {
            report = (try? state.launchReport(requestID)) ?? report
            if report.exitStatus != nil { break }
            waitForReport(min(0.25, max(0.001, checkUntil - Supervisor.monotonic())), polling: 0.01)
        }
        if let status = report.exitStatus, status != 0 {
            return .failed(why: "the relay worker exited within its startup check (\(AgentService.seconds(Double(spawn.match.rule.startupCheck))))",
                           exitStatus: status, tail: report.tail)
        }
        return .started(started)
    }
}

extension Decision {
    /// What an allowed decision is reported as when its agent is not running after all: the one record every start
    /// path gives (`exec`, `serve`'s receipt, the relay guard mailbox's receipt), so the requester sees the same
    /// reason, and exits with the same status, whichever path started it. `start_failed` when the agent exited
    /// within its startup check (`exitStatus`) or its relay worker did not come up (the broker missing or refusing,
    /// the launcher never run or refusing); `internal_error` when this gateway could not start a local agent at all.
    public func notStarted(why: String, exitStatus: Int32?, relayWorker: Bool) -> Decision {
        let reported = exitStatus != nil || relayWorker
        return Decision(reason: reported ? .startFailed : .internalError,
                        detail: "allowed by rule '\(rule ?? "")', but \(reported ? "not running" : "not started"): \(why)",
                        requestID: requestID, broker: broker, fingerprint: fingerprint, rule: rule, policy: policy)
    }
}
