import Foundation
import Testing
@testable import SpawnGate
#if canImport(Glibc)
import Glibc
#endif

/// Issue 25, class 4: a follower's offset is bytes of the agent's output as the gateway counted them, never the
/// length of decoded text; the text is only for display, and shows the same bytes the same way here and through
/// a gateway.
@Suite("Hostile seams: logs offsets are bytes")
struct LogsOffsetTests {
    // MARK: display

    @Test func invalidBytesAreShownAsHexAndControlsEscaped() {
        func shown(_ bytes: [UInt8]) -> String { TerminalText.displayed(bytes: bytes) }
        #expect(shown(Array("plain line\n".utf8)) == "plain line\n")
        #expect(shown([0xff, 0xfe, 0x0a]) == "\\xff\\xfe\n")
        #expect(shown([0x61, 0x80, 0x62]) == "a\\x80b", "a lone continuation byte")
        #expect(shown([0xf0, 0x9f, 0x98, 0x41]) == "\\xf0\\x9f\\x98A", "a truncated 4-byte sequence: each byte")
        #expect(shown([0xc0, 0xaf]) == "\\xc0\\xaf", "an overlong '/'")
        #expect(shown([0xed, 0xa0, 0x80]) == "\\xed\\xa0\\x80", "a UTF-16 surrogate")
        #expect(shown([0xf4, 0x90, 0x80, 0x80]) == "\\xf4\\x90\\x80\\x80", "past U+10FFFF")
        #expect(shown(Array("é ✓ 😀".utf8)) == "é ✓ 😀", "valid UTF-8 kept")
        #expect(shown([0x1b, 0x5b, 0x32, 0x4a, 0x09, 0x0a]) == "\\u001b[2J\\u0009\n", "controls escaped, line feeds kept")
        #expect(shown(Array("a\u{202E}b".utf8)) == "a\\u202eb", "bidi override escaped")
        // What a gateway sends is already displayed; the client escapes it again without changing it.
        let hostile: [UInt8] = [0xff, 0x1b, 0x5c, 0x78, 0x41] + Array("\u{202E}\u{200B}\n".utf8) + [0xe2, 0x80]
        let once = shown(hostile)
        #expect(TerminalText.escaped(once, keepingNewlines: true) == once)
    }

    // MARK: reading

    /// A read while the agent runs stops before a UTF-8 sequence cut at the end (half-written); the next read
    /// from `next` shows it whole. Once the agent has exited its last bytes are consumed, shown as they are.
    @Test func aSplitMultibyteSequenceWaitsForTheNextRead() throws {
        let dir = TestSupport.tempDir("logs-offset")
        let path = dir + "/agent.out"
        let smile: [UInt8] = [0xf0, 0x9f, 0x98, 0x80]  // 😀
        try Data(Array("ab".utf8) + smile.prefix(2)).write(to: URL(fileURLWithPath: path))

        let first = AgentService.read(path, from: 0, complete: false)
        #expect(Array(first) == Array("ab".utf8), "the half-written 😀 is left for the next read")
        let exited = AgentService.read(path, from: 0, complete: true)
        #expect(TerminalText.displayed(bytes: exited) == "ab\\xf0\\x9f", "nothing more will come: shown as the bytes they are")

        let h = try #require(FileHandle(forWritingAtPath: path))
        h.seekToEndOfFile(); h.write(Data(smile.suffix(2) + Array("!\n".utf8))); try h.close()
        let second = AgentService.read(path, from: Int64(first.count), complete: false)
        #expect(TerminalText.displayed(bytes: second) == "😀!\n")
        #expect(first.count + second.count == 8, "every byte consumed once")

        // A read cut by its limit (more is there) never splits a sequence either, whether or not the agent runs.
        try Data(Array("a".utf8) + smile + Array("b".utf8)).write(to: URL(fileURLWithPath: path))
        #expect(Array(AgentService.read(path, from: 0, limit: 3, complete: true)) == [0x61])
        #expect(TerminalText.displayed(bytes: AgentService.read(path, from: 1, limit: 4, complete: true)) == "😀")

        // The last lines of a running agent's output end where they were consumed, before the cut sequence.
        try Data(Array("x\ny\n".utf8) + smile.prefix(3)).write(to: URL(fileURLWithPath: path))
        let last = AgentService.lastLines(path, 10, size: 7, complete: false)
        #expect(last.text == "x\ny\n" && last.end == 4, "\(last)")
        #expect(AgentService.incompleteTail([0x41, 0xe2, 0x82]) == 2 && AgentService.incompleteTail([0xe2, 0x82, 0xac]) == 0)
        #expect(AgentService.incompleteTail([0x80, 0x80, 0x80]) == 0 && AgentService.incompleteTail([0xff]) == 0)
    }

    // MARK: following, here and through the gateway

