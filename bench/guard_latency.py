#!/usr/bin/env python3
"""What `spawngate relay guard` adds to a message round trip, on loopback.

Starts the Relaycast stand-in (Tests/Interop/relaycast_standin.py) and a relay guard in front of it, then times the
same exchanges straight to the stand-in and through the guard, alternating:
  ws    a JSON {"type":"ping"} on /v1/ws and the stand-in's {"type":"pong"} back (the frame path every message takes;
        the guard reads each frame from Relaycast with its strict JSON reader and checks it against its allowlist);
  http  GET /v1/health (the path of every REST call a broker makes).
Prints median and 95th percentile per path. Python 3 standard library only (a minimal RFC 6455 client).

usage: bench/guard_latency.py SPAWNGATE_BINARY [N] [--markdown FILE]
With --markdown, a section with the same figures is appended to FILE (`make bench` appends it to bench/results.md).
"""
import base64
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

from targets import add_target

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(argv, env=None):
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    line = p.stdout.readline()
    url = line[line.index("http://"):].split()[0].rstrip(",")
    return p, url


class WS:
    def __init__(self, url, path):
        host, port = url[len("http://"):].split(":")
        self.s = socket.create_connection((host, int(port)))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.s.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0], head

    def send(self, obj):
        data = json.dumps(obj).encode()
        mask = os.urandom(4)
        assert len(data) < 126
        self.s.sendall(bytes([0x81, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv_exact(self, n):
        out = b""
        while len(out) < n:
            out += self.s.recv(n - len(out))
        return out

    def recv(self):
        while True:
            b0, b1 = self.recv_exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self.recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self.recv_exact(8))[0]
            data = self.recv_exact(n)
            if b0 & 0x0F == 1:
                return json.loads(data)


def percentiles(xs):
    xs = sorted(xs)
    return statistics.median(xs) * 1000, xs[int(len(xs) * 0.95) - 1] * 1000


def main():
    args = sys.argv[1:]
    markdown = None
    if "--markdown" in args:
        i = args.index("--markdown")
        markdown = args[i + 1]
        del args[i:i + 2]
    binary = args[0]
    n = int(args[1]) if len(args) > 1 else 500
    tmp = tempfile.mkdtemp(prefix="spawngate-guard-bench-")
    subprocess.run([binary, "init", "--name", "bench", "--home", tmp + "/home"], check=True, stdout=subprocess.DEVNULL)
    standin, direct = start([sys.executable, ROOT + "/Tests/Interop/relaycast_standin.py"])
    guard, guarded = start([binary, "relay", "guard", "--home", tmp + "/home", "--upstream", direct, "--listen", "127.0.0.1:0"])
    try:
        times = {("ws", "direct"): [], ("ws", "guard"): [], ("http", "direct"): [], ("http", "guard"): []}
        sockets = {"direct": WS(direct, "/v1/ws?token=x"), "guard": WS(guarded, "/v1/ws?token=x")}
        for i in range(n + 20):
            for name, url in (("direct", direct), ("guard", guarded)):
                ws = sockets[name]
                t = time.perf_counter()
                ws.send({"type": "ping"})
                assert ws.recv()["type"] == "pong"
                ws_time = time.perf_counter() - t
                t = time.perf_counter()
                urllib.request.urlopen(url + "/v1/health").read()
                http_time = time.perf_counter() - t
                if i >= 20:  # warm-up
                    times[("ws", name)].append(ws_time)
                    times[("http", name)].append(http_time)
        rows = []
        for path in ("ws", "http"):
            d50, d95 = percentiles(times[(path, "direct")])
            g50, g95 = percentiles(times[(path, "guard")])
            print(f"{path:4}  direct median {d50:.3f} ms p95 {d95:.3f} ms | through the guard median {g50:.3f} ms p95 {g95:.3f} ms"
                  f" | added median {g50 - d50:.3f} ms  (n={n})")
            rows.append((path, d50, d95, g50, g95))
        if markdown:
            ws = rows[0]
            met = "met" if ws[3] - ws[1] <= 1.0 else "**not met**"
            with open(markdown, "a") as f:
                f.write("\n## The relay guard's added latency\n\n"
                        f"`bench/guard_latency.py`, {n} rounds after 20 warm-up rounds, alternating: the same exchange straight to the "
                        "Relaycast stand-in and through `spawngate relay guard` (release build), both on loopback. `ws` is a "
                        "WebSocket ping and its pong on `/v1/ws` (the path of every message: the guard parses each frame and checks "
                        "its type); `http` a GET of `/v1/health` through Python's urllib (a new connection each time).\n\n"
                        "| path | direct, median (p95) | through the guard, median (p95) | added, median |\n|---|---|---|---|\n")
                for path, d50, d95, g50, g95 in rows:
                    f.write(f"| {path} | {d50:.3f} ms ({d95:.3f}) | {g50:.3f} ms ({g95:.3f}) | {g50 - d50:+.3f} ms |\n")
                f.write(f"\nTarget (issue 19): the guard adds ≤ 1 ms (median) to a message round trip: {ws[3] - ws[1]:+.3f} ms, {met}.\n")
            add_target(markdown, "the relay guard adds ≤ 1 ms (median) to a message round trip (a WebSocket ping and its pong)",
                       f"{ws[3] - ws[1]:+.3f} ms ({ws[1]:.3f} ms direct, {ws[3]:.3f} ms through the guard)", ws[3] - ws[1] <= 1.0,
                       f"the guard parses each frame and checks its type; HTTP through it adds {rows[1][3] - rows[1][1]:+.3f} ms")
    finally:
        guard.terminate()
        standin.terminate()
        guard.wait(10)
        standin.wait(10)


if __name__ == "__main__":
    main()
