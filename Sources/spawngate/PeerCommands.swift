import ArgumentParser
import SpawnGate
import SpawnGateCLI

struct PeerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peer",
        abstract: "Gateways this broker sends requests to, and whose receipts it trusts (peers.yaml).",
        subcommands: [Add.self, List.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a gateway: where it listens and its identity key.",
            discussion: """
                Get the fingerprint from that gateway's operator over a channel you trust ('spawngate key show' on \
                their machine): receipts are only trusted from this key. Re-adding a peer with the same key moves \
                it to a new URL; a name already bound to another key is refused. Without --key, the key is fetched \
                from the gateway itself (GET /v1/identity) and must still match the fingerprint.
                Exit 0: added; 1: refused (the fingerprint does not match, the name or the key is already bound); \
                2: no key came back from the gateway, or this home's files cannot be used; 64: a bad name, URL, key \
                or fingerprint.
                """)
        @OptionGroup var home: HomeOption
        @Argument(help: ArgumentHelp("The target broker's name, as requests address it (--to / --broker).", valueName: "name")) var name: String
        @Option(help: ArgumentHelp("The gateway's address, e.g. http://100.101.102.103:7717, or relay:NAME to reach it through the Agent Relay workspace (needs 'spawngate relay guard' on both machines).", valueName: "url")) var url: String
        @Option(help: ArgumentHelp("Its identity key as one OpenSSH line: 'ssh-ed25519 AAAA… name' (default: fetched from the gateway).", valueName: "line")) var key: String?
        @Option(help: ArgumentHelp("The fingerprint you were given out of band: SHA256:…", valueName: "fingerprint")) var fingerprint: String

        /// What is wrong with the arguments themselves is a usage error (64), before anything is read or fetched.
        func validate() throws {
            guard Fingerprint(fingerprint) != nil else {
                throw ValidationError("'--fingerprint' must look like SHA256: followed by 43 base64 characters (as 'spawngate key show' prints it).")
            }
            do { try Home.validateBrokerName(name) } catch { throw ValidationError("the peer's name: \(error.message)") }
            if let problem = PeerList.urlProblem(url) { throw ValidationError("--url: \(problem)") }
            if let key {
                do { _ = try PublicKey.parseLine(key) } catch { throw ValidationError("--key: \(error.message)") }
            } else if RemoteGateway.relayTarget(url) != nil {
                throw ValidationError("\(name) is reached through the Agent Relay workspace (\(url)), so its key cannot be fetched over HTTP; pass it with --key (its operator prints it with 'spawngate key show')")
            }
        }

        func run() throws {
            try operatorAction {
                let home = home.resolved
                let parsed: PublicKey
                if let key {
                    do { parsed = try PublicKey.parseLine(key).key } catch let e as OperatorError { throw OperatorError("--key: \(e.message)") }
                } else {
                    // Fetched over plain HTTP: worth nothing until it matches the fingerprint given out of band.
                    // No verified key from there (unreachable, refused, not a key line) cannot decide: 2.
                    parsed = try Self.fetchKey(url: url, peer: name)
                }
                var peers = try PeerList.load(home.peersFile)
                try peers.add(name: name, url: url, key: parsed, expected: Fingerprint(fingerprint)!)
                try peers.save(home.peersFile)
                print("added peer \(name) at \(url) (\(parsed.fingerprint))")
            }
        }

        /// The key `url`'s gateway says it has: no answer, or an answer that is not a key line, is a ``RemoteError``
        /// (no verified answer: 2); only the fingerprint check that follows can refuse it (1).
        static func fetchKey(url: String, peer: String) throws(RemoteError) -> PublicKey {
            let response: HTTPClient.Response
            do { response = try RemoteGateway.unverified(.identity, url: url, name: peer, timeout: 10) } catch {
                guard error.kind != .usage else { throw error }
                throw RemoteError(error.kind, "cannot fetch \(peer)'s key from \(url): \(error.message); is 'spawngate serve' running there? Or pass the key with --key")
            }
            guard response.status == 200, response.body.count <= 1024 else {
                throw RemoteError(.refusedUnsigned, "\(url) answered HTTP \(response.status) for its key; is 'spawngate serve' running there? Or pass the key with --key")
            }
            do { return try PublicKey.parseLine(String(decoding: response.body, as: UTF8.self)).key } catch {
                throw RemoteError(.badReceipt, "\(url) answered something that is not a key line: \(error.message); pass the key with --key")
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List peers: name, URL, key fingerprint.")
        @OptionGroup var home: HomeOption
        @Flag(help: "Print a JSON array.") var json = false

        func run() throws {
            try operatorAction {
                let peers = try PeerList.load(home.resolved.peersFile).peers
                if json {
                    print(String(decoding: JSONWriter.encode(.array(peers.map {
                        .object(["name": .string($0.name), "url": .string($0.url), "fingerprint": .string($0.key.fingerprint.description)])
                    })), as: UTF8.self))
                    return
                }
                if peers.isEmpty { print("no peers; add one with 'spawngate peer add NAME --url URL --key LINE --fingerprint SHA256:…'"); return }
                for p in peers { printLine("\(p.name)  \(p.url)  \(p.key.fingerprint)") }
            }
        }
    }
}
