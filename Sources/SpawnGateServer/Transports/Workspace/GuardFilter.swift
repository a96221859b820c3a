import SpawnGate

/// What the relay guard does with one frame from Relaycast before the broker would see it. Pure: no I/O, so every
/// case is tested directly (`GuardFilterTests`) as well as through the real brokers.
///
/// The rule is an allowlist per socket: a frame passes only if its `type` is one the guard knows to be messaging
/// or the socket's own plumbing. Spawn frames (v6 `agent.spawn_requested`, v14 `action.invoke`) and every type the
/// guard does not know are dropped, because a new broker version may add a frame that starts an agent: failing
/// closed there costs at most a feature until the guard learns the type; failing open could cost the machine.
/// Frames are read with the strict JSON reader (a duplicate `type` key, which two parsers could read differently,
/// is refused), and anything that is not a JSON object with a string `type` is dropped as `malformed`.
public enum GuardFilter {
    /// The broker's sockets to Relaycast, by path.
    public enum Socket: String, Sendable {
        /// v6's workspace event stream, `/v1/ws`: messages, presence, and (the open door) spawn events.
        case workspace
        /// v14's node control plane, `/v1/node/ws`: deliveries and replies, and (the open door) `action.invoke`.
        case node
        /// v14's remote terminal, `/v1/node/terminal/ws`: never connected upstream.
        case terminal

        public init?(path: String) {
            switch path {
            case "/v1/ws": self = .workspace
            case "/v1/node/ws": self = .node
            case "/v1/node/terminal/ws": self = .terminal
            default: return nil
            }
        }
    }

    public enum Verdict: Sendable, Equatable {
        /// Forward unchanged.
        case pass
        /// Dropped; record this denial. A spawngate workspace message (``RelayWire``) is dropped too: the guard's
        /// mailbox reads it on its own socket, and no broker's agent ever sees it.
        case drop(Denial)
    }

    /// Relaycast's workspace events that carry messages or state the broker needs to deliver them (AgentWorkforce/
    /// relaycast `packages/sdk-rust/src/types.rs`, `WsEvent`), plus the socket's own `pong`/`ping`.
    /// Not here: `agent.spawn_requested` (starts an agent), `command.invoked` (invokes a handler), and anything new.
    public static let workspaceTypes: Set<String> = [
        "message.created", "message.updated", "thread.reply", "reaction.added", "reaction.removed", "dm.received",
        "group_dm.received", "agent.online", "agent.offline", "agent.release_requested", "channel.created",
        "channel.updated", "channel.archived", "member.joined", "member.left", "message.read", "file.uploaded",
        "webhook.received", "pong", "ping", "resync_ack",
    ]

    /// The node socket's frames that deliver messages or answer the broker's own calls. Not here: `action.invoke`
    /// (spawn, release and any action a later version adds) and anything new.
    public static let nodeTypes: Set<String> = ["reply", "deliver", "pong", "ping", "error"]

    /// The events a `deliver` frame may carry to an agent.
    public static let deliveredTypes: Set<String> = ["message.created", "dm.received", "group_dm.received", "thread.reply"]

    static let rule = "relay-guard"

    /// The verdict on one text frame from Relaycast on `socket`.
    public static func judge(_ text: [UInt8], on socket: Socket) -> Verdict {
        let kind = socket == .workspace ? "workspace socket (/v1/ws)" : socket == .node ? "node socket (/v1/node/ws)" : "terminal socket"
        if socket == .terminal {
            return .drop(Denial(.deniedByRule, "a frame for the broker's remote terminal (\(kind)) was dropped: the relay guard never connects that socket upstream, so no one can open a terminal on this machine through Relaycast", rule: rule))
        }
        guard case .object(let o)? = try? StrictJSONReader.parse(text), case .string(let type)? = o["type"] else {
            return .drop(Denial(.malformed, "a frame on the \(kind) that is not a JSON object with a string 'type' (or has duplicate keys) was dropped; the broker might read it differently from the guard", rule: rule))
        }
        let shown = TerminalText.escaped(String(type.prefix(64)))
        switch socket {
        case .workspace:
            if type == "agent.spawn_requested" {
                return .drop(Denial(.deniedByRule, "an agent.spawn_requested event (\(spawnSummary(o))) from Relaycast was dropped: spawns reach this machine only as spawngate requests its gateway allows", rule: rule))
            }
            guard workspaceTypes.contains(type) else {
                return .drop(Denial(.deniedByRule, "a '\(shown)' frame on the \(kind) was dropped: the relay guard passes only frame types it knows to be messaging, and fails closed on new ones", rule: rule))
            }
            if case .object(let m)? = o["message"], case .string(let t)? = m["text"], RelayWire.isOurs(t) {
                var from = "?"
                if case .string(let f)? = m["agent_name"] { from = f }
                return .drop(withheld(from: from, kind: kind))
            }
            return .pass
        case .node:
            if type == "action.invoke" {
                var action = "?"
                if case .string(let a)? = o["action"] { action = TerminalText.escaped(String(a.prefix(64))) }
                return .drop(Denial(.deniedByRule, "an action.invoke '\(action)' (\(spawnSummary(o))) from Relaycast was dropped: the relay guard lets no cloud action start or stop agents on this machine", rule: rule))
            }
            guard nodeTypes.contains(type) else {
                return .drop(Denial(.deniedByRule, "a '\(shown)' frame on the \(kind) was dropped: the relay guard passes only frame types it knows to be messaging, and fails closed on new ones", rule: rule))
            }
            if type == "deliver" {
                guard case .object(let payload)? = o["payload"], case .string(let inner)? = payload["type"], deliveredTypes.contains(inner) else {
                    return .drop(Denial(.deniedByRule, "a deliver frame whose payload is not a message was dropped: the relay guard delivers only messages", rule: rule))
                }
                if case .object(let data)? = payload["data"], case .string(let t)? = data["text"], RelayWire.isOurs(t) {
                    var from = "?"
                    if case .string(let f)? = data["agent_name"] ?? data["from_name"] { from = f }
                    return .drop(withheld(from: from, kind: kind))
                }
            }
            return .pass
        case .terminal:
            return .pass // handled above
        }
    }

    /// The record of a spawngate workspace message kept from the broker.
    static func withheld(from sender: String, kind: String) -> Denial {
        Denial(.deniedByRule, "a spawngate workspace message from \(TerminalText.escaped(String(sender.prefix(64)))) on the \(kind) was withheld from the broker: the gateway's mailbox reads it, no agent does", rule: rule)
    }

    /// name and cli of a spawn frame, for the audit line (escaped and cut: they come from whoever pushed it).
    static func spawnSummary(_ o: [String: JSONValue]) -> String {
        var fields: [String: JSONValue] = [:]
        if case .object(let a)? = o["agent"] { fields = a } else if case .object(let i)? = o["input"] { fields = i }
        func field(_ k: String) -> String {
            if case .string(let v)? = fields[k] { return TerminalText.escaped(String(v.prefix(80))) }
            return "-"
        }
        return "name \(field("name")), cli \(field("cli"))"
    }
}
