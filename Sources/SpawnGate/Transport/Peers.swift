import Foundation
import Yams

/// A gateway this broker sends requests to, and whose receipts it trusts: its URL and its identity key.
public struct Peer: Sendable, Equatable {
    public let name: String
    public let url: String
    public let key: PublicKey
}

/// `peers.yaml` in the home:
///
/// ```yaml
/// version: 1
/// peers:
///   vps-broker:
///     url: http://100.101.102.103:7717
///     key: ssh-ed25519 AAAA… vps-broker
/// ```
/// Read with the policy's YAML reader, so every error names the file, line and column, and unknown keys are errors.
public struct PeerList: Sendable, Equatable {
    public private(set) var peers: [Peer]

    public init(peers: [Peer] = []) { self.peers = peers }

    public func peer(_ name: String) -> Peer? { peers.first { $0.name == name } }

    /// Loads `path`; a missing file is an empty list (no peers added yet).
    public static func load(_ path: String) throws(OperatorError) -> PeerList {
        guard Files.exists(path) else { return PeerList() }
        try Files.checkNotWritableByOthers(path)
        let bytes = try Files.read(path, limit: 1 << 20)
        guard let text = String(validating: bytes, as: UTF8.self) else { throw OperatorError("\(path) is not valid UTF-8 text") }
        switch parse(text, file: path) {
        case .success(let list): return list
        case .failure(let e): throw OperatorError(e.description)
        }
    }

    public static func parse(_ text: String, file: String) -> Result<PeerList, PolicyLoadError> {
        var r = YAMLNodeReader(file: file)
        let root: Node
        do {
            // Scalars are read as written (YAMLNodeReader); no implicit tags, so no regular expressions per scalar.
            guard let node = try Yams.compose(yaml: text, .basic) else { return .success(PeerList()) }
            root = node
        } catch let e as YamlError {
            return .failure(PolicyLoadError(diagnostics: [PolicyLoader.syntaxDiagnostic(e, file: file, text: text)]))
        } catch {
            return .failure(PolicyLoadError(diagnostics: [PolicyDiagnostic(file: file, line: 1, column: 1, message: "cannot read YAML: \(error)")]))
        }
        var peers: [Peer] = []
        if let top = r.mapping(root, "peers.yaml", allowed: ["version", "peers"], required: ["version"]) {
            if let v = top["version"] { _ = r.integer(v.value, "version", range: 1...1) }
            if let p = top["peers"], let entries = r.namedEntries(p.value, "peers") {
                for (name, keyNode, value) in entries {
                    do { try Home.validateBrokerName(name) } catch { r.error(keyNode, "peers: \(error.message)"); continue }
                    guard let m = r.mapping(value, "peers.\(name)", allowed: ["url", "key"], required: ["url", "key"]),
                          let urlNode = m["url"], let url = r.string(urlNode.value, "peers.\(name).url"),
                          let keyEntry = m["key"], let line = r.string(keyEntry.value, "peers.\(name).key") else { continue }
                    if let problem = Self.urlProblem(url) { r.error(urlNode.value, "peers.\(name).url: \(problem)"); continue }
                    do {
                        peers.append(Peer(name: name, url: url, key: try PublicKey.parseLine(line).key))
                    } catch {
                        r.error(keyEntry.value, "peers.\(name).key: \(error.message)")
                    }
                }
            }
        }
        guard !r.hasErrors else {
            return .failure(PolicyLoadError(diagnostics: r.diagnostics.filter { $0.severity == .error }))
        }
        return .success(PeerList(peers: peers))
    }

    /// nil when `url` is a usable gateway address: http://, a host, a port, nothing after the authority; or
    /// relay:NAME. An https:// URL is refused here rather than accepted and then refused by every request: gateways
    /// speak plain HTTP to each other (bodies sealed to the peer's key, answers signed), so TLS would add only a
    /// certificate to manage.
    public static func urlProblem(_ url: String) -> String? {
        if let target = RemoteGateway.relayTarget(url) {
            do { try Home.validateBrokerName(target) } catch {
                return "'\(url)' must be relay:NAME, NAME being the target broker's name in the Agent Relay workspace: \(error.message)"
            }
            return nil
        }
        guard let u = URLComponents(string: url), let scheme = u.scheme, ["http", "https"].contains(scheme),
              let host = u.host, !host.isEmpty else {
            return "'\(url)' must be an http:// URL with a host, like http://100.101.102.103:7717, or relay:NAME (through the Agent Relay workspace)"
        }
        guard scheme == "http" else {
            return "'\(url)' uses https://, which spawngate's gateways do not speak: requests are sealed to the peer's key and answers signed by it, so plain http:// over your private network (Tailscale, WireGuard) is as safe; use http://\(u.host ?? "HOST")\(u.port.map { ":\($0)" } ?? ":7717"), or relay:NAME to go through the Agent Relay workspace"
        }
        guard u.path.isEmpty || u.path == "/", u.query == nil, u.fragment == nil, u.user == nil else {
            return "'\(url)' must name only the gateway (scheme, host and port), with no path, query or credentials"
        }
        return nil
    }

    /// Adds a peer, or moves a known one (same key) to a new URL. A name bound to another key is refused, as is a
    /// key already trusted under another name.
    public mutating func add(name: String, url: String, key: PublicKey, expected: Fingerprint) throws(OperatorError) {
        try Home.validateBrokerName(name)
        try key.requireFingerprint(expected, before: "add", from: "\(name)'s operator")
        if let problem = Self.urlProblem(url) { throw OperatorError("--url: \(problem)") }
        if let other = peers.first(where: { $0.key == key && $0.name != name }) {
            throw OperatorError("this key is already the peer '\(other.name)'; one key belongs to one gateway")
        }
        if let i = peers.firstIndex(where: { $0.name == name }) {
            guard peers[i].key == key else {
                throw OperatorError("\(name) is already a peer with another key (\(peers[i].key.fingerprint)); edit peers.yaml yourself if that gateway really has a new key")
            }
            peers[i] = Peer(name: name, url: url, key: key)
        } else {
            peers.append(Peer(name: name, url: url, key: key))
        }
    }

    /// The file's text (comments in a hand-edited file are not kept).
    public func render() -> String {
        if peers.isEmpty { return "version: 1\npeers: {}\n" }
        var out = "version: 1\npeers:\n"
        for p in peers.sorted(by: { $0.name < $1.name }) {
            out += "  \(p.name):\n    url: \"\(p.url)\"\n    key: \"\(p.key.line(comment: p.name))\"\n"
        }
        return out
    }

    public func save(_ path: String) throws(OperatorError) {
        try Files.writeAtomically(path, Array(render().utf8), mode: 0o600)
    }
}
