#!/usr/bin/env python3
"""Independent reference implementation of the spawngate signed-request wire format.

Written from the contract in PRODUCT.md alone, deliberately sharing no code or
assumptions with the Swift implementation, so the two can be tested against each
other. Standard library plus `cryptography` only. See README.md for the commands.
"""
import argparse
import base64
import binascii
import hashlib
import json
import os
import re
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

REQUEST_PREFIX = b"spawngate-request-v1\x00"
RECEIPT_PREFIX = b"spawngate-receipt-v1\x00"
MAX_ENVELOPE = 65536
MAX_INT = 2 ** 53  # "integers beyond 2^53" are rejected, so 2^53 itself is still allowed
L = 2 ** 252 + 27742317777372353535851937790883648493  # Ed25519 group order
B64U = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
PAYLOAD_ORDER = ("name", "cli", "task", "cwd", "model", "args", "channels", "team",
                 "from", "to", "iat", "exp", "nonce")
REQUIRED = {"name", "cli", "from", "to", "iat", "exp", "nonce"}
ARRAY_FIELDS = {"args", "channels"}
INT_FIELDS = {"iat", "exp"}
ENVELOPE_KEYS = ("v", "alg", "kid", "payload", "sig")

# kind -> (reason a strict verifier must give, class). Classes drive the selftest:
# payload/encoding/envelope kinds carry a signature that IS valid over the (lax-decoded)
# payload, so only strict parsing can catch them; signature kinds must fail verification.
KINDS = {
    "dup-key": ("malformed", "payload"),
    "unknown-field": ("malformed", "payload"),
    "payload-trailing": ("malformed", "payload"),
    "envelope-trailing": ("malformed", "envelope"),
    "envelope-unknown-field": ("malformed", "envelope"),
    "envelope-dup-key": ("malformed", "envelope"),
    "b64-padded": ("malformed", "encoding"),
    "b64-std-alphabet": ("malformed", "encoding"),
    "b64-noncanonical-bits": ("malformed", "encoding"),
    "sig-short": ("malformed", "sig-length"),
    "sig-long": ("malformed", "sig-length"),
    "bad-utf8": ("malformed", "payload"),
    "overlong-utf8": ("malformed", "payload"),
    "nul-in-cwd": ("malformed", "payload"),
    "raw-nul": ("malformed", "payload"),
    "int-too-big": ("malformed", "payload"),
    "float-iat": ("malformed", "payload"),
    "negative-iat": ("malformed", "payload"),
    "string-iat": ("malformed", "payload"),
    "missing-nonce": ("malformed", "payload"),
    "short-nonce": ("malformed", "payload"),
    "args-not-array": ("malformed", "payload"),
    "lone-surrogate": ("malformed", "payload"),
    "v2": ("malformed", "envelope"),
    "alg-none": ("malformed", "envelope"),
    "oversized": ("malformed", "payload"),
    "wrong-domain": ("bad_signature", "signature"),
    "no-domain": ("bad_signature", "signature"),
    "flip-sig": ("bad_signature", "signature"),
    "flip-payload": ("bad_signature", "signature"),
    "malleated-s": ("bad_signature", "signature"),
}


class Reject(Exception):
    """A verification failure; `code` is the reason code from the contract."""

    def __init__(self, code, detail):
        super().__init__(f"{code}: {detail}")
        self.code = code


def malformed(detail):
    return Reject("malformed", detail)


# ---------------------------------------------------------------- encodings

def b64u_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode_strict(text):
    # Hand-rolled because stdlib decoders accept padding, '+/' and junk low bits,
    # which would give a single payload several accepted encodings.
    if len(text) % 4 == 1:
        raise malformed("base64url length is impossible")
    out, acc, nbits = bytearray(), 0, 0
    for ch in text:
        value = B64U.find(ch)
        if value < 0:
            raise malformed(f"non-base64url character {ch!r}")
        acc, nbits = (acc << 6) | value, nbits + 6
        if nbits >= 8:
            nbits -= 8
            out.append(acc >> nbits)
            acc &= (1 << nbits) - 1
    if acc:
        raise malformed("base64url has non-zero trailing bits")
    return bytes(out)


