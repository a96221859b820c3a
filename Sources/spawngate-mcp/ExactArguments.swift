import SpawnGate
import Synchronization

/// A tool call's arguments exactly as the agent wrote them, kept aside from the MCP SDK.
///
/// swift-sdk 0.12.1 decodes every JSON string of a message into its `Value` type, and a string that looks like a
/// data: URL becomes `Value.data` (its issue #277): "data: migrate users, then orders" is no longer text, and
/// encoding it back gives "data: migrate users;base64,IHRoZW4gb3JkZXJz". The gateway would then sign and start a
/// task the agent never wrote. So the transport reads each `tools/call` line with the strict reader, keeps its
/// `arguments` here under a random token and hands the SDK the token in their place; the tool takes them back by
/// it. (Each string the SDK decodes also compiles that data: URL regex anew: the arguments no longer pay it.)
/// A line the strict reader refuses goes to the SDK unchanged, and its tool refuses any argument the SDK made
/// binary (``Arguments``), so a changed text is never signed.
final class ExactArguments: Sendable {
    /// The one argument the SDK sees in place of the real ones.
    static let key = "spawngate.exact_arguments"
    /// Calls whose arguments wait to be taken; beyond this the oldest are dropped and their calls refused.
    static let limit = 64

    private let kept = Mutex<(tokens: [String], arguments: [String: [String: JSONValue]])>(([], [:]))

    /// `line` as the SDK should see it: a `tools/call` with object arguments has them replaced by a token.
    func capture(_ line: [UInt8]) -> [UInt8] {
        // Most lines are not tool calls; those are not parsed twice.
        guard Self.mentionsToolsCall(line),
              case .object(var message) = try? StrictJSONReader.parse(line),
              message["method"] == .string("tools/call"),
              case .object(var params)? = message["params"],
              case .object(let arguments)? = params["arguments"] else { return line }
        let token = Sodium.randomBytes(16).hex
        kept.withLock { kept in
            kept.tokens.append(token)
            kept.arguments[token] = arguments
            while kept.tokens.count > Self.limit { kept.arguments[kept.tokens.removeFirst()] = nil }
        }
        params["arguments"] = .object([Self.key: .string(token)])
        message["params"] = .object(params)
        return JSONWriter.encode(.object(message))
    }

    /// The arguments kept under `token`, once.
    func claim(_ token: String) -> [String: JSONValue]? {
        kept.withLock { kept in
            guard let arguments = kept.arguments.removeValue(forKey: token) else { return nil }
            kept.tokens.removeAll { $0 == token }
            return arguments
        }
    }

    private static func mentionsToolsCall(_ line: [UInt8]) -> Bool {
        let needle = Array("tools/call".utf8)
        guard line.count >= needle.count else { return false }
        for i in 0...(line.count - needle.count) where line[i] == needle[0] && line[i..<(i + needle.count)].elementsEqual(needle) { return true }
        return false
    }
}
