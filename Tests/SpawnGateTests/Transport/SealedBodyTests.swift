import Foundation
import Testing
@testable import SpawnGate

@Suite("Sealed request bodies")
struct SealedBodyTests {
    /// The target opens exactly the envelope that was signed, and it still verifies; the wire shows no task.
    @Test func onlyTheTargetOpensItAndTheSignatureStillHolds() throws {
        let g = try Gateway()
        let target = try g.vps.loadIdentity().key
        let envelope = g.envelope()
        let body = SealedBody.seal(envelope, to: target.publicKey)
        #expect(!String(decoding: body, as: UTF8.self).contains("Implement"), "the task is not visible on the wire")
        #expect(!String(decoding: body, as: UTF8.self).contains(String(decoding: envelope, as: UTF8.self).prefix(40)))
        let opened = try SealedBody.open(body, with: target).get()
        #expect(opened == envelope)
        #expect(try g.pipeline().decide(opened).decision.allowed)

        // Sealed to the target, but opened by another gateway: refused.
        if case .failure(let d) = SealedBody.open(body, with: g.laptop.key) {
            #expect(d.reason == .malformed && d.detail.contains("does not open with this gateway's key"))
        } else { Issue.record("another key opened the box") }
        // One bit flipped on the way: refused.
        var box = try #require(Base64.urlDecode(String(String(decoding: body, as: UTF8.self).dropFirst(11).dropLast(2))))
        box[box.count / 2] ^= 1
        let flipped = JSONWriter.object([("sealed", .string(Base64.urlEncode(box)))])
        #expect(throws: Denial.self) { try SealedBody.open(flipped, with: target).get() }
        // Not a sealed body at all (a bare envelope, extra fields, or too large): refused with the shape expected.
        for bad in [envelope, Array(#"{"sealed":"AA","x":1}"#.utf8), [UInt8](repeating: 0x20, count: SealedBody.maxSize + 1)] {
            guard case .failure(let d) = SealedBody.open(bad, with: target) else { Issue.record("accepted"); continue }
            #expect(d.reason == .malformed)
        }
    }
}
