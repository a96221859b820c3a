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
/// Appends happen under the state store's write lock (and an exclusive `flock`), are written with one `write`, and
/// fsynced before returning: a decision is acted on only after its line is durable. A failed or short write is cut
/// back off the file, so nothing half-written is ever left behind.
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

    /// Where the chain ends: the hash of the last line (or the genesis value), the number of lines, and the file
    /// size in bytes. The state store keeps it, so appends need not re-read the file and a truncated or replaced
    /// log is noticed.
    public struct Head: Sendable, Equatable {
        public let hash: String
        public let lines: Int
        public let size: Int
        public init(hash: String, lines: Int, size: Int) { self.hash = hash; self.lines = lines; self.size = size }
        public static let empty = Head(hash: AuditLog.genesis, lines: 0, size: 0)
    }

    /// How the file compares with the recorded head, before an append.
    public enum Reconciliation: Sendable, Equatable {
        /// The file ends where the head says.
        case current
        /// Whole, correctly chained lines follow the head (at most one group commit's worth): decisions whose process
        /// died after writing their lines and before committing their state. The caller takes them into the chain
        /// (and honours what they say).
        case rolledForward(lines: [[UInt8]], head: Head)
    }

    /// The most lines one append writes (one group commit), and so the most a crash can leave after the head.
    public static let maxLinesPerAppend = 64

    /// Compares the file with `head`. An unsynced partial line after it (a write cut off by a crash; its decision
    /// was never acted on) is cut back off. Anything else that differs means the log was changed behind the
    /// gateway's back: the caller must not append (`audit_unavailable`) until an operator has looked.
    /// Must be called with the state store's write lock held, so that no one else is appending.
    public func reconcile(_ head: Head) throws(GatewayFailure) -> Reconciliation {
        var st = stat()
        if lstat(path, &st) != 0 {
            if errno == ENOENT, head.size == 0 { return .current }
            throw GatewayFailure("the audit log \(path) \(errno == ENOENT ? "is missing but \(head.lines) lines were written to it" : "cannot be inspected: \(errnoText())"); run 'spawngate audit verify'")
        }
        let size = Int(st.st_size)
        if size == head.size { return .current }
        if size < head.size {
            throw GatewayFailure("the audit log \(path) is \(size) bytes but \(head.size) were written: its tail was truncated. Run 'spawngate audit verify'; 'spawngate audit rotate' starts a new log once you have kept the old one")
        }
        guard size - head.size <= Self.maxLinesPerAppend * (Self.maxLineLength + 1) else { throw mismatch(head) }
        let extra: [UInt8]
        do { extra = try Files.read(path, from: head.size, count: size - head.size) } catch { throw GatewayFailure(error.message) }
        // One append is one write, so a crash leaves whole lines, then at most one partial line.
        var lines = extra.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
        let partial = lines.removeLast()
        guard lines.count <= Self.maxLinesPerAppend else { throw mismatch(head) }
        var rolled = head
        for line in lines {
            guard case .object(let m)? = try? StrictJSONReader.parse(line), case .string(let prev)? = m["prev"],
                  prev == rolled.hash else { throw mismatch(head) }
            rolled = Head(hash: Sodium.blake2b256(line).hex, lines: rolled.lines + 1, size: rolled.size + line.count + 1)
        }
        if !partial.isEmpty {
            let fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW)
            guard fd >= 0, ftruncate(fd, off_t(rolled.size)) == 0, fsync(fd) == 0 else {
                if fd >= 0 { close(fd) }
                throw GatewayFailure("cannot cut a partial line off the audit log \(path): \(errnoText())")
            }
            close(fd)
        }
        return lines.isEmpty ? .current : .rolledForward(lines: lines, head: rolled)
    }

    private func mismatch(_ head: Head) -> GatewayFailure {
        GatewayFailure("the audit log \(path) does not end where the state store says it ended (line \(head.lines), byte \(head.size)): it was changed outside the gateway. Run 'spawngate audit verify'; 'spawngate audit rotate' starts a new log once you have kept the old one")
    }

    /// Appends one line after `head` and fsyncs it. Throws when the line is not durably written; the caller then
    /// denies (`audit_unavailable`). Call ``reconcile(_:)`` first, under the same lock.
    @discardableResult
    public func append(after head: Head, _ entry: Entry) throws(GatewayFailure) -> Head {
        guard let link = Self.chain(entry, after: head) else {
            throw GatewayFailure("an audit line would be over the \(Self.maxLineLength)-byte limit")
        }
        return try append([link], after: head)
    }

    /// The line for `entry` chained after `head`, and the head after it; nil when the line would be over
    /// ``maxLineLength`` (argv and details are bounded upstream, so only an escaped worst case gets here).
    public static func chain(_ entry: Entry, after head: Head) -> (line: [UInt8], head: Head)? {
        let line = Self.line(entry, prev: head.hash)
        guard line.count <= maxLineLength else { return nil }
        return (line, Head(hash: Sodium.blake2b256(line).hex, lines: head.lines + 1, size: head.size + line.count + 1))
    }

    /// Appends lines chained one after the other from `head` (each made by ``chain(_:after:)``) with one write and
    /// one fsync: a group commit's lines cost the disk one flush. Returns the last line's head. Throws when they are
    /// not durably written; a partial write is cut back off, so the log stays a sequence of whole, chained lines.
    @discardableResult
    public func append(_ chained: [(line: [UInt8], head: Head)], after head: Head) throws(GatewayFailure) -> Head {
        precondition(!chained.isEmpty && chained.count <= Self.maxLinesPerAppend, "one append writes 1 to maxLinesPerAppend lines")
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw GatewayFailure("cannot open the audit log \(path): \(errnoText())") }
        defer { close(fd) }
        // The state store's lock already serialises the gateway's own appends; this keeps out anyone else who
        // follows the same convention (log rotation scripts).
        guard flock(fd, LOCK_EX) == 0 else { throw GatewayFailure("cannot lock the audit log \(path): \(errnoText())") }
        defer { flock(fd, LOCK_UN) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw GatewayFailure("cannot inspect the audit log: \(errnoText())") }
        guard Int(st.st_size) == head.size else { throw mismatch(head) }

        var record: [UInt8] = []
        record.reserveCapacity(chained.reduce(0) { $0 + $1.line.count + 1 })
        for (line, _) in chained {
            record += line
            record.append(0x0A)
        }
        let n = record.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
        guard n == record.count, fsync(fd) == 0 else {
            let e = errnoText()
            _ = ftruncate(fd, off_t(head.size))
            _ = fsync(fd)
            throw GatewayFailure("cannot write the audit log \(path): \(n < 0 ? e : n == record.count ? "fsync failed: \(e)" : "short write (\(n) of \(record.count) bytes; the disk may be full)")")
        }
        return chained[chained.count - 1].head
    }

    /// The bytes of one line (without its newline).
    static func line(_ entry: Entry, prev: String) -> [UInt8] {
        var members: [(String, JSONWriter.Value)] = [("time", .int(entry.time))]
        members += entry.decision.jsonMembers().filter { $0.0 != "spawn" }
        members += [("nonce", entry.nonce.map { .string($0) } ?? .null),
                    ("argv", entry.argv.map { .strings($0) } ?? .null),
                    ("cwd", entry.cwd.map { .string($0) } ?? .null),
                    ("prev", .string(prev))]
        return JSONWriter.object(members)
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
        var beforeLast = Self.genesis
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
            beforeLast = prev
            prev = Sodium.blake2b256(line).hex
        }
        let head = Head(hash: prev, lines: n, size: bytes.count)
        // One line past the recorded head, chained to it, is a decision whose process died before committing;
        // the next decision takes it in.
        let pendingLine = expected.map { n == $0.lines + 1 && beforeLast == $0.hash } ?? false
        if let expected, !pendingLine, expected.hash != head.hash || expected.lines != head.lines {
            if n < expected.lines {
                return .broken(line: n + 1, reason: "the log has \(n) lines but \(expected.lines) were written: the tail was truncated")
            }
            return .broken(line: min(n, expected.lines), reason: "the log does not end where the state store says it ended (line \(expected.lines), head \(expected.hash.prefix(16))…): it was rewritten or replaced")
        }
        return .intact(head)
    }

    /// Moves the log aside to `audit.log.<time>` (kept as evidence) so a new chain can start; the caller resets
    /// the head in the state store in the same transaction.
    func moveAside(time: Int64) throws(GatewayFailure) -> String? {
        guard Files.exists(path) else { return nil }
        var target = "\(path).\(time)"
        var i = 1
        while Files.exists(target) { target = "\(path).\(time)-\(i)"; i += 1 }
        guard rename(path, target) == 0 else { throw GatewayFailure("cannot move \(path) to \(target): \(errnoText())") }
        return target
    }

    /// One audit line for people: time, decision, reason, broker, rule, request id, argv.
    public static func summary(of line: String) -> String {
        guard case .object(let m)? = try? StrictJSONReader.parse(Array(line.utf8)) else { return "(unreadable line) \(line)" }
        func text(_ key: String) -> String {
            guard case .string(let s)? = m[key] else { return "-" }
            // Controls, bidi and invisible characters stay escaped, so a hostile detail cannot drive the reader's
            // terminal or reorder what it shows.
            return TerminalText.escaped(s)
        }
        let time = m["time"]?.safeInteger.map { ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval($0))) } ?? "-"
        var out = "\(time) \(text("decision")) \(text("reason")) broker=\(text("broker")) rule=\(text("rule")) id=\(text("request_id").prefix(12))"
        if case .array(let argv)? = m["argv"] {
            out += " argv=" + String(decoding: JSONWriter.encode(.array(argv)), as: UTF8.self)
        }
        if m["decision"] != .string("allow") { out += " — " + text("detail") }
        if m["grant"] != nil { out += " (grant \(text("grant")))" }
        if m["approval"] != nil { out += " (approval \(text("approval")))" }
        return out
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
