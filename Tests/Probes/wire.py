#!/usr/bin/env python3
"""Wire tools for the three-host test.
  relay LHOST LPORT THOST TPORT RECORD   forward one connection, saving the client's bytes to RECORD
  resend THOST TPORT RECORD              send RECORD's bytes as they are; print the answer's body
  post THOST TPORT PATH FILE             POST FILE's bytes; print the answer's body"""
import socket, sys

def read_answer(s):
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body

mode = sys.argv[1]
if mode == "relay":
    lhost, lport, thost, tport, record = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((lhost, lport)); srv.listen(1)
    print("ready", flush=True)
    c, _ = srv.accept()
    c.settimeout(5)
    req = b""
    while b"\r\n\r\n" not in req:
        req += c.recv(65536)
    head, _, body = req.partition(b"\r\n\r\n")
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
    while len(body) < length:
        body += c.recv(65536)
    req = head + b"\r\n\r\n" + body
    open(record, "wb").write(req)
    t = socket.create_connection((thost, tport), timeout=10)
    t.sendall(req)
    h, b = read_answer(t)
    c.sendall(h + b"\r\n\r\n" + b)
    c.close()
elif mode == "resend":
    thost, tport, record = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    t = socket.create_connection((thost, tport), timeout=10)
    t.sendall(open(record, "rb").read())
    sys.stdout.buffer.write(read_answer(t)[1])
elif mode == "post":
    thost, tport, path, file = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    body = open(file, "rb").read()
    t = socket.create_connection((thost, tport), timeout=10)
    t.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
              + str(len(body)).encode() + b"\r\n\r\n" + body)
    sys.stdout.buffer.write(read_answer(t)[1])
