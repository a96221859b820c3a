/// Writes compact JSON deterministically: members in the order given, strings escaped so that the output is
/// one line of printable text. Control characters (C0, DEL, C1), separators, and bidi and invisible characters
/// (``TerminalText``) are written as `\uXXXX`, so a hostile argv cannot move a terminal's cursor, split an
/// audit-log line, or reorder what a reader sees.
public struct JSONWriter {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public enum Value {
        case null
        case bool(Bool)
        case int(Int64)
        case string(String)
        case strings([String])
        case raw([UInt8])
        case object(JSONWriter)
    }

    public static func object(_ members: [(String, Value)]) -> [UInt8] {
        var w = JSONWriter()
        w.writeObject(members)
        return w.bytes
    }

    /// Writes a parsed value back out (object members sorted by key, so the output is deterministic).
    public static func encode(_ value: JSONValue) -> [UInt8] {
        var w = JSONWriter()
        w.write(value)
        return w.bytes
    }

    private mutating func write(_ value: JSONValue) {
        switch value {
        case .null: write(Value.null)
        case .bool(let b): write(Value.bool(b))
        case .number(let text): bytes.append(contentsOf: Array(text.utf8))
        case .string(let s): Self.appendString(s, to: &bytes)
        case .array(let items):
            bytes.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { bytes.append(UInt8(ascii: ",")) }
                write(item)
            }
            bytes.append(UInt8(ascii: "]"))
        case .object(let members):
            bytes.append(UInt8(ascii: "{"))
            for (i, key) in members.keys.sorted().enumerated() {
                if i > 0 { bytes.append(UInt8(ascii: ",")) }
                Self.appendString(key, to: &bytes)
                bytes.append(UInt8(ascii: ":"))
                write(members[key]!)
            }
            bytes.append(UInt8(ascii: "}"))
        }
    }

    /// A JSON array of `items`.
    public static func array(_ items: [Value]) -> [UInt8] {
        var w = JSONWriter()
        w.bytes.append(0x5B)
        for (i, v) in items.enumerated() {
            if i > 0 { w.bytes.append(0x2C) }
            w.write(v)
        }
        w.bytes.append(0x5D)
        return w.bytes
    }

    public mutating func writeObject(_ members: [(String, Value)]) {
        bytes.append(UInt8(ascii: "{"))
        for (i, (key, value)) in members.enumerated() {
            if i > 0 { bytes.append(UInt8(ascii: ",")) }
            Self.appendString(key, to: &bytes)
            bytes.append(UInt8(ascii: ":"))
            write(value)
        }
        bytes.append(UInt8(ascii: "}"))
    }

    private mutating func write(_ value: Value) {
        switch value {
        case .null: bytes.append(contentsOf: Array("null".utf8))
        case .bool(let b): bytes.append(contentsOf: Array((b ? "true" : "false").utf8))
        case .int(let n): bytes.append(contentsOf: Array(String(n).utf8))
        case .string(let s): Self.appendString(s, to: &bytes)
        case .strings(let list):
            bytes.append(UInt8(ascii: "["))
            for (i, s) in list.enumerated() {
                if i > 0 { bytes.append(UInt8(ascii: ",")) }
                Self.appendString(s, to: &bytes)
            }
            bytes.append(UInt8(ascii: "]"))
        case .raw(let raw): bytes.append(contentsOf: raw)
        case .object(let inner): bytes.append(contentsOf: inner.bytes)
        }
    }

    public static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for scalar in s.unicodeScalars {
            switch scalar.value {
            case 0x22: out.append(contentsOf: [0x5C, 0x22])
            case 0x5C: out.append(contentsOf: [0x5C, 0x5C])
            case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0x20..<0x7F:
                out.append(UInt8(scalar.value))
            default:
                // Controls, separators, bidi and invisible characters: escaped, as TerminalText shows them.
                if TerminalText.mustEscape(scalar) { out.append(contentsOf: Array(TerminalText.escape(scalar).utf8)) } else {
                    out.append(contentsOf: Array(String(scalar).utf8))
                }
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
