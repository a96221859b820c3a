#!/usr/bin/env python3
"""Drives an MCP server over stdio with the reference Python client (PyPI `mcp`), for the Swift tests.

    mcp_client.py COMMAND [ARG...] < steps.json

steps.json is a JSON array of steps, run in order:
    {"op": "list_tools"}
    {"op": "call", "tool": NAME, "args": {...}}
    {"op": "concurrent", "calls": [{"tool": NAME, "args": {...}}, ...]}   (all at once, in one session)
    {"op": "raw_call", "tool": NAME, "args": ANY}                            (arguments sent as given, unchecked)
Prints one JSON array: per step, its result. A call's result is
    {"is_error": bool, "text": "...", "structured": {...}|null, "elapsed": seconds, "finished_at": seconds}
and a protocol-level error {"protocol_error": "..."}. Exit 0 when the session ran, 1 otherwise.
"""
import asyncio
import json
import sys
import time

from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

START = time.monotonic()


def shape(result, began):
    now = time.monotonic()
    text = "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")
    return {"is_error": bool(result.isError), "text": text, "structured": result.structuredContent,
            "elapsed": round(now - began, 3), "finished_at": round(now - START, 3)}


async def call(session, tool, args):
    began = time.monotonic()
    try:
        return shape(await session.call_tool(tool, args), began)
    except Exception as e:  # a JSON-RPC error, not a tool result
        return {"protocol_error": str(e), "elapsed": round(time.monotonic() - began, 3)}


async def raw_call(session, tool, args):
    """tools/call with arguments exactly as given (the client's own typing would refuse some)."""
    began = time.monotonic()
    request = types.ClientRequest(types.CallToolRequest(
        method="tools/call", params=types.CallToolRequestParams.model_construct(name=tool, arguments=args)))
    try:
        result = await session.send_request(request, types.CallToolResult)
        return shape(result, began)
    except Exception as e:
        return {"protocol_error": str(e), "elapsed": round(time.monotonic() - began, 3)}


async def main():
    steps = json.load(sys.stdin)
    params = StdioServerParameters(command=sys.argv[1], args=sys.argv[2:])
    out = []
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out.append({"server": init.serverInfo.name, "protocol": init.protocolVersion})
            for step in steps:
                op = step["op"]
                if op == "list_tools":
                    tools = await session.list_tools()
                    out.append({"tools": [{"name": t.name, "description": t.description, "inputSchema": t.inputSchema}
                                          for t in tools.tools]})
                elif op == "call":
                    out.append(await call(session, step["tool"], step.get("args")))
                elif op == "raw_call":
                    out.append(await raw_call(session, step["tool"], step.get("args")))
                elif op == "concurrent":
                    out.append(await asyncio.gather(*(call(session, c["tool"], c.get("args")) for c in step["calls"])))
                else:
                    raise SystemExit(f"unknown step {op}")
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
