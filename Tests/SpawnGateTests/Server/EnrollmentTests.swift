import Foundation
import Testing
@testable import SpawnGate

/// Enrollment without copy-paste, between real gateways: `key request` → `key pending` → `key accept` with the
/// fingerprint learned out of band. Nothing pending is trusted, a swapped key is refused at accept, and a flood is
/// bounded.
@Suite("Enrollment requests")
struct EnrollmentTests {
    static func post(_ serve: ServeProcess, _ body: [UInt8], from address: String = "127.0.0.1") throws -> Int {
        try HTTPClient.exchange(.tcp(host: address, port: serve.port), method: "POST", path: "/v1/enroll", body: body, timeout: 5).status
    }

    @Test func aBrokerIsEnrolledByRequestAndAccept() throws {
        let g = try DecisionCLITests.live(["sandbox: standard"])
        let serve = try ServeProcess(home: g.vps)
        defer { serve.kill() }
        let (mini, miniID) = try TestSupport.makeHome("mini-pc", in: g.dir)
        let sent = try TestSupport.spawngate(["key", "request", "--broker", "vps-broker", "--url", serve.url, "--home", mini.root])
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(sent.stdout.contains("spawngate key accept mini-pc --fingerprint \(miniID.key.publicKey.fingerprint)"))
        // Pending is trusted for nothing: a request signed by mini-pc is still an unknown key.
        #expect(try g.vps.keyStore.lookup(miniID.key.publicKey.fingerprint) == .unknown)
        let pending = try g.cli(["key", "pending"]).stdout
        #expect(pending.contains("mini-pc") && pending.contains(miniID.key.publicKey.fingerprint.description) && pending.contains("127.0.0.1"), "\(pending)")
        let accepted = try g.cli(["key", "accept", "mini-pc", "--fingerprint", miniID.key.publicKey.fingerprint.description])
        #expect(accepted.status == 0, "\(accepted.stderr)")
        #expect(try g.vps.keyStore.lookup(miniID.key.publicKey.fingerprint) == .enrolled(name: "mini-pc", key: miniID.key.publicKey))
        #expect(try g.cli(["key", "pending"]).stdout == "no enrollment requests pending\n")
    }

    /// The request that arrived is not the one mini-pc sent (swapped on the way): its fingerprint is not the one
    /// mini-pc's operator read out, so accept refuses and nothing is enrolled.
    @Test func aSwappedKeyIsRefusedAtAccept() throws {
        let g = try DecisionCLITests.live(["sandbox: standard"])
        let serve = try ServeProcess(home: g.vps)
        defer { serve.kill() }
        let real = try TestSupport.makeHome("mini-pc", in: g.dir).1
        let forged = Identity(name: "mini-pc", key: SigningKey.generate())
        #expect(try Self.post(serve, EnrollmentRequest.make(identity: forged, to: "vps-broker", now: SystemClock().now())) == 202)
        let accepted = try g.cli(["key", "accept", "mini-pc", "--fingerprint", real.key.publicKey.fingerprint.description])
        #expect(accepted.status == 1 && accepted.stderr.contains("no pending key of 'mini-pc' has the fingerprint"), "\(accepted.stderr)")
        #expect(try g.vps.keyStore.lookup(forged.key.publicKey.fingerprint) == .unknown)
        #expect(try g.cli(["key", "reject", "mini-pc"]).status == 0)
        #expect(try g.cli(["key", "pending"]).stdout == "no enrollment requests pending\n")
    }

    /// Requests that prove nothing are refused before they are kept: signed by another key, for another gateway.
    @Test func requestsThatProveNothingAreNotKept() throws {
        let g = try DecisionCLITests.live()
        let serve = try ServeProcess(home: g.vps)
        defer { serve.kill() }
        let id = Identity(name: "mini-pc", key: SigningKey.generate())
        var tampered = EnrollmentRequest.make(identity: id, to: "vps-broker", now: SystemClock().now())
        let other = Identity(name: "mini-pc", key: SigningKey.generate())
        // The key inside swapped for another: the signature no longer comes from the key carried.
        let text = String(decoding: tampered, as: UTF8.self)
        let payload = try #require(text.range(of: #""payload":""#).map { text[$0.upperBound...].prefix { $0 != "\"" } })
        let decoded = String(decoding: try #require(Base64.urlDecode(String(payload))), as: UTF8.self)
            .replacingOccurrences(of: id.key.publicKey.line(comment: "mini-pc"), with: other.key.publicKey.line(comment: "mini-pc"))
        tampered = Array(text.replacingOccurrences(of: String(payload), with: Base64.urlEncode(Array(decoded.utf8))).utf8)
        #expect(try Self.post(serve, tampered) == 400)
        #expect(try Self.post(serve, EnrollmentRequest.make(identity: id, to: "mini-pc", now: SystemClock().now())) == 400)
        #expect(try Self.post(serve, EnrollmentRequest.make(identity: id, to: "vps-broker", now: SystemClock().now() - 3600)) == 400)
        #expect(PendingKeys(home: g.vps).list(now: SystemClock().now()).isEmpty)
    }

    /// A flood from one address: its pre-authentication allowance (burst 10, then 1/s) is never refunded for an
    /// enrollment request, and the pending table holds at most 32.
    @Test func aFloodIsBounded() throws {
        let g = try DecisionCLITests.live()
        let serve = try ServeProcess(home: g.vps)
        defer { serve.kill() }
        let started = Date()
        var kept = 0
        for i in 0..<60 {
            let id = Identity(name: "flood-\(i)", key: SigningKey.generate())
            if try Self.post(serve, EnrollmentRequest.make(identity: id, to: "vps-broker", now: SystemClock().now())) == 202 { kept += 1 }
        }
        let seconds = Int(Date().timeIntervalSince(started).rounded(.up))
        #expect(kept <= 10 + seconds, "\(kept) kept in \(seconds) s")
        #expect(PendingKeys(home: g.vps).list(now: SystemClock().now()).count == kept)
        // The table's own bound, whatever the sources.
        for i in 0..<40 {
            try? PendingKeys(home: g.vps).add(name: "many-\(i)", key: SigningKey.generate().publicKey, source: "x", now: SystemClock().now())
        }
        #expect(PendingKeys(home: g.vps).list(now: SystemClock().now()).count == PendingKeys.limit)
    }

    /// `peer add` without --key fetches the gateway's key and still requires the fingerprint.
    @Test func peerAddFetchesTheKeyAndChecksTheFingerprint() throws {
        let g = try DecisionCLITests.live()
        let serve = try ServeProcess(home: g.vps)
        defer { serve.kill() }
        let vps = try g.vps.loadIdentity().key.publicKey.fingerprint
        let laptop = g.dir + "/mac-laptop"
        let wrong = try TestSupport.spawngate(["peer", "add", "vps-broker", "--url", serve.url, "--fingerprint", SigningKey.generate().publicKey.fingerprint.description, "--home", laptop])
        #expect(wrong.status != 0 && wrong.stderr.contains("fingerprint"), "\(wrong.stderr)")
        let right = try TestSupport.spawngate(["peer", "add", "vps-broker", "--url", serve.url, "--fingerprint", vps.description, "--home", laptop])
        #expect(right.status == 0, "\(right.stderr)")
        #expect(try TestSupport.spawngate(["spawn", "coder", "claude", "x", "--broker", "vps-broker", "--cwd", g.app, "--home", laptop]).status == 0)
    }
}
