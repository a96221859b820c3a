import Foundation
import Testing
@testable import SpawnGate

@Suite("Signed receipts")
struct ReceiptTests {
    /// A real allow from the pipeline, its request id, and the target's identity.
    static func allowed() throws -> (Gateway, Decision, String, Identity) {
        let g = try Gateway()
        let envelope = g.envelope()
        let outcome = try g.pipeline().decide(envelope)
        #expect(outcome.decision.allowed)
        return (g, outcome.decision, try Envelope.parse(envelope).get().requestID, try g.vps.loadIdentity())
    }

    static let started = Receipt.Started(pid: 4242, startedAt: 1_800_000_001, layers: ["clean-env", "seccomp"])

    @Test func aReceiptVerifiesAgainstTheTargetAndCarriesWhatWasStarted() throws {
        let (_, decision, rid, target) = try Self.allowed()
        let receipt = Receipt.issue(decision, started: Self.started, key: target.key)
        let verified = try Receipt.verify(receipt, from: target.key.publicKey, requestID: rid).get()
        #expect(verified.allowed && verified.rule == "laptop-app")
        #expect(verified.started == Self.started)
    }

    /// The independent Python implementation accepts our receipts (PRODUCT.md's wire format).
    @Test func theIndependentImplementationAcceptsIt() throws {
        let (_, decision, rid, target) = try Self.allowed()
        let receipt = Receipt.issue(decision, started: Self.started, key: target.key)
        let out = try TestSupport.python("Tests/Interop/refimpl.py",
                                         ["verify-receipt", "--pub", target.key.publicKey.line(comment: "vps-broker"), "--request-id", rid],
                                         stdin: receipt)
        #expect(out.status == 0, "\(out.stdout) \(out.stderr)")
        #expect(out.stdout.contains("\"pid\":4242") || out.stdout.contains("\"pid\": 4242"), "\(out.stdout)")
    }

    @Test func forgedMisaddressedOrIncompleteReceiptsAreRefused() throws {
        let (g, decision, rid, target) = try Self.allowed()
        let key = target.key.publicKey
        func refused(_ bytes: [UInt8], _ rid: String = rid) -> String {
            if case .failure(let e) = Receipt.verify(bytes, from: key, requestID: rid) { return e.message }
            return "ACCEPTED"
        }
        #expect(refused([]).contains("no receipt"))
        // Signed by someone else (the requester's own key).
        #expect(refused(Receipt.issue(decision, started: Self.started, key: g.laptop.key)).contains("not by the target's key"))
        // The target's key, but the request domain: a signed request is never a receipt.
        let payload = Receipt.payload(decision, started: Self.started)
        #expect(refused(Envelope.seal(payload, with: target.key, domain: .request)).contains("does not verify"))
        // Altered on the way: the payload swapped, the signature kept.
        let good = try Envelope.parse(Receipt.issue(decision, started: Self.started, key: target.key)).get()
        var altered = Array(String(decoding: payload, as: UTF8.self).replacingOccurrences(of: "4242", with: "4243").utf8)
        altered = JSONWriter.object([("v", .int(1)), ("alg", .string("ed25519")), ("kid", .string(good.kid.description)),
                                     ("payload", .string(Base64.urlEncode(altered))), ("sig", .string(Base64.urlEncode(good.signature)))])
        #expect(refused(altered).contains("does not verify"))
        // A true receipt for another request.
        #expect(refused(Receipt.issue(decision, started: Self.started, key: target.key), String(repeating: "0", count: 64)).contains("answers another request"))
        // An allow that does not say what was started.
        #expect(refused(Receipt.issue(decision, started: nil, key: target.key)).contains("pid, started_at and sandbox layers"))
        #expect(refused(Array("not json".utf8)).contains("malformed"))
    }
}
