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

        /// What the verifier says of `bytes`: "allowed", or the reason code it refused them with.
        func verdict(_ bytes: [UInt8]) throws -> String {
            switch try verify(bytes) {
            case .verified: "allowed"
            case .denied(let d, _, _, _): d.reason.rawValue
            }
        }

        /// The refimpl's list of hostile kinds (`sign --mutate list` or `--grant-mutate list`): each kind and the
        /// reason a strict verifier must give.
        static func kinds(_ option: String) throws -> [[String]] {
            try TestSupport.python(InteropTests.script, ["sign", option, "list"]).stdout
                .split(separator: "\n").map { $0.split(separator: "\t").map(String.init) }
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
        let kinds = try Peer.kinds("--mutate")
        #expect(kinds.count >= 30)
        for kind in kinds {
            #expect(try peer.verdict(try peer.sign(["--mutate", kind[0]])) == kind[1], "mutation \(kind[0])")
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

    // Grants (issue 28): the refimpl builds and checks chains from docs/protocol.md alone.

    /// A 2-block chain made by the refimpl (block 0 by the broker's key, block 1 narrower, by block 0's next key);
    /// returns the chain file, the last next seed and the ids in order.
    static func theirChain(_ peer: Peer) throws -> (chain: String, seed: String, ids: [String]) {
        func block(_ signer: String, _ n: Int, _ opts: [String]) throws -> (String, String) {
            let next = "\(peer.dir)/next\(n)", chain = "\(peer.dir)/chain\(n)"
            let out = try TestSupport.python(script, ["grant-block", "--seed", signer, "--iat", "1800000000", "--exp", "1800003600",
                                                      "--next-seed-out", next] + opts)
            guard out.status == 0 else { throw OperatorError("refimpl grant-block failed: \(out.stderr)") }
            try out.stdout.write(toFile: chain, atomically: true, encoding: .utf8)
            return (chain, next)
        }
        let (c0, n0) = try block(peer.seed, 0, ["--name", "ci", "--iss", "mac-laptop", "--target", "vps-broker", "--target", "mini-pc",
                                               "--cli", "claude", "--cli", "codex", "--cwd", "/srv/**", "--max", "5"])
        let (c1, n1) = try block(n0, 1, ["--name", "ci-narrow", "--target", "vps-broker", "--cli", "claude", "--cwd", "/srv/app/**",
                                        "--args-shape", "[\"--model\", \"opus|sonnet\"]", "--chain", c0])
        let blocks = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: c1))) as? [String: [[String: String]]])["blocks"]
        let ids = try (blocks ?? []).map { b -> String in
            let payload = try #require(Base64.urlDecode(b["payload"] ?? ""))
            return try #require(try JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any])["id"] as? String ?? ""
        }
        return (c1, n1, ids)
    }

    @Test func theirGrantChainVerifiesHere() throws {
        let peer = try Peer()
        let (chain, seed, ids) = try Self.theirChain(peer)
        #expect(ids.count == 2)
        guard case .verified(let v) = try peer.verify(try peer.sign(["--grant", chain, "--grant-seed", seed])) else {
            Issue.record("refused a request under a correctly signed 2-block grant"); return
        }
        let grant = try #require(v.grant)
        #expect(grant.id == ids.joined(separator: "/"))
        #expect(grant.blocks.map(\.name) == ["ci", "ci-narrow"])
        #expect(grant.blocks[0].scope.clis == ["claude", "codex"] && grant.blocks[1].scope.clis == ["claude"])
    }

    @Test func everyHostileGrantIsRefusedForItsReason() throws {
        let peer = try Peer()
        let (chain, seed, _) = try Self.theirChain(peer)
        let kinds = try Peer.kinds("--grant-mutate")
        #expect(kinds.count >= 6)
        for kind in kinds {
            #expect(try peer.verdict(try peer.sign(["--grant", chain, "--grant-seed", seed, "--grant-mutate", kind[0]])) == kind[1],
                    "grant mutation \(kind[0])")
        }
    }

    @Test func ourGrantsVerifyThere() throws {
        let dir = TestSupport.tempDir("interop3")
        let (home, laptop) = try TestSupport.makeHome("mac-laptop", in: dir)
        let store = GrantStore(home: home)
        let now: Int64 = 1_800_000_000
        let scope = try GrantScope.parse(targets: ["vps-broker"], clis: ["claude"], cwd: ["/srv/app/**"], args: [["-p", "x y"]], max: 3).get()
        let wide = try store.issue(name: "ci", scope: scope, ttl: 3600, identity: laptop, now: now)
        let narrow = try store.attenuate(name: "ci-narrow", from: "ci", scope: scope, ttl: 600, now: now)
        let pub = laptop.key.publicKey.line(comment: "mac-laptop")
        func envelope(_ held: GrantStore.Held, tamper: Bool = false) -> [UInt8] {
            var r = SpawnRequest(name: "coder", cli: "claude", task: "t", cwd: "/srv/app", args: ["-p", "x y"],
                                 from: "mac-laptop", to: "vps-broker", iat: now, exp: now + 60)
            var token = held.token(to: r.to, nonce: r.nonce)
            if tamper {
                // Widen block 0 after signing: the request is re-signed, so only the block's own signature can refuse it.
                let p = token.blocks[0].payload
                let widened = Array(String(decoding: p, as: UTF8.self).replacingOccurrences(of: "\"claude\"", with: "\"codex\"").utf8)
                token.blocks[0] = GrantToken.Signed(payload: widened, sig: token.blocks[0].sig)
            }
            r.grant = token
            return Envelope.seal(r.encoded(), with: laptop.key, domain: .request)
        }
        for held in [wide, narrow] {
            let out = try TestSupport.python(Self.script, ["verify-grant", "--pub", pub, "--now", "1800000010", "--check-request"],
                                             stdin: envelope(held))
            #expect(out.status == 0, "\(held.name): \(out.stdout) \(out.stderr)")
            let shown = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any]
            #expect(shown?["id"] as? String == held.id)
            let bad = try TestSupport.python(Self.script, ["verify-grant", "--pub", pub, "--now", "1800000010"], stdin: envelope(held, tamper: true))
            #expect(bad.status == 1 && bad.stdout.hasPrefix("grant_invalid"), "\(held.name) tampered: \(bad.stdout)")
        }
        #expect(narrow.id.split(separator: "/").count == 2)
        // Past the narrower block's ttl the refimpl, like our verifier, calls it expired.
        let late = try TestSupport.python(Self.script, ["verify-grant", "--pub", pub, "--now", "1800000700"], stdin: envelope(narrow))
        #expect(late.stdout.hasPrefix("grant_expired"), "\(late.stdout)")
    }
}
