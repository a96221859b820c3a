/// Text that came from a request, a remote receipt or a file, made safe to show on an operator's terminal and to
/// write as JSON. One rule for both, so what `audit tail`, `agents`, `key list` or `policy explain` print cannot
/// differ from what the audit log holds.
///
/// Escaped: C0 and C1 controls and DEL (cursor movement, ESC sequences), line and paragraph separators (they
/// split lines for some readers), and every format or invisible character: the bidi embeddings, overrides and
/// isolates (U+202A–U+202E, U+2066–U+2069, U+061C) that reorder what is shown (Trojan Source), zero-width
/// characters (U+200B–U+200F, U+2060–U+2064, U+FEFF), tag characters, variation selectors and the rest of
/// Unicode's default-ignorable code points, and unassigned code points (a future format character).
public enum TerminalText {
    public static func mustEscape(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        if v >= 0x20 && v < 0x7F { return false }
        if v < 0x20 || (0x7F...0x9F).contains(v) { return true }
        let p = s.properties
        switch p.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator, .unassigned, .surrogate: return true
        default: return p.isDefaultIgnorableCodePoint
        }
    }

    /// The JSON escape of a scalar: `\u202e`, or a surrogate pair beyond the BMP (`\udb40\udc41`), which a JSON
    /// reader turns back into the same text.
    public static func escape(_ s: Unicode.Scalar) -> String {
        func hex(_ v: UInt32) -> String {
            let digits = String(v, radix: 16)
            return "\\u" + String(repeating: "0", count: max(0, 4 - digits.count)) + digits
        }
        guard s.value > 0xFFFF else { return hex(s.value) }
        let v = s.value - 0x10000
        return hex(0xD800 + (v >> 10)) + hex(0xDC00 + (v & 0x3FF))
    }

    /// `text` with every scalar that ``mustEscape(_:)`` escaped. With `keepingNewlines`, line feeds stay (for
    /// multi-line messages whose lines are all ours).
    /// Idempotent: its output is printable ASCII and scalars it keeps, so text escaped once (a gateway's answer)
    /// can be escaped again (by the client) without changing.
    public static func escaped(_ text: String, keepingNewlines: Bool = false) -> String {
        guard text.unicodeScalars.contains(where: { mustEscape($0) && !(keepingNewlines && $0 == "\n") }) else { return text }
        var out = ""
        for s in text.unicodeScalars {
            if mustEscape(s) && !(keepingNewlines && s == "\n") { out += escape(s) } else { out.unicodeScalars.append(s) }
        }
        return out
    }

    /// An agent's output bytes as `logs` shows them, here and through a gateway alike: valid UTF-8 kept, each byte
    /// that is not part of a valid sequence shown as `\xNN`, then ``escaped(_:keepingNewlines:)`` with line feeds
    /// kept. Nothing is decoded lossily, so what is shown says which bytes were written.
    public static func displayed(bytes: some Collection<UInt8>) -> String {
        // The standard library's UTF-8 parser: well-formed sequences only (no overlongs, surrogates or values past
        // U+10FFFF); each byte of an ill-formed subsequence is shown as `\xNN`.
        let b = Array(bytes)
        var text = ""
        text.unicodeScalars.reserveCapacity(b.count)
        var input = b.makeIterator()
        var parser = Unicode.UTF8.ForwardParser()
        var at = 0  // where the next scalar or ill-formed run starts: the parser reports exactly how many bytes each took
        while true {
            switch parser.parseScalar(from: &input) {
            case .valid(let encoded):
                text.unicodeScalars.append(Unicode.UTF8.decode(encoded))
                at += encoded.count
            case .error(let length):
                for byte in b[at..<(at + length)] { text += "\\x" + (byte < 0x10 ? "0" : "") + String(byte, radix: 16) }
                at += length
            case .emptyInput:
                return escaped(text, keepingNewlines: true)
            }
        }
    }
}
