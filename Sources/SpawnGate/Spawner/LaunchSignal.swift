#if canImport(Glibc)
import Glibc
#endif

/// How the relay launcher tells the gateway waiting for it that it has reported (started, failed, exited), so the
/// gateway reads the report when it is there instead of looking at state.db every millisecond (issue 27). A
/// datagram socket in the home, named after the request: the datagram carries nothing; the report itself is in
/// state.db as before, so a lost, forged or extra datagram only makes the gateway look once more or a little later.
/// Where the socket cannot be made (a home path too long for a socket address), the gateway polls as before.
public enum LaunchSignal {
    /// The socket's path for a request: in the home (mode 0700), so only its owner can send to it.
    public static func path(home: Home, requestID: String) -> String {
        home.root + "/launch-" + String(requestID.prefix(16)) + ".sock"
    }

    /// The gateway's end: bound before the broker is asked to start the launcher, so no datagram is missed.
    // @unchecked: `fd` is set once in init and used by the one thread that waits; closed only in deinit.
    public final class Listener: @unchecked Sendable {
        let fd: Int32
        let path: String

        /// nil when the socket cannot be made here; the caller then polls.
        public init?(path: String) {
            guard let addr = UnixSocketAddress(path) else { return nil }
            let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            guard fd >= 0 else { return nil }
            // A socket left by a gateway that died while waiting for this same request id cannot be in use now.
            var st = stat()
            if lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFSOCK { unlink(path) }
            let bound = addr.with { bind(fd, $0, $1) }
            guard bound == 0 else { close(fd); return nil }
            self.fd = fd
            self.path = path
        }

        deinit {
            close(fd)
            unlink(path)
        }

        /// Waits until the launcher signals or `seconds` pass, then takes every datagram waiting.
        public func wait(_ seconds: Double) {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, Int32(max(0, min(seconds, 3600)) * 1000))
            var byte: UInt8 = 0
            while recv(fd, &byte, 1, 0) >= 0 {}
        }
    }

    /// The launcher's end: one empty-looking datagram after each report; any failure is ignored (the gateway
    /// still finds the report, by looking again at the latest when its wait ends).
    public static func notify(_ path: String) {
        guard let addr = UnixSocketAddress(path) else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var byte: UInt8 = 1
        _ = addr.with { sendto(fd, &byte, 1, 0, $0, $1) }
    }
}
