import Foundation
import MCP
import SpawnGate

/// A `tools/call` request the transport takes from the stream before the MCP SDK sees it, to be answered by
/// ``GatewayTools`` directly.
///
/// swift-sdk 0.12.1 round-trips every request's params and every result through its `Value` type, and decoding
/// turns a JSON string that looks like a data: URL into binary data (its issue #277): an agent's task "data: migrate
/// users, then orders" came back as "data: migrate users;base64,IHRoZW4gb3JkZXJz", which the gateway would sign
/// and start; results are decoded the same way. Each string also compiles the SDK's data: URL regex anew: about
/// 1.5 ms of every tool call (perf, issue 27). So a tool call is read with the strict reader, its arguments kept
/// exactly as written, and its result encoded once, as the SDK would shape it.
/// Everything else (the handshake, `tools/list`, pings, any line the strict reader refuses) goes to the SDK, whose
/// own tool handler refuses an argument it made binary (``Arguments/exactly(_:)``).
struct ToolCall: Sendable {
    /// The request's id, as sent (a string or a number).
    let id: JSONValue
    let name: String
    let arguments: [String: JSONValue]?

    /// `line` as a tool call this transport answers: a well-formed `tools/call` request whose params name the tool
    /// and whose arguments, if any, are an object. nil: the line goes to the SDK.
    static func parse(_ line: [UInt8]) -> ToolCall? {
        guard case .object(let message) = try? StrictJSONReader.parse(line),
              message["jsonrpc"] == .string("2.0"), message["method"] == .string("tools/call"),
              let id = message["id"], id.isRequestID,
              case .object(let params)? = message["params"], case .string(let name)? = params["name"] else { return nil }
        switch params["arguments"] {
        case nil, .null?: return ToolCall(id: id, name: name, arguments: nil)
        case .object(let arguments)?: return ToolCall(id: id, name: name, arguments: arguments)
        default: return nil
        }
    }

    /// The JSON-RPC answer carrying `result` (encoded once, by the SDK's own Codable shape of a tool result).
    static func answer(_ id: JSONValue, _ result: CallTool.Result) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        guard let body = try? encoder.encode(result) else {
            return JSONWriter.object([("jsonrpc", .string("2.0")), ("id", .raw(JSONWriter.encode(id))),
                                      ("error", .raw(JSONWriter.object([("code", .int(-32603)), ("message", .string("the tool's result could not be encoded"))])))])
        }
        return JSONWriter.object([("jsonrpc", .string("2.0")), ("id", .raw(JSONWriter.encode(id))), ("result", .raw([UInt8](body)))])
    }
}

extension JSONValue {
    /// A JSON-RPC request id: a string or an integer.
    var isRequestID: Bool {
        switch self {
        case .string: true
        case .number(let text): Int64(text) != nil
        default: false
        }
    }
}
