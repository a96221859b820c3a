#!/usr/bin/env python3
"""Regenerate the 12 Ed25519 edge-case vectors of "Taming the many EdDSAs"
(novifinancial/ed25519-speccheck) from their construction, with our own
big-int Ed25519 arithmetic. Standard library only; deterministic.

  speccheck_gen.py              print the 12 cases as one JSON array
  speccheck_gen.py --check      re-verify every case's claims with our own arithmetic
  speccheck_gen.py --libsodium [--published cases.json]
                                dev/CI cross-check against the system libsodium (ctypes)
"""
import argparse, ctypes, ctypes.util, hashlib, json, sys

# ---- Curve25519 in twisted Edwards form: -x^2 + y^2 = 1 + d x^2 y^2 over GF(p) ----
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493  # order of the base point
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)  # a square root of -1 (2 is a non-residue mod p)
O = (0, 1, 1, 0)  # neutral element, extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, T = XY/Z

def add(p1, p2):  # unified addition (complete for a = -1 and non-square d)
    X1, Y1, Z1, T1 = p1; X2, Y2, Z2, T2 = p2
    a, b = (Y1 - X1) * (Y2 - X2) % P, (Y1 + X1) * (Y2 + X2) % P
    c, d = 2 * D * T1 * T2 % P, 2 * Z1 * Z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)

def neg(p1): return ((-p1[0]) % P, p1[1], p1[2], (-p1[3]) % P)
def sub(p1, p2): return add(p1, neg(p2))

def mul(k, p1):  # plain double-and-add; k may be any non-negative integer (also >= L)
    q = O
    while k:
        if k & 1: q = add(q, p1)
        p1, k = add(p1, p1), k >> 1
    return q

def eq(p1, p2): return (p1[0] * p2[2] - p2[0] * p1[2]) % P == 0 and (p1[1] * p2[2] - p2[1] * p1[2]) % P == 0
def is_id(p1): return eq(p1, O)

def encode(p1):  # RFC 8032: 255-bit little-endian y, top bit = parity of x
    zi = pow(p1[2], -1, P)
    x, y = p1[0] * zi % P, p1[1] * zi % P
    return (y | (x & 1) << 255).to_bytes(32, "little")

