#!/usr/bin/env python3
"""Sends N unauthenticated POST /v1/spawn requests to a gateway from one source address, over a few
keep-alive connections, and prints a JSON count of the HTTP statuses it got back.
Usage: junk_flood.py HOST PORT SOURCE_IP N"""
import json, socket, sys, threading
host, port, source, total = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
counts, lock = {}, threading.Lock()
body = b'{"sealed":"' + b"A" * 200 + b'"}'
request = (b"POST /v1/spawn HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
           + str(len(body)).encode() + b"\r\n\r\n" + body)

def read_response(f):
    line = f.readline()
    if not line:
        return None
    status = int(line.split()[1])
    length = 0
    while True:
        h = f.readline()
        if h in (b"\r\n", b""):
            break
        k, _, v = h.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    f.read(length)
    return status

def worker(n):
    s = None
    for _ in range(n):
        try:
            if s is None:
                s = socket.create_connection((host, port), timeout=10, source_address=(source, 0))
                f = s.makefile("rb")
            s.sendall(request)
            status = read_response(f)
            if status is None:
                raise OSError("closed")
        except OSError:
            status = "closed"
            if s: s.close()
            s = None
        with lock:
            counts[str(status)] = counts.get(str(status), 0) + 1

threads = [threading.Thread(target=worker, args=(total // 4,)) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(counts))
