import Foundation
import Testing
@testable import SpawnGate

@Suite("Peers")
struct PeersTests {
    @Test func addListAndTheRefusals() throws {
        let g = try Gateway()
        let vps = try g.vps.loadIdentity().key.publicKey
        let line = vps.line(comment: "vps-broker")
        let fp = vps.fingerprint.description
        func laptop(_ args: [String]) throws -> TestSupport.Output {
            try TestSupport.spawngate(args + ["--home", g.dir + "/mac-laptop"])
        }
        #expect(try laptop(["peer", "list"]).stdout.hasPrefix("no peers"))
        let mismatch = try laptop(["peer", "add", "vps-broker", "--url", "http://127.0.0.1:7717", "--key", line,
                                   "--fingerprint", g.laptop.key.publicKey.fingerprint.description])
        #expect(mismatch.status == 1 && mismatch.stderr.contains("fingerprint mismatch"), "\(mismatch.stderr)")
        let badURL = try laptop(["peer", "add", "vps-broker", "--url", "http://127.0.0.1:7717/v1/spawn?x=1", "--key", line, "--fingerprint", fp])
        #expect(badURL.status == 64 && badURL.stderr.contains("no path, query or credentials"), "\(badURL.stderr)")
        // https:// is refused when added (every request to it would be), with what to use instead, as a usage error
        // (a bad --url, like the one above); so is a file that names one.
        let tls = try laptop(["peer", "add", "vps-broker", "--url", "https://vps.example:7717", "--key", line, "--fingerprint", fp])
        #expect(tls.status == 64 && tls.stderr.contains("use http://vps.example:7717, or relay:NAME"), "\(tls.stderr)")
        #expect(try laptop(["peer", "list"]).stdout.hasPrefix("no peers"))
        #expect(try laptop(["peer", "add", "vps-broker", "--url", "http://127.0.0.1:7717", "--key", line, "--fingerprint", fp]).status == 0)
        #expect(try laptop(["peer", "list"]).stdout == "vps-broker  http://127.0.0.1:7717  \(fp)\n")
        // The same key at a new address moves the peer; another key under its name is refused.
        #expect(try laptop(["peer", "add", "vps-broker", "--url", "http://100.64.0.7:7717", "--key", line, "--fingerprint", fp]).status == 0)
        let other = SigningKey.generate().publicKey
        let swapped = try laptop(["peer", "add", "vps-broker", "--url", "http://100.64.0.7:7717", "--key", other.line(comment: "x"),
                                  "--fingerprint", other.fingerprint.description])
        #expect(swapped.status == 1 && swapped.stderr.contains("already a peer with another key"), "\(swapped.stderr)")
        // One key belongs to one gateway: the VPS's key under a second name is refused.
        let alias = try laptop(["peer", "add", "vps-alias", "--url", "http://100.64.0.8:7717", "--key", line, "--fingerprint", fp])
        #expect(alias.status == 1 && alias.stderr.contains("already the peer 'vps-broker'"), "\(alias.stderr)")
        let list = try PeerList.load(g.dir + "/mac-laptop/peers.yaml")
        #expect(list.peers.map(\.url) == ["http://100.64.0.7:7717"])
        #expect(list.peer("vps-broker")?.key == vps)
    }

    /// A peer reached through the Agent Relay workspace: `relay:NAME`, whose key cannot be fetched, and which needs
    /// this home's relay guard to be running.
    @Test func relayPeers() throws {
        let g = try Gateway()
        let vps = try g.vps.loadIdentity().key.publicKey
        let line = vps.line(comment: "vps-broker"), fp = vps.fingerprint.description
        func laptop(_ args: [String]) throws -> TestSupport.Output {
            try TestSupport.spawngate(args + ["--home", g.dir + "/mac-laptop"])
        }
        let bad = try laptop(["peer", "add", "vps-broker", "--url", "relay:../x", "--key", line, "--fingerprint", fp])
        #expect(bad.status == 64 && bad.stderr.contains("must be relay:NAME"), "\(bad.stderr)")
        let fetch = try laptop(["peer", "add", "vps-broker", "--url", "relay:vps-broker", "--fingerprint", fp])
        #expect(fetch.status == 64 && fetch.stderr.contains("pass it with --key"), "\(fetch.stderr)")
        #expect(try laptop(["peer", "add", "vps-broker", "--url", "relay:vps-broker", "--key", line, "--fingerprint", fp]).status == 0)
        #expect(try laptop(["peer", "list"]).stdout == "vps-broker  relay:vps-broker  \(fp)\n")
        let noGuard = try laptop(["spawn", "coder", "claude", "x", "--broker", "vps-broker", "--cwd", g.app])
        #expect(noGuard.status == 2 && noGuard.stderr.contains("no relay guard runs for this home; start 'spawngate relay guard'"), "\(noGuard.stderr)")
    }

    @Test func fileErrorsNameLineAndColumn() {
        func errors(_ text: String) -> [String] {
            if case .failure(let e) = PeerList.parse(text, file: "peers.yaml") { return e.diagnostics.map(\.description) }
            return []
        }
        #expect(errors("version: 1\npeers:\n  vps:\n    url: http://h:1\n    key: ssh-ed25519 AAAA x\n    port: 3\n").first?.hasPrefix("peers.yaml:6:5: error: unknown key 'port'") == true)
        #expect(errors("version: 1\npeers:\n  vps:\n    url: ftp://h\n    key: k\n").first?.hasPrefix("peers.yaml:4:10: error: peers.vps.url:") == true)
        #expect(errors("version: 1\npeers:\n  vps:\n    url: http://h:1\n    key: not-a-key\n").first?.hasPrefix("peers.yaml:5:10: error: peers.vps.key:") == true)
        #expect(errors("version: 2\n").first?.hasPrefix("peers.yaml:1:10: error:") == true)
        #expect(errors("version: 1\npeers:\n  vps:\n    url: https://h:1\n    key: ssh-ed25519 AAAA x\n").first?.contains("peers.yaml:4:10: error: peers.vps.url: 'https://h:1' uses https://") == true)
    }
}