def decode(b):
    """Lenient decoding (as e.g. dalek does): y is taken mod p, and x = 0 with
    the sign bit set is accepted. Canonicality is judged by is_canonical()."""
    v = int.from_bytes(b, "little")
    y, sign = (v & (2**255 - 1)) % P, v >> 255
    u, w = (y * y - 1) % P, (D * y * y + 1) % P
    x = u * pow(w, -1, P) % P  # x^2
    r = pow(x, (P + 3) // 8, P)
    if r * r % P != x: r = r * SQRT_M1 % P
    if r * r % P != x: return None  # not on the curve
    if r & 1 != sign: r = (-r) % P
    return (r, y, 1, r * y % P)

def is_canonical(b): pt = decode(b); return pt is not None and encode(pt) == b
def reencode(b): return encode(decode(b))

def from_y(y, sign=0): return decode((y | sign << 255).to_bytes(32, "little"))

B = from_y(4 * pow(5, -1, P) % P)  # base point: y = 4/5, x even

def order_class(pt):  # "small" (order | 8), "L" (torsion-free), otherwise "mixed"
    return "small" if is_id(mul(8, pt)) else "L" if is_id(mul(L, pt)) else "mixed"

def find_t8():  # a generator of the 8-torsion E[8]: [L]Q kills the prime-order part of Q
    y = 2
    while True:
        q = from_y(y)
        if q is not None:
            t = mul(L, q)
            if not is_id(mul(4, t)): return t
        y += 1

T8 = find_t8()        # order 8
T2 = mul(4, T8)       # order 2, the point (0, -1)
# (0, -1) has x = 0, so its only other 32-byte spelling sets the sign bit: "-0".
T2_NONCANON = bytes(encode(T2)[:31]) + bytes([encode(T2)[31] | 0x80])

# ---- hashing and deterministic randomness ----
def H(*parts): return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little")
def hram(R, A, M): return H(R, A, M) % L  # k = SHA-512(R || A || M) mod L, on the bytes as given
SEED = b"spawngate/ed25519-speccheck-regen/v1"
def rnd(label, i=0): return hashlib.sha512(SEED + b"/" + label.encode() + i.to_bytes(4, "little")).digest()
def scalar(label): return H(rnd(label)) % L or 1
def messages(label):  # endless deterministic stream of 32-byte candidate messages
    i = 0
    while True: yield rnd(label, i)[:32]; i += 1
def nonce(label, M): return H(rnd(label + "/nonce")[:32], M) % L  # RFC 8032-style r = H(prefix || M)

def case(R, A, S, M, desc):
    sig = (R if isinstance(R, bytes) else encode(R)) + S.to_bytes(32, "little")
    return {"message": M.hex(), "pub_key": (A if isinstance(A, bytes) else encode(A)).hex(),
            "signature": sig.hex(), "description": desc}

def gen():
    out = []
    # 0: A = T8, R = -T8, S = 0. Cofactorless needs R + kA = (k-1)T8 = O, so search k = 1 mod 8.
    A, R = T8, neg(T8)
    M = next(m for m in messages("c0") if is_id(add(R, mul(hram(encode(R), encode(A), m) % 8, A))))
    out.append(case(R, A, 0, M, "S = 0, small-order A, small-order R = -A"))
    # 1: A = T8, R = sB - A, S = s: sB = R + kA iff (k-1)T8 = O.
    s = scalar("c1"); A = T8; R = sub(mul(s, B), A)
    M = next(m for m in messages("c1") if hram(encode(R), encode(A), m) % 8 == 1)
    out.append(case(R, A, s, M, "0 < S < L, small-order A, mixed-order R"))
    # 2: R = T8, A = aB - T8, S = k*a: R + kA = kaB + (1-k)T8, so search k = 1 mod 8.
    a = scalar("c2"); R = T8; A = sub(mul(a, B), T8)
    M = next(m for m in messages("c2") if hram(encode(R), encode(A), m) % 8 == 1)
    out.append(case(R, A, hram(encode(R), encode(A), M) * a % L, M, "0 < S < L, mixed-order A, small-order R"))
    # 3/4: A = aB + T8, R = rB - T8, S = r + k*a: R + kA = SB + (k-1)T8.
    # k = 1 mod 8 passes both equations (#3); any other k passes only the cofactored one (#4).
    a = scalar("c34"); A = add(mul(a, B), T8)
    for want_pass, label in ((True, "c3"), (False, "c4")):
        for M in messages(label):
            r = nonce(label, M); R = sub(mul(r, B), T8); k = hram(encode(R), encode(A), M)
            if (k % 8 == 1) == want_pass: break
        out.append(case(R, A, (r + k * a) % L, M, "0 < S < L, mixed-order A, mixed-order R, " +
                        ("passes cofactored and cofactorless" if want_pass else "passes cofactored only")))
    # 5: A = aB + T8, R = rB (prime order), S = r + k*a. [8]R + [8k]A = [8S]B holds, but a
    # verifier that reduces 8k mod L first leaves ((8k mod L) mod 8)*T8 behind: search for it != 0
    # (and k != 0 mod 8 so that cofactorless fails too).
    a = scalar("c5"); A = add(mul(a, B), T8)
    for M in messages("c5"):
        r = nonce("c5", M); R = mul(r, B); k = hram(encode(R), encode(A), M)
        if k % 8 and (8 * k % L) % 8: break
    out.append(case(R, A, (r + k * a) % L, M, "0 < S < L, mixed-order A, prime-order R; fails cofactored iff 8k is pre-reduced mod L"))
    # 6/7: an honest signature (A = aB, R = rB) with S replaced by S + nL: still satisfies both
    # equations. #6: S + L (< 2^253, so the top 3 bits stay clear); #7: smallest S + nL >= 2^253.
    a = scalar("c67"); A = mul(a, B); M = rnd("c67")[:32]; r = nonce("c67", M); R = mul(r, B)
    S = (r + hram(encode(R), encode(A), M) * a) % L
    out.append(case(R, A, S + L, M, "S > L (S + L, top 3 bits clear), prime-order A and R"))
    S7 = S + L * -(-(2**253 - S) // L)
    out.append(case(R, A, S7, M, "S >> L (S + nL >= 2^253, top bits set), prime-order A and R"))
    # 8/9: R = (0,-1) spelled non-canonically ("-0"), A = aB - T8, S = k*a. R + kA = SB + T2 - kT8,
    # so need k = 4 mod 8 for k hashed on both the re-encoded and the raw R; #8 uses the first k
    # in S, #9 the second, which tells apart verifiers that re-encode R before hashing.
    a = scalar("c89"); A = sub(mul(a, B), T8); Rc = encode(T2); Rn = T2_NONCANON
    M = next(m for m in messages("c89") if hram(Rc, encode(A), m) % 8 == 4 and hram(Rn, encode(A), m) % 8 == 4)
    out.append(case(Rn, A, hram(Rc, encode(A), M) * a % L, M, "0 < S < L, mixed-order A, small-order non-canonical R, k on re-encoded R"))
    out.append(case(Rn, A, hram(Rn, encode(A), M) * a % L, M, "0 < S < L, mixed-order A, small-order non-canonical R, k on R as given"))
    # 10/11: A = (0,-1) spelled "-0", R = sB - T2, S = s: cofactorless needs (k-1)T2 = O, k odd.
    # #10: k odd only when hashing the re-encoded A; #11: only when hashing A as given.
    s = scalar("c1011"); Ac, An = encode(T2), T2_NONCANON; R = sub(mul(s, B), T2)
    for hashed, other, label, how in ((Ac, An, "c10", "re-encoded A"), (An, Ac, "c11", "A as given")):
        M = next(m for m in messages(label) if hram(encode(R), hashed, m) % 2 == 1 and hram(encode(R), other, m) % 2 == 0)
        out.append(case(R, An, s, M, "0 < S < L, small-order non-canonical A, mixed-order R, k on " + how))
    for i, c in enumerate(out):  # libsodium 1.0.18 accepts only #3 (speccheck's results table)
        c.update(index=i, libsodium_1_0_18_valid=(i == 3))
    return [{k: c[k] for k in ("index", "message", "pub_key", "signature", "description", "libsodium_1_0_18_valid")} for c in out]

# ---- --check: verify each case's claims with the arithmetic above ----
def s_class(S): return "S=0" if S == 0 else "0<S<L" if S < L else "S>L" if S < 2**253 else "S>>L"

def equations(Rb, Ab, S, M):  # (cofactored, cofactorless) with k hashed on the given bytes
    R, A = decode(Rb), decode(Ab); k = hram(Rb, Ab, M)
    diff = sub(mul(S, B), add(R, mul(k, A)))  # [S]B - R - [k]A
    return is_id(mul(8, diff)), is_id(diff)

def analyse(c):
    M, Ab, sig = (bytes.fromhex(c[f]) for f in ("message", "pub_key", "signature"))
    Rb, S = sig[:32], int.from_bytes(sig[32:], "little")
    if decode(Ab) is None or decode(Rb) is None: return None
    raw, ren = equations(Rb, Ab, S, M), equations(reencode(Rb), reencode(Ab), S, M)
    A, R, k = decode(Ab), decode(Rb), hram(Rb, Ab, M)
    pre = eq(mul(8, R), sub(mul(8 * S % L, B), mul(8 * k % L, A)))  # pre-reduced cofactored
    vv = lambda t: "".join("V" if x else "X" for x in t)
    return {"S": s_class(S), "A": order_class(A) + ("" if is_canonical(Ab) else "*"),
            "R": order_class(R) + ("" if is_canonical(Rb) else "*"), "raw": vv(raw), "reenc": vv(ren), "pre": vv([pre])}

def summary(a): return "undecodable" if a is None else " ".join(v if k == "S" else f"{k}={v}" for k, v in a.items())

# Intent from speccheck's README table. raw/reenc = (cofactored, cofactorless) when k is hashed on the
# bytes as given / on re-encoded A and R ("*" = non-canonical encoding of a small-order point).
INTENT = [
    ("S=0", "small", "small", "VV", "VV"), ("0<S<L", "small", "mixed", "VV", "VV"),
    ("0<S<L", "mixed", "small", "VV", "VV"), ("0<S<L", "mixed", "mixed", "VV", "VV"),
    ("0<S<L", "mixed", "mixed", "VX", "VX"), ("0<S<L", "mixed", "L", "VX", "VX"),
    ("S>L", "L", "L", "VV", "VV"), ("S>>L", "L", "L", "VV", "VV"),
    ("0<S<L", "mixed", "small*", "XX", "VV"), ("0<S<L", "mixed", "small*", "VV", "XX"),
    ("0<S<L", "small*", "mixed", "VX", "VV"), ("0<S<L", "small*", "mixed", "VV", "VX"),
]

def check(cases):
    passed = failed = 0
    for c in cases:
        got, (s, a, r, raw, ren) = analyse(c), INTENT[c["index"]]
        if got is None:
            print(f"#{c['index']:<2} A or R does not decode -> FAIL"); failed += 1; continue
        ok = (got["S"], got["A"], got["R"], got["raw"], got["reenc"]) == (s, a, r, raw, ren)
        if c["index"] == 5: ok = ok and got["pre"] == "X"  # must fail the pre-reduced equation
        print(f"#{c['index']:<2} {got['S']:<6} A={got['A']:<7} R={got['R']:<7} "
              f"cofactored={got['raw'][0]} cofactorless={got['raw'][1]} (re-encoded: {got['reenc'][0]}{got['reenc'][1]}) "
              f"A canonical={'*' not in got['A']} R canonical={'*' not in got['R']} S<L={got['S'] in ('S=0', '0<S<L')}"
              + (f" pre-reduced={got['pre']}" if c["index"] == 5 else "")
              + f"  intent: {s} A={a} R={r} raw={raw} re-encoded={ren}" + (" pre-reduced=X" if c["index"] == 5 else "")
              + f" -> {'ok' if ok else 'FAIL'}")
        passed, failed = passed + ok, failed + (not ok)
    print(f"{passed} passed, {failed} failed")
    return failed == 0

# ---- --libsodium: dev/CI cross-check against the real library ----
def libsodium_check(cases, published_path):
    lib = ctypes.CDLL(ctypes.util.find_library("sodium") or "libsodium.so.23")
    if lib.sodium_init() < 0: sys.exit("sodium_init failed")
    lib.sodium_version_string.restype = ctypes.c_char_p
    lib.crypto_sign_verify_detached.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_char_p]
    def verify(c):
        M, A, sig = (bytes.fromhex(c[f]) for f in ("message", "pub_key", "signature"))
        return lib.crypto_sign_verify_detached(sig, M, len(M), A) == 0
    print("libsodium", lib.sodium_version_string().decode())
    mine = [verify(c) for c in cases]
    print("ours      |" + "|".join(" V " if v else " X " for v in mine) + "|")
    good = mine == [c["libsodium_1_0_18_valid"] for c in cases]
    if published_path:  # compare category and libsodium verdict with speccheck's published vectors
        with open(published_path) as f: pub = json.load(f)
        theirs = [verify(c) for c in pub]
        print("published |" + "|".join(" V " if v else " X " for v in theirs) + "|")
        for i, (c, p) in enumerate(zip(cases, pub)):
            a, b = analyse(c), analyse(p)
            same = a == b and mine[i] == theirs[i]
            print(f"#{i:<2} ours: {summary(a)} | published: {summary(b)} | libsodium: "
                  f"{'VX'[not mine[i]]}/{'VX'[not theirs[i]]} -> {'same' if same else 'DIFFERENT'}")
            good = good and same
    print("OK: libsodium accepts exactly #3" if good else "MISMATCH")
    return good

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="verify each case's claims with our own arithmetic")
    ap.add_argument("--libsodium", action="store_true", help="cross-check with libsodium via ctypes (dev/CI)")
    ap.add_argument("--published", metavar="CASES_JSON", help="with --libsodium: speccheck's cases.json to compare")
    args = ap.parse_args()
    cases = gen()
    if args.check or args.libsodium:
        ok = (not args.check or check(cases)) and (not args.libsodium or libsodium_check(cases, args.published))
        sys.exit(0 if ok else 1)
    print(json.dumps(cases, indent=2))

if __name__ == "__main__":
    main()
