import Foundation

/// Loading the policy from disk, with StrictModes-style checks, for decisions and for `policy check`.
extension PolicyLoader {
    /// Reads and parses a policy file; refuses one that others could change.
    public static func load(_ path: String) -> Result<Policy, PolicyLoadError> {
        func fail(_ message: String) -> Result<Policy, PolicyLoadError> {
            .failure(PolicyLoadError(diagnostics: [PolicyDiagnostic(file: path, line: 1, column: 1, message: message)]))
        }
        do {
            try Files.checkNotWritableByOthers(path)
            var dir = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
            if dir.isEmpty { dir = "/" } else if !dir.hasPrefix("/") { dir = FileManager.default.currentDirectoryPath + "/" + dir }
            let real = (try? PathResolver.filesystem.resolve(dir).get()) ?? dir
            try Files.checkNotWritableByOthers(real)
        } catch {
            return fail(error.message)
        }
        let bytes: [UInt8]
        do { bytes = try Files.read(path, limit: maxSize) } catch { return fail(error.message) }
        guard let text = String(validating: bytes, as: UTF8.self) else { return fail("the file is not valid UTF-8 text") }
        guard !text.contains("\u{0}") else { return fail("the file contains a NUL byte") }
        let parsed = parse(text, file: path)
        guard case .success(let policy) = parsed else { return parsed }
        // On this machine: binaries behind symlinks, and writable: paths under ~/, that an agent could replace.
        let placement = placementDiagnostics(clis: policy.clis, rules: policy.rules, file: path, homes: BinaryPlacement.gatewayHomes,
                                             resolve: BinaryPlacement.realPath)
        return placement.isEmpty ? parsed : .failure(PolicyLoadError(diagnostics: placement))
    }

    /// The policy a gateway may apply: it loads without errors and every embedded test passes. Anything else
    /// means the gateway cannot decide (it never falls back to "allow" or to an empty policy).
    public static func loadForDecisions(_ path: String) throws(GatewayFailure) -> Policy {
        switch load(path) {
        case .failure(let e):
            throw GatewayFailure("the policy cannot be used:\n\(e.description)\nfix it and run 'spawngate policy check'")
        case .success(let policy):
            let failed = PolicyTestRunner.run(policy).filter { !$0.passed }
            if !failed.isEmpty {
                throw GatewayFailure("the policy's embedded tests fail, so it is not applied:\n" + failed.map { $0.line(file: path) }.joined(separator: "\n"))
            }
            return policy
        }
    }
}
