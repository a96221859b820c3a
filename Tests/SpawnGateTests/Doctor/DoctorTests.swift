import Foundation
import Testing
@testable import SpawnGate

@Suite("doctor")
struct DoctorTests {
    @Test func aHealthyHomePasses() throws {
        let g = try Gateway(rule: ["sandbox: standard"])
        let out = try g.cli(["doctor"])
        #expect(out.status == 0, "\(out.stdout)")
        #expect(out.stdout.contains("ok    landlock: ABI") && out.stdout.contains("ok    sandbox standard: every layer it needs works here"), "\(out.stdout)")
        #expect(!out.stdout.contains("FAIL"))
    }

    @Test func eachProblemIsNamedWithItsFix() throws {
        let g = try Gateway(rule: ["sandbox: standard"])
        chmod(g.vps.identityKey, 0o644)
        unlink(g.vps.stateDB)
        let out = try g.cli(["doctor"])
        #expect(out.status == 1)
        #expect(out.stdout.contains("FAIL  identity key: \(g.vps.identityKey) has mode 644") && out.stdout.contains("chmod 600"), "\(out.stdout)")
        #expect(out.stdout.contains("FAIL  state: \(g.vps.stateDB) is missing") && out.stdout.contains("init --state"), "\(out.stdout)")
        #expect(out.stdout.hasSuffix("2 problems to fix\n"), "\(out.stdout)")

        let nowhere = try TestSupport.spawngate(["doctor", "--home", g.dir + "/nowhere"])
        #expect(nowhere.status == 1)
        #expect(nowhere.stdout.contains("does not exist; create it with 'spawngate init --name NAME'"), "\(nowhere.stdout)")
    }

    @Test func aPolicyWhoseTestsFailIsAProblem() throws {
        let g = try Gateway()
        try (try String(contentsOfFile: g.vps.policyFile, encoding: .utf8) + """

            tests:
              - request: {from: mac-laptop, cli: claude, cwd: /etc}
                expect: allow
            """).write(toFile: g.vps.policyFile, atomically: true, encoding: .utf8)
        let out = try g.cli(["doctor"])
        #expect(out.status == 1)
        #expect(out.stdout.contains("FAIL  policy: 1 embedded test(s) fail") && out.stdout.contains("spawngate policy test"), "\(out.stdout)")
    }

    /// A machine without a layer (stood for by the probe) turns every rule that needs it into a problem.
    @Test func aRuleAskingForAMissingLayerIsAProblem() throws {
        let g = try Gateway(rule: ["sandbox: strict"])
        let findings = SpawnGate.Doctor.policy(g.vps) { $0 == .strict ? ["bubblewrap (not installed)"] : [] }
        let fail = try #require(findings.first { $0.severity == .fail })
        #expect(fail.subject == "rule laptop-app")
        #expect(fail.message.contains("asks for sandbox 'strict', but this machine lacks bubblewrap (not installed)"))
        #expect(SpawnGate.Doctor.policy(g.vps) { _ in [] }.allSatisfy { $0.severity != .fail })
        let noLandlock = SpawnGate.Doctor.layers(landlockABI: nil, seccomp: true, bubblewrapProblem: "bwrap missing", containmentProblem: nil)
        #expect(noLandlock.map(\.severity) == [.warn, .ok, .warn, .ok, .ok])
        let uncontained = SpawnGate.Doctor.layers(landlockABI: 6, seccomp: true, bubblewrapProblem: nil, containmentProblem: "a pid namespace for each agent (EPERM)")
        #expect(uncontained.first { $0.subject == "containment" }?.severity == .warn)
    }
}
