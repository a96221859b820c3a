import Foundation
import Testing
@testable import SpawnGate

/// Source binding (F4): a rule's `sources:` and an enrolled key's `from=` name the places a broker's requests are
/// accepted from; everything else is `source_not_allowed`, decided by the one pipeline for every entry point.
@Suite("Source binding")
struct SourceBindingTests {
    static func address(_ text: String) -> RequestSource { .address(IPAddress(text)!) }

    static func pattern(_ text: String) -> SourcePattern? {
        if case .success(let p) = SourcePattern.parse(text) { return p }
        return nil
    }

    @Test func patternsParseStrictlyAndMatchByPrefix() throws {
        for good in ["100.64.0.7", "100.64.0.0/10", "fd7a:115c:a1e0::/48", "::1", "local", "workspace"] {
            #expect(Self.pattern(good) != nil, "\(good)")
        }
        // Host names are not resolved, a network with host bits set is a typo, and "anywhere" is leaving it out.
        for bad in ["vps.example.com", "10.1.2.3/8", "0.0.0.0/0", "::/0", "*", "any", "100.64.0.0/33", "100.64.0.0/", "1.2.3",
                    "100.64.0.0/+8", "[::1]", "fe80::1%eth0", ""] {
            #expect(Self.pattern(bad) == nil, "\(bad)")
        }
        let tailnet = try #require(Self.pattern("100.64.0.0/10"))
        #expect(tailnet.matches(Self.address("100.100.1.1")))
        #expect(!tailnet.matches(Self.address("100.128.0.1")))
        #expect(!tailnet.matches(.local) && !tailnet.matches(.workspace))
        // A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d; it is the IPv4 address.
        #expect(IPAddress("::ffff:100.64.0.7") == IPAddress("100.64.0.7"))
        #expect(try #require(Self.pattern("100.64.0.7")).matches(RequestSource.of(connection: "::ffff:100.64.0.7")))
        #expect(!(try #require(Self.pattern("fd7a:115c:a1e0::/48"))).matches(Self.address("100.64.0.7")))
        #expect(!(try #require(Self.pattern("local"))).matches(Self.address("127.0.0.1")), "loopback over TCP is an address, not the hook")
        #expect(![SourcePattern]().admits(.local), "an empty list matches nothing")
        #expect(!(try #require(Self.pattern("100.64.0.7"))).matches(RequestSource.of(connection: "garbage")))
        // The relay guard's mailbox passes "relay:SENDER": a workspace message, whoever claims to send it.
        #expect(RequestSource.of(connection: "relay:spawngate-mac-laptop") == .workspace)
    }

    @Test func aRuleTakesRequestsOnlyFromItsSources() throws {
        let g = try Gateway(rule: ["sources: [100.64.0.7, \"fd7a:115c:a1e0::/48\"]"])
        let p = try g.pipeline()
        let env = g.envelope()
        #expect(p.decide(env, mode: .dryRun, source: Self.address("100.64.0.7")).reason == .allowed)
        #expect(p.decide(env, mode: .dryRun, source: Self.address("fd7a:115c:a1e0::5")).reason == .allowed)
        for elsewhere in [Self.address("100.64.0.8"), Self.address("127.0.0.1"), .local, .workspace] {
            let d = p.decide(env, mode: .dryRun, source: elsewhere).decision
            #expect(d.reason == .sourceNotAllowed, "\(elsewhere)")
            #expect(d.rule == "laptop-app")
            #expect(d.detail.contains(elsewhere.description), "\(d.detail)")
        }
        // Recorded like any refusal, and the nonce is not spent: the broker can still send it from its place.
        let refused = p.decide(env, source: Self.address("198.51.100.1"))
        #expect(refused.reason == .sourceNotAllowed)
        #expect(try g.auditLines().last?["reason"] as? String == "source_not_allowed")
        #expect(p.decide(env, source: Self.address("100.64.0.7")).reason == .allowed)
    }

    @Test func anEmptySourcesListMatchesNothing() throws {
        let g = try Gateway(rule: ["sources: []"])
        let p = try g.pipeline()
        for s in [RequestSource.local, .workspace, Self.address("100.64.0.7")] {
            #expect(p.decide(g.envelope(), mode: .dryRun, source: s).reason == .sourceNotAllowed)
        }
    }

