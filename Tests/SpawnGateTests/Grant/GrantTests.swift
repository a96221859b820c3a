import Foundation
import Testing
@testable import SpawnGate

/// Grants (issue 28): a right narrower than the broker's, signed by the broker's key, carried inside the signed
/// request, checked by the requester before signing and by the target after its policy. One test per attack, each
/// seen failing without its check.
@Suite("Grants: attenuated rights, checked on both sides")
struct GrantTests {
    /// The fixture's laptop home, whose key is enrolled at vps-broker.
    static func laptopHome(_ g: Gateway) -> Home { Home(root: g.dir + "/mac-laptop") }

    /// The fixture with a second CLI, `codex` (/bin/true), that the rule allows as well.
    static func withCodex() throws -> Gateway {
        let g = try Gateway()
        let text = try String(contentsOfFile: g.vps.policyFile, encoding: .utf8)
            .replacingOccurrences(of: "clis:\n", with: "clis:\n  codex:\n    path: /bin/true\n    args: [[]]\n")
            .replacingOccurrences(of: "clis: [claude]", with: "clis: [claude, codex]")
        try text.write(toFile: g.vps.policyFile, atomically: true, encoding: .utf8)
        return g
    }
    static func store(_ g: Gateway) -> GrantStore { GrantStore(home: laptopHome(g)) }

    static func scope(targets: [String]? = ["vps-broker"], clis: [String]? = ["claude"], cwd: [String]? = nil, args: [[String]]? = nil,
                      max: Int64? = nil, _ g: Gateway) throws -> GrantScope {
        try GrantScope.parse(targets: targets, clis: clis, cwd: cwd ?? [g.app + "/**"], args: args, max: max).get()
    }

    static func issue(_ g: Gateway, _ name: String = "fixer", scope: GrantScope? = nil, ttl: Int64 = 8 * 3600) throws -> GrantStore.Held {
        try store(g).issue(name: name, scope: scope ?? Self.scope(g), ttl: ttl, identity: g.laptop, now: g.clock.now())
    }

    /// The request as `spawn --grant` sends it: the grant's blocks and a proof for this request's target and nonce.
    static func envelope(_ g: Gateway, _ held: GrantStore.Held, _ request: SpawnRequest? = nil, token: GrantToken? = nil) -> [UInt8] {
        var r = request ?? g.request()
        r.grant = token ?? held.token(to: r.to, nonce: r.nonce)
        return g.envelope(r)
    }

    @Test func aRequestInsideItsGrantIsAllowedAndTheGrantIsRecorded() throws {
        let g = try Gateway()
        let held = try Self.issue(g)
        let p = try g.pipeline()
        let outcome = p.decide(Self.envelope(g, held))
        #expect(outcome.reason == .allowed, "\(outcome.decision.detail)")
        #expect(outcome.authorized?.request.grant?.id == held.id)
        #expect(outcome.decision.grant == held.id)
        let line = try #require(try g.auditLines().last)
        #expect(line["grant"] as? String == held.id, "the audit line names the grant: \(line)")
        // The receipt carries the decision's members, the grant among them.
        let receipt = Receipt.payload(outcome.decision, started: nil)
        #expect(String(decoding: receipt, as: UTF8.self).contains("\"grant\":\"\(held.id)\""))
    }

    /// What a grant can narrow, each dimension alone. The policy allows every one of these requests; the grant,
    /// validly signed, does not, so only the target's grant check can refuse them.
    enum Dimension: String, CaseIterable, CustomTestStringConvertible, Sendable {
        case cli, cwd, args, target
        var testDescription: String { rawValue }
    }

