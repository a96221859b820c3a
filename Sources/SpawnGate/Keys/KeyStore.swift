import Foundation

/// Enrolled broker keys: `keys/NAME.pub` are trusted, `keys/revoked/NAME.pub` are refused.
///
/// The file name is the broker's name; the comment inside the line is a label only. Every read lists the
/// directory afresh, so an operator's `key revoke` takes effect on the very next request. A file that cannot be
/// read or parsed makes the store unusable (the gateway cannot decide), never "skipped": a corrupt revocation
/// must not turn into an acceptance.
public struct KeyStore: Sendable {
    public let home: Home
    /// A long-running gateway keeps the parsed keys and re-reads them only when a file or directory changed.
    let cache: KeyCache?

    /// `cached: true` for a process that decides many requests (`serve`, the benchmarks). Every lookup still stats
    /// both directories and each key file, so an enrollment, a revocation or an edit in place is seen at once.
    public init(home: Home, cached: Bool = false) {
        self.home = home
        self.cache = cached ? KeyCache() : nil
    }

    public enum Status: String, Sendable { case enrolled, revoked }

    public struct Entry: Sendable, Equatable {
        public let name: String
        public let key: PublicKey
        public let status: Status
        /// When the key was enrolled or revoked (the file's modification time).
        public let date: Int64
        /// The file the entry was read from.
        public let file: String
        /// The places this broker's requests are accepted from (`from="…"` before the key, as in OpenSSH's
        /// authorized_keys); nil when the key is not bound.
        public var sources: [SourcePattern]? = nil
    }

    public enum Lookup: Sendable, Equatable {
        case enrolled(name: String, key: PublicKey, sources: [SourcePattern]? = nil)
        case revoked(name: String)
        case unknown
    }

    public func entries() throws(GatewayFailure) -> [Entry] {
        guard let cache else { return try readAll() }
        if let hit = cache.entries(home: home) { return hit }
        let all = try readAll()
        cache.store(all, home: home)
        return all
    }

    private func readAll() throws(GatewayFailure) -> [Entry] {
        // Whoever can write the home or keys/ can rename keys/ or keys/revoked/ away and put their own in place.
        try Self.requireTrusted(home.root)
        return try read(home.keysDir, status: .enrolled) + read(home.revokedDir, status: .revoked)
    }

    /// The enrolled keys decide who may start processes here, so they are trusted only as OpenSSH's StrictModes
    /// trusts authorized_keys: owned by the gateway's user (or root) and writable by no one else, for each key
    /// file and the directories holding them. Otherwise the gateway cannot decide, as for a foreign-writable
    /// state.db: a key another user planted, or a revocation another user removed, must never count.
    static func requireTrusted(_ path: String) throws(GatewayFailure) {
        do { try Files.checkNotWritableByOthers(path) } catch {
            throw GatewayFailure("\(error.message). The enrolled keys decide who may start agents here, so nothing is decided until this is fixed")
        }
    }

