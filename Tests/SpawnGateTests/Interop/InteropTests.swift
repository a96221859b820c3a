import Foundation
import Testing
@testable import SpawnGate

/// The wire format held to the byte: `Tests/Interop/refimpl.py` was written from PRODUCT.md alone, without reading
/// this code. What it signs correctly must verify here; each hostile variant it builds must be refused with the
/// reason it expects; and what we sign must verify there.
@Suite("Interop with an independent implementation")
struct InteropTests {
    static let script = "Tests/Interop/refimpl.py"

    struct Peer {
        let dir: String
        let seed: String
        let pub: String
        let fingerprint: String
        let vpsHome: Home
        let vps: Identity

        init() throws {
            dir = TestSupport.tempDir("interop")
            seed = "\(dir)/laptop.seed"
            let out = try TestSupport.python(InteropTests.script, ["keygen", "--seed-out", seed, "--name", "mac-laptop"])
            guard out.status == 0, let obj = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: String] else {
                throw OperatorError("refimpl keygen failed: \(out.stderr)")
            }
            pub = obj["pub"]!
            fingerprint = obj["fingerprint"]!
            (vpsHome, vps) = try TestSupport.makeHome("vps-broker", in: dir)
            let (key, _) = try PublicKey.parseLine(pub)
            try vpsHome.keyStore.enroll(name: "mac-laptop", key: key, expected: Fingerprint(fingerprint)!)
        }

        func sign(_ extra: [String] = []) throws -> [UInt8] {
            let out = try TestSupport.python(InteropTests.script, [
                "sign", "--seed", seed, "--from", "mac-laptop", "--to", "vps-broker", "--name", "coder", "--cli", "claude",
                "--task", "Implement the plan", "--cwd", "/srv/app", "--arg=--model", "--arg", "opus",
                "--iat", "1800000000", "--exp", "1800000060"] + extra)
            guard out.status == 0 else { throw OperatorError("refimpl sign failed: \(out.stderr)") }
            return Array(out.stdout.utf8)
        }

        func verify(_ bytes: [UInt8]) throws -> Verification {
            try RequestVerifier(audience: "vps-broker", keys: vpsHome.keyStore, clock: FixedClock(1_800_000_010)).verify(bytes)
        }
    }

    @Test func theirValidRequestVerifiesHere() throws {
        let peer = try Peer()
        let env = try peer.sign()
        guard case .verified(let v) = try peer.verify(env) else { Issue.record("refused a correctly signed request"); return }
        #expect(v.request.args == ["--model", "opus"])
        #expect(v.request.task == "Implement the plan")
        let id = try TestSupport.python(Self.script, ["request-id"], stdin: env)
        #expect(id.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == v.requestID)
    }

    @Test func fingerprintsAgree() throws {
        let peer = try Peer()
        #expect(try PublicKey.parseLine(peer.pub).key.fingerprint.description == peer.fingerprint)
    }

    @Test func everyHostileVariantIsRefusedForItsReason() throws {
        let peer = try Peer()
        let list = try TestSupport.python(Self.script, ["sign", "--mutate", "list"])
        let kinds = list.stdout.split(separator: "\n").map { $0.split(separator: "\t").map(String.init) }
        #expect(kinds.count >= 30)
        for kind in kinds {
            let env = try peer.sign(["--mutate", kind[0]])
            let got: String
            switch try peer.verify(env) {
            case .verified: got = "allowed"
            case .denied(let d, _, _, _): got = d.reason.rawValue
            }
            #expect(got == kind[1], "mutation \(kind[0])")
        }
    }

    @Test func ourEnvelopeVerifiesThere() throws {
        let dir = TestSupport.tempDir("interop2")
        let (_, laptop) = try TestSupport.makeHome("mac-laptop", in: dir)
        let r = SpawnRequest(name: "coder", cli: "claude", task: "naïve ☃ \"quoted\"\n", cwd: "/srv/app", args: ["-p", "x y"],
                             channels: ["general"], team: "core", from: "mac-laptop", to: "vps-broker", iat: 1_800_000_000, exp: 1_800_000_060)
        let env = Envelope.seal(r.encoded(), with: laptop.key, domain: .request)
        let out = try TestSupport.python(Self.script, ["verify-request", "--pub", laptop.key.publicKey.line(comment: "mac-laptop")], stdin: env)
        #expect(out.status == 0, "\(out.stdout) \(out.stderr)")
        let forged = Envelope.seal(r.encoded(), with: laptop.key, domain: .receipt)
        #expect(try TestSupport.python(Self.script, ["verify-request", "--pub", laptop.key.publicKey.line(comment: "x")], stdin: forged).status == 1)
    }
}
