import Foundation
import Testing
@testable import SpawnGate

/// Real files, real processes: helpers shared by the suites.
enum TestSupport {
    /// The repository root, found from this file's path.
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url.path }
        }
        fatalError("Package.swift not found above \(#filePath)")
    }()

    /// The `spawngate` executable built next to the test bundle.
    static let binary: String = {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("spawngate").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir.deleteLastPathComponent()
        }
        return packageRoot + "/.build/debug/spawngate"
    }()

    /// A TCP listener on 127.0.0.1, on a port the kernel picks: for the tests' own stand-in peers.
    static func loopbackListener(backlog: Int32 = 8) throws -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && listen(fd, backlog) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { close(fd); throw GatewayFailure("cannot listen on loopback") }
        return (fd, UInt16(bigEndian: addr.sin_port))
    }

    /// A fresh private directory; each test gets its own, so the parallel runner never shares state.
    static func tempDir(_ label: String = "t", base: String = "/tmp") -> String {
        var template = Array("\(base)/spawngate-\(label)-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        return path
    }

    struct Output {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// Runs a program to completion with the given standard input.
    static func run(_ executable: String, _ arguments: [String], stdin: [UInt8] = [], environment: [String: String]? = nil) throws -> Output {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        if let environment { p.environment = environment }
        let inPipe = Pipe(), outPipe = Pipe(), errPipe = Pipe()
        p.standardInput = inPipe
        p.standardOutput = outPipe
        p.standardError = errPipe
        try p.run()
        // Write and read concurrently so that large outputs cannot deadlock on full pipes.
        let writer = Thread {
            inPipe.fileHandleForWriting.write(Data(stdin))
            try? inPipe.fileHandleForWriting.close()
        }
        writer.start()
        let err = errPipe.fileHandleForReading
        nonisolated(unsafe) var errData = Data()
        let errReader = Thread { errData = err.readDataToEndOfFile() }
        errReader.start()
        let outData = outPipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        while errReader.isExecuting || !errReader.isFinished { usleep(1000) }
        return Output(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }

    /// Runs the `spawngate` binary.
    static func spawngate(_ arguments: [String], stdin: [UInt8] = []) throws -> Output {
        try run(binary, arguments, stdin: stdin)
    }

    /// A broker home made with the real `init` code path.
    static func makeHome(_ name: String, in dir: String) throws -> (Home, Identity) {
        let root = "\(dir)/\(name)"
        let id = try Home.initialize(at: root, name: name)
        return (Home(root: root), id)
    }

    static func python(_ script: String, _ arguments: [String], stdin: [UInt8] = []) throws -> Output {
        try run("/usr/bin/env", ["python3", packageRoot + "/" + script] + arguments, stdin: stdin)
    }

    /// `peer add NAME --url URL --key LINE --fingerprint FP` for the broker whose home is `peer` (its own key line
    /// and fingerprint, as its operator would read them out).
    static func peerAdd(_ name: String, home peer: Home, url: String) throws -> [String] {
        let line = try String(contentsOfFile: peer.root + "/identity.pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        return ["peer", "add", name, "--url", url, "--key", line, "--fingerprint", try PublicKey.parseLine(line).0.fingerprint.description]
    }

    /// Starts a `Tests/Probes` Python script in the background (through `prefix`, e.g. `ip netns exec NS`); its
    /// standard output comes back in the pipe.
    static func startProbe(_ script: String, _ arguments: [String], prefix: [String] = []) throws -> (Process, Pipe) {
        let command = prefix + ["/usr/bin/env", "python3", packageRoot + "/Tests/Probes/" + script] + arguments
        let p = Process()
        p.executableURL = URL(fileURLWithPath: command[0])
        p.arguments = Array(command.dropFirst())
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        return (p, out)
    }

    /// Host pids of live processes whose command line contains `marker` (agents see only their own namespace's
    /// pids, so tests find an agent's descendants from outside by a unique argument such as `sleep 61.25`).
    static func pids(withCommandLine marker: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), ProcessIdentity.of(pid: pid) != nil else { return false }
            return String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self).contains(marker)
        }
    }

    /// Waits (bounded, polling the kernel's state, not a fixed sleep) until no process shows `marker`.
    static func gone(_ marker: String, within seconds: Double = 5) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if pids(withCommandLine: marker).isEmpty { return true }
            usleep(20_000)
        }
        return pids(withCommandLine: marker).isEmpty
    }
}
