import Foundation

/// The requesting side of the wire: sign, seal to the peer's key, send to its gateway, and trust nothing in the
/// answer but a receipt that verifies against the peer's key from peers.yaml and answers this very request.
///
/// Wire (see docs/protocol.md): `POST /v1/spawn` and `POST /v1/release` take a sealed body; `GET /v1/agents` takes
/// the control envelope in the `Spawngate-Request` header (base64url). A 200 answer is a receipt envelope, sealed
/// to the requester's key (`{"sealed":…}`) when the target knows who asked, plain otherwise. Anything else is an
/// error the target could not sign: shown, never trusted.
public struct RemoteGateway: Sendable {
    public let peer: Peer
    public let identity: Identity
    public var timeout: Double = 10
    public var ttl: Int64 = 60
    public var clock: any GateClock = SystemClock()
    /// This home's running relay guard: how a peer whose url is `relay:NAME` is reached.
    public var relayGuard: RelayGuardFile?

    init(peer: Peer, identity: Identity, relayGuard: RelayGuardFile?) {
        self.peer = peer
        self.identity = identity
        self.relayGuard = relayGuard
    }

    /// The one way every surface (the command line, `spawngate mcp`, the dashboard, `handoff`) gets a client for a
    /// peer: the peer `target` in `home`'s peers.yaml, signed for with `home`'s identity, and reached the way its
    /// url says (http://, or relay:NAME through this home's relay guard). An operator error naming the peers there
    /// are (and how to add one) when there is no such peer.
    public static func to(_ target: String, home: Home, timeout: Double) throws(OperatorError) -> RemoteGateway {
        try to(target, in: try PeerList.load(home.peersFile), identity: try home.loadIdentity(), home: home, timeout: timeout)
    }

    /// The same with this home's peers and identity already read.
    public static func to(_ target: String, in peers: PeerList, identity: Identity, home: Home, timeout: Double) throws(OperatorError) -> RemoteGateway {
        guard let peer = peers.peer(target) else {
            let known = peers.peers.map(\.name).joined(separator: ", ")
            throw OperatorError.unusable("no peer named '\(target)' in \(home.peersFile)\(known.isEmpty ? "" : " (known: \(known))"); add it with 'spawngate peer add \(target) --url http://HOST:PORT --key \"ssh-ed25519 …\" --fingerprint SHA256:…'")
        }
        return to(peer, identity: identity, home: home, timeout: timeout)
    }

    /// The same for a peer already read from peers.yaml.
    public static func to(_ peer: Peer, identity: Identity, home: Home, timeout: Double) -> RemoteGateway {
        var remote = RemoteGateway(peer: peer, identity: identity, relayGuard: relayTarget(peer.url) == nil ? nil : RelayGuardFile.load(home))
        remote.timeout = timeout
        return remote
    }

    /// What came back, verified.
    public struct Answer: Sendable {
        public let receipt: VerifiedReceipt
        /// The signed receipt envelope as received (after unsealing).
        public let envelope: [UInt8]
    }

    /// Signs `request` (its `from`, `to`, `iat`, `exp` and nonce are set here) and sends it; under `grant`, with
    /// the grant's blocks and a proof for this request (the caller has checked it with ``GrantStore/admit``).
    public func spawn(_ request: SpawnRequest, grant: GrantStore.Held? = nil) throws(RemoteError) -> Answer {
        var r = request
        let now = clock.now()
        r.from = identity.name; r.to = peer.name; r.iat = now; r.exp = now + ttl
        r.grant = grant?.token(to: peer.name, nonce: r.nonce)
        let payload = r.encoded()
        let envelope = Envelope.seal(payload, with: identity.key, domain: .request)
        return try send(.spawn, input: SealedBody.seal(envelope, to: peer.key), requestID: Sodium.sha256(payload).hex, kind: .spawn)
    }

    /// The requester's own agents running on the peer (name, cli, cwd, pid, started_at, sandbox…).
    public func agents() throws(RemoteError) -> (Answer, [JSONValue]) {
        let (envelope, rid) = control(.agents, name: nil)
        let answer = try send(.agents, input: Array(Base64.urlEncode(envelope).utf8), requestID: rid, kind: .control)
        guard case .array(let list)? = answer.receipt.members["agents"] else {
            if !answer.receipt.allowed { return (answer, []) }
            throw RemoteError(.badReceipt, "\(peer.name)'s signed answer has no agent list")
        }
        return (answer, list)
    }

