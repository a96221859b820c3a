import Foundation
import SpawnGate

/// Whole processes, started with posix_spawn and timed from outside: Foundation's Process adds milliseconds of its
/// own, which would blur the comparison with SSH.
enum Proc {
    /// Starts `argv` with stdout and stderr to `log` (or /dev/null); returns its pid.
    static func start(_ argv: [String], log: String = "/dev/null", stdin: String = "/dev/null") -> pid_t {
        var cargs = argv.map { strdup($0) } + [nil]
        defer { for a in cargs { free(a) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, stdin, O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, nil, &cargs, environ)
        guard rc == 0 else { fatalError("cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
        return pid
    }

    static func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// Runs `argv` to completion: its exit status and the wall time in nanoseconds.
    @discardableResult
    static func run(_ argv: [String], log: String = "/dev/null", stdin: String = "/dev/null") -> (status: Int32, ns: Double) {
        let t0 = Bench.now()
        let status = wait(start(argv, log: log, stdin: stdin))
        return (status, Double(Bench.now() - t0))
    }

    /// Runs `argv` and fails the benchmark, showing its output, unless it exits 0.
    static func must(_ argv: [String], in dir: String) {
        let log = dir + "/setup.log"
        try? FileManager.default.removeItem(atPath: log)
        let r = run(argv, log: log)
        guard r.status == 0 else {
            fatalError("\(argv.joined(separator: " ")) exited \(r.status): \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
    }

    static func stop(_ pid: pid_t) {
        kill(pid, SIGTERM)
        _ = wait(pid)
    }

    /// Waits until `file` contains `text`, for up to `seconds`; returns the file's contents then.
    static func awaitText(_ text: String, in file: String, seconds: Double = 20) -> String? {
        let deadline = Bench.now() + UInt64(seconds * 1e9)
        while Bench.now() < deadline {
            if let s = try? String(contentsOfFile: file, encoding: .utf8), s.contains(text) { return s }
            usleep(10_000)
        }
        return nil
    }

    /// A TCP port on 127.0.0.1 that was free a moment ago.
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Whether something accepts connections on 127.0.0.1:`port`.
    static func accepts(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        return withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }
}

extension Array where Element == Double {
    var median: Double { let s = sorted(); return s.isEmpty ? .nan : s[s.count / 2] }
}
