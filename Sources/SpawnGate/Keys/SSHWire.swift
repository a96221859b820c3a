/// The SSH wire encoding (RFC 4251 §5): `string` = uint32 big-endian length, then the bytes.
struct SSHWireReader {
    private let bytes: [UInt8]
    private(set) var pos = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { pos == bytes.count }

    mutating func uint32() -> UInt32? {
        guard bytes.count - pos >= 4 else { return nil }
        let v = bytes[pos..<pos + 4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        pos += 4
        return v
    }

    mutating func string() -> [UInt8]? {
        guard let n = uint32(), Int(n) <= bytes.count - pos else { return nil }
        defer { pos += Int(n) }
        return Array(bytes[pos..<pos + Int(n)])
    }

    mutating func raw(_ n: Int) -> [UInt8]? {
        guard n <= bytes.count - pos else { return nil }
        defer { pos += n }
        return Array(bytes[pos..<pos + n])
    }
}

struct SSHWireWriter {
    var bytes: [UInt8] = []

    mutating func uint32(_ v: UInt32) {
        bytes.append(contentsOf: [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)])
    }

    mutating func string(_ s: [UInt8]) {
        uint32(UInt32(s.count))
        bytes.append(contentsOf: s)
    }

    mutating func string(_ s: String) { string(Array(s.utf8)) }
}