def ssh_blob(raw):
    kind = b"ssh-ed25519"
    return struct.pack(">I", len(kind)) + kind + struct.pack(">I", len(raw)) + raw


def parse_pub_line(line):
    """Return the raw 32-byte key from an `ssh-ed25519 AAAA… comment` line."""
    line = line.rstrip("\r\n")
    if "\n" in line or "\r" in line:
        raise ValueError("public key must be a single line")
    parts = line.split(None, 2)
    if len(parts) < 2 or parts[0] != "ssh-ed25519":
        raise ValueError("not an ssh-ed25519 public key line")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64 in public key: {exc}") from None
    if len(blob) != 51 or blob != ssh_blob(blob[19:]) or base64.b64encode(blob).decode() != parts[1]:
        raise ValueError("not a canonical ssh-ed25519 key blob")
    return blob[19:]


def fingerprint(raw):
    digest = hashlib.sha256(ssh_blob(raw)).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def pub_line(raw, name):
    return f"ssh-ed25519 {base64.b64encode(ssh_blob(raw)).decode('ascii')} {name}"


def raw_public(private_key):
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def load_seed(path):
    with open(path, encoding="ascii") as fh:
        text = fh.read().strip()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ValueError(f"{path}: expected 64 lowercase hex characters")
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(text))


# ---------------------------------------------------------------- strict JSON

def _unique_pairs(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise malformed(f"duplicate key in {keys}")
    return dict(pairs)


def _bounded_int(text):
    # Length check first: int() of a huge literal is slow or raises ValueError.
    if len(text.lstrip("-")) > 16 or abs(int(text)) > MAX_INT:
        raise malformed(f"integer {text[:20]} out of range")
    return int(text)


def _reject_number(text):
    raise malformed(f"non-integer number {text[:20]}")


STRICT = json.JSONDecoder(object_pairs_hook=_unique_pairs, parse_int=_bounded_int,
                          parse_float=_reject_number, parse_constant=_reject_number)


def _check_strings(value):
    # JSON escapes can smuggle what the UTF-8 check cannot see: \u0000 and lone surrogates.
    if isinstance(value, str):
        if "\x00" in value:
            raise malformed("NUL in string")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise malformed("lone surrogate in string") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key)
            _check_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)


def parse_json_strict(data):
    if b"\x00" in data:
        raise malformed("raw NUL byte")
    try:
        text = data.decode("utf-8")  # strict codec: rejects overlong forms and encoded surrogates
    except UnicodeDecodeError as exc:
        raise malformed(f"invalid UTF-8 at byte {exc.start}") from None
    try:
        value, end = STRICT.raw_decode(text)  # raw_decode: no leading whitespace either
        if end != len(text):
            raise malformed("trailing data")
        _check_strings(value)
    except json.JSONDecodeError as exc:
        raise malformed(f"invalid JSON: {exc.msg} at {exc.pos}") from None
    except RecursionError:  # 64 KiB of '[' would otherwise crash the parser
        raise malformed("nesting too deep") from None
    return value


# ---------------------------------------------------------------- verification

def parse_envelope(data):
    """Strict envelope parse without a key: returns (kid, payload bytes, sig bytes)."""
    if len(data) > MAX_ENVELOPE:
        raise malformed(f"envelope is {len(data)} bytes")
    env = parse_json_strict(data)
    if not isinstance(env, dict) or set(env) != set(ENVELOPE_KEYS):
        raise malformed("envelope must have exactly v, alg, kid, payload, sig")
    if type(env["v"]) is not int or env["v"] != 1:  # type(): JSON true must not pass as 1
        raise malformed(f"unsupported version {env['v']!r}")
    if env["alg"] != "ed25519":
        raise malformed(f"unsupported alg {env['alg']!r}")
    if not all(isinstance(env[k], str) for k in ("kid", "payload", "sig")):
        raise malformed("kid, payload and sig must be strings")
    payload, sig = b64u_decode_strict(env["payload"]), b64u_decode_strict(env["sig"])
    if len(sig) != 64:
        raise malformed(f"signature is {len(sig)} bytes")
    return env["kid"], payload, sig


