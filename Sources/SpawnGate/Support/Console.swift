#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writing to standard output and error with write(2): no shared C `FILE*` (not concurrency-safe in Swift 6) and
/// no buffer to lose, so a line reaches a pipe at once.
public enum Console {
    public static func write(_ fd: Int32, _ string: String) {
        let bytes = Array(string.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { systemWrite(fd, $0.baseAddress! + offset, bytes.count - offset) }
            if n <= 0 { if n < 0 && errno == EINTR { continue }; return }
            offset += n
        }
    }

    /// `spawngate: <message>` on standard error. Messages quote requests, receipts and files, so they go through
    /// ``TerminalText`` (their own line breaks kept).
    public static func error(_ message: String) { write(2, "spawngate: \(TerminalText.escaped(message, keepingNewlines: true))\n") }
}

#if canImport(Glibc)
private let systemWrite = Glibc.write
#else
private let systemWrite = Darwin.write
#endif
