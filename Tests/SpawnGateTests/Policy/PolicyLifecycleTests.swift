import Foundation
import Testing
@testable import SpawnGate

/// T17: a policy whose tests fail is never applied, and says which assertion failed.
@Suite("Embedded tests and policy lifecycle")
struct PolicyLifecycleTests {
    static let text = PolicyLoaderTests.base + """
        tests:
          - request: {from: mac-laptop, cli: claude, cwd: /w/app}
            expect: allow
          - request: {from: mac-laptop, cli: claude, cwd: /etc}
            expect: allow

        """

    @Test func failingTestIsReportedPerAssertion() throws {
        let p = try parsePolicy(Self.text).get()
        let results = PolicyTestRunner.run(p)
        #expect(results.map(\.passed) == [true, false])
        #expect(results[0].line(file: "p.yaml") == "p.yaml:13:5: ok: mac-laptop claude /w/app → allow by rule r")
        #expect(results[1].line(file: "p.yaml") == "p.yaml:15:5: FAIL: mac-laptop claude /etc: expected allow, got cwd_not_allowed by rule r: /etc is not a working directory rule 'r' allows")
    }

    @Test func policyWithFailingTestsIsNeverApplied() throws {
        let dir = TestSupport.tempDir("life")
        let path = dir + "/policy.yaml"
        try Files.writeAtomically(path, Array(Self.text.utf8), mode: 0o600)
        #expect { try PolicyLoader.loadForDecisions(path) } throws: { ($0 as? GatewayFailure)?.message.contains("embedded tests fail") == true }
        try Files.writeAtomically(path, Array(Self.text.replacingOccurrences(of: "cwd: /etc}\n    expect: allow", with: "cwd: /etc}\n    expect: cwd_not_allowed").utf8), mode: 0o600)
        #expect(try PolicyLoader.loadForDecisions(path).tests.count == 2)
    }

    @Test func expectedRuleIsChecked() throws {
        let text = PolicyLoaderTests.base + "tests:\n  - request: {from: mac-laptop, cli: claude, cwd: /w/x}\n    expect: allow\n    rule: r\n"
        #expect(PolicyTestRunner.run(try parsePolicy(text).get()).allSatisfy(\.passed))
        let two = PolicyLoaderTests.base + "  - name: s\n    brokers: [\"*\"]\n    clis: [claude]\n    cwd: [/w/**]\ntests:\n  - request: {from: mac-laptop, cli: claude, cwd: /w/x}\n    expect: allow\n    rule: s\n"
        #expect(PolicyTestRunner.run(try parsePolicy(two).get()).map(\.passed) == [false])
    }
}
