import ArgumentParser
import Foundation
import SpawnGate
import SpawnGateCLI

struct Key: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show this broker's key; enroll, list and revoke other brokers' keys.",
        subcommands: [Show.self, Enroll.self, List.self, Bind.self, Revoke.self, Request.self, Pending.self, Accept.self, Reject.self])

    struct Request: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send this broker's public key to a target's gateway, to be accepted there by its operator.",
            discussion: """
                The request carries proof that this broker holds the private key, and is kept pending there, trusted \
                for nothing, until the target's operator runs 'spawngate key accept NAME --fingerprint SHA256:…' with \
                the fingerprint this command prints, which you give them over a channel you trust. A request \
                swapped on the way has another fingerprint and is refused at accept.
                """)
        @OptionGroup var home: HomeOption
        @Option(help: ArgumentHelp("The target broker, as named in peers.yaml.", valueName: "target")) var broker: String
        @Option(help: ArgumentHelp("The target's gateway address, when it is not in peers.yaml yet.", valueName: "url")) var url: String?

        func validate() throws {
            if let url {
                do { _ = try RemoteGateway.endpoint(url: url, name: broker) } catch { throw ValidationError("--url: \(error.message)") }
            }
        }

        func run() throws {
            try operatorAction {
                let home = home.resolved
                let identity = try home.loadIdentity()
                let address: String
                if let url { address = url } else if let peer = try PeerList.load(home.peersFile).peer(broker) { address = peer.url } else {
                    // As for every command naming a peer peers.yaml does not have ('spawn', 'agents --broker'): 2.
                    throw OperatorError.unusable("no peer named '\(broker)' in \(home.peersFile); give its gateway's address with --url http://HOST:PORT")
                }
                // A bad --url was refused as usage; a bad url in peers.yaml is this home's config: cannot act (2).
                let body = EnrollmentRequest.make(identity: identity, to: broker, now: SystemClock().now())
                let response: HTTPClient.Response
                do throws(RemoteError) { response = try RemoteGateway.unverified(.enroll, url: address, name: broker, body: body, timeout: 10) } catch {
                    guard error.kind != .usage else { throw error }
                    throw RemoteError(error.kind, "\(broker) (\(address)) is unreachable: \(error.message); is 'spawngate serve' running there, and is the address right?")
                }
                guard response.status == 202 else {
                    throw OperatorError("\(broker) refused the request (HTTP \(response.status)): \(String(decoding: response.body.prefix(512), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))")
                }
                print("sent; pending at \(broker). Give its operator this fingerprint over a channel you trust, for:")
                print("  spawngate key accept \(identity.name) --fingerprint \(identity.key.publicKey.fingerprint)")
            }
        }
    }

    struct Pending: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List enrollment requests waiting here (name, fingerprint, source, when).")
        @OptionGroup var home: HomeOption
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let now = SystemClock().now()
            let list = PendingKeys(home: home.resolved).list(now: now)
            if json {
                print(String(decoding: JSONWriter.encode(.array(list.map { .object(["name": .string($0.name), "fingerprint": .string($0.key.fingerprint.description),
                                                                                   "source": .string($0.source), "at": .number(String($0.at))]) })), as: UTF8.self))
                return
            }
            guard !list.isEmpty else { print("no enrollment requests pending"); return }
            table([["NAME", "FINGERPRINT", "SOURCE", "AGE"]] + list.map { [$0.name, $0.key.fingerprint.description, $0.source, AgentRecord.duration(now - $0.at)] })
        }
    }

    struct Accept: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Enroll a pending key, after comparing its fingerprint with the one its operator gave you.",
            discussion: "The fingerprint must come from the other operator over a channel you trust; the one 'key pending' shows only says what arrived.")
        @OptionGroup var home: HomeOption
        @Argument(help: ArgumentHelp("The requesting broker's name.", valueName: "name")) var name: String
        @Option(help: ArgumentHelp("The fingerprint you were given out of band: SHA256:…", valueName: "fingerprint")) var fingerprint: String
        @Option(help: sourcesHelp) var sources: String?

        func validate() throws {
            guard Fingerprint(fingerprint) != nil else { throw ValidationError("'--fingerprint' must look like SHA256: followed by 43 base64 characters.") }
            _ = try parsedSources(sources)
        }

        func run() throws {
            try operatorAction {
                let entry = try PendingKeys(home: home.resolved).accept(name: name, fingerprint: Fingerprint(fingerprint)!, now: SystemClock().now(),
                                                                        sources: try parsedSources(sources))
                print("enrolled \(entry.name) (\(entry.key.fingerprint)), requested from \(entry.source)")
            }
        }
    }

    struct Reject: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Forget the pending enrollment requests of a name.")
        @OptionGroup var home: HomeOption
        @Argument(help: ArgumentHelp("The requesting broker's name.", valueName: "name")) var name: String

        func run() throws {
            try operatorAction {
                let n = PendingKeys(home: home.resolved).reject(name: name, now: SystemClock().now())
                guard n > 0 else { throw OperatorError("no enrollment request from '\(name)' is pending") }
                print("rejected \(n) pending request(s) from \(name)")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print this broker's public key line and fingerprint.")
        @OptionGroup var home: HomeOption
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            try operatorAction {
                let id = try home.resolved.loadIdentity()
                let line = id.key.publicKey.line(comment: id.name)
                if json {
                    print(String(decoding: JSONWriter.object([("name", .string(id.name)), ("key", .string(line)),
                                                              ("fingerprint", .string(id.key.publicKey.fingerprint.description))]), as: UTF8.self))
                } else {
                    print(line)
                    print(id.key.publicKey.fingerprint)
                }
            }
        }
    }

    struct Enroll: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Trust another broker's key under a name.",
            discussion: """
                Get the fingerprint from the other broker's operator over a channel you trust (in person, a call, a \
                signed message): it is what makes the key theirs. Enrollment refuses a fingerprint mismatch, a name \
                already bound to another key, a key already enrolled under another name, and a revoked key unless \
                --re-enroll is given.
                """)
        @OptionGroup var home: HomeOption
        @Argument(help: ArgumentHelp("The broker's name; requests must say from=<name>.", valueName: "name")) var name: String
        @Option(help: ArgumentHelp("The key as one OpenSSH line: 'ssh-ed25519 AAAA… name'.", valueName: "line")) var key: String?
        @Option(help: ArgumentHelp("A file holding the key line (e.g. the broker's identity.pub).", valueName: "file")) var file: String?
        @Option(help: ArgumentHelp("The fingerprint you were given out of band: SHA256:…", valueName: "fingerprint")) var fingerprint: String
        @Flag(name: .customLong("re-enroll"), help: "Trust again a key or name that was revoked.") var reEnroll = false
        @Option(help: sourcesHelp) var sources: String?

        func validate() throws {
            _ = try parsedSources(sources)
            guard (key == nil) != (file == nil) else { throw ValidationError("Give the key with exactly one of --key or --file.") }
            guard Fingerprint(fingerprint) != nil else {
                throw ValidationError("'--fingerprint' must look like SHA256: followed by 43 base64 characters (as 'spawngate key show' or 'ssh-keygen -lf' print it).")
            }
            // A --key that is not a key line is a bad value (64); a --file whose contents are not is refused (1).
            if let key {
                do { _ = try PublicKey.parseLine(key) } catch { throw ValidationError("--key: \(error.message)") }
            }
        }

        func run() throws {
            try operatorAction {
                let text: String
                if let file {
                    text = String(decoding: try Files.read(file, limit: PublicKey.maxLineLength + 2), as: UTF8.self)
                } else {
                    text = key!
                }
                let parsed: PublicKey
                do { parsed = try PublicKey.parseLine(text).key } catch let e as OperatorError { throw OperatorError("\(file ?? "--key"): \(e.message)") }
                let places = try parsedSources(sources)
                try home.resolved.keyStore.enroll(name: name, key: parsed, expected: Fingerprint(fingerprint)!, reEnroll: reEnroll, sources: places)
                print("enrolled \(name) \(parsed.fingerprint)" + (places.map { ", accepted only from \($0.map(\.source).joined(separator: ", "))" } ?? ""))
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List enrolled and revoked brokers: name, fingerprint, status, date.")
        @OptionGroup var home: HomeOption
        @Flag(help: "Print JSON Lines, one object per key.") var json = false

        func run() throws {
            try operatorAction {
                let entries = try home.resolved.keyStore.entries()
                let fmt = ISO8601DateFormatter()
                for e in entries {
                    let date = fmt.string(from: Date(timeIntervalSince1970: TimeInterval(e.date)))
                    let places: [String]? = e.sources?.map(\.source)
                    if json {
                        var sources = JSONWriter.Value.null
                        if let places { sources = .strings(places) }
                        let fields: [(String, JSONWriter.Value)] = [
                            ("name", .string(e.name)), ("fingerprint", .string(e.key.fingerprint.description)),
                            ("status", .string(e.status.rawValue)), ("date", .string(date)), ("sources", sources)]
                        print(String(decoding: JSONWriter.object(fields), as: UTF8.self))
                    } else {
                        // The name is a file name in keys/, which anyone who could write there chose.
                        print("\(TerminalText.escaped(e.name))\t\(e.key.fingerprint)\t\(e.status.rawValue)\t\(date)\t\(places?.joined(separator: ",") ?? "any source")")
                    }
                }
                if entries.isEmpty && !json { printError("no brokers enrolled yet; use 'spawngate key enroll'") }
            }
        }
    }

    struct Bind: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Accept an enrolled broker's requests only from the places given (its tailnet address, say).",
            discussion: """
                Writes from="…" before the key in keys/NAME.pub, as OpenSSH's authorized_keys does. A request signed \
                by the key from anywhere else is refused with source_not_allowed, whatever the rules say; a rule's \
                own sources: narrows it further. --clear accepts the key from anywhere again.
                """)
        @OptionGroup var home: HomeOption
        @Argument(help: ArgumentHelp("The enrolled broker.", valueName: "name")) var name: String
        @Option(help: sourcesHelp) var sources: String?
        @Flag(help: "Remove the binding: accept the key from any place again.") var clear = false

        func validate() throws {
            guard (sources == nil) != !clear else { throw ValidationError("Give exactly one of --sources or --clear.") }
            _ = try parsedSources(sources)
        }

        func run() throws {
            try operatorAction {
                let places = try parsedSources(sources)
                try home.resolved.keyStore.bind(name: name, sources: places)
                print(places.map { "\(name) is accepted only from \($0.map(\.source).joined(separator: ", "))" } ?? "\(name) is accepted from any place")
            }
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a broker's key: every request signed by it is refused from now on.",
            discussion: "The key stays refused until an operator runs 'key enroll … --re-enroll'.")
        @OptionGroup var home: HomeOption
        @Argument(help: ArgumentHelp("The broker to revoke.", valueName: "name")) var name: String

        func run() throws {
            try operatorAction {
                try home.resolved.keyStore.revoke(name: name)
                print("revoked \(name)")
            }
        }
    }
}

let sourcesHelp = ArgumentHelp(
    "Accept this broker's requests only from these places: addresses or networks (100.64.0.7, 100.64.0.0/10, fd7a:115c:a1e0::/48), 'local' or 'workspace', separated by commas.",
    valueName: "list")

/// `--sources` as patterns; a bad entry is a usage error that names it.
func parsedSources(_ text: String?) throws -> [SourcePattern]? {
    guard let text else { return nil }
    switch SourcePattern.parseList(text) {
    case .success(let p): return p
    case .failure(let why): throw ValidationError("--sources: \(why.description).")
    }
}
