/// Runs a policy's embedded `tests:` through the same engine that makes real decisions, with lexical path
/// resolution so that a test gives the same answer on every machine.
public enum PolicyTestRunner {
    public struct Result: Sendable {
        public let test: PolicyTest
        public let passed: Bool
        public let got: ReasonCode
        public let rule: String?
        public let detail: String

        /// `policy.yaml:34:5: ok: mac-laptop claude /w/app → allow by rule laptop-projects` or
        /// `policy.yaml:36:5: FAIL: … expected allow, got cwd_not_allowed by rule laptop-projects: …`.
        public func line(file: String) -> String {
            let q = test.request
            let what = "\(q.broker) \(q.cli)\(q.args.isEmpty ? "" : " \(q.args)") \(q.cwd ?? "(no cwd)")"
            func shown(_ r: ReasonCode) -> String { r == .allowed ? "allow" : r == .approvalPending ? "pending" : r.rawValue }
            let gotText = shown(got)
            let byRule = rule.map { " by rule \($0)" } ?? ""
            if passed { return "\(file):\(test.line):\(test.column): ok: \(what) → \(gotText)\(byRule)" }
            let want = shown(test.expect)
            let wantRule = test.rule.map { " by rule \($0)" } ?? ""
            return "\(file):\(test.line):\(test.column): FAIL: \(what): expected \(want)\(wantRule), got \(gotText)\(byRule): \(detail)"
        }
    }

    public static func run(_ policy: Policy) -> [Result] {
        let engine = PolicyEngine(policy: policy, resolver: .lexical)
        return policy.tests.map { t in
            let got: ReasonCode, rule: String?, detail: String
            // The decision's own stages after authentication (policy, then the grant), without this machine's
            // binaries and sandbox layers; a rule that says approve: holds the request (`pending`).
            var noTrace = TraceRecorder(false)
            switch DecisionPipeline.authorize(t.request, engine: engine, machine: false, missingLayers: { _ in [] }, trace: &noTrace) {
            case .success(let m) where m.rule.approval != nil: (got, rule, detail) = (.approvalPending, m.rule.name, "held for approval")
            case .success(let m): (got, rule, detail) = (.allowed, m.rule.name, "allowed")
            case .failure(let d): (got, rule, detail) = (d.reason, d.rule, d.detail)
            }
            let passed = got == t.expect && (t.rule == nil || t.rule == rule)
            return Result(test: t, passed: passed, got: got, rule: rule, detail: detail)
        }
    }
}
