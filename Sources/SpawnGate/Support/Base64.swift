/// Strict, canonical base64 codecs.
///
/// Foundation's decoder tolerates things a signature scheme must not: missing or extra padding, whitespace, and
/// non-zero unused bits, each of which gives one value several spellings. These decoders accept exactly one
/// spelling per byte string and return nil for anything else.
public enum Base64 {
    private static let standardAlphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let urlAlphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    private static func reverse(_ alphabet: [UInt8]) -> [Int8] {
        var table = [Int8](repeating: -1, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = Int8(i) }
        return table
    }
    private static let standardTable = reverse(standardAlphabet)
    private static let urlTable = reverse(urlAlphabet)

    /// base64url without padding (RFC 4648 §5), as the envelope uses.
    public static func urlEncode(_ bytes: some Collection<UInt8>) -> String {
        encode(Array(bytes), alphabet: urlAlphabet, pad: false)
    }

    /// Standard base64 with padding, as OpenSSH key lines use.
    public static func standardEncode(_ bytes: some Collection<UInt8>, pad: Bool = true) -> String {
        encode(Array(bytes), alphabet: standardAlphabet, pad: pad)
    }

    public static func urlDecode(_ text: some StringProtocol) -> [UInt8]? {
        decode(Array(text.utf8), table: urlTable, padded: false)
    }

    public static func standardDecode(_ text: some StringProtocol, padded: Bool = true) -> [UInt8]? {
        decode(Array(text.utf8), table: standardTable, padded: padded)
    }

    private static func encode(_ bytes: [UInt8], alphabet: [UInt8], pad: Bool) -> String {
        var out = [UInt8]()
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            for shift in [18, 12, 6, 0] { out.append(alphabet[Int((n >> UInt32(shift)) & 63)]) }
            i += 3
        }
        let rest = bytes.count - i
        if rest == 1 {
            let n = UInt32(bytes[i]) << 16
            out.append(alphabet[Int((n >> 18) & 63)]); out.append(alphabet[Int((n >> 12) & 63)])
            if pad { out.append(contentsOf: Array("==".utf8)) }
        } else if rest == 2 {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            for shift in [18, 12, 6] { out.append(alphabet[Int((n >> UInt32(shift)) & 63)]) }
            if pad { out.append(UInt8(ascii: "=")) }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func decode(_ input: [UInt8], table: [Int8], padded: Bool) -> [UInt8]? {
        var chars = input[...]
        if padded {
            guard input.count % 4 == 0 else { return nil }
            var pads = 0
            while pads < 2, chars.last == UInt8(ascii: "=") { chars = chars.dropLast(); pads += 1 }
            // Padding must be exactly what the length requires: "QQ==" yes, "QQ=" or "QUI==" no.
            guard (chars.count + pads) % 4 == 0, pads == (4 - chars.count % 4) % 4 else { return nil }
        }
        guard chars.count % 4 != 1 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(chars.count * 3 / 4)
        var acc: UInt32 = 0
        var bits = 0
        for c in chars {
            let v = table[Int(c)]
            guard v >= 0 else { return nil }
            acc = acc << 6 | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8((acc >> UInt32(bits)) & 0xFF))
            }
        }
        // Leftover bits must be zero, otherwise two strings would decode to the same bytes.
        guard acc & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
        return out
    }
}

extension Array where Element == UInt8 {
    /// Lowercase hex.
    public var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(count * 2)
        for b in self { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }

    public init?(hex: some StringProtocol) {
        let chars = Array(hex.utf8)
        guard chars.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity(chars.count / 2)
        var i = 0
        while i < chars.count {
            guard let hi = nibble(chars[i]), let lo = nibble(chars[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        self = out
    }
}
