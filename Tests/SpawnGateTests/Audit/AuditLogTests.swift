import Foundation
import Testing
@testable import SpawnGate

/// T23 and the tampering cases: every edit, deletion, reordering or truncation is found and named.
@Suite("Audit log")
struct AuditLogTests {
    static func decision(_ i: Int, _ reason: ReasonCode = .allowed) -> Decision {
        Decision(reason: reason, detail: "decision \(i)", requestID: String(repeating: "ab", count: 32), broker: "mac-laptop",
                 fingerprint: "SHA256:x", rule: "r", policy: "p")
    }

    static func log(_ lines: Int) throws -> (AuditLog, AuditLog.Head) {
        let log = AuditLog(path: TestSupport.tempDir("audit") + "/audit.log")
        var head = AuditLog.Head(hash: AuditLog.genesis, lines: 0)
        for i in 0..<lines {
            head = try log.append(.init(time: 1_800_000_000 + Int64(i), decision: decision(i, i % 3 == 0 ? .allowed : .cwdNotAllowed),
                                        nonce: "n\(i)", argv: ["/bin/claude", "--", "task \(i)"], cwd: "/w"))
        }
        return (log, head)
    }

    func rewrite(_ log: AuditLog, _ change: (inout [String]) -> Void) throws {
        var lines = try String(contentsOfFile: log.path, encoding: .utf8).split(separator: "\n").map(String.init)
        change(&lines)
        try (lines.joined(separator: "\n") + (lines.isEmpty ? "" : "\n")).write(toFile: log.path, atomically: false, encoding: .utf8)
    }

    @Test func intactChainVerifies() throws {
        let (log, head) = try Self.log(20)
        #expect(head.lines == 20)
        #expect(try log.verify(expected: head) == .intact(head))
        #expect(try log.tail(3).count == 3)
        let first = try #require(try log.tail(20).first)
        #expect(first.hasSuffix("\"prev\":\"\(AuditLog.genesis)\"}"))
    }

    @Test func editedByteIsFound() throws {
        let (log, head) = try Self.log(10)
        try rewrite(log) { $0[4] = $0[4].replacingOccurrences(of: "cwd_not_allowed", with: "allowed") }
        // The edited line itself still parses; the break shows at the next line, whose prev no longer matches.
        #expect(try log.verify(expected: head) == .broken(line: 6, reason: "its prev hash does not match line 5: a line was edited, deleted, inserted or reordered at or before this point"))
    }

    @Test func deletedLineIsFound() throws {
        let (log, head) = try Self.log(10)
        try rewrite(log) { $0.remove(at: 3) }
        guard case .broken(let line, _) = try log.verify(expected: head) else { Issue.record("not detected"); return }
        #expect(line == 4)
    }

    @Test func swappedLinesAreFound() throws {
        let (log, head) = try Self.log(10)
        try rewrite(log) { $0.swapAt(2, 3) }
        guard case .broken(let line, _) = try log.verify(expected: head) else { Issue.record("not detected"); return }
        #expect(line == 3)
    }

    @Test func truncatedTailIsFoundOnlyWithTheHead() throws {
        let (log, head) = try Self.log(10)
        try rewrite(log) { $0.removeLast(2) }
        #expect(try log.verify(expected: head) == .broken(line: 9, reason: "the log has 8 lines but 10 were written: the tail was truncated"))
        guard case .intact = try log.verify() else { Issue.record("a truncated chain is internally consistent"); return }
    }

    @Test func cutOffLastLineIsFound() throws {
        let (log, _) = try Self.log(5)
        let fd = open(log.path, O_WRONLY)
        var st = stat()
        fstat(fd, &st)
        ftruncate(fd, st.st_size - 10)
        close(fd)
        guard case .broken(5, _) = try log.verify() else { Issue.record("not detected"); return }
        #expect(throws: GatewayFailure.self) { try log.append(.init(time: 0, decision: Self.decision(9))) }
    }

    @Test func controlCharactersAreEscaped() throws {
        let log = AuditLog(path: TestSupport.tempDir("audit") + "/audit.log")
        try log.append(.init(time: 1, decision: Self.decision(0), argv: ["/bin/x", "a\nb", "\u{1B}[2J"], cwd: "/w\r"))
        let text = try String(contentsOfFile: log.path, encoding: .utf8)
        #expect(text.split(separator: "\n").count == 1)
        #expect(text.contains(#"["/bin/x","a\nb","\u001b[2J"]"#))
        #expect(!text.contains("\u{1B}"))
    }

    /// Several processes' worth of concurrent appends keep one unbroken chain.
    @Test func concurrentAppendsKeepTheChain() async throws {
        let log = AuditLog(path: TestSupport.tempDir("audit") + "/audit.log")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<8 {
                group.addTask { for i in 0..<25 { try log.append(.init(time: Int64(i), decision: Self.decision(t * 100 + i))) } }
            }
            try await group.waitForAll()
        }
        guard case .intact(let head) = try log.verify() else { Issue.record("chain broken"); return }
        #expect(head.lines == 200)
    }
}