    @Test(arguments: Dimension.allCases)
    func theTargetRefusesARequestOutsideItsGrant(_ dimension: Dimension) throws {
        let g = try Self.withCodex()
        try FileManager.default.createDirectory(atPath: g.app + "/sub", withIntermediateDirectories: true)
        let scope: GrantScope
        switch dimension {
        case .cli: scope = try Self.scope(clis: ["codex"], g)
        case .cwd: scope = try Self.scope(cwd: [g.app + "/sub/**"], g)
        case .args: scope = try Self.scope(args: [[]], g)
        case .target: scope = try Self.scope(targets: ["mini-pc"], g)
        }
        let held = try Self.issue(g, scope: scope)
        let request = g.request(args: dimension == .args ? ["--model", "opus"] : nil)
        // Without a grant the policy allows exactly this request.
        #expect(try g.pipeline().decide(g.envelope(g.request(args: request.args))).reason == .allowed)
        let outcome = try g.pipeline().decide(Self.envelope(g, held, request))
        #expect(outcome.reason == .grantExceeded, "\(dimension): \(outcome.decision.detail)")
        #expect(outcome.authorized == nil)
        #expect(outcome.decision.detail.contains("fixer"), "\(outcome.decision.detail)")
        // The requester refuses it too, before anything is signed.
        let local = try Self.store(g).admit(held, request: request, target: "vps-broker", now: g.clock.now())
        #expect(local?.reason == .grantExceeded, "\(dimension): \(String(describing: local))")
    }

    /// A symlink inside the granted tree that leads out of it: the target resolves it, so the grant's cwd holds.
    @Test func aSymlinkOutOfTheGrantedTreeIsOutsideIt() throws {
        let g = try Gateway()
        try FileManager.default.createDirectory(atPath: g.app + "/ok", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: g.app + "/other", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: g.app + "/ok/escape", withDestinationPath: g.app + "/other")
        let held = try Self.issue(g, scope: try Self.scope(cwd: [g.app + "/ok/**"], g))
        let outcome = try g.pipeline().decide(Self.envelope(g, held, g.request(cwd: g.app + "/ok/escape")))
        #expect(outcome.reason == .grantExceeded, "\(outcome.decision.detail)")
    }

    /// Altering a block's bytes (to widen it) breaks its signature.
    @Test func aTamperedBlockIsRefused() throws {
        let g = try Self.withCodex()
        let held = try Self.issue(g, scope: try Self.scope(clis: ["codex"], g))
        var r = g.request()
        var token = held.token(to: r.to, nonce: r.nonce)
        let widened = String(decoding: token.blocks[0].payload, as: UTF8.self).replacingOccurrences(of: "[\"codex\"]", with: "[\"claude\"]")
        #expect(widened != String(decoding: token.blocks[0].payload, as: UTF8.self))
        token.blocks[0] = GrantToken.Signed(payload: Array(widened.utf8), sig: token.blocks[0].sig)
        r.grant = token
        let outcome = try g.pipeline().decide(g.envelope(r))
        #expect(outcome.reason == .grantInvalid, "\(outcome.decision.detail)")
    }

    /// A first block signed by any key but the requesting broker's: another broker's, or a key made up.
    @Test func aGrantNotIssuedByTheRequesterIsRefused() throws {
        let g = try Gateway()
        let other = SigningKey.generate()
        let next = SigningKey.generate()
        let block = GrantBlock(name: "forged", issuer: "mac-laptop", scope: try Self.scope(g), iat: g.clock.now(), exp: g.clock.now() + 3600, next: next.publicKey)
        var r = g.request()
        r.grant = GrantToken(blocks: [.init(payload: block.encoded(), sig: other.sign(block.encoded(), domain: .grant))],
                             proof: next.sign(GrantToken.proofMessage(to: r.to, nonce: r.nonce), domain: .grantProof))
        #expect(try g.pipeline().decide(g.envelope(r)).reason == .grantInvalid)

        // Signed by the laptop's key but naming another issuer.
        let lying = GrantBlock(name: "lying", issuer: "ref-laptop", scope: try Self.scope(g), iat: g.clock.now(), exp: g.clock.now() + 3600, next: next.publicKey)
        r = g.request()
        r.grant = GrantToken(blocks: [.init(payload: lying.encoded(), sig: g.laptop.key.sign(lying.encoded(), domain: .grant))],
                             proof: next.sign(GrantToken.proofMessage(to: r.to, nonce: r.nonce), domain: .grantProof))
        #expect(try g.pipeline().decide(g.envelope(r)).reason == .grantInvalid)

        // A block signed over another domain (a request's) is not a grant.
        r = g.request()
        r.grant = GrantToken(blocks: [.init(payload: block.encoded(), sig: g.laptop.key.sign(block.encoded(), domain: .request))],
                             proof: next.sign(GrantToken.proofMessage(to: r.to, nonce: r.nonce), domain: .grantProof))
        #expect(try g.pipeline().decide(g.envelope(r)).reason == .grantInvalid)
    }

