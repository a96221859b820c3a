import Foundation
import Testing
@testable import SpawnGate

/// One vocabulary for outcomes: each reason code's exit status, stage and pre-authentication status, and the
/// one mapping from an error to an exit status that every command uses.
@Suite("Exit statuses")
struct ExitStatusTests {
    /// PRODUCT.md: 0 allowed, 1 denied (malformed input included), 2 the gateway cannot decide; and 3, held for a
    /// person's approval (issue 28: neither allowed nor denied yet).
    @Test func everyReasonHasItsContractStatus() {
        let cannotDecide: Set<ReasonCode> = [.internalError, .auditUnavailable]
        for r in ReasonCode.allCases {
            let want: CommandStatus = r == .allowed ? .allowed : r == .approvalPending ? .pending
                : cannotDecide.contains(r) ? .cannotDecide : .denied
            #expect(r.exitStatus == want, "\(r)")
            #expect(r.isGatewayFailure == cannotDecide.contains(r))
        }
    }

    /// The refusals the server charges to a source's pre-authentication allowance (docs/attacks.md).
    @Test func unauthenticatedReasons() {
        #expect(Set(ReasonCode.allCases.filter(\.unauthenticated)) ==
                [.malformed, .badSignature, .unknownKey, .revokedKey, .wrongAudience, .replay, .expired, .notYetValid, .ttlTooLong,
                 .sourceNotAllowed])
    }

    @Test func policyReasonsComeFromTheStages() {
        #expect(PolicyEngine.policyReasons == [.remoteSpawnDisabled, .noMatchingRule, .deniedByRule, .cliNotAllowed,
                                               .argsNotAllowed, .cwdNotAllowed, .envNotAllowed, .sourceNotAllowed, .grantExceeded])
        #expect(ReasonCode.allowed.stage == nil)
        #expect(ReasonCode.replay.stage == .replay && ReasonCode.badSignature.stage == .signature)
    }

    @Test func errorsMapToOneStatus() {
        #expect(CommandStatus(for: OperatorError("a fingerprint that does not match")) == .denied)
        #expect(CommandStatus(for: OperatorError.unusable("no identity")) == .cannotDecide)
        #expect(CommandStatus(for: GatewayFailure("state store")) == .cannotDecide)
        #expect(CommandStatus(for: Denial(.malformed, "x")) == .denied)
        #expect(CommandStatus(for: Denial(.auditUnavailable, "x")) == .cannotDecide)
        #expect(CommandStatus(for: RemoteError(.unboundDenial, "x")) == .denied)
        #expect(CommandStatus(for: RemoteError(.unreachable, "x")) == .cannotDecide)
        struct Unknown: Error {}
        #expect(CommandStatus(for: Unknown()) == .cannotDecide, "an unknown failure must never look like an answer")
        // A handoff: refused here 1, no verified answer 2, and TARGET's signed answer with its reason's status, as
        // `spawn` gives it (an allow whose agent is not seen running there is refused).
        func receipt(_ reason: ReasonCode) -> VerifiedReceipt {
            VerifiedReceipt(reason: reason, detail: "d", requestID: "r", rule: nil, started: nil, members: [:], payload: [])
        }
        #expect(CommandStatus(for: Handoff.Failure(.refused, "x")) == .denied)
        #expect(CommandStatus(for: Handoff.Failure(.cannotDecide, "x")) == .cannotDecide)
        #expect(CommandStatus(for: Handoff.Failure(.denied, "x", receipt: receipt(.cwdNotAllowed))) == .denied)
        #expect(CommandStatus(for: Handoff.Failure(.denied, "x", receipt: receipt(.auditUnavailable))) == .cannotDecide)
        #expect(CommandStatus(for: Handoff.Failure(.denied, "x", receipt: receipt(.internalError))) == .cannotDecide)
        #expect(CommandStatus(for: Handoff.Failure(.denied, "x", receipt: receipt(.allowed))) == .denied)
        #expect(CommandStatus(for: Handoff.Failure(.denied, "x")) == .denied)
    }

    /// Every start path reports an agent that is not running after all with the same record: start_failed (1) when
    /// it was handed over and did not come up, internal_error (2) when this gateway could not start it at all.
    @Test func notStartedIsOneRecord() {
        let allowed = Decision(reason: .allowed, detail: "allowed by rule 'r'", requestID: "id", broker: "b", fingerprint: "f", rule: "r", policy: "p",
                               spawn: .init(argv: ["x"], cwd: "/", env: [], sandbox: "none"))
        let relay = allowed.notStarted(why: "no broker", exitStatus: nil, relayWorker: true)
        #expect(relay.reason == .startFailed && relay.detail == "allowed by rule 'r', but not running: no broker")
        #expect(relay.requestID == "id" && relay.rule == "r" && relay.policy == "p" && relay.spawn == nil)
        #expect(allowed.notStarted(why: "died", exitStatus: 3, relayWorker: false).reason == .startFailed)
        let local = allowed.notStarted(why: "exec failed", exitStatus: nil, relayWorker: false)
        #expect(local.reason == .internalError && local.detail == "allowed by rule 'r', but not started: exec failed")
        #expect(relay.reason.exitStatus == .denied && local.reason.exitStatus == .cannotDecide)
    }

    /// A home without an identity is the same error whichever command meets it: this machine cannot act (2).
    /// `sign` and `key show` used to say 1 while `verify` and `spawn` said 2.
    @Test func theSameErrorGivesTheSameStatusEverywhere() throws {
        let dir = TestSupport.tempDir("exit")
        let nowhere = dir + "/nowhere"
        let runs: [[String]] = [
            ["sign", "--to", "x", "--name", "n", "--cli", "c"], ["verify", "-"], ["check", "-"], ["check", "--dry-run", "-"],
            ["policy", "explain", "-"], ["key", "show"], ["spawn", "n", "c", "--broker", "x"], ["hook", "pre-spawn"], ["exec", "-"],
        ]
        for args in runs {
            let out = try TestSupport.spawngate(args + ["--home", nowhere], stdin: Array("{}".utf8))
            #expect(out.status == 2, "\(args): \(out.status) \(out.stdout) \(out.stderr)")
            #expect(out.stderr.contains("spawngate init") || out.stdout.contains("spawngate init"), "\(args) says what to do: \(out.stderr)")
        }
        // A refusal stays 1: a fingerprint that does not match.
        #expect(try TestSupport.spawngate(["init", "--name", "vps", "--home", dir + "/vps"]).status == 0)
        #expect(try TestSupport.spawngate(["init", "--name", "lap", "--home", dir + "/lap"]).status == 0)
        let wrong = try TestSupport.spawngate(["key", "enroll", "lap", "--file", dir + "/lap/identity.pub", "--fingerprint",
                                               "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "--home", dir + "/vps"])
        #expect(wrong.status == 1, "\(wrong.stderr)")
        // Bad flags: argument-parser's 64, in every command.
        #expect(try TestSupport.spawngate(["check", "--no-such-flag"]).status == 64)
        #expect(try TestSupport.spawngate(["key", "enroll"]).status == 64)
    }

    /// The commands parsed on their own for speed (`FastPath` in `spawngate`) read exactly as the tree does when the
    /// command line is wrong or asks for help: the same usage line naming `spawngate <command>`, the same status.
    /// (A debug build also checks, each time one is taken, that the tree would run the same command.)
    @Test func theFastPathReadsAsTheTree() throws {
        let paths: [[String]] = [["check"], ["launch"], ["spawn"], ["exec"], ["verify"], ["hook", "pre-spawn"], ["hook", "started"], ["hook", "exited"]]
        for path in paths {
            let bad = try TestSupport.spawngate(path + ["--no-such-flag"])
            #expect(bad.status == 64, "\(path): \(bad.status) \(bad.stderr)")
            #expect(bad.stderr.hasPrefix("Error: ") && bad.stderr.contains("Usage: spawngate \(path.joined(separator: " "))"),
                    "\(path): \(bad.stderr)")
            let help = try TestSupport.spawngate(path + ["--help"])
            #expect(help.status == 0 && help.stdout.contains("USAGE: spawngate \(path.joined(separator: " "))"), "\(path): \(help.stdout.prefix(300))")
        }
        // A refusal through the fast path prints its sentence and nothing of argument-parser's (no usage), exit 1.
        let dir = TestSupport.tempDir("fastpath")
        #expect(try TestSupport.spawngate(["init", "--name", "vps", "--home", dir + "/vps"]).status == 0)
        let denied = try TestSupport.spawngate(["launch", "--home", dir + "/vps", "--supervise", String(repeating: "a", count: 64), "--stderr-fd", "0", "--report-fd", "0"])
        #expect(denied.status == 1 && denied.stderr.contains("has no agent recorded") && !denied.stderr.contains("Usage"), "\(denied.stderr)")
    }
}
