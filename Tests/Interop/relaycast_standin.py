#!/usr/bin/env python3
"""STAND-IN for the Relaycast cloud API: not Relaycast.

Written for spawngate's tests from Relaycast's public API (AgentWorkforce/relaycast: packages/server/src/routes/*,
durable-objects/agent.ts, middleware/rateLimit.ts, packages/sdk-rust/src/types.rs) and from what the real Agent Relay
brokers (v6.0.0, v14.0.0) were seen to ask for when run against it. It is kept small: one workspace at a time,
everything in memory, answers shaped like the real ones only as far as the brokers read them. Python 3 standard
library only; the WebSocket part is written by hand (RFC 6455: handshake, text/binary frames, fragmentation,
ping/pong, close; client frames must be masked).

It listens on 127.0.0.1 on a port it picks, and prints `listening on http://127.0.0.1:PORT` as its first line.

What it answers (every answer is Relaycast's envelope `{"ok": true, "data": ...}` or `{"ok": false, "error": ...}`):
  workspace   POST /v1/workspaces, GET /v1/workspace, PUT /v1/workspace/stream, GET /v1/workspace/stream
  agents      POST /v1/agents (register; an existing name gets a fresh token), GET /v1/agents, GET /v1/agent,
              GET|PATCH|DELETE /v1/agents/{name}, POST /v1/agents/{name}/events, POST /v1/agents/spawn (fan-out below),
              POST /v1/agents/release, POST /v1/agents/{name}/rotate-token, presence calls
  channels    POST /v1/channels, GET /v1/channels, POST /v1/channels/{name}/join|leave|mute|unmute|invite,
              GET /v1/channels/{name}/members, POST/GET /v1/channels/{name}/messages (`general` exists from the start)
  DMs         POST /v1/dm {to, text}, GET /v1/dm/conversations[/all], GET /v1/inbox, POST /v1/messages/{id}/read
  nodes (v14) POST /v1/nodes, GET /v1/nodes[/{name}], POST|GET /v1/nodes/{name}/agents (bind), DELETE …/agents/{a}
  sockets     /v1/ws?token=…            with an agent token: that agent's events; with the workspace key: the
                                        workspace stream (v6; message.created, dm.received, …); see Routing
              /v1/node/ws               the node control plane (v14): node.register / agent.register get a `reply`,
                                        messages go out as `deliver`, heartbeats and acks are logged
              /v1/node/terminal/ws      the remote-terminal socket (v14): accepted and logged, nothing sent
  control     /_standin/… for the tests (POST /_standin/keys mints a further accepted workspace key, as a second
              key holder would have)
Any other /v1 call is logged and answered 404 in Relaycast's error shape, so a new call shows up in the log.

Messaging: a message posted with an agent's token (POST /v1/channels/{name}/messages, POST /v1/dm) is sent as the
event each broker expects: on /v1/ws as `message.created` / `dm.received` (the v6 broker finds a DM's recipient
with GET /v1/dm/conversations/all, as with the real server), and on /v1/node/ws as a `deliver` frame per recipient
agent registered through that node (`payload: {type, data: {id, agent_name, channel_name?, text}}`, with the node
socket's own per-agent `seq`, as before). Refused as Relaycast refuses them: POST /v1/dm without a non-empty string
`to` or `text` → 400 invalid_request ('"to" agent name is required' / 'text is required'), to an unknown agent → 404
agent_not_found; a channel message without text → 400 invalid_request, to a channel that does not exist → 404
channel_not_found (channels are made by POST /v1/channels). The other channel calls (join, leave, mute, members,
invite, GET) stay lenient and create a missing channel, because brokers join their channels at start.

Routing on /v1/ws, as Relaycast's per-agent actor does it:
  - A socket opened with an AGENT token (at_live_…) gets only that agent's events: DMs to it, its own copy of DMs it
    sent, and the messages of channels it is a member of (its own included). Every event for an agent (socket or not)
    takes the agent's next `agent_seq` (1, 2, …) and is kept in a ring buffer of its last 500, then is sent to each of
    its sockets as the event plus `workspaceId`, `agentId` (the recipient's id) and `agent_seq`; channel events also
    carry a per-channel `channel_seq`:
      {"type": "dm.received", "conversation_id": "dm_…", "message": {id, agent_id, agent_name, text, created_at,
       attachments, metadata}, "workspaceId": "ws_…", "agentId": "agt_…", "agent_seq": 3}
      {"type": "message.created", "channel": "general", "message": {…}, "channel_seq": 7, "workspaceId": "ws_…",
       "agentId": "agt_…", "agent_seq": 4}
    A socket that sends {"type": "resync", "last_seen_seq": N} gets the buffered events with agent_seq > N again (the
    same objects, in order), then {"type": "resync_ack", "last_seen_seq": N, "current_seq": C, "replayed": K,
    "gap_detected": N < oldest buffered - 1}. A client that does not resync never sees what came while it was away.
    Re-registering an agent gives a fresh token; its open sockets stay open and keep receiving.
  - A socket opened with the workspace key (rk_…), or any other token, gets the workspace stream: every message
    event and the spawn/release events, each with `workspaceId`, no agent_seq (the real server refuses an unknown
    token; the stand-in lets it listen, as it always has). Resync is not answered there (nor by Relaycast).
  - `{"type": "ping"}` is answered `{"type": "pong"}` on every socket.

Rate limit (off unless set): POST /v1/dm made with an agent token is counted per fixed 60-second window (one
workspace); past the limit it is answered 429 {"ok": false, "error": {"code": "rate_limit_exceeded", "message":
"Rate limit exceeded. N requests per minute allowed for free plan."}} with X-RateLimit-Limit and
X-RateLimit-Remaining (those two also on the DMs under the limit), and no Retry-After unless asked for (Relaycast's
code sends none). Refused DMs count too, as with Relaycast. Relaycast's windows are clock minutes; the stand-in's
window starts at the first DM after the last window ended, or when the limits are set, so a test's count is never
split by a minute boundary. DMs posted through POST /_standin/message are not counted.

Spawning like the real server: POST /v1/agents/spawn {name, cli, task, channel?} registers the agent and sends
`{"type": "agent.spawn_requested", "agent": {name, cli, task, channel, already_existed}, "workspaceId": …}` to every
workspace-stream socket (`sent_to_sockets` in the answer counts them); POST /v1/agents/release sends
`agent.release_requested` the same way.

Control API for tests (same port, no auth: it is loopback-only and lives as long as one test):
  GET  /_standin/sockets            connected sockets: id, kind (ws | node | terminal), agent, node, stream
                                    (agent | workspace, for ws), frames in
  GET  /_standin/agents             registered agents (name, id, type, node, status, agent_seq) and nodes
  GET  /_standin/log                every request and socket frame so far, as a JSON array
  GET  /_standin/frames?kind=K      frames received from sockets (optionally of one kind)
  POST /_standin/push?kind=K        send the body (one JSON frame) as it is to every connected socket, or those of
                                    kind K (no agent_seq, not buffered); answers {"sent_to": [socket ids]}
  POST /_standin/message            {from, to | channel, text}: post a message as agent `from` (registered on the
                                    fly), exactly as if that agent had called the message API: 200 {id, sent_to},
                                    or the API's refusal (400 empty to/text, 404 unknown agent or channel) with
                                    its status and body; not rate-limited
  GET  /_standin/dms                every direct message so far, unredacted: [{from, to, text}] (a test captures one
                                    to replay it)
  POST /_standin/keys               {} → {"api_key": "rk_live_…"}, a further accepted workspace key
  GET  /_standin/limits             {dm_per_minute: N | null, retry_after: bool, window: {dms, ends_in_ms | null},
                                    answered_429: K (since start)}
  POST /_standin/limits             {dm_per_minute?: N | null, retry_after?: bool}: change the rate limit (null: none;
                                    retry_after adds `Retry-After: <whole seconds to the window's end>` to a 429);
                                    the window restarts; answers as GET (also --dm-per-minute N at start)
  POST /_standin/sever              {agent, ms}: drop every /v1/ws socket of that agent at once (the TCP connection
                                    is cut, no close frame) and answer its upgrades `HTTP/1.1 503 Service
                                    Unavailable` for ms milliseconds; its events are still sequenced and buffered.
                                    Answers {"agent", "ms", "closed": [socket ids]}.
                                    {agent, ms, before_dm_from: SENDER}: arm it instead, once: when the next DM from
                                    SENDER to agent is posted (API or /_standin/message), the agent is severed just
                                    before that DM is sent, so the DM is only buffered. Answers {"armed": true}.
  POST /_standin/lose_next_dm_answer {from}: once: the next accepted POST /v1/dm made with that agent's token is
                                    delivered (sequenced, buffered, sent) but never answered: the connection is
                                    closed instead. Answers {"armed": true}.
  GET  /_standin/resyncs            every resync received: [{agent, last_seen_seq, current_seq, replayed,
                                    gap_detected}]
  sever and lose_next_dm_answer answer 404 {"error": …} for an agent that is not registered. In the log: the calls
  to limits, sever and lose_next_dm_answer as {kind: "control"}, each sever as {kind: "sever", agent, ms, sockets},
  each refused upgrade as {kind: "ws_refused"}, each resync as {kind: "resync"}, and the DM whose answer was lost as
  its http record with "answer_lost": true.

--tls-cert FILE --tls-key FILE serve HTTPS and WSS instead (a test's own certificate authority); the first line then
says `listening on https://localhost:PORT`.

--log FILE appends the same records as JSON lines: {t, kind: http|ws_open|ws_in|ws_out|ws_close|ws_refused|resync|
sever|control, …}. Header values that carry secrets (Authorization, X-API-Key, Cookie) and token query parameters are
never written, and token strings inside bodies are cut to their prefix.

usage: relaycast_standin.py [--log FILE] [--port N] [--dm-per-minute N] [--tls-cert FILE --tls-key FILE]
"""
import argparse
import asyncio
import base64
import collections
import hashlib
import json
import math
import os
import re
import secrets
import struct
import sys
import time
import urllib.parse

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
RESYNC_BUFFER_SIZE = 500  # events kept per agent for resync, as Relaycast's agent actor keeps
DM_PATHS = (["dm"], ["dm", "send"], ["messages", "dm"])
SECRET_HEADERS = {"authorization", "x-api-key", "cookie", "proxy-authorization"}
TOKEN_RE = re.compile(r"\b((?:rk|at|nt|br|ocl)_(?:live|test|node)?_?)[A-Za-z0-9_\-]{6,}")


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def redact(text):
    return TOKEN_RE.sub(lambda m: m.group(1) + "…", text)


