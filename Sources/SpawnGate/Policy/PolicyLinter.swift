/// Warnings `policy check` prints that do not make a policy invalid: things that depend on the machine the
/// policy is checked on (binaries, symlinked directories), which the decision re-checks at run time.
public enum PolicyLinter {
    public static func warnings(_ policy: Policy) -> [PolicyDiagnostic] {
        var out: [PolicyDiagnostic] = []
        for cli in policy.clis.values.sorted(by: { $0.line < $1.line }) {
            if let problem = BinaryCheck.problem(cli) {
                out.append(PolicyDiagnostic(file: policy.file, line: cli.line, column: 3, severity: .warning,
                                            message: "\(problem); requests for '\(cli.name)' will be denied on this machine"))
            }
        }
        for rule in policy.rules {
            for p in rule.cwd ?? [] {
                let prefix = p.literalPrefix
                if case .success(let real) = PathResolver.filesystem.resolve(prefix), real != prefix {
                    out.append(PolicyDiagnostic(file: policy.file, line: rule.line, column: 5, severity: .warning,
                                                message: "rule '\(rule.name)': cwd '\(p.source)' goes through a symlink (\(prefix) is \(real)); requests are matched on real paths, so write \(real)"))
                }
            }
            if rule.effect == .allow && rule.cwd?.isEmpty == true {
                out.append(PolicyDiagnostic(file: policy.file, line: rule.line, column: 5, severity: .warning,
                                            message: "rule '\(rule.name)' has an empty cwd list, so it allows nothing"))
            }
        }
        return out
    }
}
