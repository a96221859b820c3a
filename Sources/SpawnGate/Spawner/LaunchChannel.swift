import CSpawn
#if canImport(Glibc)
import Glibc
#endif

/// The gateway's end of the relay launcher's socket (`spawngate-launch`, Sources/spawngate-launch/main.c): a Unix
/// stream socket in the home (mode 0700: only the gateway's user can connect), named after the request, bound
/// before the broker is asked to start the worker. The launcher sends its ticket and its environment; the gateway
/// sends the start it prepared (words, and the cwd and Landlock descriptors by SCM_RIGHTS); the launcher answers
/// how the start went, and is told to supervise or to stop. Framing and words: docs/protocol.md, "The relay
/// launcher". Every read is bounded in size and time: a process at the other end is not trusted to be the
/// launcher until it has shown the ticket.
public enum LaunchChannel {
    /// The socket's path for a request.
    public static func path(home: Home, requestID: String) -> String {
        home.root + "/launch-" + String(requestID.prefix(16)) + ".sock"
    }

    /// The supervisor's report on `fd` (the launcher's connection, which it inherits): how the agent ended, for a
    /// gateway still watching its start. Any failure is ignored: a gateway that stopped watching has closed its end.
    public static func report(fd: Int32, status: Int32, tail: String) {
        Connection(fd: fd).send([String(status), tail.replacingOccurrences(of: "\u{0}", with: "")])
    }

    /// The largest frame either side accepts (the launcher's environment, the prepared start).
    public static let maxFrame = 4 << 20

    /// Listens at `path` until it is released; the socket file goes with it.
    public final class Listener: Sendable {
        let fd: Int32
        let path: String

        public init(path: String) throws(GatewayFailure) {
            guard let addr = UnixSocketAddress(path) else {
                throw GatewayFailure("the launch socket's path \(path) is longer than a Unix socket address holds (\(UnixSocketAddress.maxPathBytes) bytes); use a shorter --home")
            }
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            guard fd >= 0 else { throw GatewayFailure("cannot make the launch socket: \(errnoText())") }
            // A socket left by a gateway that died while waiting for this same request id cannot be in use now.
            var st = stat()
            if lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFSOCK { unlink(path) }
            guard addr.with({ bind(fd, $0, $1) }) == 0, listen(fd, 4) == 0 else {
                let why = errnoText()
                close(fd)
                throw GatewayFailure("cannot listen on the launch socket \(path): \(why)")
            }
            self.fd = fd
            self.path = path
        }

        deinit {
            close(fd)
            unlink(path)
        }

        /// The next connection within `seconds`, or nil.
        public func accept(within seconds: Double) -> Connection? {
            guard LaunchChannel.readable(fd, within: seconds) else { return nil }
            let c = Glibc.accept(fd, nil, nil)
            guard c >= 0 else { return nil }
            _ = fcntl(c, F_SETFD, FD_CLOEXEC)
            return Connection(fd: c)
        }
    }

    /// One connection from a would-be launcher (closed with it).
    public final class Connection: Sendable {
        let fd: Int32
        init(fd: Int32) { self.fd = fd }
        deinit { close(fd) }

        /// The process at the other end, as the kernel names it.
        public var peer: (pid: Int32, uid: UInt32)? {
            var cred = cspawn_ucred(pid: 0, uid: UInt32.max, gid: UInt32.max)
            var len = socklen_t(MemoryLayout<cspawn_ucred>.size)
            guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 else { return nil }
            return (cred.pid, cred.uid)
        }

        /// One frame's words, if a whole well-formed frame arrives within `seconds`.
        public func readWords(within seconds: Double) -> [String]? {
            let deadline = Supervisor.monotonic() + seconds
            guard let head = read(4, until: deadline) else { return nil }
            let n = head.withUnsafeBytes { Int($0.load(as: UInt32.self)) }
            guard n > 0, n <= LaunchChannel.maxFrame, let body = read(n, until: deadline), body.last == 0 else { return nil }
            return body.dropLast().split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        }

        /// The launcher's answer to a start: `{stage, errno, pid}`, within `seconds`.
        public func readResult(within seconds: Double) -> (stage: Int32, errno: Int32, pid: Int32)? {
            guard let b = read(12, until: Supervisor.monotonic() + seconds) else { return nil }
            return b.withUnsafeBytes { ($0.load(fromByteOffset: 0, as: Int32.self), $0.load(fromByteOffset: 4, as: Int32.self), $0.load(fromByteOffset: 8, as: Int32.self)) }
        }

        /// Sends `words` as one frame, `fds` with its first bytes.
        @discardableResult
        public func send(_ words: [String], fds: [Int32] = []) -> Bool {
            var body: [UInt8] = []
            for w in words { body += Array(w.utf8); body.append(0) }
            guard body.count <= LaunchChannel.maxFrame else { return false }
            var frame = withUnsafeBytes(of: UInt32(body.count)) { Array($0) } + body
            var sent = 0
            if !fds.isEmpty {
                sent = LaunchChannel.sendWithDescriptors(fd, frame, fds)
                guard sent > 0 else { return false }
            }
            frame.removeFirst(sent)
            return write(frame)
        }

        /// Sends raw bytes (the final go/stop byte, a failure's sentence).
        @discardableResult
        public func write(_ bytes: [UInt8]) -> Bool {
            var off = 0
            while off < bytes.count {
                let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return false }
                off += n
            }
            return true
        }

