import Foundation
import Testing
@testable import SpawnGate

/// Control requests (`agents`, `release`): their own signature domain, the same checks as a spawn request, and a
/// release that can happen once.
@Suite("Control requests")
struct ControlRequestTests {
    func control(_ g: Gateway, op: ControlRequest.Operation = .release, name: String? = "coder", to: String = "vps-broker",
                 iat: Int64? = nil, nonce: [UInt8] = Sodium.randomBytes(16)) -> [UInt8] {
        let now = iat ?? g.clock.now()
        let payload = ControlRequest(op: op, name: op == .release ? name : nil, from: "mac-laptop", to: to, iat: now, exp: now + 60, nonce: nonce).encoded()
        return Envelope.seal(payload, with: g.laptop.key, domain: .control)
    }

    /// A spawn signature is not a control signature, nor the reverse, even over the same key.
    @Test func domainsDoNotCross() throws {
        let g = try Gateway()
        let p = try g.pipeline()
        #expect(p.decideControl(g.envelope()).decision.reason == .badSignature)
        #expect(p.decide(control(g)).reason == .badSignature)
        // The same payload bytes re-signed over the request domain still fail as a control request.
        let env = try Envelope.parse(control(g)).get()
        #expect(p.decideControl(Envelope.seal(env.payload, with: g.laptop.key, domain: .request)).decision.reason == .badSignature)
    }

    @Test func releaseIsAuditedAndHappensOnce() throws {
        let g = try Gateway()
        let p = try g.pipeline()
        let release = control(g)
        let first = p.decideControl(release)
        #expect(first.decision.allowed && first.control?.request.name == "coder" && first.control?.broker == "mac-laptop")
        #expect(p.decideControl(release).decision.reason == .replay)
        #expect(try g.auditLines().map { $0["reason"] as? String } == ["allowed", "replay"])
        // A listing only reads: neither audited nor consuming its nonce.
        let list = control(g, op: .agents)
        #expect(p.decideControl(list).decision.allowed && p.decideControl(list).decision.allowed)
        #expect(try g.auditLines().count == 2)
    }

    @Test func sameChecksAsASpawnRequest() throws {
        let g = try Gateway()
        let p = try g.pipeline()
        #expect(p.decideControl(control(g, to: "mini-pc")).decision.reason == .wrongAudience)
        #expect(p.decideControl(control(g, iat: g.clock.now() - 600)).decision.reason == .expired)
        let stranger = SigningKey.generate()
        let payload = ControlRequest(op: .agents, from: "mac-laptop", to: "vps-broker", iat: g.clock.now(), exp: g.clock.now() + 60).encoded()
        #expect(p.decideControl(Envelope.seal(payload, with: stranger, domain: .control)).decision.reason == .unknownKey)
    }

    @Test(arguments: [
        #"{"op":"release","from":"a","to":"b","iat":1,"exp":2,"nonce":"AAAAAAAAAAAAAAAAAAAAAA"}"#,
        #"{"op":"agents","name":"x","from":"a","to":"b","iat":1,"exp":2,"nonce":"AAAAAAAAAAAAAAAAAAAAAA"}"#,
        #"{"op":"agents","from":"a","to":"b","iat":1,"exp":2,"nonce":"AAAAAAAAAAAAAAAAAAAAAA","extra":1}"#,
        #"{"op":"kill","from":"a","to":"b","iat":1,"exp":2,"nonce":"AAAAAAAAAAAAAAAAAAAAAA"}"#,
        #"{"op":"agents","from":"a","to":"b","iat":1,"exp":2,"nonce":"AAAA"}"#,
    ])
    func malformedPayloadsAreRefused(_ text: String) {
        guard case .failure(let d) = ControlRequest.parse(Array(text.utf8)) else { Issue.record("accepted \(text)"); return }
        #expect(d.reason == .malformed)
    }
}