def verify_envelope(data, raw_pub, prefix):
    kid, payload, sig = parse_envelope(data)
    if kid != fingerprint(raw_pub):
        raise Reject("unknown_key", f"kid {kid} is not the expected key")
    # Checked here too so the result never depends on the crypto backend's strictness.
    if int.from_bytes(sig[32:], "little") >= L:
        raise Reject("bad_signature", "S >= L (malleated signature)")
    try:
        Ed25519PublicKey.from_public_bytes(raw_pub).verify(sig, prefix + payload)
    except InvalidSignature:
        raise Reject("bad_signature", "signature does not verify") from None
    value = parse_json_strict(payload)  # only parse bytes that are known to be signed
    if not isinstance(value, dict):
        raise malformed("payload is not an object")
    return payload, value


def check_request_payload(p):
    if set(p) - set(PAYLOAD_ORDER):
        raise malformed(f"unknown fields {sorted(set(p) - set(PAYLOAD_ORDER))}")
    if REQUIRED - set(p):
        raise malformed(f"missing fields {sorted(REQUIRED - set(p))}")
    for key, value in p.items():
        if key in ARRAY_FIELDS:
            ok = isinstance(value, list) and all(isinstance(x, str) for x in value)
        elif key in INT_FIELDS:
            ok = type(value) is int and value >= 0
        else:
            ok = isinstance(value, str)
        if not ok:
            raise malformed(f"field {key} has the wrong type")
    if len(b64u_decode_strict(p["nonce"])) < 16:
        raise malformed("nonce shorter than 16 bytes")


def read_stdin_envelope():
    data = sys.stdin.buffer.read()
    # One trailing newline is stdin framing (`sign` prints one), not part of the envelope.
    return data[:-1] if data.endswith(b"\n") else data


# ---------------------------------------------------------------- building