def new_id(prefix):
    return f"{prefix}_{secrets.token_hex(8)}"


class Socket:
    def __init__(self, sid, kind, path, writer, agent=None, agent_id=None, node=None):
        self.id, self.kind, self.path, self.writer = sid, kind, path, writer
        self.agent, self.agent_id, self.node = agent, agent_id, node
        self.frames_in = 0
        self.opened = now_iso()
        self.lock = asyncio.Lock()
        self.closed = False

    def info(self):
        return {"id": self.id, "kind": self.kind, "path": self.path, "agent": self.agent, "node": self.node,
                "stream": self.stream(), "frames_in": self.frames_in, "opened": self.opened}

    def stream(self):
        """What a /v1/ws socket receives: its agent's events (agent token) or the workspace stream (any other)."""
        return None if self.kind != "ws" else "agent" if self.agent_id else "workspace"


class StandIn:
    def __init__(self, log_path, dm_per_minute=None):
        self.log_path = log_path
        self.records = []
        self.workspace_id = new_id("ws")
        self.workspace_key = "rk_live_" + secrets.token_hex(16)
        self.other_keys = set()   # further keys the server accepts (POST /_standin/keys), as a second key holder's
        self.agents = {}          # name -> {id, name, token, type, status, node, created_at, channels}
        self.channels = {"general": {"id": new_id("ch"), "name": "general", "topic": None, "members": set(),
                                     "created_at": now_iso()}}
        self.nodes = {}           # node id -> {id, name, token, ...}
        self.sockets = []
        self.next_socket = 1
        self.seq = {}             # agent name -> last delivery seq on the node socket
        self.stream_enabled = False
        self.conversations = {}   # DM conversation id -> {participants, last}
        self.dms = []             # every DM, unredacted, for /_standin/dms
        self.agent_seq = {}       # agent id -> last agent_seq given (the per-agent counter)
        self.buffers = {}         # agent id -> the last RESYNC_BUFFER_SIZE events sent to it, as sent
        self.channel_seq = {}     # channel name -> last channel_seq
        self.resyncs = []         # every resync received: {agent, last_seen_seq, current_seq, replayed, gap_detected}
        self.severed = {}         # agent name -> time.monotonic() until which its /v1/ws upgrades are refused
        self.sever_triggers = []  # armed: {agent, ms, before_dm_from}, each fired once
        self.lose_answer = set()  # agent names whose next accepted POST /v1/dm is never answered
        self.dm_per_minute = dm_per_minute   # None: no limit
        self.retry_after = False
        self.window_start = None  # time.monotonic() when the current rate-limit window began
        self.window_count = 0     # POST /v1/dm counted in it
        self.answered_429 = 0

    # ---------- log ----------
    def record(self, entry):
        entry = {"t": round(time.time(), 3), **entry}
        self.records.append(entry)
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")

    # ---------- identity ----------
    def who(self, headers, query):
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get("x-api-key", "")
        if not token:
            token = (query.get("token") or [""])[0]
        if token == self.workspace_key or token in self.other_keys:
            return ("workspace", None)
        for a in self.agents.values():
            if a["token"] == token:
                return ("agent", a)
        for n in self.nodes.values():
            if n["token"] == token:
                return ("node", n)
        return (None, None)

    def agent_view(self, a):
        return {"id": a["id"], "agent_id": a["id"], "workspace_id": self.workspace_id, "name": a["name"],
                "type": a["type"], "status": a["status"], "persona": None, "metadata": a.get("metadata") or {},
                "created_at": a["created_at"], "last_seen": now_iso(), "token_hash": a["token_hash"],
                "channels": [{"id": ch["id"], "name": c, "role": "member", "joined_at": ch["created_at"]}
                             for c, ch in sorted(self.channels.items()) if a["name"] in ch["members"]]}

    def register_agent(self, name, kind="agent", node=None, metadata=None, join_general=True):
        existed = name in self.agents
        token = "at_live_" + secrets.token_hex(16)
        a = self.agents.get(name) or {"id": new_id("agt"), "name": name, "created_at": now_iso()}
        a.update(token=token, token_hash=hashlib.sha256(token.encode()).hexdigest(), type=kind, status="online",
                 node=node or a.get("node"), metadata=metadata or a.get("metadata") or {})
        self.agents[name] = a
        if join_general:
            self.channels["general"]["members"].add(name)
        return a, existed

    def channel(self, name):
        """The channel `name`, created if missing (join, members, mute, … are lenient: see the docstring)."""
        name = name.lstrip("#")
        if name not in self.channels:
            self.channels[name] = {"id": new_id("ch"), "name": name, "topic": None, "members": set(),
                                   "created_at": now_iso()}
        return self.channels[name]

    def channel_view(self, ch):
        return {"id": ch["id"], "workspace_id": self.workspace_id, "name": ch["name"], "channel_type": 0,
                "topic": ch["topic"], "metadata": {}, "created_by": None, "created_at": ch["created_at"],
                "is_archived": False, "member_count": len(ch["members"])}

    # ---------- sockets ----------
    async def send_frame(self, sock, obj, opcode=1):
        data = obj if isinstance(obj, (bytes, bytearray)) else json.dumps(obj).encode()
        header = bytearray([0x80 | opcode])
        n = len(data)
        if n < 126:
            header.append(n)
        elif n < 65536:
            header.append(126)
            header += struct.pack("!H", n)
        else:
            header.append(127)
            header += struct.pack("!Q", n)
        async with sock.lock:
            if sock.closed:
                return False
            try:
                sock.writer.write(bytes(header) + data)
                await sock.writer.drain()
            except (ConnectionError, RuntimeError):
                sock.closed = True
                return False
        if opcode == 1:
            self.record({"kind": "ws_out", "socket": sock.id, "socket_kind": sock.kind,
                         "frame": json.loads(redact(data.decode()))})
        return True

    async def push(self, frame, kind=None):
        """Sends `frame` as it is to every connected socket, or those of one kind (the control call's push)."""
        sent = []
        for s in list(self.sockets):
            if s.closed or (kind and s.kind != kind):
                continue
            if await self.send_frame(s, frame):
                sent.append(s.id)
        return sent

    async def to_workspace(self, event):
        """Sends a workspace event to the workspace stream: every /v1/ws socket not opened with an agent token."""
        frame = {**event, "workspaceId": self.workspace_id}
        sent = []
        for s in list(self.sockets):
            if s.stream() == "workspace" and not s.closed and await self.send_frame(s, frame):
                sent.append(s.id)
        return sent

    async def deliver(self, agent, event):
        """What Relaycast's per-agent actor does with an event for `agent`: the next agent_seq, the event kept in the
        agent's ring buffer (socket or not), then sent to every /v1/ws socket opened with the agent's token."""
        seq = self.agent_seq.get(agent["id"], 0) + 1
        self.agent_seq[agent["id"]] = seq
        frame = {**event, "workspaceId": self.workspace_id, "agentId": agent["id"], "agent_seq": seq}
        self.buffers.setdefault(agent["id"], collections.deque(maxlen=RESYNC_BUFFER_SIZE)).append(frame)
        sent = []
        for s in list(self.sockets):
            if s.kind == "ws" and s.agent_id == agent["id"] and not s.closed and await self.send_frame(s, frame):
                sent.append(s.id)
        return sent

    async def sever(self, name, ms, why):
        """Drops every /v1/ws socket of agent `name` at once (no close frame) and refuses its upgrades for `ms`."""
        self.severed[name] = time.monotonic() + ms / 1000
        closed = []
        for s in list(self.sockets):
            if s.kind == "ws" and s.agent == name and not s.closed:
                s.closed = True
                s.writer.transport.abort()
                closed.append(s.id)
        self.record({"kind": "sever", "agent": name, "ms": ms, "sockets": closed, "why": why})
        return closed

    async def fan_out_message(self, sender, text, channel=None, to=None):
        """Sends a posted message as the events the brokers expect, on every socket that should see it."""
        msg_id = new_id("msg")
        base = {"id": msg_id, "agent_id": sender["id"], "agent_name": sender["name"], "text": text,
                "created_at": now_iso(), "attachments": [], "metadata": {}}
        if channel:
            ch = self.channels[channel]
            self.channel_seq[ch["name"]] = self.channel_seq.get(ch["name"], 0) + 1
            ws_event = {"type": "message.created", "channel": ch["name"], "message": base,
                        "channel_seq": self.channel_seq[ch["name"]]}
            recipients = [n for n in ch["members"] if n != sender["name"]]
            targets = [self.agents[n] for n in sorted(ch["members"]) if n in self.agents]   # the sender too
            data = {**base, "channel_name": ch["name"]}
            payload_type = "message.created"
        else:
            trigger = next((t for t in self.sever_triggers
                            if t["agent"] == to and t["before_dm_from"] == sender["name"]), None)
            if trigger:   # armed by POST /_standin/sever: the recipient loses its sockets before this DM is sent
                self.sever_triggers.remove(trigger)
                await self.sever(to, trigger["ms"], f"before the DM from {sender['name']}")
            conv = conversation_id(sender["name"], to)
            self.dms.append({"from": sender["name"], "to": to, "text": text})
            self.conversations[conv] = {"participants": sorted({sender["name"], to}), "last": base}
            ws_event = {"type": "dm.received", "conversation_id": conv, "message": base}
            recipients = [to]
            targets = [self.agents[to]] + ([sender] if sender["name"] != to else [])   # the sender's own copy
            data = {**base, "from_name": sender["name"], "conversation_id": conv}
            payload_type = "dm.received"
        sent = await self.to_workspace(ws_event)
        for a in targets:
            sent += await self.deliver(a, ws_event)
        for name in recipients:
            a = self.agents.get(name)
            if not a or not a.get("node"):
                continue
            for s in self.sockets:
                if s.kind == "node" and s.node == a["node"] and not s.closed:
                    self.seq[name] = self.seq.get(name, 0) + 1
                    frame = {"type": "deliver", "v": 1, "agent": name, "agent_id": a["id"],
                             "delivery_id": new_id("dlv"), "msg_id": msg_id, "seq": self.seq[name], "mode": "wait",
                             "payload": {"type": payload_type, "data": data}}
                    if await self.send_frame(s, frame):
                        sent.append(s.id)
        return msg_id, sent

    async def on_frame(self, sock, text):
        """What a connected broker says on a socket."""
        try:
            msg = json.loads(text)
        except ValueError:
            return
        t = msg.get("type") if isinstance(msg, dict) else None
        if t == "ping":
            await self.send_frame(sock, {"type": "pong"})
        elif sock.stream() == "agent" and t == "resync" and type(msg.get("last_seen_seq")) in (int, float):
            await self.resync(sock, msg["last_seen_seq"])
        elif sock.kind == "node" and t == "node.register":
            node = self.nodes.get(sock.node) or {}
            node.update(name=msg.get("name"), capabilities=msg.get("capabilities"), registered=True)
            await self.send_frame(sock, {"type": "reply", "v": 1, "id": msg.get("id") or new_id("req"), "ok": True,
                                         "data": {"node_id": sock.node, "name": msg.get("name")}})
        elif sock.kind == "node" and t == "agent.register":
            a, _ = self.register_agent(msg.get("name"), node=sock.node)
            await self.send_frame(sock, {"type": "reply", "v": 1, "id": msg.get("id") or new_id("req"), "ok": True,
                                         "data": {"agent_id": a["id"], "token": a["token"], "name": a["name"]}})
        elif sock.kind == "node" and t == "agent.deregister":
            a = self.agents.get(msg.get("name"))
            if a:
                a["status"] = "offline"
            if msg.get("id"):
                await self.send_frame(sock, {"type": "reply", "v": 1, "id": msg["id"], "ok": True, "data": {}})
        elif sock.kind == "node" and t not in ("reply", "error", "pong") and msg.get("id"):
            # node.heartbeat, inventory.sync, action.result, delivery.ack, node.deregister: acknowledged.
            await self.send_frame(sock, {"type": "reply", "v": 1, "id": msg["id"], "ok": True, "data": {}})

    async def resync(self, sock, last_seen):
        """Replays the agent's buffered events after `last_seen` on this socket, then a resync_ack (as Relaycast)."""
        current = self.agent_seq.get(sock.agent_id, 0)
        events, gap = [], False
        if last_seen < current:
            oldest = max(1, current - RESYNC_BUFFER_SIZE + 1)
            gap = last_seen < oldest - 1
            events = [e for e in self.buffers.get(sock.agent_id, ()) if e["agent_seq"] > last_seen]
        replayed = 0
        for e in events:
            if not await self.send_frame(sock, e):
                break
            replayed += 1
        entry = {"agent": sock.agent, "last_seen_seq": last_seen, "current_seq": current, "replayed": replayed,
                 "gap_detected": gap}
        self.resyncs.append(entry)
        self.record({"kind": "resync", "socket": sock.id, **entry})
        await self.send_frame(sock, {"type": "resync_ack", "last_seen_seq": last_seen, "current_seq": current,
                                     "replayed": replayed, "gap_detected": gap})

    async def websocket(self, reader, writer, path, query, headers):
        key = headers.get("sec-websocket-key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        kind = {"/v1/ws": "ws", "/v1/node/ws": "node", "/v1/node/terminal/ws": "terminal"}.get(path, "other")
        role, who = self.who(headers, query)
        if kind == "ws" and role == "agent" and self.severed.get(who["name"], 0) > time.monotonic():
            # POST /_standin/sever: this agent's sockets are refused for a while.
            self.record({"kind": "ws_refused", "socket_kind": kind, "path": path, "agent": who["name"], "status": 503})
            body = f"stand-in: {who['name']} is severed for a moment\n".encode()
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
            writer.close()
            return
        extra = ""
        if "sec-websocket-protocol" in headers:
            extra = "Sec-WebSocket-Protocol: " + headers["sec-websocket-protocol"].split(",")[0].strip() + "\r\n"
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n").encode())
        await writer.drain()
        sock = Socket(self.next_socket, kind, path, writer, agent=who["name"] if role == "agent" else None,
                      agent_id=who["id"] if role == "agent" else None, node=who["id"] if role == "node" else None)
        self.next_socket += 1
        self.sockets.append(sock)
        self.record({"kind": "ws_open", "socket": sock.id, "socket_kind": kind, "path": path, "auth": role,
                     "agent": sock.agent, "node": sock.node, "stream": sock.stream(), "headers": safe_headers(headers)})
        message, message_op = bytearray(), 0
        try:
            while True:
                b0, b1 = await reader.readexactly(2)
                fin, opcode, masked, n = b0 & 0x80, b0 & 0x0F, b1 & 0x80, b1 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", await reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", await reader.readexactly(8))[0]
                if not masked:  # RFC 6455 5.1: a server must close on an unmasked client frame
                    await self.send_frame(sock, struct.pack("!H", 1002), opcode=8)
                    break
                mask = await reader.readexactly(4)
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(n)))
                if opcode == 8:
                    await self.send_frame(sock, data[:2] or struct.pack("!H", 1000), opcode=8)
                    break
                if opcode == 9:
                    await self.send_frame(sock, data, opcode=10)
                    continue
                if opcode == 10:
                    continue
                if opcode in (1, 2):
                    message, message_op = bytearray(data), opcode
                elif opcode == 0:
                    message += data
                if not fin:
                    continue
                sock.frames_in += 1
                if message_op == 1:
                    text = message.decode("utf-8", "replace")
                    try:
                        frame = json.loads(redact(text))
                    except ValueError:
                        frame = redact(text)
                    self.record({"kind": "ws_in", "socket": sock.id, "socket_kind": kind, "frame": frame})
                    await self.on_frame(sock, text)
                else:
                    self.record({"kind": "ws_in", "socket": sock.id, "socket_kind": kind, "binary_bytes": len(message)})
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            sock.closed = True
            self.sockets.remove(sock)
            self.record({"kind": "ws_close", "socket": sock.id, "socket_kind": kind})
            if sock.node:
                for a in self.agents.values():
                    if a.get("node") == sock.node:
                        a["status"] = "offline"
            writer.close()

    # ---------- HTTP ----------
    async def route(self, method, path, query, headers, body, reply):
        """Answers one HTTP call as (status, JSON or None); `reply` takes extra headers ("headers") and "lose"."""
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        role, who = self.who(headers, query)
        ok = lambda data, status=200: (status, {"ok": True, "data": data})
        err = lambda status, code, message: (status, {"ok": False, "error": {"code": code, "message": message}})

        if parts[0] == "_standin":
            return await self.control(method, parts[1:], query, body)
        if path in ("/health", "/v1/health"):
            return ok({"status": "ok"})
        if parts[0] != "v1":
            return err(404, "not_found", f"no route {method} {path}")
        p = parts[1:]

        if method == "POST" and p == ["workspaces"]:
            name = body.get("name") or "workspace"
            self.workspace_name = name
            return ok({"workspace_id": self.workspace_id, "api_key": self.workspace_key, "name": name,
                       "created_at": now_iso()}, 201)
        if role is None:
            return err(401, "unauthorized", "missing or unknown token")

        if p in DM_PATHS and method == "POST" and role == "agent":
            limited = self.count_dm(reply)
            if limited:
                return limited

        if p == ["workspace"] and method == "GET":
            return ok({"id": self.workspace_id, "name": getattr(self, "workspace_name", "workspace"),
                       "api_key_hash": "", "system_prompt": None, "plan": "free", "created_at": now_iso(),
                       "metadata": {}})
        if p == ["workspace", "stream"]:
            if method == "PUT":
                self.stream_enabled = bool(body.get("enabled", True))
            return ok({"enabled": self.stream_enabled, "default_enabled": False,
                       "override": self.stream_enabled if method == "PUT" else None})

        if p == ["agents"] and method == "POST":
            name = body.get("name") or new_id("agent")
            a, existed = self.register_agent(name, body.get("type") or "agent", metadata=body.get("metadata"),
                                             join_general=body.get("auto_join_general", True) is not False)
            return ok({"id": a["id"], "agent_id": a["id"], "name": a["name"], "token": a["token"],
                       "status": a["status"], "type": a["type"], "created_at": a["created_at"],
                       "already_existed": existed}, 200 if existed else 201)
        if p == ["agents"] and method == "GET":
            return ok([self.agent_view(a) for a in self.agents.values()])
        if p == ["agent"] and method == "GET":
            if role != "agent":
                return err(401, "unauthorized", "an agent token is needed")
            return ok(self.agent_view(who))
        if p == ["agents", "spawn"] and method == "POST":
            name, cli, task = body.get("name"), body.get("cli"), body.get("task")
            if not name or not cli or not task:
                return err(400, "invalid_request", "name, cli and task are required")
            a, existed = self.register_agent(name)
            event = {"type": "agent.spawn_requested",
                     "agent": {"name": name, "cli": cli, "task": task, "channel": body.get("channel"),
                               "already_existed": existed}}
            sent = await self.to_workspace(event)
            return ok({"id": a["id"], "name": name, "token": a["token"], "cli": cli, "task": task,
                       "channel": body.get("channel"), "status": a["status"], "created_at": a["created_at"],
                       "already_existed": existed, "sent_to_sockets": len(sent)}, 201)
        if p == ["agents", "release"] and method == "POST":
            # v14 sends expected_token_hash (release only the identity it owns) and reads data.status == "completed".
            name = body.get("name")
            a = self.agents.get(name)
            expected = body.get("expected_token_hash")
            if a and expected and expected != a["token_hash"]:
                return err(409, "token_mismatch", f"agent {name} holds another token now")
            if a:
                a["status"] = "offline"
                if body.get("delete_agent"):
                    del self.agents[name]
                    for ch in self.channels.values():
                        ch["members"].discard(name)
            await self.to_workspace({"type": "agent.release_requested", "agent": {"name": name},
                                     "reason": body.get("reason"), "deleted": bool(body.get("delete_agent"))})
            return ok({"name": name, "released": a is not None, "deleted": bool(body.get("delete_agent")) and a is not None,
                       "reason": body.get("reason"), "status": "completed", "invocation_id": new_id("inv"),
                       # v14 reads the answer as an action invocation and needs its action's name.
                       "action_name": "agent.release", "created_at": now_iso(), "completed_at": now_iso()})
        if len(p) >= 2 and p[0] == "agents":
            a = self.agents.get(p[1])
            if len(p) == 2 and method == "GET":
                return ok(self.agent_view(a)) if a else err(404, "agent_not_found", f"agent {p[1]} not found")
            if len(p) == 2 and method == "DELETE":
                self.agents.pop(p[1], None)
                return (204, None)
            if len(p) == 2 and method == "PATCH" and a:
                a.update({k: v for k, v in body.items() if k in ("status", "metadata")})
                return ok(self.agent_view(a))
            if len(p) == 3 and p[2] == "events" and method == "POST":
                # v14 reports each worker's lifecycle (session.starting, activity.changed, turn.*): noted, no more.
                return ok({"accepted": True}, 202)
            if len(p) == 3 and p[2] in ("rotate-token", "token") and a:
                a, _ = self.register_agent(p[1], a["type"], a.get("node"))
                return ok({"name": a["name"], "token": a["token"]})
        if p and p[0] in ("presence", "heartbeat") or p[:2] == ["agents", "heartbeat"]:
            return ok({"status": "online"})

        if p == ["channels"] and method == "POST":
            name = (body.get("name") or "").lstrip("#")
            if name in self.channels:
                return err(409, "channel_exists", f"channel {name} already exists")
            ch = self.channel(name)
            ch["topic"] = body.get("topic")
            return ok(self.channel_view(ch), 201)
        if p == ["channels"] and method == "GET":
            return ok([self.channel_view(c) for c in self.channels.values()])
        if len(p) == 3 and p[0] == "channels" and p[2] == "messages" and method == "POST":
            if role != "agent":
                return err(401, "unauthorized", "posting needs an agent token")
            refused = self.refuse_message(body.get("text"), channel=p[1])
            if refused:
                return err(*refused)
            ch = self.channels[p[1].lstrip("#")]
            msg_id, _ = await self.fan_out_message(who, body["text"], channel=ch["name"])
            return ok({"id": msg_id, "agent_id": who["id"], "agent_name": who["name"], "channel": ch["name"],
                       "text": body.get("text"), "created_at": now_iso()}, 201)
        if len(p) >= 2 and p[0] == "channels":
            ch = self.channel(p[1])
            member = who["name"] if role == "agent" else None
            sub = p[2] if len(p) > 2 else None
            if sub is None and method == "GET":
                return ok({**self.channel_view(ch), "members": self.members(ch)})
            if sub in ("join", "unmute", "subscribe") and method == "POST":
                already = member in ch["members"]
                if member:
                    ch["members"].add(member)
                return ok({"channel": ch["name"], "agent_name": member, "already_member": already})
            if sub in ("leave", "unsubscribe") and method in ("POST", "DELETE"):
                ch["members"].discard(member)
                return ok({"channel": ch["name"], "agent_name": member, "left": True})
            if sub == "mute" and method in ("POST", "DELETE"):
                return ok({"channel": ch["name"], "agent_name": member, "muted": sub == "mute"})
            if sub == "invite" and method == "POST":
                for n in [body.get("agent") or body.get("agent_name")] + list(body.get("agents") or []):
                    if n:
                        ch["members"].add(n)
                return ok({"channel": ch["name"], "members": self.members(ch)})
            if sub == "members" and method == "GET":
                return ok(self.members(ch))
            if sub == "messages" and method == "GET":
                return ok([])
        if p in DM_PATHS and method == "POST":
            if role != "agent":
                return err(401, "unauthorized", "a DM needs an agent token")
            refused = self.refuse_message(body.get("text"), to=body.get("to"))
            if refused:
                return err(*refused)
            to = body["to"].lstrip("@")
            msg_id, _ = await self.fan_out_message(who, body["text"], to=to)
            if who["name"] in self.lose_answer:   # POST /_standin/lose_next_dm_answer: delivered, never answered
                self.lose_answer.discard(who["name"])
                reply["lose"] = True
            return ok({"id": msg_id, "conversation_id": conversation_id(who["name"], to), "from_agent_id": who["id"], "to": to,
                       "text": body.get("text"), "created_at": now_iso()}, 201)
        if p[:2] == ["dm", "conversations"] and method == "GET":
            # /all: every DM of the workspace (the v6 broker reads it to find who a dm.received is for);
            # without /all: the caller's own.
            mine = None if p[2:] == ["all"] or role != "agent" else who["name"]
            if len(p) == 4 and p[3] == "participants":
                c = self.conversations.get(p[2])
                return ok(c["participants"] if c else []) if c else err(404, "not_found", "no such conversation")
            return ok([{"id": cid, "type": "dm", "participants": c["participants"],
                        "last_message": {"text": c["last"]["text"], "agent_name": c["last"]["agent_name"],
                                         "created_at": c["last"]["created_at"]},
                        "message_count": 1, "unread_count": 0}
                       for cid, c in self.conversations.items() if mine is None or mine in c["participants"]])
        if len(p) == 3 and p[0] == "messages" and p[2] in ("read", "ack") and method == "POST":
            # v14 marks a message read once the worker's delivery.ack came back.
            return ok({"message_id": p[1], "read": True, "read_at": now_iso()})
        if p == ["inbox"] and method == "GET":
            return ok({"unread_channels": [], "mentions": [], "unread_dms": []})

        if p == ["nodes"] and method == "POST":
            node_id = body.get("node_id") or body.get("id") or new_id("node")
            token = "nt_live_" + secrets.token_hex(16)
            n = {"id": node_id, "name": body.get("name") or node_id, "token": token, "kind": "ws", "role": "broker",
                 "version": body.get("version") or "", "status": "online", "live": True, "handlers_live": True,
                 "load": 0.0, "active_agents": 0, "max_agents": body.get("max_agents") or 0,
                 "created_at": now_iso()}
            self.nodes[node_id] = n
            return ok(dict(n), 201)
        if p and p[0] == "nodes":
            node = self.node_named(p[1]) if len(p) > 1 else None
            if len(p) == 3 and p[2] == "agents" and method == "POST":
                # Bind an agent to a node (path: the node's name): answered with a NodeAgentBinding.
                a = self.agents.get(body.get("agent_name"))
                if not node or not a:
                    return err(404, "not_found", "no such node or agent")
                a["node"] = node["id"]
                return ok(self.binding(node, a, body.get("session_ref"), body.get("priority")), 201)
            if len(p) == 3 and p[2] == "agents" and method == "GET" and node:
                return ok([self.binding(node, a) for a in self.agents.values() if a.get("node") == node["id"]])
            if len(p) == 4 and p[2] == "agents" and method == "DELETE":
                a = self.agents.get(p[3])
                if a and node and a.get("node") == node["id"]:
                    a["node"] = None
                return (204, None)
            if method == "GET" and len(p) == 1:
                return ok([{k: v for k, v in n.items() if k != "token"} for n in self.nodes.values()])
            if method == "GET" and len(p) == 2 and node:
                return ok({k: v for k, v in node.items() if k != "token"})
            return err(404, "not_found", f"stand-in has no route {method} {path}")
        return err(404, "not_found", f"stand-in has no route {method} {path}")

    def refuse_message(self, text, channel=None, to=None):
        """Why Relaycast would refuse this message, as (status, code, message), or None."""
        if channel is None and (not isinstance(to, str) or not to):
            return 400, "invalid_request", '"to" agent name is required'
        if not isinstance(text, str) or not text:
            return 400, "invalid_request", "text is required"
        if channel is not None and channel.lstrip("#") not in self.channels:
            return 404, "channel_not_found", f'Channel "{channel}" not found'
        if channel is None and to.lstrip("@") not in self.agents:
            return 404, "agent_not_found", f"agent {to} not found"
        return None

    def rate_window(self):
        """The current fixed one-minute window for DMs (a new one starts with the first DM after the last ended)."""
        now = time.monotonic()
        if self.window_start is None or now - self.window_start >= 60:
            self.window_start, self.window_count = now, 0
        return now

    def count_dm(self, reply):
        """Counts one POST /v1/dm in this minute's window; past the limit, Relaycast's 429 (else None)."""
        now = self.rate_window()
        self.window_count += 1
        limit = self.dm_per_minute
        if limit is None:
            return None
        reply["headers"]["X-RateLimit-Limit"] = str(limit)
        reply["headers"]["X-RateLimit-Remaining"] = str(max(0, limit - self.window_count))
        if self.window_count <= limit:
            return None
        self.answered_429 += 1
        if self.retry_after:
            reply["headers"]["Retry-After"] = str(max(1, math.ceil(self.window_start + 60 - now)))
        message = f"Rate limit exceeded. {limit} requests per minute allowed for free plan."
        return 429, {"ok": False, "error": {"code": "rate_limit_exceeded", "message": message}}

    def limits_view(self):
        now = time.monotonic()
        live = self.window_start is not None and now - self.window_start < 60
        return {"dm_per_minute": self.dm_per_minute, "retry_after": self.retry_after,
                "window": {"dms": self.window_count if live else 0,
                           "ends_in_ms": int((self.window_start + 60 - now) * 1000) if live else None},
                "answered_429": self.answered_429}

    def node_named(self, key):
        return self.nodes.get(key) or next((n for n in self.nodes.values() if n["name"] == key), None)

    def binding(self, node, a, session_ref=None, priority=None):
        return {"id": "bind_" + hashlib.sha256((node["id"] + a["id"]).encode()).hexdigest()[:12], "agent_id": a["id"],
                "agent_name": a["name"], "node_id": node["id"], "node_name": node["name"], "node_kind": node["kind"],
                "node_role": node["role"], "status": "bound", "session_ref": session_ref, "priority": priority or 0,
                "created_at": now_iso(), "updated_at": now_iso()}

    def members(self, ch):
        return [{"agent_id": self.agents[n]["id"] if n in self.agents else n, "agent_name": n, "role": "member",
                 "joined_at": now_iso()} for n in sorted(ch["members"])]

    async def control(self, method, p, query, body):
        kind = (query.get("kind") or [None])[0]
        if p == ["sockets"]:
            return 200, [s.info() for s in self.sockets]
        if p == ["agents"]:
            return 200, {"agents": [{**{k: a[k] for k in ("name", "id", "type", "status", "node")},
                                     "agent_seq": self.agent_seq.get(a["id"], 0)} for a in self.agents.values()],
                         "nodes": [{k: v for k, v in n.items() if k != "token"} for n in self.nodes.values()],
                         "workspace_id": self.workspace_id}
        if p == ["log"]:
            return 200, self.records
        if p == ["dms"]:
            return 200, self.dms
        if p == ["frames"]:
            return 200, [r for r in self.records if r["kind"] == "ws_in" and (not kind or r["socket_kind"] == kind)]
        if p == ["keys"] and method == "POST":
            key = "rk_live_" + secrets.token_hex(16)
            self.other_keys.add(key)
            return 200, {"api_key": key}
        if p == ["push"] and method == "POST":
            return 200, {"sent_to": await self.push(body, kind)}
        if p == ["message"] and method == "POST":
            channel = body.get("channel")
            channel = channel if isinstance(channel, str) and channel else None
            refused = self.refuse_message(body.get("text"), channel=channel, to=body.get("to"))
            if refused:
                status, code, message = refused
                return status, {"ok": False, "error": {"code": code, "message": message}}
            sender = self.agents.get(body.get("from")) or self.register_agent(body.get("from") or "standin")[0]
            channel = channel and channel.lstrip("#")
            msg_id, sent = await self.fan_out_message(sender, body["text"], channel=channel,
                                                      to=None if channel else body["to"].lstrip("@"))
            return 200, {"id": msg_id, "sent_to": sent}
        if p == ["limits"] and method == "GET":
            return 200, self.limits_view()
        if p == ["limits"] and method == "POST":
            if "dm_per_minute" in body:
                n = body["dm_per_minute"]
                if n is not None and (type(n) is not int or n < 0):
                    return 400, {"error": "dm_per_minute must be a whole number or null"}
                self.dm_per_minute = n
            if "retry_after" in body:
                self.retry_after = bool(body["retry_after"])
            self.window_start, self.window_count = None, 0
            self.record({"kind": "control", "call": "limits", "body": body})
            return 200, self.limits_view()
        if p == ["resyncs"] and method == "GET":
            return 200, self.resyncs
        if p in (["sever"], ["lose_next_dm_answer"]) and method == "POST":
            name = body.get("agent") if p == ["sever"] else body.get("from")
            if name not in self.agents:
                return 404, {"error": f"no agent named {name!r}"}
            self.record({"kind": "control", "call": p[0], "body": body})
            if p == ["lose_next_dm_answer"]:
                self.lose_answer.add(name)
                return 200, {"armed": True}
            ms = body.get("ms") or 0
            if type(ms) not in (int, float) or ms < 0:
                return 400, {"error": "ms must be a number of milliseconds"}
            if body.get("before_dm_from"):
                self.sever_triggers.append({"agent": name, "ms": ms, "before_dm_from": body["before_dm_from"]})
                return 200, {"armed": True}
            return 200, {"agent": name, "ms": ms, "closed": await self.sever(name, ms, "POST /_standin/sever")}
        return 404, {"error": "unknown control call"}

    async def http(self, reader, writer):
        try:
            while True:
                line = await reader.readline()
                if not line.strip():
                    break
                method, target, _ = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
                headers = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                raw = b""
                if "content-length" in headers:
                    raw = await reader.readexactly(int(headers["content-length"]))
                elif headers.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        size = int((await reader.readline()).split(b";")[0], 16)
                        chunk = await reader.readexactly(size + 2)
                        if size == 0:
                            break
                        raw += chunk[:-2]
                url = urllib.parse.urlsplit(target)
                query = urllib.parse.parse_qs(url.query)
                if headers.get("upgrade", "").lower() == "websocket":
                    self.record({"kind": "http", "method": method, "path": url.path,
                                 "query": sorted(query), "headers": safe_headers(headers), "upgrade": True})
                    await self.websocket(reader, writer, url.path, query, headers)
                    return
                try:
                    body = json.loads(raw) if raw.strip() else {}
                except ValueError:
                    body = {}
                if not isinstance(body, dict):
                    body = {"_": body}
                reply = {"headers": {}, "lose": False}
                status, obj = await self.route(method, url.path, query, headers, body, reply)
                if not url.path.startswith("/_standin/"):
                    self.record({"kind": "http", "method": method, "path": url.path, "query": sorted(query),
                                 "headers": safe_headers(headers),
                                 "body": json.loads(redact(json.dumps(body))) if raw.strip() else None,
                                 "status": status, **({"answer_lost": True} if reply["lose"] else {})})
                if reply["lose"]:   # POST /_standin/lose_next_dm_answer: the connection closes, no answer
                    break
                out = b"" if obj is None else json.dumps(obj).encode()
                reason = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
                          404: "Not Found", 409: "Conflict", 429: "Too Many Requests"}.get(status, "Status")
                head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(out)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in reply["headers"].items())
                close = headers.get("connection", "").lower() == "close"
                head += "Connection: close\r\n\r\n" if close else "\r\n"
                writer.write(head.encode() + out)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()


def conversation_id(a, b):
    return "dm_" + hashlib.sha256("|".join(sorted([a, b])).encode()).hexdigest()[:12]


def safe_headers(headers):
    return {k: ("<redacted>" if k in SECRET_HEADERS else redact(v)) for k, v in sorted(headers.items())}


async def main():
    ap = argparse.ArgumentParser(description="Relaycast stand-in for spawngate's tests (not Relaycast).")
    ap.add_argument("--log", help="append every request and socket frame to this JSON Lines file")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tls-cert", help="serve HTTPS/WSS with this certificate (PEM)")
    ap.add_argument("--tls-key", help="the certificate's private key (PEM)")
    ap.add_argument("--dm-per-minute", type=int, help="answer POST /v1/dm 429 past N a minute (default: no limit)")
    args = ap.parse_args()
    standin = StandIn(args.log, args.dm_per_minute)
    context = None
    if args.tls_cert:
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    server = await asyncio.start_server(standin.http, "127.0.0.1", args.port, ssl=context)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on https://localhost:{port}" if context else f"listening on http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
