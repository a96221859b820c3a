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
        var head = AuditLog.Head.empty
        for i in 0..<lines {
            head = try log.append(after: head, .init(time: 1_800_000_000 + Int64(i), decision: decision(i, i % 3 == 0 ? .allowed : .cwdNotAllowed),
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
        let (log, head) = try Self.log(5)
        let fd = open(log.path, O_WRONLY)
        var st = stat()
        fstat(fd, &st)
        ftruncate(fd, st.st_size - 10)
        close(fd)
        guard case .broken(5, _) = try log.verify() else { Issue.record("not detected"); return }
        // Nothing more is appended to a log that no longer ends where the head says.
        #expect(throws: GatewayFailure.self) { try log.reconcile(head) }
        #expect(throws: GatewayFailure.self) { try log.append(after: head, .init(time: 0, decision: Self.decision(9))) }
    }

    /// A process killed in the middle of its write leaves an unsynced partial line; its decision was never acted
    /// on, so the next decision cuts it off and the chain continues.
    @Test func partialLineAfterTheHeadIsCutOff() throws {
        let (log, head) = try Self.log(3)
        let fd = open(log.path, O_WRONLY | O_APPEND)
        _ = write(fd, "{\"time\":1,\"decis", 17)
        close(fd)
        #expect(try log.reconcile(head) == .current)
        #expect(try log.verify(expected: head) == .intact(head))
    }

    /// A process killed after its lines were fsynced but before its state committed: the lines are taken in.
    @Test func chainedLinesAfterTheHeadRollForward() throws {
        let (log, head) = try Self.log(3)
        let next = try log.append(after: head, .init(time: 9, decision: Self.decision(3), nonce: "n3"))
        #expect(try log.verify(expected: head) == .intact(next), "a pending line is not tampering")
        guard case .rolledForward(let lines, let rolled) = try log.reconcile(head) else { Issue.record("not rolled forward"); return }
        #expect(rolled == next)
        #expect(lines.count == 1 && String(decoding: lines[0], as: UTF8.self).contains("\"nonce\":\"n3\""))
        // A whole group commit's lines, and a torn partial line after them, which is cut off.
        let later = try log.append(after: next, .init(time: 10, decision: Self.decision(4), nonce: "n4"))
        let fd = open(log.path, O_WRONLY | O_APPEND)
        _ = write(fd, "{\"time\":11,\"deci", 17)
        close(fd)
        guard case .rolledForward(let two, let end) = try log.reconcile(head) else { Issue.record("not rolled forward"); return }
        #expect(two.count == 2 && end == later)
        #expect(try log.verify(expected: later) == .intact(later), "the partial line was cut off")
    }

    /// Lines after the head that do not chain to it, or more than one append can write, are not a crash but an edit.
    @Test func unchainedOrTooManyLinesAfterTheHeadAreAnEdit() throws {
        let (log, head) = try Self.log(2)
        var h = head
        for i in 0..<(AuditLog.maxLinesPerAppend + 1) { h = try log.append(after: h, .init(time: 9, decision: Self.decision(3 + i))) }
        #expect(throws: GatewayFailure.self) { try log.reconcile(head) }
        let (other, otherHead) = try Self.log(2)
        let fd = open(other.path, O_WRONLY | O_APPEND)
        let forged = "{\"time\":1,\"prev\":\"\(AuditLog.genesis)\"}\n"
        _ = write(fd, forged, forged.utf8.count)
        close(fd)
        #expect(throws: GatewayFailure.self) { try other.reconcile(otherHead) }
    }

    /// An append from a writer holding a stale head cannot fork the chain.
    @Test func appendAfterAStaleHeadIsRefused() throws {
        let (log, head) = try Self.log(2)
        _ = try log.append(after: head, .init(time: 3, decision: Self.decision(2)))
        #expect(throws: GatewayFailure.self) { try log.append(after: head, .init(time: 3, decision: Self.decision(3))) }
        guard case .intact(let h) = try log.verify() else { Issue.record("chain broken"); return }
        #expect(h.lines == 3)
    }

    @Test func controlCharactersAreEscaped() throws {
        let log = AuditLog(path: TestSupport.tempDir("audit") + "/audit.log")
        try log.append(after: .empty, .init(time: 1, decision: Self.decision(0), argv: ["/bin/x", "a\nb", "\u{1B}[2J"], cwd: "/w\r"))
        let text = try String(contentsOfFile: log.path, encoding: .utf8)
        #expect(text.split(separator: "\n").count == 1)
        #expect(text.contains(#"["/bin/x","a\nb","\u001b[2J"]"#))
        #expect(!text.contains("\u{1B}"))
    }
}