def jenc(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def join_object(fields):
    # Objects are built from (key, raw value bytes) pairs so mutations can
    # express things a dict cannot: duplicate keys, invalid bytes, odd numbers.
    return b"{" + b",".join(jenc(k) + b":" + v for k, v in fields) + b"}"


def payload_fields(a):
    values = {"name": a.name, "cli": a.cli, "task": a.task, "cwd": a.cwd, "model": a.model,
              "args": a.arg, "channels": a.channel, "team": a.team, "from": a.from_,
              "to": a.to, "iat": a.iat, "exp": a.exp, "nonce": a.nonce}
    return [[k, jenc(values[k])] for k in PAYLOAD_ORDER if values[k] is not None]


def set_field(fields, key, raw):
    for field in fields:
        if field[0] == key:
            field[1] = raw
            return
    rank = PAYLOAD_ORDER.index(key)
    at = next((i for i, f in enumerate(fields) if PAYLOAD_ORDER.index(f[0]) > rank), len(fields))
    fields.insert(at, [key, raw])


def in_string(fields, key, default, injected):
    """Append raw bytes (escapes or invalid UTF-8) just before the closing quote."""
    old = next((f[1] for f in fields if f[0] == key), jenc(default))
    set_field(fields, key, old[:-1] + injected + b'"')


def exponent_form(n):
    # Exactly the same value as n, so only a strict integer check catches it.
    digits = str(abs(n)) if n else "0"
    frac = digits[1:].rstrip("0")
    return f"{'-' if n < 0 else ''}{digits[0]}{'.' + frac if frac else ''}e{len(digits) - 1}"


def mutate_payload(kind, fields, a):
    if kind == "dup-key":
        at = next(i for i, f in enumerate(fields) if f[0] == "cli")
        fields.insert(at + 1, ["cli", jenc("bash" if a.cli == "sh" else "sh")])
    elif kind == "unknown-field":
        fields.append(["shell", jenc("/bin/sh")])
    elif kind == "bad-utf8":
        in_string(fields, "task", "", b"\xc3\x28")
    elif kind == "overlong-utf8":
        in_string(fields, "cwd", "/tmp", b"/..\xc0\xafetc")  # 0xC0 0xAF: overlong '/'
    elif kind == "nul-in-cwd":
        in_string(fields, "cwd", "/tmp", b"\\u0000/evil")
    elif kind == "raw-nul":
        in_string(fields, "task", "", b"\x00")
    elif kind == "lone-surrogate":
        in_string(fields, "task", "", b"\\ud800")
    elif kind == "int-too-big":
        set_field(fields, "exp", b"9007199254740993")
    elif kind == "float-iat":
        set_field(fields, "iat", exponent_form(a.iat).encode())
    elif kind == "negative-iat":
        set_field(fields, "iat", str(-max(abs(a.iat), 1)).encode())
    elif kind == "string-iat":
        set_field(fields, "iat", jenc(str(a.iat)))
    elif kind == "missing-nonce":
        fields[:] = [f for f in fields if f[0] != "nonce"]
    elif kind == "short-nonce":
        set_field(fields, "nonce", jenc(b64u_encode(secrets.token_bytes(15))))
    elif kind == "args-not-array":
        set_field(fields, "args", jenc(" ".join(a.arg or ["--yolo"])))
    return fields


def envelope_fields(kid, p64, s64):
    return [["v", b"1"], ["alg", jenc("ed25519")], ["kid", jenc(kid)],
            ["payload", jenc(p64)], ["sig", jenc(s64)]]


def tweak_task(a, ok):
    """Some encoding kinds need a payload with a particular shape; grow the task until it has it."""
    if ok(join_object(payload_fields(a))):
        return
    base = a.task or ""
    for i in range(64):  # a run of '?' (0x3F) always yields a '_' and covers every length mod 3
        a.task = base + "?" * i
        if ok(join_object(payload_fields(a))):
            return
    raise ValueError("could not shape the payload")


def grow_to_oversize(a, kid):
    a.task = a.task or ""
    fixed = len(join_object(envelope_fields(kid, "", "A" * 86)))
    size = len(join_object(payload_fields(a)))
    pad = max(0, (MAX_ENVELOPE - fixed) * 3 // 4 - size - 8)
    # Smallest padding that crosses the limit gives 65537 or 65538 bytes (base64 steps).
    while fixed + len(b64u_encode(bytes(size + pad))) <= MAX_ENVELOPE:
        pad += 1
    a.task += "A" * pad


def build_envelope(a):
    key = load_seed(a.seed)
    raw = raw_public(key)
    kid, kind = fingerprint(raw), a.mutate
    if a.nonce is None:
        a.nonce = b64u_encode(secrets.token_bytes(16))
    if kind in ("b64-padded", "b64-noncanonical-bits"):
        tweak_task(a, lambda p: len(p) % 3 != 0)  # only then are there padding/unused bits
    elif kind == "b64-std-alphabet":
        tweak_task(a, lambda p: "-" in b64u_encode(p) or "_" in b64u_encode(p))
    elif kind == "oversized":
        grow_to_oversize(a, kid)
    payload = join_object(mutate_payload(kind, payload_fields(a), a))
    if kind == "payload-trailing":
        payload += b" {}"
    prefix = {"wrong-domain": RECEIPT_PREFIX, "no-domain": b""}.get(kind, REQUEST_PREFIX)
    sig = key.sign(prefix + payload)

    if kind == "flip-payload":  # flip the low bit of iat's last digit: still valid JSON, b64u, int
        pos = re.search(rb'"iat":-?\d+', payload).end() - 1
        payload = payload[:pos] + bytes([payload[pos] ^ 1]) + payload[pos + 1:]
    elif kind == "flip-sig":
        sig = bytes([sig[0] ^ 1]) + sig[1:]
    elif kind == "malleated-s":  # S + L < 2^256 always, so it still fits in 32 bytes
        sig = sig[:32] + (int.from_bytes(sig[32:], "little") + L).to_bytes(32, "little")
    elif kind == "sig-short":
        sig = sig[:63]
    elif kind == "sig-long":
        sig = sig + b"\x00"

    p64 = b64u_encode(payload)
    if kind == "b64-padded":
        p64 += "=" * (-len(p64) % 4)
    elif kind == "b64-std-alphabet":
        p64 = p64.translate(str.maketrans("-_", "+/"))
    elif kind == "b64-noncanonical-bits":  # bit 0 of the last char is always an unused bit here
        p64 = p64[:-1] + B64U[B64U.index(p64[-1]) ^ 1]

    env = envelope_fields(kid, p64, b64u_encode(sig))
    if kind == "v2":
        env[0][1] = b"2"
    elif kind == "alg-none":
        env[1][1] = jenc("none")
    elif kind == "envelope-unknown-field":
        env.append(["cwd", jenc("/etc")])
    elif kind == "envelope-dup-key":  # same value twice: a last-wins parser would see nothing odd
        env.insert(3, ["kid", jenc(kid)])
    out = join_object(env)
    return out + b"x" if kind == "envelope-trailing" else out


# ---------------------------------------------------------------- commands

def cmd_keygen(a):
    if "\n" in a.name or "\r" in a.name:
        raise ValueError("--name must be a single line")
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes_raw()
    # O_EXCL: never silently replace an existing private key.
    fd = os.open(a.seed_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(seed.hex() + "\n")
    raw = raw_public(key)
    print(json.dumps({"pub": pub_line(raw, a.name), "fingerprint": fingerprint(raw)}))


def cmd_fingerprint(a):
    if a.file:
        with open(a.file, encoding="utf-8") as fh:
            line = fh.read()
    else:
        line = a.line
    print(fingerprint(parse_pub_line(line)))


def cmd_sign(a):
    if a.mutate == "list":
        for kind, (reason, _) in KINDS.items():
            print(f"{kind}\t{reason}")
        return
    missing = [f"--{n.rstrip('_')}" for n in ("seed", "from_", "to", "name", "cli", "iat", "exp")
               if getattr(a, n) is None]
    if missing:
        raise ValueError(f"sign needs {', '.join(missing)}")
    sys.stdout.buffer.write(build_envelope(a) + b"\n")


def cmd_verify(a, prefix, check):
    raw = parse_pub_line(a.pub)
    try:
        _, value = verify_envelope(read_stdin_envelope(), raw, prefix)
        check(value)
    except Reject as rej:
        print(str(rej).replace("\n", " "))
        return 1
    print(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    return 0


def cmd_verify_receipt(a):
    if not re.fullmatch(r"[0-9a-f]{64}", a.request_id):
        raise ValueError("--request-id must be 64 lowercase hex characters")

    def check(value):
        if value.get("request_id") != a.request_id:
            raise Reject("request_mismatch", f"receipt is for {value.get('request_id')!r}")
    return cmd_verify(a, RECEIPT_PREFIX, check)


def cmd_request_id(a):
    try:
        _, payload, _ = parse_envelope(read_stdin_envelope())
    except Reject as rej:
        raise ValueError(str(rej)) from None
    print(hashlib.sha256(payload).hexdigest())


# ---------------------------------------------------------------- selftest

def lax_b64(text):
    text = text.rstrip("=").replace("+", "-").replace("/", "_")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def cmd_selftest(a):
    results = []

    def check(name, ok):
        results.append(ok)
        print(f"{'ok  ' if ok else 'FAIL'} {name}")

    me = [sys.executable, os.path.abspath(__file__)]

    def run(*argv, stdin=b""):
        return subprocess.run(me + list(argv), input=stdin, capture_output=True)

    with tempfile.TemporaryDirectory() as tmp:
        seed = os.path.join(tmp, "seed")
        kg = json.loads(run("keygen", "--seed-out", seed, "--name", "broker-a").stdout)
        check("keygen seed file is mode 0600", os.stat(seed).st_mode & 0o777 == 0o600)
        raw = raw_public(load_seed(seed))
        check("keygen pub line round-trips", parse_pub_line(kg["pub"]) == raw and kg["pub"].endswith(" broker-a"))
        fp = run("fingerprint", "--line", kg["pub"]).stdout.decode().strip()
        check("fingerprint --line matches keygen", fp == kg["fingerprint"] == fingerprint(raw))
        pub_file = os.path.join(tmp, "a.pub")
        with open(pub_file, "w") as fh:
            fh.write(kg["pub"] + "\n")
        check("fingerprint --file matches", run("fingerprint", "--file", pub_file).stdout.decode().strip() == fp)
        if shutil.which("ssh-keygen"):
            out = subprocess.run(["ssh-keygen", "-lf", pub_file], capture_output=True, text=True).stdout.split()
            check("fingerprint equals ssh-keygen -lf", len(out) > 1 and out[1] == fp)

        for text, want in (("QQ", b"A"), ("", b""), ("_-8", b"\xff\xef")):
            check(f"strict b64u accepts {text!r}", b64u_decode_strict(text) == want)
        for text in ("QQ==", "QR", "Q", "+/8", "QQ\n"):
            try:
                b64u_decode_strict(text)
                check(f"strict b64u rejects {text!r}", False)
            except Reject:
                check(f"strict b64u rejects {text!r}", True)

        base = ["sign", "--seed", seed, "--from", "broker-a", "--to", "broker-b", "--name", "w1",
                "--cli", "claude", "--task", "say hi", "--arg=-p", "--channel", "general",
                "--iat", "1700000000", "--exp", "1700000300", "--nonce", b64u_encode(bytes(range(16)))]
        valid = run(*base).stdout
        env = json.loads(valid)
        payload = b64u_decode_strict(env["payload"])
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(b64u_decode_strict(env["sig"]), REQUEST_PREFIX + payload)
            check("valid envelope verifies with cryptography", True)
        except InvalidSignature:
            check("valid envelope verifies with cryptography", False)
        keys = [k for k, _ in json.loads(payload, object_pairs_hook=list)]
        check("payload key order", keys == ["name", "cli", "task", "args", "channels", "from", "to", "iat", "exp", "nonce"])
        check("envelope shape", list(env) == list(ENVELOPE_KEYS) and env["kid"] == fp and valid.endswith(b"}\n"))
        try:
            check_request_payload(verify_envelope(valid[:-1], raw, REQUEST_PREFIX)[1])
            check("strict verifier accepts the valid envelope", True)
        except Reject as rej:
            check(f"strict verifier accepts the valid envelope ({rej})", False)
        rid = run("request-id", stdin=valid).stdout.decode().strip()
        check("request-id is sha256 of payload", rid == hashlib.sha256(payload).hexdigest())
        verified = run("verify-request", "--pub", kg["pub"], stdin=valid)
        check("verify-request CLI accepts valid", verified.returncode == 0 and json.loads(verified.stdout)["name"] == "w1")

        listing = run("sign", "--mutate", "list").stdout.decode().splitlines()
        check("--mutate list covers every kind", [l.split("\t")[0] for l in listing] == list(KINDS))
        for kind, (reason, cls) in KINDS.items():
            out = run(*base, "--mutate", kind)
            hostile = out.stdout[:-1]
            good = out.returncode == 0 and out.stdout.endswith(b"\n") and out.stdout != valid
            try:
                check_request_payload(verify_envelope(hostile, raw, REQUEST_PREFIX)[1])
                got = "accepted"
            except Reject as rej:
                got = rej.code
            # A signature-only verifier with lax parsing: does the signature hold?
            lax, _ = json.JSONDecoder().raw_decode(hostile.decode("utf-8", "surrogateescape"))
            sig, body = lax_b64(lax["sig"]), lax_b64(lax["payload"])
            try:
                Ed25519PublicKey.from_public_bytes(raw).verify(sig[:64], REQUEST_PREFIX + body)
                sig_ok = len(sig) >= 64
            except InvalidSignature:
                sig_ok = False
            want_sig = cls != "signature" and kind != "sig-short"
            extra = ""
            if kind == "oversized":
                good = good and MAX_ENVELOPE < len(hostile) <= MAX_ENVELOPE + 2
                extra = f", {len(hostile)} bytes"
            check(f"mutate {kind}: differs, {reason} (got {got}), lax signature {'valid' if want_sig else 'invalid'}{extra}",
                  good and got == reason and sig_ok == want_sig)
        cli_reject = run("verify-request", "--pub", kg["pub"], stdin=run(*base, "--mutate", "dup-key").stdout)
        check("verify-request CLI rejects dup-key with exit 1", cli_reject.returncode == 1
              and cli_reject.stdout.startswith(b"malformed"))

        target = Ed25519PrivateKey.generate()
        traw = raw_public(target)
        tline = pub_line(traw, "broker-b")

        def receipt(prefix, rid_value):
            body = jenc({"request_id": rid_value, "status": "spawned"})
            sig = target.sign(prefix + body)
            return join_object(envelope_fields(fingerprint(traw), b64u_encode(body), b64u_encode(sig))) + b"\n"

        ok = run("verify-receipt", "--pub", tline, "--request-id", rid, stdin=receipt(RECEIPT_PREFIX, rid))
        check("verify-receipt accepts a good receipt", ok.returncode == 0 and json.loads(ok.stdout)["request_id"] == rid)
        for label, prefix, rid_value, code in (("request-domain receipt", REQUEST_PREFIX, rid, b"bad_signature"),
                                               ("wrong request_id", RECEIPT_PREFIX, "0" * 64, b"request_mismatch")):
            bad = run("verify-receipt", "--pub", tline, "--request-id", rid, stdin=receipt(prefix, rid_value))
            check(f"verify-receipt rejects {label}", bad.returncode == 1 and bad.stdout.startswith(code))
        wrong_key = run("verify-receipt", "--pub", kg["pub"], "--request-id", rid, stdin=receipt(RECEIPT_PREFIX, rid))
        check("verify-receipt rejects a receipt from another key", wrong_key.returncode == 1)

    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("keygen", help="make an Ed25519 key; seed hex to FILE (0600)")
    p.add_argument("--seed-out", required=True)
    p.add_argument("--name", required=True)
    p = sub.add_parser("fingerprint", help="SHA256 fingerprint of an OpenSSH ed25519 line")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--line")
    g.add_argument("--file")
    p = sub.add_parser("sign", help="print a request envelope (optionally a hostile variant)")
    for opt in ("seed", "to", "name", "cli", "task", "cwd", "model", "team", "nonce"):
        p.add_argument(f"--{opt}")
    p.add_argument("--from", dest="from_")
    p.add_argument("--arg", action="append")
    p.add_argument("--channel", action="append")
    p.add_argument("--iat", type=int)
    p.add_argument("--exp", type=int)
    p.add_argument("--mutate", choices=list(KINDS) + ["list"], metavar="KIND")
    p = sub.add_parser("verify-receipt", help="verify a receipt envelope on stdin")
    p.add_argument("--pub", required=True)
    p.add_argument("--request-id", required=True)
    p = sub.add_parser("verify-request", help="strictly verify a request envelope on stdin")
    p.add_argument("--pub", required=True)
    sub.add_parser("request-id", help="hex SHA-256 of the payload of the envelope on stdin")
    sub.add_parser("selftest", help="exercise every command and mutation")
    a = ap.parse_args()
    handlers = {"keygen": cmd_keygen, "fingerprint": cmd_fingerprint, "sign": cmd_sign,
                "verify-receipt": cmd_verify_receipt, "request-id": cmd_request_id,
                "verify-request": lambda a: cmd_verify(a, REQUEST_PREFIX, check_request_payload),
                "selftest": cmd_selftest}
    try:
        return handlers[a.cmd](a) or 0
    except (ValueError, OSError, UnicodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