    /// Asks the peer to stop the requester's agents called `name`.
    public func release(name: String) throws(RemoteError) -> (Answer, [JSONValue]) {
        let (envelope, rid) = control(.release, name: name)
        let answer = try send(.release, input: SealedBody.seal(envelope, to: peer.key), requestID: rid, kind: .control)
        if case .array(let list)? = answer.receipt.members["released"] { return (answer, list) }
        return (answer, [])
    }

    /// The output of the requester's agent `name` on the peer: the last `lines` lines, or from byte `offset` on.
    public func logs(name: String, lines: Int64? = nil, offset: Int64? = nil) throws(RemoteError) -> Answer {
        let (envelope, rid) = control(.logs, name: name, lines: lines, offset: offset)
        return try send(.logs, input: Array(Base64.urlEncode(envelope).utf8), requestID: rid, kind: .control)
    }

    private func control(_ op: ControlRequest.Operation, name: String?, lines: Int64? = nil, offset: Int64? = nil) -> ([UInt8], String) {
        let now = clock.now()
        let payload = ControlRequest(op: op, name: name, from: identity.name, to: peer.name, iat: now, exp: now + ttl,
                                     lines: lines, offset: offset).encoded()
        return (Envelope.seal(payload, with: identity.key, domain: .control), Sodium.sha256(payload).hex)
    }

    /// Where `peer.url` points: plain HTTP only, since the body is sealed end to end and the answer is signed.
    public static func endpoint(_ peer: Peer) throws(RemoteError) -> HTTPClient.Endpoint {
        try endpoint(url: peer.url, name: peer.name)
    }

    /// Where `url` (a gateway's, for the peer `name`) points.
    public static func endpoint(url: String, name: String) throws(RemoteError) -> HTTPClient.Endpoint {
        let peer = (url: url, name: name)
        guard let u = URLComponents(string: peer.url), let host = u.host, !host.isEmpty else {
            throw RemoteError(.usage, "peer \(peer.name) has an unusable url '\(peer.url)'; fix it with 'spawngate peer add'")
        }
        guard u.scheme == "http" else {
            throw RemoteError(.usage, "peer \(peer.name): \(peer.url) uses \(u.scheme ?? "no scheme"); spawngate speaks plain http:// (bodies are sealed to the peer's key and receipts are signed), typically over Tailscale")
        }
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        return .tcp(host: bare, port: UInt16(u.port ?? 80))
    }

    /// The two operations asked of a gateway before it is a trusted peer, so with no key to verify an answer by:
    /// fetching its key (`peer add --url`, which keeps it only with the fingerprint given) and offering ours
    /// (`key request`). Addressed by the operation table like every other; the answer is unsigned and the caller
    /// treats it as such. Only over http:// (a relay: peer has no key to fetch through the workspace).
    public static func unverified(_ op: GatewayOperation, url: String, name: String, body: [UInt8] = [], timeout: Double) throws(RemoteError) -> HTTPClient.Response {
        guard op == .identity || op == .enroll else { throw RemoteError(.usage, "\(op.path) needs a trusted peer: use RemoteGateway.to") }
        let endpoint = try endpoint(url: url, name: name)
        let headers: [(String, String)] = op.input == .body ? [("Content-Type", "application/json")] : []
        do { return try HTTPClient.exchange(endpoint, method: op.method, path: op.path, headers: headers, body: body, timeout: timeout) } catch {
            switch error {
            case .unreachable(let m), .timedOut(let m): throw RemoteError(.unreachable, m)
            case .protocolError(let m): throw RemoteError(.badReceipt, "answered something that is not HTTP: \(m)")
            }
        }
    }

    /// The workspace name a `relay:NAME` url reaches, else nil.
    public static func relayTarget(_ url: String) -> String? {
        url.hasPrefix("relay:") ? String(url.dropFirst("relay:".count)) : nil
    }

