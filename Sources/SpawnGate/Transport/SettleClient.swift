/// How `spawngate approve` / `deny` and the dashboard reach the running gateway to settle a held request: one
/// `POST /v1/settle` on its Unix socket, where the kernel names the caller (no token to steal, no network).
public enum SettleClient {
    /// The socket: `explicit`, else `<home>/hook.sock`, else `/run/spawngate/hook.sock` (the systemd unit's).
    public static func socket(_ explicit: String?, home: Home) throws(OperatorError) -> String {
        if let explicit { return explicit }
        for candidate in [home.root + "/hook.sock", "/run/spawngate/hook.sock"] where Files.exists(candidate) { return candidate }
        throw OperatorError.unusable("no gateway socket at \(home.root)/hook.sock or /run/spawngate/hook.sock: held requests are settled by the running gateway, which starts the agent; run 'spawngate serve --socket PATH' and pass --socket PATH")
    }

    /// Settles `id` and returns the gateway's decision as JSON members (`reason`, `detail`, and `pid` when an
    /// approved agent started). A refusal to settle (unknown id, not this user's) is an ``OperatorError``.
    public static func settle(_ id: String, _ settlement: DecisionPipeline.Settlement, socket path: String) throws(OperatorError) -> [String: JSONValue] {
        guard HeldRequest.isID(id) else { throw OperatorError("'\(id)' is not an approval id: 16 hex digits, as 'spawngate approvals' shows") }
        let body = JSONWriter.object([("id", .string(id)), ("settle", .string(settlement.rawValue))])
        let response: HTTPClient.Response
        do {
            response = try HTTPClient.exchange(.unix(path: path), method: GatewayOperation.settle.method, path: GatewayOperation.settle.path,
                                               body: body, timeout: 60)
        } catch { throw OperatorError.unusable("cannot reach the gateway at \(path): \(error)") }
        guard case .object(let o)? = try? StrictJSONReader.parse(response.body) else {
            throw OperatorError.unusable("the gateway at \(path) answered \(response.status) with no readable body")
        }
        if case .string(let message)? = o["error"] { throw OperatorError(message) }
        guard case .string(let reason)? = o["reason"], ReasonCode(rawValue: reason) != nil, case .string? = o["detail"] else {
            throw OperatorError.unusable("the gateway at \(path) answered without a decision")
        }
        return o
    }
}
