import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The tamper-evident decision log: JSON Lines, one line per decision, each carrying the BLAKE2b-256 of the line
/// before it (`prev`), so editing, deleting or reordering a line breaks the chain at that line. Truncating the
/// tail leaves a valid but shorter chain; that is caught by comparing with a head kept elsewhere (the state store).
///
/// Appends are serialised across processes with an exclusive `flock`, written with one `write`, and fsynced
/// before returning: a decision is acted on only after its line is durable. A failed or short write is cut back
/// off the file, so nothing half-written is ever left behind.
public struct AuditLog: Sendable {
    public static let genesis = [UInt8](repeating: 0, count: 32).hex
    /// A line longer than this is refused at append and flagged at verify (argv and details are bounded upstream).
    public static let maxLineLength = 256 * 1024

    public let path: String

    public init(path: String) { self.path = path }

    /// What an appended line records. Values are escaped by ``JSONWriter`` (control characters as `\u00XX`).
    public struct Entry: Sendable {
        public var time: Int64
        public var decision: Decision
        public var nonce: String?
        public var argv: [String]?
        public var cwd: String?

        public init(time: Int64, decision: Decision, nonce: String? = nil, argv: [String]? = nil, cwd: String? = nil) {
            self.time = time; self.decision = decision; self.nonce = nonce; self.argv = argv; self.cwd = cwd
        }
    }

    /// The chain position after an append: the new head and the number of lines.
    public struct Head: Sendable, Equatable {
        public let hash: String
        public let lines: Int
    }

    /// Appends one line and fsyncs it. Throws when the line is not durably written; the caller then denies
    /// (`audit_unavailable`).
    @discardableResult
    public func append(_ entry: Entry) throws(GatewayFailure) -> Head {
        let fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw GatewayFailure("cannot open the audit log \(path): \(errnoText())") }
        defer { close(fd) }
        guard flock(fd, LOCK_EX) == 0 else { throw GatewayFailure("cannot lock the audit log \(path): \(errnoText())") }
        defer { flock(fd, LOCK_UN) }

        let (prev, count, size) = try lastLine(fd)
        var members: [(String, JSONWriter.Value)] = [("time", .int(entry.time))]
        members += entry.decision.jsonMembers().filter { $0.0 != "spawn" }
        members += [("nonce", entry.nonce.map { .string($0) } ?? .null),
                    ("argv", entry.argv.map { .strings($0) } ?? .null),
                    ("cwd", entry.cwd.map { .string($0) } ?? .null),
                    ("prev", .string(prev))]
        let line = JSONWriter.object(members)
        guard line.count <= Self.maxLineLength else { throw GatewayFailure("an audit line would be \(line.count) bytes, over the \(Self.maxLineLength)-byte limit") }
        let record = line + [0x0A]
        let n = record.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
        guard n == record.count, fsync(fd) == 0 else {
            let e = errnoText()
            // Cut a partial line back off: the log must stay a sequence of whole, chained lines.
            _ = ftruncate(fd, off_t(size))
            _ = fsync(fd)
            throw GatewayFailure("cannot write the audit log \(path): \(n < 0 ? e : "short write (\(n) of \(record.count) bytes)")")
        }
        return Head(hash: Sodium.blake2b256(line).hex, lines: count + 1)
    }

    /// The hash of the last line (or the genesis value), the number of lines, and the file size.
    private func lastLine(_ fd: Int32) throws(GatewayFailure) -> (String, Int, Int) {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw GatewayFailure("cannot inspect the audit log: \(errnoText())") }
        let size = Int(st.st_size)
        if size == 0 { return (Self.genesis, 0, 0) }
        // Lines are counted by reading the file; the log is read once per append (fine for a CLI process; the
        // long-running gateway will keep the head in memory).
        let bytes: [UInt8]
        do { bytes = try Files.read(path, limit: Int.max) } catch { throw GatewayFailure(error.message) }
        guard bytes.last == 0x0A else {
            throw GatewayFailure("the audit log \(path) ends in a partial line; run 'spawngate audit verify' and repair it before deciding anything")
        }
        let lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false).dropLast()
        return (Sodium.blake2b256(Array(lines.last!)).hex, lines.count, size)
    }

    /// The result of checking the chain.
    public enum Verdict: Sendable, Equatable {
        case intact(Head)
        /// The first line (1-based) where the chain breaks, and why.
        case broken(line: Int, reason: String)
    }

    /// Recomputes the chain. With `expected`, also checks that the log ends where the state store says it ended
    /// (catching a truncated tail or a log replaced by an older copy).
    public func verify(expected: Head? = nil) throws(GatewayFailure) -> Verdict {
        let bytes: [UInt8]
        if Files.exists(path) {
            do { bytes = try Files.read(path, limit: Int.max) } catch { throw GatewayFailure(error.message) }
        } else {
            bytes = []
        }
        if !bytes.isEmpty, bytes.last != 0x0A {
            let count = bytes.split(separator: 0x0A, omittingEmptySubsequences: false).count
            return .broken(line: count, reason: "the last line is incomplete (no newline): a write was cut off or the file was truncated")
        }
        var prev = Self.genesis
        var n = 0
        for raw in bytes.split(separator: 0x0A, omittingEmptySubsequences: false).dropLast() {
            n += 1
            let line = Array(raw)
            guard case .object(let m)? = try? StrictJSONReader.parse(line) else {
                return .broken(line: n, reason: "not a valid JSON object (edited by hand?)")
            }
            guard case .string(let p)? = m["prev"] else { return .broken(line: n, reason: "has no \"prev\" hash") }
            guard p == prev else {
                return .broken(line: n, reason: "its prev hash does not match line \(n - 1): a line was edited, deleted, inserted or reordered at or before this point")
            }
            prev = Sodium.blake2b256(line).hex
        }
        let head = Head(hash: prev, lines: n)
        if let expected, expected != head {
            if n < expected.lines {
                return .broken(line: n + 1, reason: "the log has \(n) lines but \(expected.lines) were written: the tail was truncated")
            }
            return .broken(line: min(n, expected.lines), reason: "the log does not end where the state store says it ended (line \(expected.lines), head \(expected.hash.prefix(16))…): it was rewritten or replaced")
        }
        return .intact(head)
    }

    /// The last `count` lines, as written.
    public func tail(_ count: Int) throws(GatewayFailure) -> [String] {
        guard Files.exists(path) else { return [] }
        let bytes: [UInt8]
        do { bytes = try Files.read(path, limit: Int.max) } catch { throw GatewayFailure(error.message) }
        let lines = bytes.split(separator: 0x0A).map { String(decoding: $0, as: UTF8.self) }
        return Array(lines.suffix(count))
    }
}