    private func read(_ dir: String, status: Status) throws(GatewayFailure) -> [Entry] {
        try Self.requireTrusted(dir)
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: dir) } catch {
            throw GatewayFailure("cannot list \(dir): \(error.localizedDescription); the key store must be readable to decide anything")
        }
        var out: [Entry] = []
        for file in names.sorted() where file.hasSuffix(".pub") && !file.hasPrefix(".") {
            let path = "\(dir)/\(file)"
            // A link could point at a file someone else controls; enrollment only ever writes regular files.
            var st = stat()
            guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
                throw GatewayFailure("\(path) is not a regular file (a symlink or something else); replace it with the key file itself, or remove it. The enrolled keys decide who may start agents here, so nothing is decided until this is fixed")
            }
            try Self.requireTrusted(path)
            let text: [UInt8]
            do { text = try Files.read(path, limit: PublicKey.maxLineLength + 2) } catch { throw GatewayFailure(error.message) }
            do {
                let (sources, line) = try Self.splitBinding(String(decoding: text, as: UTF8.self))
                let (key, _) = try PublicKey.parseLine(line)
                // Revoked files may carry "@<time>" so that a name revoked twice keeps both keys refused.
                let name = String(file.dropLast(4).split(separator: "@", maxSplits: 1).first ?? "")
                out.append(Entry(name: name, key: key, status: status, date: Files.modificationTime(path) ?? 0, file: path,
                                 sources: sources))
            } catch {
                throw GatewayFailure("\(path) is not a valid key line (\(error.message)); fix or remove it, the key store must be intact to decide anything")
            }
        }
        return out
    }

    /// Revocation is checked first: a key that is both enrolled and revoked (a half-finished manual edit) is revoked.
    public func lookup(_ fingerprint: Fingerprint) throws(GatewayFailure) -> Lookup {
        let all = try entries()
        if let r = all.first(where: { $0.status == .revoked && $0.key.fingerprint == fingerprint }) { return .revoked(name: r.name) }
        if let e = all.first(where: { $0.status == .enrolled && $0.key.fingerprint == fingerprint }) {
            return .enrolled(name: e.name, key: e.key, sources: e.sources)
        }
        return .unknown
    }

    /// The one key option a file in keys/ may carry: `from="100.64.0.7,fd7a::/48" ssh-ed25519 AAAA… name`, the
    /// places the broker's requests are accepted from. Any other option is an error, never ignored: a key file
    /// someone wrote with `command=` or `no-pty` in mind must not be read as an unrestricted key.
    static func splitBinding(_ text: String) throws(OperatorError) -> (sources: [SourcePattern]?, line: String) {
        guard text.hasPrefix("from=") else { return (nil, text) }
        let rest = text.dropFirst("from=".count)
        guard rest.first == "\"", let close = rest.dropFirst().firstIndex(of: "\""),
              rest[rest.index(after: close)...].first == " " else {
            throw OperatorError("from= must be a quoted list followed by a space and the key: from=\"100.64.0.7\" ssh-ed25519 AAAA… name")
        }
        let list = String(rest[rest.index(after: rest.startIndex)..<close])
        switch SourcePattern.parseList(list) {
        case .success(let places): return (places, String(rest[rest.index(after: close)...].dropFirst()))
        case .failure(let why): throw OperatorError("from=\"\(list.prefix(200))\": \(why.description)")
        }
    }

    static func fileLine(_ key: PublicKey, name: String, sources: [SourcePattern]?) -> String {
        let binding = sources.map { "from=\"\($0.map(\.source).joined(separator: ","))\" " } ?? ""
        return binding + key.line(comment: name) + "\n"
    }

    /// Binds an enrolled broker's key to `sources` (nil: unbinds it), replacing its file atomically.
    public func bind(name: String, sources: [SourcePattern]?) throws(OperatorError) {
        try Home.validateBrokerName(name)
        if let sources, sources.isEmpty { throw OperatorError("give at least one address or network; to unbind the key use --clear") }
        let all: [Entry]
        do { all = try entries() } catch { throw OperatorError(error.message) }
        guard let e = all.first(where: { $0.name == name && $0.status == .enrolled }) else {
            throw OperatorError("no enrolled broker named '\(name)'; see 'spawngate key list'")
        }
        try Files.writeAtomically(e.file, Array(Self.fileLine(e.key, name: name, sources: sources).utf8), mode: 0o644)
    }

    /// Trusts `key` as broker `name`, after the operator compared its fingerprint out of band. With `sources`,
    /// its requests are accepted only from those places.
    public func enroll(name: String, key: PublicKey, expected: Fingerprint, reEnroll: Bool = false,
                       sources: [SourcePattern]? = nil) throws(OperatorError) {
        if let sources, sources.isEmpty { throw OperatorError("give at least one address or network with --sources, or leave it out") }
        try Home.validateBrokerName(name)
        try key.requireFingerprint(expected, before: "enroll", from: name)
        let all: [Entry]
        do { all = try entries() } catch { throw OperatorError(error.message) }
        if let bound = all.first(where: { $0.name == name && $0.status == .enrolled }) {
            if bound.key == key { throw OperatorError("\(name) is already enrolled with this key (\(expected))") }
            throw OperatorError("\(name) is already bound to another key (\(bound.key.fingerprint)); revoke it first with 'spawngate key revoke \(name)' if the broker really has a new key")
        }
        if let other = all.first(where: { $0.key == key && $0.name != name }) {
            throw OperatorError("this key is already \(other.status) as '\(other.name)'; one key belongs to one broker name")
        }
        if let revoked = all.first(where: { $0.name == name && $0.status == .revoked }) {
            guard reEnroll else {
                let same = revoked.key == key ? "this same key" : "a key"
                throw OperatorError("\(name) had \(same) revoked; revocation stays until you re-enroll on purpose: repeat the command with --re-enroll")
            }
        }
        let path = "\(home.keysDir)/\(name).pub"
        try Files.writeAtomically(path, Array(Self.fileLine(key, name: name, sources: sources).utf8), mode: 0o644, exclusive: true)
        // Only after the new enrollment is durable does a revocation record of this same key go; records of
        // other keys once bound to the name stay, so those keys remain refused.
        for old in all where reEnroll && old.status == .revoked && old.name == name && old.key == key {
            guard unlink(old.file) == 0 else {
                throw OperatorError("enrolled \(name), but could not remove the old revocation record \(old.file): \(errnoText())")
            }
        }
        if reEnroll { Files.syncDirectory(home.revokedDir) }
    }

    /// Moves `keys/NAME.pub` to `keys/revoked/NAME.pub` (one rename: no moment where the key is in neither place).
    public func revoke(name: String) throws(OperatorError) {
        try Home.validateBrokerName(name)
        let from = "\(home.keysDir)/\(name).pub"
        var to = "\(home.revokedDir)/\(name).pub"
        if Files.exists(to) { to = "\(home.revokedDir)/\(name)@\(Int(Date().timeIntervalSince1970)).pub" }
        guard Files.exists(from) else { throw OperatorError("no enrolled broker named '\(name)'; see 'spawngate key list'") }
        try Files.makeDirectory(home.revokedDir, mode: 0o700)
        guard rename(from, to) == 0 else { throw OperatorError("cannot revoke \(name): \(errnoText())") }
        // Touch so that `key list` shows the revocation date.
        _ = utimes(to, nil)
        Files.syncDirectory(home.revokedDir)
        Files.syncDirectory(home.keysDir)
    }
}

/// The key store's parsed entries with the file-system state they were read from.
// @unchecked: `entries` and `stamp` are read and written only under `lock`.
final class KeyCache: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [KeyStore.Entry] = []
    private var stamp: [FileStamp] = []

    /// The cached entries, when neither directory nor any key file changed since they were read.
    func entries(home: Home) -> [KeyStore.Entry]? {
        lock.lock(); defer { lock.unlock() }
        guard !stamp.isEmpty, Self.stamp(home: home, files: entries.map(\.file)) == stamp else { return nil }
        return entries
    }

    func store(_ all: [KeyStore.Entry], home: Home) {
        let s = Self.stamp(home: home, files: all.map(\.file))
        lock.lock(); defer { lock.unlock() }
        entries = all; stamp = s
    }

    private static func stamp(home: Home, files: [String]) -> [FileStamp] {
        // The home too: its mode is checked with the rest, and a chmod changes its ctime.
        ([home.root, home.keysDir, home.revokedDir] + files).map(FileStamp.init(path:))
    }
}
