#if canImport(Glibc)
import Glibc
#endif

/// A Unix socket's address (`sockaddr_un`) for a path, as every socket here binds, connects or sends to one: the
/// hook socket, its clients, and the relay launcher's signal.
public struct UnixSocketAddress {
    private var addr = sockaddr_un()

    /// The longest path an address holds, in bytes.
    public static let maxPathBytes = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    /// nil when `path` is longer than ``maxPathBytes``.
    public init?(_ path: String) {
        let bytes = Array(path.utf8)
        guard bytes.count <= Self.maxPathBytes else { return nil }
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { dst in for (i, b) in bytes.enumerated() { dst[i] = b } }
    }

    /// Calls `body` (bind, connect, sendto…) with the address as a `sockaddr` and its length.
    public func with<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafePointer(to: addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }
}