    /// A grant made from another can only narrow: the parent's blocks still bind, whatever the child says.
    @Test func aChildGrantThatWidensIsStillBoundByItsParent() throws {
        let g = try Self.withCodex()
        let parent = try Self.issue(g, "parent", scope: try Self.scope(clis: ["codex"], g))
        let child = try Self.store(g).attenuate(name: "child", from: "parent",
                                                scope: try GrantScope.parse(targets: nil, clis: ["claude", "codex"], cwd: nil, args: nil, max: nil).get(),
                                                ttl: nil, now: g.clock.now())
        #expect(child.blocks.count == 2 && child.blocks[0].id == parent.blocks[0].id)
        let outcome = try g.pipeline().decide(Self.envelope(g, child))
        #expect(outcome.reason == .grantExceeded, "\(outcome.decision.detail)")
        #expect(outcome.decision.detail.contains("'parent'"), "\(outcome.decision.detail)")
        // Narrower than its parent: the child allows less, and what it allows passes both.
        let narrow = try Self.store(g).attenuate(name: "narrow", from: "parent",
                                                 scope: try GrantScope.parse(targets: nil, clis: nil, cwd: [g.app + "/x/**"], args: nil, max: nil).get(),
                                                 ttl: nil, now: g.clock.now())
        try FileManager.default.createDirectory(atPath: g.app + "/x", withIntermediateDirectories: true)
        var r = g.request(cwd: g.app + "/x")
        r.cli = "codex"; r.task = nil
        #expect(try g.pipeline().decide(Self.envelope(g, narrow, r)).reason == .allowed)
        var outside = g.request()
        outside.cli = "codex"; outside.task = nil
        #expect(try g.pipeline().decide(Self.envelope(g, narrow, outside)).reason == .grantExceeded)
    }

    /// Whoever holds only the parent's key cannot present a child's token without its last, narrower block: the
    /// proof must be signed by the last block's key.
    @Test func droppingTheNarrowerBlockBreaksTheProof() throws {
        let g = try Gateway()
        _ = try Self.issue(g, "parent")
        let child = try Self.store(g).attenuate(name: "child", from: "parent",
                                                scope: try GrantScope.parse(targets: nil, clis: nil, cwd: [g.app + "/only/**"], args: nil, max: nil).get(),
                                                ttl: nil, now: g.clock.now())
        var r = g.request()
        var token = child.token(to: r.to, nonce: r.nonce)
        token.blocks.removeLast()
        r.grant = token
        let outcome = try g.pipeline().decide(g.envelope(r))
        #expect(outcome.reason == .grantInvalid, "\(outcome.decision.detail)")
        #expect(outcome.decision.detail.contains("proof"))
    }

    /// A proof belongs to one request: taken from another (another nonce, another target), it does not verify.
    @Test func aProofFromAnotherRequestIsRefused() throws {
        let g = try Gateway()
        let held = try Self.issue(g)
        let first = g.request()
        var second = g.request()
        second.grant = held.token(to: first.to, nonce: first.nonce)
        #expect(try g.pipeline().decide(g.envelope(second)).reason == .grantInvalid)
        var third = g.request()
        third.grant = held.token(to: "mini-pc", nonce: third.nonce)
        #expect(try g.pipeline().decide(g.envelope(third)).reason == .grantInvalid)
    }

    /// Outside its lifetime on the target's clock: expired, or not valid yet beyond the clock skew.
    @Test func anExpiredGrantIsRefusedOnTheTarget() throws {
        let g = try Gateway()
        let held = try Self.issue(g, ttl: 600)
        g.clock.advance(seconds: 601 + 31)
        let outcome = try g.pipeline().decide(Self.envelope(g, held))
        #expect(outcome.reason == .grantExpired, "\(outcome.decision.detail)")
        #expect(try Self.store(g).admit(held, request: g.request(), target: "vps-broker", now: g.clock.now())?.reason == .grantExpired)
    }

