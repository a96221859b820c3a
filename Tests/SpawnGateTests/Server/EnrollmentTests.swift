import Foundation
import Logging
import Testing
@testable import SpawnGate
@testable import SpawnGateServer

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

    /// A flood from one address, over HTTP: the route charges the pre-authentication allowance, and the address
    /// keeps its share of the pending table and no more. Nothing here depends on how long the flood took; the
    /// allowance's exact count is `theAllowanceIsExactOnTheInjectedClock`.
    @Test func aFloodIsBounded() throws {
        let g = try DecisionCLITests.live()
        let serve = try ServeProcess(home: g.vps)
        defer { serve.kill() }
        var statuses: [Int] = []
        for i in 0..<60 {
            let id = Identity(name: "flood-\(i)", key: SigningKey.generate())
            statuses.append(try Self.post(serve, EnrollmentRequest.make(identity: id, to: "vps-broker", now: SystemClock().now())))
        }
        #expect(statuses.filter { $0 == 202 }.count == PendingKeys.perSource, "\(statuses)")
        #expect(statuses.allSatisfy { $0 == 202 || $0 == 429 }, "\(statuses)")
        #expect(PendingKeys(home: g.vps).list(now: SystemClock().now()).count == PendingKeys.perSource)
    }

    /// A gateway in this process whose allowance runs on a clock the test moves, and whose log the test reads.
    struct InProcess {
        // @unchecked: `t` is read and written only under `lock`.
        final class Clock: @unchecked Sendable {
            private let lock = NSLock()
            private var t = 0.0
            var now: Double { lock.withLock { t } }
            func advance(_ seconds: Double) { lock.withLock { t += seconds } }
        }
        let g: Gateway
        let clock = Clock()
        let log = LogLines()
        let gateway: SpawnGate.GatewayService

        init(_ rule: [String] = []) throws {
            g = try DecisionCLITests.live(rule)
            let clock = self.clock, log = self.log
            gateway = try SpawnGate.GatewayService(home: g.vps, logger: Logger(label: "test") { _ in LogLines.Handler(lines: log) },
                                                  limiter: PreAuthLimiter(now: { clock.now }))
        }

        /// An enrollment request from `source` as the route handles it: the allowance first, then the gateway.
        func enroll(_ name: String, from source: String) async -> GatewayAnswer {
            if let refused = gateway.admit(source) { return refused }
            let id = Identity(name: name, key: SigningKey.generate())
            return await gateway.enroll(body: EnrollmentRequest.make(identity: id, to: "vps-broker", now: SystemClock().now()), source: source)
        }
    }

    /// What a gateway logged, message and metadata, one line each.
    // @unchecked: `lines` is read and written only under `lock`.
    final class LogLines: @unchecked Sendable {
        private let lock = NSLock()
        private var lines: [String] = []
        var all: [String] { lock.withLock { lines } }
        func append(_ line: String) { lock.withLock { lines.append(line) } }

        struct Handler: LogHandler {
            let lines: LogLines
            var metadata: Logger.Metadata = [:]
            var logLevel: Logger.Level = .trace
            subscript(metadataKey key: String) -> Logger.Metadata.Value? {
                get { metadata[key] }
                set { metadata[key] = newValue }
            }
            func log(event: LogEvent) { lines.append("\(event.level) \(event.message) \(event.metadata ?? [:])") }
        }
    }

    /// The allowance (burst 10, then one a second) on the injected clock: exactly 10 requests are heard while
    /// time stands still, one more a second later; of those, the source's share is kept.
    @Test func theAllowanceIsExactOnTheInjectedClock() async throws {
        let p = try InProcess()
        var heard = 0, kept = 0
        for i in 0..<60 {
            let answer = await p.enroll("flood-\(i)", from: "10.0.0.9")
            let text = String(decoding: answer.wireBody, as: UTF8.self)
            if answer.wireStatus == 202 { kept += 1 }
            if answer.wireStatus == 202 || text.contains("enrollment requests from this address") { heard += 1 }
        }
        #expect(heard == 10 && kept == PendingKeys.perSource, "heard \(heard), kept \(kept)")
        p.clock.advance(0.5)
        #expect(await p.enroll("late-1", from: "10.0.0.9").wireStatus == 429)
        p.clock.advance(0.5)
        let next = await p.enroll("late-2", from: "10.0.0.9")
        #expect(String(decoding: next.wireBody, as: UTF8.self).contains("enrollment requests from this address"), "heard again after 1 s")
        #expect(await p.enroll("late-3", from: "10.0.0.9").wireStatus == 429)
        #expect(PendingKeys(home: p.g.vps).list(now: SystemClock().now()).count == PendingKeys.perSource)
    }

    // MARK: Issue 25, class 5: the pending table is shared fairly, and its failures are not told to strangers

    /// One source fills its share and is refused (429, the reason code and a fixed sentence), while another
    /// source still gets in; a repeat of a kept request only refreshes it.
    @Test func oneSourceFillsItsShareAndAnotherStillGetsIn() async throws {
        let p = try InProcess()
        for i in 0..<PendingKeys.perSource { #expect(await p.enroll("first-\(i)", from: "10.0.0.1").wireStatus == 202) }
        let refused = await p.enroll("one-more", from: "10.0.0.1")
        #expect(refused.wireStatus == 429)
        #expect(String(decoding: refused.wireBody, as: UTF8.self) == String(decoding: JSONWriter.object([("error", .string(SpawnGate.GatewayService.enrollSourceFull))]) + [10], as: UTF8.self))
        #expect(SpawnGate.GatewayService.enrollSourceFull.hasPrefix("rate_limited: "))
        #expect(await p.enroll("other", from: "10.0.0.2").wireStatus == 202, "another source is not crowded out")
        let pending = PendingKeys(home: p.g.vps).list(now: SystemClock().now())
        #expect(pending.count == PendingKeys.perSource + 1 && !pending.contains { $0.name == "one-more" })

        // The table itself: a source at its share is refused even when there is room, and a repeat is kept.
        let table = PendingKeys(home: p.g.vps)
        let key = SigningKey.generate().publicKey
        #expect(throws: PendingKeys.Refusal.sourceFull) { try table.add(name: "x", key: key, source: "10.0.0.1", now: SystemClock().now()) }
        let first = try #require(pending.first { $0.source == "10.0.0.1" })
        #expect(throws: Never.self) { try table.add(name: first.name, key: first.key, source: "10.0.0.1", now: SystemClock().now()) }
    }

    /// A full table makes room by dropping its oldest request (logged), not by refusing everyone until a day
    /// has passed; the sources flooding it are each held to their share.
    @Test func aFullTableDropsItsOldest() throws {
        let g = try DecisionCLITests.live()
        let table = PendingKeys(home: g.vps)
        let start: Int64 = 1_800_000_000
        var added: [(String, PublicKey)] = []
        for i in 0..<PendingKeys.limit {
            let key = SigningKey.generate().publicKey
            // The first is the oldest by far; the rest are a second apart, from limit / perSource sources.
            let dropped = try table.add(name: "n\(i)", key: key, source: "10.0.1.\(i / PendingKeys.perSource)", now: start + (i == 0 ? 0 : 100 + Int64(i)))
            #expect(dropped == nil)
            added.append(("n\(i)", key))
        }
        #expect(table.list(now: start + 200).count == PendingKeys.limit)
        let late = SigningKey.generate().publicKey
        let dropped = try table.add(name: "late", key: late, source: "10.0.2.1", now: start + 200)
        #expect(dropped?.name == "n0" && dropped?.key == added[0].1, "the oldest made room: \(String(describing: dropped?.name))")
        let now = table.list(now: start + 200)
        #expect(now.count == PendingKeys.limit && now.contains { $0.name == "late" } && !now.contains { $0.name == "n0" })
        // Dropping again takes the next oldest, never the request just kept.
        #expect(try table.add(name: "later", key: SigningKey.generate().publicKey, source: "10.0.2.2", now: start + 201)?.name == "n1")
    }

    /// Anything else that stops a request being kept is the gateway's own fault: 500 with `internal_error` and a
    /// fixed sentence for the unauthenticated caller; the details (paths) go to the gateway's log only.
    @Test func aFailureToKeepIsAnInternalErrorWithoutDetails() async throws {
        let p = try InProcess()
        // `pending` is a file, so nothing can be written under it.
        try Data().write(to: URL(fileURLWithPath: p.g.vps.root + "/pending"))
        let answer = await p.enroll("mini-pc", from: "10.0.0.3")
        let text = String(decoding: answer.wireBody, as: UTF8.self)
        #expect(answer.wireStatus == 500, "\(text)")
        #expect(text.contains("internal_error: this gateway could not keep the enrollment request"), "\(text)")
        #expect(!text.contains(p.g.vps.root) && !text.contains("pending"), "no path of the target: \(text)")
        let reference = try #require(text.range(of: "ref-").map { String(text[$0.lowerBound...].prefix(20)) })
        #expect(p.log.all.contains { $0.contains("enrollment request not kept") && $0.contains(p.g.vps.root) && $0.contains(reference) },
                "\(p.log.all)")
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
