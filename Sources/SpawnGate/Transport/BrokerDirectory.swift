import Foundation

/// The brokers this one can act on, for every surface that offers a choice of broker (`spawngate mcp`'s
/// `broker.list` and `broker` arguments, the dashboard's broker selector): one copy of how a broker name becomes a
/// ``RemoteGateway`` and of how "does it answer" is found out.
public enum BrokerDirectory {
    /// A peer from peers.yaml and what its `/healthz` said just now.
    public struct Status: Sendable {
        public let peer: Peer
        /// Whether it is this broker's own gateway (a peer under this broker's own name).
        public let isSelf: Bool
        /// nil when something answered `/healthz` with 200; otherwise why not. Answering proves no identity: only
        /// a signed receipt does.
        public let problem: String?
        public var answers: Bool { problem == nil }
    }

    /// The gateway for `broker` in `home`'s peers.yaml, signed for with `home`'s identity. nil, or this broker's
    /// own name, means this machine's own gateway, which must then be a peer under this broker's own name; the
    /// error says how to add it. Nothing is ever started around the gateway.
    public static func remote(_ broker: String?, home: Home, timeout: Double) throws(OperatorError) -> RemoteGateway {
        // Each file read once per call (issue 27: the MCP server read the identity twice per tool call).
        let identity = try home.loadIdentity()
        let target = broker ?? identity.name
        let peers = try PeerList.load(home.peersFile)
        if target == identity.name, peers.peer(target) == nil {
            throw OperatorError("\(broker == nil ? "no broker was named" : "'\(target)' is this broker"), and this machine's own gateway is not in \(home.peersFile). To start agents here through it, add it as a peer under this broker's own name: spawngate peer add \(identity.name) --url http://127.0.0.1:7717 --key \"$(cat \(home.identityPub))\" --fingerprint \(identity.key.publicKey.fingerprint) (and enroll that key in its own keys/ so its policy can name \(identity.name))")
        }
        return try RemoteGateway.to(target, in: peers, identity: identity, home: home, timeout: timeout)
    }

    /// nil when `peer` answers `GET /healthz` with 200 within `timeout`; otherwise why not. A `relay:` peer is
    /// reached through this home's relay guard, so what can be checked is that guard and its mailbox being
    /// online in the workspace (whether the target's own guard answers shows only in a signed answer). Blocking.
    public static func probe(_ peer: Peer, home: Home, timeout: Double) -> String? {
        if RemoteGateway.relayTarget(peer.url) != nil {
            guard let guardFile = RelayGuardFile.load(home), let endpoint = guardFile.endpoint else {
                return "reached through the Agent Relay workspace, but no relay guard runs for this home; start 'spawngate relay guard'"
            }
            guard let r = try? HTTPClient.exchange(endpoint, method: "GET", path: "/_spawngate/v1/health", timeout: timeout), r.status == 200,
                  case .object(let o)? = try? StrictJSONReader.parse(r.body) else {
                return "this home's relay guard at \(guardFile.url) does not answer"
            }
            return o["mailbox"] == .string("online") ? nil : "this home's relay guard is not connected to the workspace yet (its mailbox is offline; 'spawngate doctor' says why)"
        }
        do {
            let r = try HTTPClient.exchange(try RemoteGateway.endpoint(peer), method: GatewayOperation.health.method, path: GatewayOperation.health.path, timeout: timeout)
            return r.status == 200 ? nil : "HTTP \(r.status)"
        } catch let e as RemoteError { return e.message } catch { return "\(error)" }
    }

    /// This broker's identity and every peer with its health, this broker's own gateway first, then by name. Each
    /// peer is probed on a thread of `offload` with a deadline, all at once: the slowest bounds the call.
    public static func list(home: Home, probe seconds: Double, offload: Offload) async throws(OperatorError) -> (Identity, [Status]) {
        let identity = try home.loadIdentity()
        let peers = try PeerList.load(home.peersFile)
        let answers = await withTaskGroup(of: (String, String?).self) { group in
            for p in peers.peers {
                group.addTask {
                    switch await offload.run(deadline: seconds + 1, { probe(p, home: home, timeout: seconds) }) {
                    case .done(let problem): return (p.name, problem)
                    case .timedOut: return (p.name, "no answer within \(Int(seconds + 1)) s")
                    case .busy(let why): return (p.name, why)
                    }
                }
            }
            var out: [String: String?] = [:]
            for await (name, problem) in group { out[name] = problem }
            return out
        }
        let ordered = peers.peers.sorted { a, b in
            (a.name == identity.name) != (b.name == identity.name) ? a.name == identity.name : a.name < b.name
        }
        return (identity, ordered.map { p in
            Status(peer: p, isSelf: p.name == identity.name, problem: answers[p.name] ?? "not checked")
        })
    }

    /// Why an exchange gave no verified answer, as one line for a person or a model: "no verified answer from B: …",
    /// a signed denial the target could not bind to the request, or "busy: …".
    public struct ExchangeFailure: Error, Sendable {
        public let message: String
    }

    /// One exchange with `remote` (`work` calls one of its methods) on a thread of `offload`, never on the caller's,
    /// within twice its timeout plus a second.
    public static func exchange<T: Sendable>(_ remote: RemoteGateway, offload: Offload,
                                             _ work: @escaping @Sendable () throws(RemoteError) -> T) async -> Result<T, ExchangeFailure> {
        let deadline = remote.timeout * 2 + 1
        let outcome = await offload.run(deadline: deadline) { () -> Result<T, RemoteError> in
            do throws(RemoteError) { return .success(try work()) } catch { return .failure(error) }
        }
        switch outcome {
        case .done(.success(let value)): return .success(value)
        case .done(.failure(let e)):
            if e.kind == .unboundDenial { return .failure(ExchangeFailure(message: e.message)) }
            return .failure(ExchangeFailure(message: "no verified answer from \(remote.peer.name): \(e.message)"))
        case .timedOut: return .failure(ExchangeFailure(message: "no verified answer from \(remote.peer.name): it did not answer within \(Int(deadline)) s"))
        case .busy(let why): return .failure(ExchangeFailure(message: "busy: \(why)"))
        }
    }
}
