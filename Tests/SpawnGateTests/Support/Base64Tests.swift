import Testing
@testable import SpawnGate

@Suite("Canonical base64")
struct Base64Tests {
    @Test func roundTripsEveryLength() {
        for n in 0..<40 {
            let bytes = (0..<n).map { UInt8(($0 * 37 + 11) & 0xFF) }
            #expect(Base64.urlDecode(Base64.urlEncode(bytes)) == bytes)
            #expect(Base64.standardDecode(Base64.standardEncode(bytes)) == bytes)
        }
    }

    @Test("refuses non-canonical base64url (T2)", arguments: ["QQ==", "QQ=", "QR", "Q", "+/8", "QQ\n", " QQ", "Q Q", "QUI="])
    func refusesURL(_ text: String) {
        #expect(Base64.urlDecode(text) == nil)
    }

    @Test func refusesNonCanonicalStandard() {
        #expect(Base64.standardDecode("QQ==") == [0x41])
        for bad in ["QQ", "QQ=", "QR==", "QQ===", "Q===", "-_8=", "QUJD\n"] {
            #expect(Base64.standardDecode(bad) == nil, "\(bad)")
        }
    }
}