    /// Sends `op` with its input (the body, or the `Spawngate-Request` header's value) the way the peer's url
    /// says, addressed by the operation table, and verifies what comes back.
    private func send(_ op: GatewayOperation, input: [UInt8], requestID: String, kind: Receipt.Kind) throws(RemoteError) -> Answer {
        var endpoint: HTTPClient.Endpoint
        var (method, path, headers, body) = (op.method, op.path, [(String, String)](), [UInt8]())
        switch op.input {
        case .body: (headers, body) = ([("Content-Type", "application/json")], input)
        case .requestHeader: headers = [("Spawngate-Request", String(decoding: input, as: UTF8.self))]
        case .none: break
        }
        if let target = Self.relayTarget(peer.url) {
            // Through the workspace: the same bytes, handed to this home's relay guard, which sends them to the
            // target's gateway as a direct message and brings back its answer. The guard is trusted for nothing:
            // the answer must still be a receipt signed by the peer's key for this very request.
            guard let guardFile = relayGuard, let e = guardFile.endpoint else {
                throw RemoteError(.unreachable, "\(peer.name) is reached through the Agent Relay workspace (url relay:\(target)), but no relay guard runs for this home; start 'spawngate relay guard' (see the README), then try again")
            }
            guard op.throughWorkspace else { throw RemoteError(.usage, "\(op.path) cannot be sent through the workspace") }
            endpoint = e
            (method, body) = ("POST", input)
            // The peer's key from peers.yaml: the guard seals the message to it (only that gateway reads it).
            path = "/_spawngate/v1/relay?to=\(target)&op=\(op.rawValue)&timeout=\(Int(timeout.rounded(.up)))&key=\(Base64.urlEncode(peer.key.bytes))"
            headers = [("Content-Type", "application/json")]
        } else {
            endpoint = try Self.endpoint(peer)
        }
        let response: HTTPClient.Response
        do {
            // Through a guard, give it a little longer than the wait it was told, so its own timeout answer arrives.
            let wait = Self.relayTarget(peer.url) == nil ? timeout : timeout + 5
            response = try HTTPClient.exchange(endpoint, method: method, path: path, headers: headers, body: body, timeout: wait)
        } catch {
            switch error {
            case .unreachable(let m): throw RemoteError(.unreachable, "\(peer.name) (\(peer.url)) is unreachable: \(m); is 'spawngate serve' running there, and is the address right in peers.yaml?")
            case .timedOut(let m): throw RemoteError(.unreachable, "\(peer.name) (\(peer.url)) timed out: \(m)")
            case .protocolError(let m): throw RemoteError(.badReceipt, "\(peer.name) (\(peer.url)) answered something that is not HTTP: \(m)")
            }
        }
        guard response.status == 200 else {
            var text = String(decoding: response.body.prefix(512), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            if case .object(let o)? = try? StrictJSONReader.parse(response.body), case .string(let e)? = o["error"] { text = TerminalText.escaped(String(e.prefix(600))) }
            if Self.relayTarget(peer.url) != nil, [413, 429, 502, 503, 504].contains(response.status) {
                // The guard's own answer (the workspace, not the peer, said no): a sentence, never a decision.
                throw RemoteError(response.status == 413 ? .usage : .unreachable, "\(peer.name) (\(peer.url)) was not asked: \(text)")
            }
            throw RemoteError(.refusedUnsigned, "\(peer.name) refused before deciding (HTTP \(response.status)): \(text.isEmpty ? "no reason given" : text) (unsigned, not proof of anything)")
        }
        var envelope = response.body
        if case .object(let o)? = try? StrictJSONReader.parse(response.body), o["sealed"] != nil {
            switch SealedBody.open(response.body, with: identity.key) {
            case .failure(let d): throw RemoteError(.badReceipt, "\(peer.name)'s answer is sealed but \(d.detail)")
            case .success(let inner): envelope = inner
            }
        }
        switch Receipt.verify(envelope, from: peer.key, requestID: requestID, kind: kind) {
        case .success(let r): return Answer(receipt: r, envelope: envelope)
        case .failure(let e):
            // A signed denial not bound to any request: the target could not read what arrived.
            if case .success(let r) = Receipt.verify(envelope, from: peer.key, requestID: nil, kind: kind) {
                throw RemoteError(.unboundDenial, "\(peer.name) could not read the request: \(r.reason.rawValue): \(r.detail) (signed by \(peer.name), but not bound to this request; check that peers.yaml has its current key)")
            }
            throw RemoteError(.badReceipt, "the receipt from \(peer.name) failed verification, so nothing it says is trusted: \(e.message)")
        }
    }
}

public struct RemoteError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable {
        /// A local mistake: the peer's URL.
        case usage
        /// No connection, or no answer in time.
        case unreachable
        /// An HTTP error before any decision (body too large, too many requests): unsigned.
        case refusedUnsigned
        /// A signed denial the target could not bind to this request.
        case unboundDenial
        /// An answer that is not a valid receipt for this request from this peer.
        case badReceipt
    }
    public let kind: Kind
    public let message: String
    public init(_ kind: Kind, _ message: String) { self.kind = kind; self.message = message }
    public var description: String { message }
}
