#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A process named so that a recycled pid is not mistaken for it: the pid plus the kernel's start time of that
/// process (clock ticks since boot, field 22 of `/proc/PID/stat`). A lease bound to a process ends when this
/// identity no longer names a live process.
public struct ProcessIdentity: Sendable, Equatable, CustomStringConvertible {
    public let pid: Int32
    public let startTime: Int64

    public init(pid: Int32, startTime: Int64) { self.pid = pid; self.startTime = startTime }

    /// The identity of a running process, or nil when no such process exists (or it is a zombie: it has exited).
    public static func of(pid: Int32) -> ProcessIdentity? {
        guard pid > 0 else { return nil }
        #if os(Linux)
        // fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
        guard let fields = statFields(pid), fields.count > 19, let state = fields[0].first, state != UInt8(ascii: "Z"), state != UInt8(ascii: "X"),
              let start = Int64(String(decoding: fields[19], as: UTF8.self)) else { return nil }
        return ProcessIdentity(pid: pid, startTime: start)
        #else
        return kill(pid, 0) == 0 || errno == EPERM ? ProcessIdentity(pid: pid, startTime: 0) : nil
        #endif
    }

    #if os(Linux)
    /// The fields of `/proc/PID/stat` from field 3 (state) on, or nil when there is no such process. The command name
    /// (field 2) may hold spaces and parentheses; everything after the last ')' is fixed.
    static func statFields(_ pid: Int32) -> [ArraySlice<UInt8>]? {
        guard let stat = try? Files.read("/proc/\(pid)/stat", limit: 4096), let close = stat.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        return stat[(close + 1)...].split(separator: UInt8(ascii: " "))
    }
    #endif

    /// True while this very process (not a later one given the same pid) is alive.
    public var isAlive: Bool { Self.of(pid: pid) == self }

    public var description: String { "pid \(pid)" }
}
