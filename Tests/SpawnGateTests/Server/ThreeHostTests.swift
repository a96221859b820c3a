import Foundation
import Testing
@testable import SpawnGate
#if canImport(Glibc)
import Glibc
#endif

/// Three machines, each its own network namespace with its own address, home and gateway, on one virtual
/// switch: the user's story and the attacks on the wire between them.
@Suite("Three hosts in network namespaces")
struct ThreeHostTests {
    static let ip = "/usr/sbin/ip"

    struct Host {
        let name: String
        let home: Home
        let ns: String
        let address: String
        var exec: [String] { [ThreeHostTests.ip, "netns", "exec", ns] }

        /// `spawngate ARGS --home H`, run inside this host's namespace.
        func cli(_ args: [String]) throws -> TestSupport.Output {
            try TestSupport.run(ThreeHostTests.ip, ["netns", "exec", ns, TestSupport.binary] + args + ["--home", home.root])
        }

        func publicLine() throws -> String {
            try String(contentsOfFile: home.root + "/identity.pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        }

        func addPeer(_ peer: Host, url: String? = nil) throws {
            let out = try cli(try TestSupport.peerAdd(peer.name, home: peer.home, url: url ?? "http://\(peer.address):7717"))
            #expect(out.status == 0, "\(out.stderr)")
        }

        func enroll(_ broker: Host) throws {
            let line = try broker.publicLine()
            try home.keyStore.enroll(name: broker.name, key: try PublicKey.parseLine(line).0,
                                     expected: try PublicKey.parseLine(line).0.fingerprint)
        }
    }

    static func policy(for home: Home, brokers: [String], claude: String, app: String) throws {
        try """
            version: 1
            accept_remote_spawn: true
            clis:
              claude:
                path: \(claude)
                args: [[]]
            rules:
              - name: from-laptop
                brokers: [\(brokers.joined(separator: ", "))]
                clis: [claude]
                cwd: [\(app)/**]
                sandbox: standard
            """.write(toFile: home.policyFile, atomically: true, encoding: .utf8)
        chmod(home.policyFile, 0o600)
    }

    @Test func laptopSpawnsOnTheVPSAndTheMiniPCAndTheWireCannotBeTurned() throws {
        let prefix = "sg\(getpid() % 100_000)"
        let subnet = "10.77.\(getpid() % 250 + 1)"
        let script = TestSupport.packageRoot + "/Tests/Probes/netns.sh"
        _ = try TestSupport.run("/bin/sh", [script, "down", prefix, subnet])
        let up = try TestSupport.run("/bin/sh", [script, "up", prefix, subnet])
        guard up.status == 0 else {
            _ = try TestSupport.run("/bin/sh", [script, "down", prefix, subnet])
            print("SKIPPED three-host test: network namespaces cannot be made here (needs root and iproute2): \(up.stderr)")
            return
        }
        defer { _ = try? TestSupport.run("/bin/sh", [script, "down", prefix, subnet]) }

        let dir = TestSupport.tempDir("3h")
        func host(_ name: String, _ ns: String, _ n: Int) throws -> Host {
            Host(name: name, home: try TestSupport.makeHome(name, in: dir).0, ns: "\(prefix)-\(ns)", address: "\(subnet).\(n)")
        }
        let laptop = try host("mac-laptop", "laptop", 1), vps = try host("vps-broker", "vps", 2), mini = try host("mini-pc", "mini", 3)
        let intruder = Host(name: "intruder", home: try TestSupport.makeHome("intruder", in: dir).0, ns: laptop.ns, address: laptop.address)
        let app = dir + "/srv/app", claude = dir + "/bin/claude"
        try FileManager.default.createDirectory(atPath: app, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/bin", withIntermediateDirectories: true)
        try "#!/bin/sh\nexec /bin/sleep 60\n".write(toFile: claude, atomically: true, encoding: .utf8)
        chmod(claude, 0o755)

        // The VPS trusts the laptop and knows the mini-PC, but its policy lets only the laptop spawn.
        try vps.enroll(laptop); try vps.enroll(mini); try mini.enroll(laptop)
        try Self.policy(for: vps.home, brokers: ["mac-laptop"], claude: claude, app: app)
        try Self.policy(for: mini.home, brokers: ["mac-laptop"], claude: claude, app: app)
        let vpsGate = try ServeProcess(home: vps.home, listen: "\(vps.address):7717", prefix: vps.exec)
        defer { vpsGate.kill() }
        let miniGate = try ServeProcess(home: mini.home, listen: "\(mini.address):7717", prefix: mini.exec)
        defer { miniGate.kill() }
        try laptop.addPeer(vps); try laptop.addPeer(mini); try mini.addPeer(vps); try intruder.addPeer(vps)

        // The story: spawn on both, receipts verified against each target's key.
        var agents: [ProcessIdentity] = []
        defer { for a in agents { _ = Supervisor.stop(a, grace: 0) } }
        for target in ["vps-broker", "mini-pc"] {
            let out = try laptop.cli(["spawn", "coder", "claude", "Implement the plan", "--broker", target, "--cwd", app])
            #expect(out.status == 0, "\(target): \(out.stdout) \(out.stderr)")
            #expect(out.stdout.contains("started coder on \(target)") && out.stdout.contains("receipt verified with \(target)'s key"))
            agents.append(try #require(ProcessIdentity.of(pid: try ServeTests.Remote.pid(out))))
        }

        // The mini-PC is enrolled at the VPS, but the VPS's policy does not let it spawn.
        let fromMini = try mini.cli(["spawn", "coder", "claude", "--broker", "vps-broker", "--cwd", app])
        #expect(fromMini.status == 1 && fromMini.stdout.contains("denied by vps-broker: no_matching_rule"), "\(fromMini.stdout) \(fromMini.stderr)")
        // A host nobody enrolled.
        let fromIntruder = try intruder.cli(["spawn", "coder", "claude", "--broker", "vps-broker", "--cwd", app])
        #expect(fromIntruder.status == 1 && fromIntruder.stdout.contains("unknown_key"), "\(fromIntruder.stdout) \(fromIntruder.stderr)")

        // A relay on the laptop's side of the wire records a real request; sent again, it is refused.
        let wire = TestSupport.packageRoot + "/Tests/Probes/wire.py"
        let record = dir + "/captured.http"
        let (relay, ready) = try TestSupport.startProbe("wire.py", ["relay", laptop.address, "7800", vps.address, "7717", record], prefix: laptop.exec)
        _ = ready.fileHandleForReading.availableData
        try laptop.addPeer(vps, url: "http://\(laptop.address):7800")
        let relayed = try laptop.cli(["spawn", "coder", "claude", "--broker", "vps-broker", "--cwd", app])
        relay.waitUntilExit()
        #expect(relayed.status == 0, "\(relayed.stdout) \(relayed.stderr)")
        agents.append(try #require(ProcessIdentity.of(pid: try ServeTests.Remote.pid(relayed))))
        let captured = try Data(contentsOf: URL(fileURLWithPath: record))
        #expect(!String(decoding: captured, as: UTF8.self).contains("Implement") && !captured.isEmpty, "the body on the wire is sealed")
        let replay = try TestSupport.run(Self.ip, ["netns", "exec", laptop.ns, "python3", wire, "resend", vps.address, "7717", record])
        #expect(try Self.reason(replay.stdout, laptop) == "replay")

        // An envelope addressed to the mini-PC, sealed to and sent to the VPS, is refused there.
        let signed = try laptop.cli(["sign", "--to", "mini-pc", "--name", "coder", "--cli", "claude", "--cwd", app])
        let misaddressed = dir + "/misaddressed.json"
        try Data(SealedBody.seal(Array(signed.stdout.trimmingCharacters(in: .whitespacesAndNewlines).utf8),
                                 to: try PublicKey.parseLine(try vps.publicLine()).0)).write(to: URL(fileURLWithPath: misaddressed))
        let posted = try TestSupport.run(Self.ip, ["netns", "exec", laptop.ns, "python3", wire, "post", vps.address, "7717", "/v1/spawn", misaddressed])
        #expect(try Self.reason(posted.stdout, laptop) == "wrong_audience")

        // release stops the remote agents (both the direct one and the relayed one carry the name coder).
        try laptop.addPeer(vps)
        let released = try laptop.cli(["release", "coder", "--broker", "vps-broker"])
        #expect(released.status == 0 && released.stdout.components(separatedBy: "released coder on vps-broker").count == 3, "\(released.stdout) \(released.stderr)")
        #expect(!agents[0].isAlive && !agents[2].isAlive)
        #expect(agents[1].isAlive, "the mini-PC's agent is not the VPS's to stop")
        #expect(try vps.cli(["audit", "verify"]).status == 0)
    }

    /// The reason inside a receipt sealed to `to`'s key.
    static func reason(_ body: String, _ to: Host) throws -> String? {
        let env = try SealedBody.open(Array(body.utf8), with: try to.home.loadIdentity().key).get()
        guard case .object(let o) = try StrictJSONReader.parse(try Envelope.parse(env).get().payload),
              case .string(let r)? = o["reason"] else { return nil }
        return r
    }
}
