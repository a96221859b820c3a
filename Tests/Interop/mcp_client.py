#!/usr/bin/env python3
"""Drives an MCP server over stdio with the reference Python client (PyPI `mcp`), for the Swift tests.

    mcp_client.py [--auto] COMMAND [ARG...] < steps.json

Runs unchanged on both release lines of `mcp` (1.x in .build-py/venv, 2.x in .build-py/venv2; see
scripts/install-py.sh). By default it connects as the low-level `ClientSession` + `initialize()`, which both lines
have and which always makes the initialize handshake. `--auto` (2.x only) connects as 2.x's high-level `Client` in its
default mode='auto', the way a 2.x host does: it first probes `server/discover` at the 2026-07-28 protocol and falls
back to the initialize handshake when the server refuses the probe.

steps.json is a JSON array of steps, run in order:
    {"op": "list_tools"}
    {"op": "call", "tool": NAME, "args": {...}}
    {"op": "concurrent", "calls": [{"tool": NAME, "args": {...}}, ...]}   (all at once, in one session)
    {"op": "raw_call", "tool": NAME, "args": ANY}                            (arguments sent as given, unchecked)
Prints one JSON array: first the connection,
    {"server": NAME, "protocol": NEGOTIATED_VERSION, "client": MCP_PACKAGE_VERSION, "handshake": "initialize"|"discover"}
then per step its result. A call's result is
    {"is_error": bool, "text": "...", "structured": {...}|null, "elapsed": seconds, "finished_at": seconds}
and a protocol-level error {"protocol_error": "..."}. Exit 0 when the session ran, 1 otherwise, 2 on a usage error.
"""
import asyncio
import importlib.metadata
import json
import re
import sys
import time

from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

START = time.monotonic()
MCP_VERSION = importlib.metadata.version("mcp")
# What 2.x changed for this client (its docs/migration.md), and how this script bridges it:
#   - model fields are snake_case attributes (`is_error`, `structured_content`, `server_info`, `protocol_version`,
#     `input_schema`); 1.x's attributes are the camelCase wire names. The JSON on the wire is the same: see `wire`.
#   - `types.ClientRequest` is a plain union, no longer a RootModel wrapper: a request is sent as itself.
#   - `mcp.Client` (new) probes `server/discover` before the handshake; `ClientSession.initialize()` does not.
V2 = int(MCP_VERSION.split(".")[0]) >= 2


def wire(model, name):
    """A protocol field by its wire (camelCase) name, on either line."""
    return getattr(model, re.sub(r"(?<=[a-z])([A-Z])", r"_\1", name).lower() if V2 else name)


def shape(result, began):
    now = time.monotonic()
    text = "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")
    return {"is_error": bool(wire(result, "isError")), "text": text, "structured": wire(result, "structuredContent"),
            "elapsed": round(now - began, 3), "finished_at": round(now - START, 3)}


async def call(session, tool, args):
    began = time.monotonic()
    try:
        return shape(await session.call_tool(tool, args), began)
    except Exception as e:  # a JSON-RPC error, not a tool result (McpError on 1.x, MCPError on 2.x)
        return {"protocol_error": str(e), "elapsed": round(time.monotonic() - began, 3)}


async def raw_call(session, tool, args):
    """tools/call with arguments exactly as given (the client's own typing would refuse some)."""
    began = time.monotonic()
    request = types.CallToolRequest(
        method="tools/call", params=types.CallToolRequestParams.model_construct(name=tool, arguments=args))
    if not V2:  # 1.x sends requests wrapped in the ClientRequest RootModel
        request = types.ClientRequest(request)
    try:
        result = await session.send_request(request, types.CallToolResult)
        return shape(result, began)
    except Exception as e:
        return {"protocol_error": str(e), "elapsed": round(time.monotonic() - began, 3)}


async def run_steps(session, steps, out):
    for step in steps:
        op = step["op"]
        if op == "list_tools":
            tools = await session.list_tools()
            out.append({"tools": [{"name": t.name, "description": t.description, "inputSchema": wire(t, "inputSchema")}
                                  for t in tools.tools]})
        elif op == "call":
            out.append(await call(session, step["tool"], step.get("args")))
        elif op == "raw_call":
            out.append(await raw_call(session, step["tool"], step.get("args")))
        elif op == "concurrent":
            out.append(await asyncio.gather(*(call(session, c["tool"], c.get("args")) for c in step["calls"])))
        else:
            raise SystemExit(f"unknown step {op}")


async def main():
    argv = sys.argv[1:]
    auto = bool(argv) and argv[0] == "--auto"
    if auto:
        argv = argv[1:]
    if not argv:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    if auto and not V2:
        print(f"mcp_client.py: --auto needs the 2.x client (mcp.Client), and this is mcp {MCP_VERSION}", file=sys.stderr)
        sys.exit(2)
    steps = json.load(sys.stdin)
    params = StdioServerParameters(command=argv[0], args=argv[1:])
    out = []
    if auto:
        from mcp import Client  # 2.x only
        async with Client(params) as client:  # mode='auto': server/discover first, then initialize on refusal
            session = client.session
            info = client.server_info
            out.append({"server": info.name if info else None, "protocol": client.protocol_version,
                        "client": MCP_VERSION, "handshake": "discover" if session.discover_result else "initialize"})
            await run_steps(session, steps, out)
    else:
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()  # both lines offer 2025-11-25 here
                out.append({"server": wire(init, "serverInfo").name, "protocol": wire(init, "protocolVersion"),
                            "client": MCP_VERSION, "handshake": "initialize"})
                await run_steps(session, steps, out)
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