    /// A deny rule with sources applies to requests from there only, and still beats every allow rule there.
    @Test func aDenyRuleWithSourcesAppliesOnlyThere() throws {
        let g = try Gateway()
        let text = try String(contentsOfFile: g.vps.policyFile, encoding: .utf8)
        try (text + "\n  - name: not-from-the-cafe\n    effect: deny\n    brokers: [\"*\"]\n    sources: [203.0.113.0/24]\n")
            .write(toFile: g.vps.policyFile, atomically: true, encoding: .utf8)
        let p = try g.pipeline()
        let cafe = p.decide(g.envelope(), mode: .dryRun, source: Self.address("203.0.113.9")).decision
        #expect(cafe.reason == .deniedByRule && cafe.rule == "not-from-the-cafe")
        #expect(p.decide(g.envelope(), mode: .dryRun, source: Self.address("100.64.0.7")).reason == .allowed)
        #expect(p.decide(g.envelope(), mode: .dryRun).reason == .allowed)
        // Where the source is not known, the deny rule cannot be evaluated, and so it denies.
        let unknown = PolicyEngine(policy: p.policy).evaluate(PolicyRequest(broker: "mac-laptop", cli: "claude", cwd: g.app, source: nil))
        guard case .deny(let d) = unknown else { Issue.record("a deny rule that cannot be evaluated must deny"); return }
        #expect(d.reason == .deniedByRule)
    }

    /// `key bind`: the key itself is accepted only from its places, for spawns and control requests alike, whatever
    /// the rules allow; `--clear` undoes it.
    @Test func aBoundKeyIsRefusedEverywhereElse() throws {
        let g = try Gateway()
        let bound = try g.cli(["key", "bind", "mac-laptop", "--sources", "100.64.0.7,fd7a:115c:a1e0::/48"])
        #expect(bound.status == 0, "\(bound.stderr)")
        let file = try String(contentsOfFile: g.vps.keysDir + "/mac-laptop.pub", encoding: .utf8)
        #expect(file.hasPrefix("from=\"100.64.0.7,fd7a:115c:a1e0::/48\" ssh-ed25519 "), "\(file)")
        let listed = try g.cli(["key", "list", "--json"])
        #expect(listed.stdout.contains("\"sources\":[\"100.64.0.7\",\"fd7a:115c:a1e0::/48\"]"), "\(listed.stdout)")

        let p = try g.pipeline()
        let local = p.decide(g.envelope(), mode: .dryRun).decision
        #expect(local.reason == .sourceNotAllowed && local.rule == nil, "\(local.detail)")
        #expect(local.detail.contains("key"), "\(local.detail)")
        #expect(p.decide(g.envelope(), mode: .dryRun, source: Self.address("100.64.0.7")).reason == .allowed)

        let now = g.clock.now()
        let control = Envelope.seal(ControlRequest(op: .agents, from: "mac-laptop", to: "vps-broker", iat: now, exp: now + 60).encoded(),
                                    with: g.laptop.key, domain: .control)
        #expect(p.decideControl(control, source: Self.address("198.51.100.1")).decision.reason == .sourceNotAllowed)
        #expect(p.decideControl(control, source: Self.address("100.64.0.7")).decision.reason == .allowed)

        #expect(try g.cli(["key", "bind", "mac-laptop", "--clear"]).status == 0)
        #expect(try g.pipeline().decide(g.envelope(), mode: .dryRun).reason == .allowed)
        let refused = try g.cli(["key", "bind", "mac-laptop", "--sources", "vps.example.com"])
        #expect(refused.status != 0 && refused.stderr.contains("vps.example.com"), "\(refused.stderr)")
    }

    /// `from=` is the one option a key file may carry: any other (written with authorized_keys in mind) makes the
    /// key store unusable rather than being ignored, as does a from= that does not parse.
    @Test func keyFilesCarryNoOtherOption() throws {
        let g = try Gateway()
        let path = g.vps.keysDir + "/mac-laptop.pub"
        let line = g.laptop.key.publicKey.line(comment: "mac-laptop")
        for bad in ["command=\"/bin/true\" \(line)", "from=\"100.64.0.7\",no-pty \(line)", "from=\"vps.example.com\" \(line)",
                    "from=\"100.64.0.7 \(line)", "from=100.64.0.7 \(line)", "from=\"\" \(line)"] {
            try (bad + "\n").write(toFile: path, atomically: true, encoding: .utf8)
            chmod(path, 0o644)
            #expect(throws: GatewayFailure.self, "\(bad)") { _ = try g.vps.keyStore.entries() }
            #expect(try g.pipeline().decide(g.envelope(), mode: .dryRun).reason == .internalError)
        }
    }

