#!/usr/bin/env python3
"""Slowloris: opens a connection and sends a request head one byte every INTERVAL seconds, never finishing.
Prints how many seconds passed until the server closed the connection (or 'open' after LIMIT seconds).
Usage: slow_client.py HOST PORT INTERVAL LIMIT"""
import socket, sys, time
host, port, interval, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = socket.create_connection((host, port), timeout=limit)
head = b"POST /v1/spawn HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nX-Slow: " + b"a" * 10000
start = time.monotonic()
for b in head:
    try:
        s.send(bytes([b]))
        s.settimeout(interval)
        try:
            if s.recv(1024) == b"":
                print(f"{time.monotonic() - start:.2f}"); sys.exit(0)
        except socket.timeout:
            pass
    except OSError:
        print(f"{time.monotonic() - start:.2f}"); sys.exit(0)
    if time.monotonic() - start > limit:
        print("open"); sys.exit(0)
print("open")