    /// `max` is counted by the target (per issuer key and block) and by the requester; a replayed request is a replay.
    @Test func aGrantsUsesAreCountedOnTheTarget() throws {
        let g = try Gateway()
        let held = try Self.issue(g, scope: try Self.scope(max: 2, g))
        let p = try g.pipeline()
        let first = Self.envelope(g, held)
        #expect(p.decide(first).reason == .allowed)
        #expect(p.decide(first).reason == .replay, "the same request again is a replay")
        #expect(p.decide(Self.envelope(g, held)).reason == .allowed)
        let third = p.decide(Self.envelope(g, held))
        #expect(third.reason == .grantExceeded, "\(third.decision.detail)")
        #expect(try g.pipeline().decide(Self.envelope(g, held)).reason == .grantExceeded, "a restarted gateway still counts")
        // The requester counts its own uses: two, then refused before signing.
        let store = Self.store(g)
        #expect(try store.admit(held, request: g.request(), target: "vps-broker", now: g.clock.now()) == nil)
        #expect(try store.admit(held, request: g.request(), target: "vps-broker", now: g.clock.now()) == nil)
        #expect(try store.admit(held, request: g.request(), target: "vps-broker", now: g.clock.now())?.reason == .grantExceeded)
    }

    /// Revoking refuses at once here, for the grant and every grant made from it.
    @Test func aRevokedGrantAndItsChildrenAreRefusedBeforeSigning() throws {
        let g = try Gateway()
        _ = try Self.issue(g, "parent")
        _ = try Self.store(g).attenuate(name: "child", from: "parent", scope: GrantScope(), ttl: nil, now: g.clock.now())
        let store = Self.store(g)
        #expect(try store.admit(try store.load("child"), request: g.request(), target: "vps-broker", now: g.clock.now()) == nil)
        _ = try store.revoke("parent")
        #expect(try store.admit(try store.load("parent"), request: g.request(), target: "vps-broker", now: g.clock.now())?.reason == .grantRevoked)
        #expect(try store.admit(try store.load("child"), request: g.request(), target: "vps-broker", now: g.clock.now())?.reason == .grantRevoked)
        #expect(throws: OperatorError.self) { try store.attenuate(name: "grandchild", from: "parent", scope: GrantScope(), ttl: nil, now: g.clock.now()) }
    }

    /// The grant file is the holder's key: private, and checked as strictly as the target checks the blocks.
    @Test func aGrantFileIsPrivateAndCheckedWhenRead() throws {
        let g = try Gateway()
        _ = try Self.issue(g)
        let path = Self.store(g).directory + "/fixer.grant"
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        chmod(path, 0o644)
        #expect(throws: OperatorError.self) { try Self.store(g).load("fixer") }
        chmod(path, 0o600)
        // A widened copy of block 0 in the file is refused when read, before it could be sent.
        var text = try String(contentsOfFile: path, encoding: .utf8)
        let held = try Self.store(g).load("fixer")
        let widened = Base64.urlEncode(Array(String(decoding: held.signed[0].payload, as: UTF8.self).replacingOccurrences(of: "claude", with: "codex").utf8))
        text = text.replacingOccurrences(of: Base64.urlEncode(held.signed[0].payload), with: widened)
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        #expect(throws: OperatorError.self) { try Self.store(g).load("fixer") }
    }

    /// The wire shape is strict: unknown members, too many blocks, and bad encodings are malformed, and a grant
    /// field on a request is inside the signed payload (an envelope cannot carry one beside it).
    @Test func malformedGrantsAreRefusedByShape() throws {
        let g = try Gateway()
        let held = try Self.issue(g)
        var r = g.request()
        let good = held.token(to: r.to, nonce: r.nonce)
        r.grant = GrantToken(blocks: Array(repeating: good.blocks[0], count: GrantToken.maxBlocks + 1), proof: good.proof)
        #expect(try g.pipeline().decide(g.envelope(r)).reason == .malformed)
        for junk in [#"{"blocks":[],"proof":"AA"}"#, #"{"blocks":"x","proof":"AA"}"#, #"[]"#, #"{"blocks":[{"payload":"e30","sig":"AA"}],"proof":"AA","extra":1}"#] {
            let payload = String(decoding: g.request().encoded(), as: UTF8.self)
            let text = String(payload.dropLast()) + #","grant":"# + junk + "}"
            let outcome = try g.pipeline().decide(Envelope.seal(Array(text.utf8), with: g.laptop.key, domain: .request))
            #expect(outcome.reason == .malformed, "\(junk): \(outcome.decision.detail)")
        }
    }
}
