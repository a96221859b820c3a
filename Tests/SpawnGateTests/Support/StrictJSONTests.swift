import Testing
@testable import SpawnGate

@Suite("Strict JSON reader")
struct StrictJSONTests {
    private func parse(_ s: String) -> JSONValue? { try? StrictJSONReader.parse(Array(s.utf8)) }
    private func parse(_ b: [UInt8]) -> JSONValue? { try? StrictJSONReader.parse(b) }

    @Test func readsOrdinaryJSON() throws {
        let v = try #require(parse(#" {"a":[1,"x",true,null,{"b":-2.5e3}]} "#))
        #expect(v == .object(["a": .array([.number("1"), .string("x"), .bool(true), .null, .object(["b": .number("-2.5e3")])])]))
        #expect(parse(#""\u00e9\ud83d\ude00""#) == .string("é😀"))
    }

    @Test("refuses what lax readers accept", arguments: [
        #"{"cli":"ls","cli":"rm"}"#,        // duplicate key (T7)
        #"{"a":1} x"#,                       // trailing data
        #"{"a":1}{}"#,
        #""\ud800""#,                        // lone high surrogate
        #""\udc00x""#,                       // lone low surrogate
        #""a\u0000b""#,                      // NUL escape (T8)
        "\"a\u{01}b\"",                      // raw control character
        #"[1,]"#, #"{"a":1,}"#, "01", "1.", ".5", "+1", "NaN", "'a'", "", "[", #"{"a"}"#,
    ])
    func refuses(_ text: String) {
        #expect(parse(text) == nil, "accepted: \(text)")
    }

    @Test("refuses invalid UTF-8", arguments: [
        [0x22, 0xC3, 0x28, 0x22],            // truncated sequence
        [0x22, 0xC0, 0xAF, 0x22],            // overlong '/'
        [0x22, 0xED, 0xA0, 0x80, 0x22],      // encoded surrogate
        [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], // above U+10FFFF
        [0x22, 0x61, 0x00, 0x22],            // raw NUL
    ] as [[UInt8]])
    func refusesBadUTF8(_ bytes: [UInt8]) {
        #expect(parse(bytes) == nil)
    }

    @Test func boundsNesting() {
        let deep = String(repeating: "[", count: StrictJSONReader.maxDepth + 2) + String(repeating: "]", count: StrictJSONReader.maxDepth + 2)
        #expect(parse(deep) == nil)
        let ok = String(repeating: "[", count: 10) + String(repeating: "]", count: 10)
        #expect(parse(ok) != nil)
    }

    @Test func safeIntegersOnly() {
        #expect(JSONValue.number("9007199254740991").safeInteger == 9_007_199_254_740_991)
        #expect(JSONValue.number("-12").safeInteger == -12)
        for bad in ["9007199254740992", "9007199254740993", "1e3", "1.0", "-0", "99999999999999999999"] {
            #expect(JSONValue.number(bad).safeInteger == nil, "\(bad)")
        }
    }

    @Test func writerEscapesControlCharacters() {
        let out = String(decoding: JSONWriter.object([("a", .string("x\n\u{1B}[31m\u{7F}\u{9B}\"\\é"))]), as: UTF8.self)
        #expect(out == #"{"a":"x\n\u001b[31m\u007f\u009b\"\\é"}"#)
        // What the writer writes, the strict reader reads back unchanged.
        #expect(parse(out) == .object(["a": .string("x\n\u{1B}[31m\u{7F}\u{9B}\"\\é")]))
    }
}
