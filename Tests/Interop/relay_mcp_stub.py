#!/usr/bin/env python3
"""A tiny stdio MCP server for the Agent Relay v14 broker's start-up check (AGENT_RELAY_MCP_COMMAND): not Agent
Relay's MCP server. v14 refuses to spawn unless its MCP command answers `initialize` and lists the tools `send_dm`,
`post_message` and `check_inbox`. This answers exactly that (newline-delimited JSON-RPC 2.0 on stdin/stdout, as MCP's
stdio transport does); a tools/call answers with an error, because nothing in the tests needs the tools to work.
Standard library only."""
import json
import sys

TOOLS = [
    {"name": "send_dm", "description": "Send a direct message to an agent.",
     "inputSchema": {"type": "object", "properties": {"to": {"type": "string"}, "text": {"type": "string"}},
                     "required": ["to", "text"]}},
    {"name": "post_message", "description": "Post a message to a channel.",
     "inputSchema": {"type": "object", "properties": {"channel": {"type": "string"}, "text": {"type": "string"}},
                     "required": ["channel", "text"]}},
    {"name": "check_inbox", "description": "List unread messages.",
     "inputSchema": {"type": "object", "properties": {}}},
]


def answer(request_id, result=None, error=None):
    reply = {"jsonrpc": "2.0", "id": request_id}
    reply.update({"error": error} if error else {"result": result})
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if not isinstance(msg, dict) or "id" not in msg:
        continue  # notifications (notifications/initialized, …) need no answer
    method = msg.get("method")
    if method == "initialize":
        version = (msg.get("params") or {}).get("protocolVersion") or "2024-11-05"
        answer(msg["id"], {"protocolVersion": version, "capabilities": {"tools": {}},
                           "serverInfo": {"name": "spawngate-relay-mcp-stub", "version": "0.1.0"}})
    elif method == "tools/list":
        answer(msg["id"], {"tools": TOOLS})
    elif method == "ping":
        answer(msg["id"], {})
    else:
        answer(msg["id"], error={"code": -32601, "message": f"the stub does not implement {method}"})