    /// The agent writes invalid UTF-8 (0xff 0xfe, a lone continuation byte, a truncated 4-byte sequence), then a
    /// 😀 split across two writes, then more lines. A follower here and one through `--broker` each show every
    /// later line exactly once, and the same characters for the same bytes. With offsets counted in decoded text
    /// (U+FFFD is 3 bytes, `\xff` 4), the lines after the invalid bytes are cut or lost.
    @Test func followersHereAndRemoteShowEveryLineOnceAndTheSame() throws {
        let r = try ServeTests.Remote(rule: ["sandbox: standard"], agent: """
            printf 'before\\n'
            while [ ! -e go1 ]; do sleep 0.05; done
            printf '\\377\\376 x \\200 y \\360\\237\\230\\n'
            printf 'split \\360\\237'
            while [ ! -e go2 ]; do sleep 0.05; done
            printf '\\230\\200 done\\n'
            for i in 1 2 3 4 5; do printf 'after %s\\n' "$i"; done
            """)
        defer { r.serve.kill() }
        #expect(try r.spawn().status == 0)
        let here = try Follower(["logs", "coder", "--follow", "--home", r.g.vps.root])
        let remote = try Follower(["logs", "coder", "--broker", "vps-broker", "--follow", "--home", r.laptopHome])
        defer { here.stop(); remote.stop() }
        for f in [here, remote] { #expect(f.read(until: "before\n"), "\(f.text)") }
        FileManager.default.createFile(atPath: r.g.app + "/go1", contents: nil)
        // Each has read up to the half-written 😀 (and left it for later) before the agent goes on.
        for f in [here, remote] { #expect(f.read(until: "split "), "\(f.text)") }
        FileManager.default.createFile(atPath: r.g.app + "/go2", contents: nil)
        for f in [here, remote] { #expect(f.read(until: "exited with status 0\n"), "\(f.text)") }
        let expected = "before\n\\xff\\xfe x \\x80 y \\xf0\\x9f\\x98\nsplit 😀 done\n"
            + (1...5).map { "after \($0)\n" }.joined() + "-- coder exited with status 0\n"
        #expect(here.text == expected, "\(here.text)")
        #expect(remote.text == here.text, "the same characters in both modes: \(remote.text)")
    }

    /// Output whose display is many times its size (a control byte is `\u0001`, 6 characters, 7 in JSON) is sent
    /// through the gateway in answers that fit a receipt, and `next` makes the follower miss none of it. Sent
    /// whole, the receipt would be too large to verify and `logs --broker` would show nothing.
    @Test func outputThatGrowsWhenShownStillFitsAReceiptAndIsNotSkipped() throws {
        let r = try ServeTests.Remote(rule: ["sandbox: standard"], agent: """
            printf 'start\\n'
            while [ ! -e go ]; do sleep 0.05; done
            for i in 1 2 3 4 5 6 7 8 9 10 11 12; do head -c 1000 /dev/zero | tr '\\000' '\\001'; printf ' line %s\\n' "$i"; done
            printf 'end\\n'
            """)
        defer { r.serve.kill() }
        #expect(try r.spawn().status == 0)
        let remote = try Follower(["logs", "coder", "--broker", "vps-broker", "--follow", "--home", r.laptopHome])
        defer { remote.stop() }
        #expect(remote.read(until: "start\n"), "\(remote.text)")
        FileManager.default.createFile(atPath: r.g.app + "/go", contents: nil)
        #expect(remote.read(until: "exited with status 0\n"), "\(remote.text)")
        let line = String(repeating: "\\u0001", count: 1000)
        let expected = "start\n" + (1...12).map { "\(line) line \($0)\n" }.joined() + "end\n-- coder exited with status 0\n"
        #expect(remote.text == expected, "every byte once: \(remote.text.count) characters, \(remote.text.suffix(200))")
        // The last lines at once: as many as fit, the newest kept.
        let tail = try r.laptop(["logs", "coder", "--broker", "vps-broker", "-n", "1000"])
        #expect(tail.status == 0, "\(tail.stderr)")
        #expect(tail.stdout.hasSuffix("\(line) line 12\nend\n"), "\(tail.stdout.suffix(200))")
    }

    /// A `spawngate` process whose standard output is read as it comes, with a deadline for each wait (a real
    /// process writes it: there is no clock to inject into it).
    final class Follower {
        let process = Process()
        let pipe = Pipe()
        private(set) var bytes: [UInt8] = []
        var text: String { String(decoding: bytes, as: UTF8.self) }

        init(_ arguments: [String]) throws {
            process.executableURL = URL(fileURLWithPath: TestSupport.binary)
            process.arguments = arguments
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            try process.run()
        }

        /// Reads until the output contains `marker` (true) or `seconds` pass (false).
        func read(until marker: String, within seconds: Double = 30) -> Bool {
            let fd = pipe.fileHandleForReading.fileDescriptor
            let deadline = Supervisor.monotonic() + seconds
            while !text.contains(marker) {
                let left = deadline - Supervisor.monotonic()
                guard left > 0 else { return false }
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&pfd, 1, Int32(left * 1000) + 1) > 0 else { continue }
                var buf = [UInt8](repeating: 0, count: 65536)
                let n = Glibc.read(fd, &buf, buf.count)
                guard n > 0 else { return text.contains(marker) }
                bytes += buf[0..<n]
            }
            return true
        }

        func stop() {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }
    }
}