    @Test func theLoaderNamesABadSourceAndEmbeddedTestsCanGiveOne() throws {
        let g = try Gateway(rule: ["sources: [100.64.0.7, vps.example.com]"])
        guard case .failure(let e) = PolicyLoader.load(g.vps.policyFile) else { Issue.record("a host name must be refused"); return }
        #expect(e.description.contains("sources: 'vps.example.com' is not an IP address"), "\(e.description)")
        #expect(e.description.contains("policy.yaml:13:27: error"), "line and column: \(e.description)")

        try g.writePolicy(rule: ["sources: [100.64.0.7]"])
        let text = try String(contentsOfFile: g.vps.policyFile, encoding: .utf8)
        try (text + """

            tests:
              - request: {from: mac-laptop, cli: claude, cwd: \(g.app), source: 100.64.0.7}
                expect: allow
              - request: {from: mac-laptop, cli: claude, cwd: \(g.app), source: 203.0.113.5}
                expect: source_not_allowed
              - request: {from: mac-laptop, cli: claude, cwd: \(g.app)}
                expect: source_not_allowed
            """).write(toFile: g.vps.policyFile, atomically: true, encoding: .utf8)
        let policy = try PolicyLoader.load(g.vps.policyFile).get()
        let results = PolicyTestRunner.run(policy)
        #expect(results.count == 3 && results.allSatisfy(\.passed), "\(results)")
    }

    /// A relay worker's ticket carries the decision's source, so redemption re-checks the same rule with the same
    /// place (a ticket re-checked as "local" would be refused by a rule bound to the broker's address).
    @Test func aLaunchTicketKeepsItsSource() throws {
        let g = try Gateway(rule: ["spawner: agent-relay", "sandbox: standard", "sources: [100.64.0.7]"])
        let p = try g.pipeline()
        let spawn = try #require(p.decide(g.envelope(), source: Self.address("100.64.0.7")).authorized)
        let ticket = LaunchTicket(for: spawn)
        #expect(ticket.source == "100.64.0.7")
        if case .failure(let e) = p.redeem(ticket) { Issue.record("the ticket redeems with its own source: \(e.message)") }
    }

    @Test func doctorWarnsAboutUnboundRulesBeyondLoopback() throws {
        let g = try Gateway()
        let policy = try PolicyLoader.load(g.vps.policyFile).get()
        let keys = try g.vps.keyStore.entries()
        #expect(Doctor.sourceBinding(policy, keys: keys, listen: "127.0.0.1:7717").isEmpty)
        #expect(Doctor.sourceBinding(policy, keys: keys, listen: "[::1]:7717").isEmpty)
        let warned = Doctor.sourceBinding(policy, keys: keys, listen: "100.64.0.1:7717")
        #expect(warned.count == 1 && warned[0].severity == .warn && warned[0].message.contains("mac-laptop"), "\(warned)")
        // ref-laptop is named by the rule but has no key here: still unbound.
        #expect(warned[0].message.contains("ref-laptop"))

        try g.writePolicy(rule: ["sources: [100.64.0.7]"])
        let bound = try PolicyLoader.load(g.vps.policyFile).get()
        #expect(Doctor.sourceBinding(bound, keys: keys, listen: "100.64.0.1:7717").allSatisfy { $0.severity == .ok })

        let out = try g.cli(["doctor", "--listen", "100.64.0.1:7717"])
        #expect(out.stdout.contains("sources"), "\(out.stdout)")
    }

    /// Over real HTTP: serve decides with the connection's own address, for spawns and control requests alike.
    @Test func serveDecidesWithTheConnectionsAddress() throws {
        let elsewhere = try ServeTests.Remote(rule: ["sandbox: standard", "sources: [127.0.0.2]"])
        defer { elsewhere.serve.kill() }
        let refused = try elsewhere.spawn()
        #expect(refused.status == 1 && refused.stdout.contains("source_not_allowed"), "\(refused.stdout) \(refused.stderr)")
        #expect(refused.stdout.contains("127.0.0.1"), "the refusal names the place: \(refused.stdout)")

        let here = try ServeTests.Remote(rule: ["sandbox: standard", "sources: [127.0.0.1]"])
        defer { here.serve.kill() }
        let started = try here.spawn()
        #expect(started.status == 0, "\(started.stdout) \(started.stderr)")
        // The key bound elsewhere: refused whatever the rule says, listing included.
        let bind = try TestSupport.spawngate(["key", "bind", "mac-laptop", "--sources", "127.0.0.2", "--home", here.g.vps.root])
        #expect(bind.status == 0, "\(bind.stderr)")
        let listing = try here.laptop(["agents", "--broker", "vps-broker"])
        #expect(listing.status == 1 && (listing.stdout + listing.stderr).contains("source_not_allowed"), "status \(listing.status): \(listing.stdout) \(listing.stderr)")
        #expect(try TestSupport.spawngate(["key", "bind", "mac-laptop", "--clear", "--home", here.g.vps.root]).status == 0)
        let released = try here.laptop(["release", "coder", "--broker", "vps-broker"])
        #expect(released.status == 0, "\(released.stdout) \(released.stderr)")
    }
}
