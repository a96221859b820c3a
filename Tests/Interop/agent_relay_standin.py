#!/usr/bin/env python3
"""STAND-IN for Agent Relay's broker HTTP API: not Agent Relay.

The real broker (agent-relay, Rust) cannot be run here. This implements only the documented contract that
spawngate's `spawner: agent-relay` backend relies on (../shared/notes/agent-relay.md, section 2.2):
- it writes STATE_DIR/connection.json = {url, port, api_key, pid}, as the broker does;
- POST /api/spawn needs `X-API-Key: <key>` or `Authorization: Bearer <key>` (else 401), takes a JSON body whose
  `name` is required (else 400), and answers 200 with {"success": true, "name": ...};
- every request it receives is appended to STATE_DIR/received.jsonl (method, path, headers, body) for the test.

usage: agent_relay_standin.py STATE_DIR API_KEY
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

state_dir, api_key = sys.argv[1], sys.argv[2]


class Broker(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        with open(os.path.join(state_dir, "received.jsonl"), "a") as f:
            f.write(json.dumps({"method": "POST", "path": self.path, "headers": dict(self.headers),
                                "body": raw.decode("utf-8", "replace")}) + "\n")
        given = self.headers.get("X-API-Key") or (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        if given != api_key:
            return self.answer(401, {"error": "unauthorized"})
        if self.path != "/api/spawn":
            return self.answer(404, {"error": "not found"})
        try:
            body = json.loads(raw)
            name = body["name"]
        except (ValueError, KeyError):
            return self.answer(400, {"error": "name is required"})
        self.answer(200, {"success": True, "name": name})


server = HTTPServer(("127.0.0.1", 0), Broker)
port = server.server_address[1]
tmp = os.path.join(state_dir, "connection.json.tmp")
with open(tmp, "w") as f:
    json.dump({"url": f"http://127.0.0.1:{port}", "port": port, "api_key": api_key, "pid": os.getpid()}, f)
os.rename(tmp, os.path.join(state_dir, "connection.json"))
server.serve_forever()