        /// A sentence framed for the launcher to print.
        public func writeSentence(_ text: String) {
            let b = Array(text.utf8.prefix(4000))
            write(withUnsafeBytes(of: UInt32(b.count)) { Array($0) } + b)
        }

        /// What the supervisor said within `seconds` about how the agent ended.
        public enum Report: Equatable { case none, ended, exited(status: Int32, tail: String) }

        public func readReport(within seconds: Double) -> Report {
            guard LaunchChannel.readable(fd, within: seconds) else { return .none }
            guard let w = readWords(within: 2), w.count == 2, let status = Int32(w[0]) else { return .ended }
            return .exited(status: status, tail: w[1])
        }

        private func read(_ count: Int, until deadline: Double) -> [UInt8]? {
            var out = [UInt8](repeating: 0, count: count)
            var got = 0
            while got < count {
                guard LaunchChannel.readable(fd, within: deadline - Supervisor.monotonic()) else { return nil }
                let n = out[got...].withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
                if n <= 0 { return nil }
                got += n
            }
            return out
        }
    }

    static func readable(_ fd: Int32, within seconds: Double) -> Bool {
        guard seconds > 0 else { return false }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while true {
            let r = poll(&p, 1, max(1, Int32(min(seconds, 3600) * 1000)))
            if r < 0 && errno == EINTR { continue }
            return r > 0
        }
    }

    /// sendmsg with SCM_RIGHTS: returns the bytes sent, or -1.
    static func sendWithDescriptors(_ fd: Int32, _ bytes: [UInt8], _ fds: [Int32]) -> Int {
        let space = cmsgSpace(fds.count * MemoryLayout<Int32>.size)
        var control = [UInt8](repeating: 0, count: space)
        var data = bytes
        return data.withUnsafeMutableBytes { dataPtr in
            control.withUnsafeMutableBytes { ctl in
                var iov = iovec(iov_base: dataPtr.baseAddress, iov_len: dataPtr.count)
                return withUnsafeMutablePointer(to: &iov) { iovPtr in
                    var msg = msghdr()
                    msg.msg_iov = iovPtr
                    msg.msg_iovlen = 1
                    msg.msg_control = ctl.baseAddress
                    msg.msg_controllen = ctl.count
                    let header = ctl.baseAddress!.assumingMemoryBound(to: cmsghdr.self)
                    header.pointee.cmsg_level = SOL_SOCKET
                    header.pointee.cmsg_type = Int32(SCM_RIGHTS)
                    header.pointee.cmsg_len = cmsgLen(fds.count * MemoryLayout<Int32>.size)
                    let payload = ctl.baseAddress! + cmsgLen(0)
                    for (i, d) in fds.enumerated() { payload.storeBytes(of: d, toByteOffset: i * 4, as: Int32.self) }
                    var n: Int
                    repeat { n = sendmsg(fd, &msg, Int32(MSG_NOSIGNAL)) } while n < 0 && errno == EINTR
                    return n
                }
            }
        }
    }

    static func cmsgAlign(_ n: Int) -> Int { (n + MemoryLayout<Int>.size - 1) & ~(MemoryLayout<Int>.size - 1) }
    static func cmsgLen(_ n: Int) -> Int { cmsgAlign(MemoryLayout<cmsghdr>.size) + n }
    static func cmsgSpace(_ n: Int) -> Int { cmsgAlign(MemoryLayout<cmsghdr>.size) + cmsgAlign(n) }
}

extension LaunchChannel {
    /// The launcher's start frame for `prepared`, and the descriptors that go with it, in the order the words say:
    /// the cwd, the Landlock ruleset (when there is one), the task's pipe (when the CLI takes its task on standard
    /// input) and what the program inherits at 3, 4, …. `supervisor` is the command the launcher execs once the
    /// agent is recorded.
    ///
    ///     start PATH CWD CWDSLOT DROPCAPS NEWUSERNS LANDLOCK STDIN NPASS FILTER NRLIMITS [RES VALUE]...
    ///           NARGV ARGV... NENV ENV... NSUP SUPERVISOR...
    public static func startFrame(_ prepared: PreparedStart, stdin: Int32?, supervisor: [String]) -> (words: [String], fds: [Int32])? {
        let hex = prepared.filter.isEmpty ? "-" : prepared.filter.hex
        var words = ["start", prepared.program, prepared.spawn.match.cwd, String(prepared.cwdSlot), prepared.dropCaps ? "1" : "0",
                     prepared.newUserns ? "1" : "0", prepared.landlockFD >= 0 ? "1" : "0", stdin != nil ? "1" : "0",
                     String(prepared.passFDs.count), hex, String(prepared.limits.count)]
        for l in prepared.limits { words += [String(l.resource), String(l.value)] }
        words += [String(prepared.argv.count)] + prepared.argv
        words += [String(prepared.environment.count)] + prepared.environment
        words += [String(supervisor.count)] + supervisor
        guard !words.contains(where: { $0.utf8.contains(0) }) else { return nil }
        var fds = [prepared.cwdFD]
        if prepared.landlockFD >= 0 { fds.append(prepared.landlockFD) }
        if let stdin { fds.append(stdin) }
        return (words, fds + prepared.passFDs)
    }
}
