import Foundation

/// A broker's home directory and the files in it (layout fixed by PRODUCT.md).
public struct Home: Sendable {
    public let root: String

    /// A relative root is made absolute: paths under the home are handed to agents (TMPDIR) and recorded.
    public init(root: String) {
        let absolute = root.hasPrefix("/") ? root : FileManager.default.currentDirectoryPath + "/" + root
        self.root = absolute.count > 1 && absolute.hasSuffix("/") ? String(absolute.dropLast()) : absolute
    }

    /// `--home`, else `$SPAWNGATE_HOME`, else `~/.spawngate`.
    public static func resolve(_ explicit: String?, environment: [String: String] = ProcessInfo.processInfo.environment) -> Home {
        if let explicit, !explicit.isEmpty { return Home(root: explicit) }
        if let env = environment["SPAWNGATE_HOME"], !env.isEmpty { return Home(root: env) }
        return Home(root: (environment["HOME"] ?? NSHomeDirectory()) + "/.spawngate")
    }

    public var identityKey: String { root + "/identity.key" }
    public var identityPub: String { root + "/identity.pub" }
    public var keysDir: String { root + "/keys" }
    public var revokedDir: String { root + "/keys/revoked" }
    public var policyDir: String { root + "/policy" }
    public var policyFile: String { root + "/policy/policy.yaml" }
    public var peersFile: String { root + "/peers.yaml" }
    public var stateDB: String { root + "/state.db" }
    public var auditLog: String { root + "/audit.log" }

    public var keyStore: KeyStore { KeyStore(home: self) }

    /// Broker names end up in file names and audit lines, so they are kept to a safe alphabet.
    public static func validateBrokerName(_ name: String) throws(OperatorError) {
        guard isSafeName(name) else {
            throw OperatorError("'\(name)' is not a valid broker name: use 1–64 characters from a–z, A–Z, 0–9, '-', '_', '.', not starting with '.' or '-'")
        }
    }

    /// Agent names name a directory (`agents/NAME`) and an Agent Relay worker, and are how `release` and `logs`
    /// find an agent: the broker names' alphabet. A request with any other is malformed, whatever its entry point,
    /// rather than allowed and then failing to start. The name comes from a requester: at most 64 characters of it
    /// are repeated.
    public static func validateAgentName(_ name: String) throws(OperatorError) {
        guard isSafeName(name) else {
            let shown = name.count > 64 ? String(name.prefix(64)) + "…" : name
            throw OperatorError("'\(shown)' is not a valid agent name: use 1–64 characters from a–z, A–Z, 0–9, '-', '_', '.', not starting with '.' or '-'")
        }
    }

    private static func isSafeName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64
            && name.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0)) }
            && !name.hasPrefix(".") && !name.hasPrefix("-")
    }

    /// Creates the home: identity keypair, `keys/`, and the default-deny policy. Refuses to touch an existing home.
    public static func initialize(at root: String, name: String, policy: String = Home.defaultPolicy) throws(OperatorError) -> Identity {
        try validateBrokerName(name)
        let home = Home(root: root)
        guard !Files.exists(home.identityKey), !Files.exists(home.identityPub) else {
            throw OperatorError("\(home.root) already holds an identity (identity.key); refusing to overwrite it. Use another --home, or remove the old one yourself if you really mean to replace this broker's key")
        }
        try Files.makeDirectory(home.root, mode: 0o700)
        try Files.makeDirectory(home.keysDir, mode: 0o700)
        try Files.makeDirectory(home.revokedDir, mode: 0o700)
        try Files.makeDirectory(home.policyDir, mode: 0o700)
        let key = SigningKey.generate()
        try Files.writeAtomically(home.identityKey, Array(key.openSSHPrivateKeyFile(comment: name).utf8), mode: 0o600, exclusive: true)
        try Files.writeAtomically(home.identityPub, Array((key.publicKey.line(comment: name) + "\n").utf8), mode: 0o644, exclusive: true)
        if !Files.exists(home.policyFile) {
            try Files.writeAtomically(home.policyFile, Array(policy.utf8), mode: 0o600, exclusive: true)
        }
        if !Files.exists(home.stateDB) { try home.createState() }
        return Identity(name: name, key: key)
    }

    /// Creates an empty state store (and thereby a new, empty audit chain). `init` does it; an operator does it
    /// by hand (`init --state`) only after a lost store, once every request signed before the loss has expired.
    public func createState() throws(OperatorError) {
        do { _ = try StateStore.create(stateDB) } catch { throw .unusable(error.message) }
    }

    /// Loads this broker's identity, refusing a private key that others can read. Any problem means this
    /// machine cannot act as a broker (exit 2 wherever it happens), not that a request was refused.
    public func loadIdentity() throws(OperatorError) -> Identity {
        do { return try readIdentity() } catch { throw .unusable(error.message) }
    }

    private func readIdentity() throws(OperatorError) -> Identity {
        try checkKeyFile()
        let text = String(decoding: try Files.read(identityKey, limit: 16384), as: UTF8.self)
        let key: SigningKey
        do { key = try SigningKey.parseOpenSSHPrivateKey(text) } catch { throw OperatorError("\(identityKey): \(error.message)") }
        let pub = try readPublicLine()
        guard pub.key == key.publicKey else {
            throw OperatorError("\(identityPub) does not match \(identityKey); regenerate it with 'ssh-keygen -y -f \(identityKey)' followed by the broker name")
        }
        return Identity(name: pub.comment, key: key)
    }

    /// This broker's name, for a process that only decides (it is the audience of the requests it checks): read
    /// from identity.pub, so `check`, `exec`, `launch` and `policy explain` never read the private key. The key
    /// file must still be there and private, as for ``loadIdentity()``: a home whose key others can read cannot act.
    public func loadName() throws(OperatorError) -> String {
        do {
            try checkKeyFile()
            return try readPublicLine().comment
        } catch { throw .unusable(error.message) }
    }

    private func checkKeyFile() throws(OperatorError) {
        guard Files.exists(identityKey) else {
            throw OperatorError("no identity in \(root) (identity.key is missing); create one with 'spawngate init --name NAME'")
        }
        try Files.checkPrivate(identityKey)
    }

    /// identity.pub: this broker's public key, and its name as the line's comment.
    private func readPublicLine() throws(OperatorError) -> (key: PublicKey, comment: String) {
        let pub: (key: PublicKey, comment: String)
        do { pub = try PublicKey.parseLine(String(decoding: try Files.read(identityPub, limit: 16384), as: UTF8.self)) }
        catch { throw OperatorError("\(identityPub): \(error.message)") }
        do { try Home.validateBrokerName(pub.comment) } catch {
            throw OperatorError("\(identityPub) must end with this broker's name: \(error.message)")
        }
        return pub
    }

    /// Written by `init`: denies everything until the operator opts in.
    public static let defaultPolicy = """
        # spawngate policy: who may start which agent CLI on this machine.
        # Remote spawn is remote code execution, so this file denies everything until you opt in:
        # set accept_remote_spawn to true, name the CLIs, and add rules. See policy/examples/ in the
        # spawngate repository, and check your edits with: spawngate policy check
        version: 1
        accept_remote_spawn: false
        max_ttl: 120s
        clock_skew: 30s
        clis: {}
        rules: []
        tests: []

        """
}

/// This broker: its name and signing key.
public struct Identity: Sendable {
    public let name: String
    public let key: SigningKey
}
