import Foundation
import Testing
@testable import SpawnGate

/// T46: text a request (or a file name, or a remote receipt) chose reaches operators' terminals only escaped:
/// controls, bidi overrides and isolates, zero-width and other invisible characters, through one function.
@Suite("Text shown to operators")
struct TerminalOutputTests {
    /// One of each family, and text that must stay as it is.
    static let hostile: [Unicode.Scalar] = [
        "\u{1B}", "\u{7F}", "\u{85}", "\u{9B}", "\u{9F}", "\u{61C}", "\u{200B}", "\u{200D}", "\u{200E}", "\u{200F}", "\u{2028}", "\u{2029}",
        "\u{202A}", "\u{202C}", "\u{202E}", "\u{2060}", "\u{2064}", "\u{2066}", "\u{2069}", "\u{FEFF}", "\u{AD}", "\u{E0041}", "\u{FE0F}",
    ]

    static func raw(_ text: String) -> [Unicode.Scalar] {
        text.unicodeScalars.filter { s in hostile.contains(s) || (s.value < 0x20 && s != "\n" && s != "\t") }
    }

    @Test func everyFamilyIsEscapedAndJSONRoundTrips() throws {
        let text = "a" + String(String.UnicodeScalarView(Self.hostile)) + "b"
        let shown = TerminalText.escaped(text)
        #expect(Self.raw(shown).isEmpty, "\(shown.unicodeScalars.map { String($0.value, radix: 16) })")
        #expect(shown.contains(#"\u202e"#) && shown.contains(#"\u001b"#) && shown.contains(#"\udb40\udc41"#), "\(shown)")
        let json = JSONWriter.object([("s", .string(text))])
        #expect(Self.raw(String(decoding: json, as: UTF8.self)).isEmpty)
        #expect(try StrictJSONReader.parse(json) == .object(["s": .string(text)]), "the JSON means the same text")
        for plain in ["café", "cafe\u{301}", "漢字", "👍", "/srv/app"] {
            #expect(TerminalText.escaped(plain) == plain)
        }
        #expect(TerminalText.escaped("a\nb", keepingNewlines: true) == "a\nb" && TerminalText.escaped("a\nb") == #"a\u000ab"#)
    }

    /// `audit tail` (both forms), `verify`, `policy explain` and `key list` on strings a request or a file chose.
    @Test func decisionAndKeyOutputsShowNoRawControls() throws {
        let g = try DecisionCLITests.live()
        let evil = "/srv/\u{202E}gpj.exe\u{200B}\u{1B}[2J"
        let denied = try g.check(g.envelope(g.request(cwd: evil)))
        #expect(denied.status == 1)
        for args in [["audit", "tail"], ["audit", "tail", "--json"]] {
            let out = try g.cli(args)
            #expect(out.status == 0 && out.stdout.contains(#"\u202e"#) && Self.raw(out.stdout).isEmpty, "\(args): \(out.stdout)")
        }
        // A request addressed elsewhere: verify's sentence quotes its 'to'.
        var r = g.request()
        r.to = "vps-broker\u{202E}"
        let file = g.dir + "/to.json"
        try DecisionCLITests.write(g.envelope(r), file)
        let verify = try g.cli(["verify", file])
        #expect(verify.status == 1 && Self.raw(verify.stdout + verify.stderr).isEmpty && verify.stdout.contains(#"\u202e"#), "\(verify.stdout)")
        let explain = try g.cli(["policy", "explain", "--lexical", "--from", "mac-laptop", "--cli", "claude", "--cwd", g.app + "/\u{202E}x", "--arg", "\u{2066}--y"])
        #expect(explain.status == 1 && Self.raw(explain.stdout + explain.stderr).isEmpty && explain.stdout.contains(#"\u202e"#), "\(explain.stdout)")
        // A key file whose name someone chose by hand.
        let key = SigningKey.generate().publicKey
        try Files.writeAtomically(g.vps.keysDir + "/evil\u{202E}.pub", Array((key.line(comment: "x") + "\n").utf8), mode: 0o644)
        let keys = try g.cli(["key", "list"])
        #expect(keys.status == 0 && keys.stdout.contains(#"evil\u202e"#) && Self.raw(keys.stdout).isEmpty, "\(keys.stdout)")
    }

    /// `agents` prints the cwd of a running agent, which the request chose.
    @Test func agentsTableShowsNoRawControls() throws {
        let g = try DecisionCLITests.live(["sandbox: standard"])
        try g.script("sleep 60")
        let cwd = g.app + "/\u{202E}gpj.exe"
        try FileManager.default.createDirectory(atPath: cwd, withIntermediateDirectories: true)
        let file = g.dir + "/req.json"
        try DecisionCLITests.write(g.envelope(g.request(cwd: cwd)), file)
        let exec = Process()
        exec.executableURL = URL(fileURLWithPath: TestSupport.binary)
        exec.arguments = ["exec", "--log", "--home", g.vps.root, file]
        exec.standardOutput = FileHandle.nullDevice
        exec.standardError = FileHandle.nullDevice
        try exec.run()
        defer { _ = try? g.cli(["release", "coder", "--grace", "0"]); exec.waitUntilExit() }
        // Waits for the state change (exec has recorded its agent), bounded.
        var tries = 0
        while try AgentsCLITests.listed(g).isEmpty, tries < 500 { usleep(10_000); tries += 1 }
        let table = try g.cli(["agents"])
        #expect(table.stdout.contains("coder") && table.stdout.contains(#"\u202egpj.exe"#) && Self.raw(table.stdout).isEmpty, "\(table.stdout)")
    }
}
