# Probes run inside a sandboxed agent by SandboxTests: each prints what one system-call route or socket family
# gave (or is killed, which the caller sees as status 159 = 128 + SIGSYS).
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
kind = sys.argv[1]
if kind == "int80":
    code = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"  # mov eax, 20 (i386 getpid); int 0x80; ret
    m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    m.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    f = ctypes.CFUNCTYPE(ctypes.c_int)(addr)
    print("INT80", f())
elif kind == "x32":
    r = libc.syscall(0x40000000 | 39)
    print("X32", r, ctypes.get_errno())
elif kind == "clone3":
    r = libc.syscall(435, None, 0)
    print("CLONE3", r, ctypes.get_errno())
elif kind == "sockets":
    import socket
    for name, fam, typ in [("PACKET", 17, socket.SOCK_RAW), ("VSOCK", 40, socket.SOCK_STREAM), ("RAW4", socket.AF_INET, socket.SOCK_RAW), ("RAW6", socket.AF_INET6, socket.SOCK_RAW), ("TCP", socket.AF_INET, socket.SOCK_STREAM)]:
        fd = libc.socket(fam, typ, 1 if fam in (2, 10) and typ == socket.SOCK_RAW else 0)
        print(name, fd if fd < 0 else "ok", ctypes.get_errno() if fd < 0 else 0)
