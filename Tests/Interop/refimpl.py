#!/usr/bin/env python3
"""Independent reference implementation of the spawngate signed-request wire format.

Written from the contract in PRODUCT.md and docs/protocol.md (grants) alone, deliberately sharing no code or
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
GRANT_PREFIX = b"spawngate-grant-v1\x00"
GRANT_PROOF_PREFIX = b"spawngate-grant-proof-v1\x00"
MAX_ENVELOPE = 65536
MAX_INT = 2 ** 53  # "integers beyond 2^53" are rejected, so 2^53 itself is still allowed
L = 2 ** 252 + 27742317777372353535851937790883648493  # Ed25519 group order
B64U = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
PAYLOAD_ORDER = ("name", "cli", "task", "cwd", "model", "args", "channels", "team",
                 "from", "to", "iat", "exp", "nonce", "grant")
REQUIRED = {"name", "cli", "from", "to", "iat", "exp", "nonce"}
ARRAY_FIELDS = {"args", "channels"}
INT_FIELDS = {"iat", "exp"}
ENVELOPE_KEYS = ("v", "alg", "kid", "payload", "sig")
BLOCK_ORDER = ("v", "id", "name", "iss", "targets", "clis", "cwd", "args", "max", "iat", "exp", "next")
BLOCK_REQUIRED = {"v", "id", "name", "iat", "exp", "next"}
BLOCK0_REQUIRED = BLOCK_REQUIRED | {"iss", "targets", "clis", "cwd"}
MAX_BLOCKS, MAX_LIST, MAX_GRANT_LIFETIME = 8, 64, 30 * 86400

# Every hostile grant is refused as grant_invalid: each breaks a signature, the chain or the proof,
# while the request envelope around it stays validly signed.
GRANT_KINDS = {
    "flip-block": "grant_invalid",  # block 0's payload changed after it was signed
    "drop-last": "grant_invalid",  # last block removed, proof still by the removed block's next key
    "proof-other-nonce": "grant_invalid",  # proof bound to another request's nonce
    "proof-other-to": "grant_invalid",  # proof bound to another target
    "block-wrong-domain": "grant_invalid",  # block 0 signed by the right key over the request domain
    "proof-wrong-domain": "grant_invalid",  # proof signed over the block domain
}

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


def lax_b64(text):
    # For building and for the selftest's lax verifier only: takes padding and the standard alphabet.
    text = text.rstrip("=").replace("+", "-").replace("/", "_")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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
        if key == "grant":
            continue  # an object, checked (as grant_invalid, not malformed) by verify_grant
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


def grant_invalid(detail):
    return Reject("grant_invalid", detail)


def grant_b64(text, what):
    # The request around the grant parsed fine, so the grant's own encoding faults are its shape: grant_invalid.
    if not isinstance(text, str):
        raise grant_invalid(f"{what} is not a string")
    try:
        return b64u_decode_strict(text)
    except Reject as rej:
        raise grant_invalid(f"{what}: {rej}") from None


def check_grant_sig(raw_pub, sig, message, what):
    if len(sig) != 64:
        raise grant_invalid(f"{what} is {len(sig)} bytes")
    if int.from_bytes(sig[32:], "little") >= L:
        raise grant_invalid(f"{what}: S >= L (malleated signature)")
    try:
        Ed25519PublicKey.from_public_bytes(raw_pub).verify(sig, message)
    except (InvalidSignature, ValueError):
        raise grant_invalid(f"{what} does not verify") from None


def is_str_list(value):
    return isinstance(value, list) and len(value) <= MAX_LIST and all(isinstance(x, str) for x in value)


def check_block(b, i):
    if not isinstance(b, dict):
        raise grant_invalid(f"block {i} is not an object")
    allowed = set(BLOCK_ORDER) - ({"iss"} if i else set())  # only the first block names an issuer
    required = BLOCK0_REQUIRED if i == 0 else BLOCK_REQUIRED
    if set(b) - allowed:
        raise grant_invalid(f"block {i}: refused members {sorted(set(b) - allowed)}")
    if required - set(b):
        raise grant_invalid(f"block {i}: missing members {sorted(required - set(b))}")

    def bad(key, why="has the wrong type"):
        raise grant_invalid(f"block {i}: {key} {why}")
    if type(b["v"]) is not int or b["v"] != 1:  # type(): JSON true must not pass as 1
        bad("v", "is not 1")
    if not 16 <= len(grant_b64(b["id"], f"block {i} id")) <= 32:
        bad("id", "is not 16-32 bytes")
    if not isinstance(b["name"], str) or not 1 <= len(b["name"].encode()) <= 64:
        bad("name", "is not a string of 1-64 bytes")
    if "iss" in b and not isinstance(b["iss"], str):
        bad("iss")
    for key in ("targets", "clis", "cwd"):
        if key in b and not is_str_list(b[key]):
            bad(key, "is not a list of at most 64 strings")
    if "args" in b and not (isinstance(b["args"], list) and len(b["args"]) <= MAX_LIST
                            and all(is_str_list(shape) for shape in b["args"])):
        bad("args", "is not a list of argument shapes")
    if "max" in b and (type(b["max"]) is not int or b["max"] < 1):
        bad("max", "is not an integer of at least 1")
    for key in ("iat", "exp"):
        if type(b[key]) is not int or b[key] < 0:
            bad(key)
    if not 0 < b["exp"] - b["iat"] <= MAX_GRANT_LIFETIME:
        bad("lifetime", "is not 1 s to 30 days")
    if len(grant_b64(b["next"], f"block {i} next")) != 32:
        bad("next", "is not a 32-byte key")


def verify_grant(p, raw_pub, now=None):
    """Check p["grant"] of an already verified request signed by raw_pub; return the decoded blocks.

    Order: every block's signature and shape, the issuer, then per block its lifetime (only with `now`, no skew)
    and its targets, then the proof. Anything but the clock and the target is grant_invalid."""
    g = p["grant"]
    if not isinstance(g, dict) or set(g) != {"blocks", "proof"}:
        raise grant_invalid("grant must have exactly blocks, proof")
    if not isinstance(g["blocks"], list) or not 1 <= len(g["blocks"]) <= MAX_BLOCKS:
        raise grant_invalid("blocks must be a list of 1-8 blocks")
    signer, blocks = raw_pub, []
    for i, block in enumerate(g["blocks"]):
        if not isinstance(block, dict) or set(block) != {"payload", "sig"}:
            raise grant_invalid(f"block {i} must have exactly payload, sig")
        body, sig = grant_b64(block["payload"], f"block {i} payload"), grant_b64(block["sig"], f"block {i} sig")
        check_grant_sig(signer, sig, GRANT_PREFIX + body, f"block {i} signature")
        try:
            value = parse_json_strict(body)  # parsed only once known to be signed, as for envelopes
        except Reject as rej:
            raise grant_invalid(f"block {i}: {rej}") from None
        check_block(value, i)
        blocks.append(value)
        signer = b64u_decode_strict(value["next"])  # each block names the key that signs what follows
    if blocks[0]["iss"] != p["from"]:
        raise grant_invalid(f"issuer {blocks[0]['iss']!r} is not the request's from {p['from']!r}")
    for i, b in enumerate(blocks):
        if now is not None and not b["iat"] <= now < b["exp"]:
            raise Reject("grant_expired", f"block {i} is valid from {b['iat']} until {b['exp']}, now is {now}")
        if "targets" in b and p["to"] not in b["targets"]:
            raise Reject("grant_exceeded", f"block {i} does not name target {p['to']!r}")
    message = GRANT_PROOF_PREFIX + p["to"].encode() + b"\x00" + b64u_decode_strict(p["nonce"])
    check_grant_sig(signer, grant_b64(g["proof"], "proof"), message, "proof")
    return blocks


def check_grant_request(p, blocks):
    """The policy-side containment the contract asks for, for cli and args only (cwd needs the target's disk).
    Argument patterns: a literal, or alternatives `a|b|c`; no other pattern syntax is understood."""
    args = p.get("args", [])
    for i, b in enumerate(blocks):
        if "clis" in b and p["cli"] not in b["clis"]:
            raise Reject("grant_exceeded", f"block {i} does not allow cli {p['cli']!r}")
        if "args" in b and not any(len(shape) == len(args) and all(arg in pat.split("|") for pat, arg in zip(shape, args))
                                   for shape in b["args"]):
            raise Reject("grant_exceeded", f"block {i} allows no argument shape matching {json.dumps(args)}")


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
    fields = [[k, jenc(values[k])] for k in PAYLOAD_ORDER[:-1] if values[k] is not None]
    if getattr(a, "grant_raw", None):  # built once by build_envelope: the proof depends on the nonce
        fields.append(["grant", a.grant_raw])
    return fields


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


def read_chain(path):
    with open(path, encoding="utf-8") as fh:
        return list(json.load(fh)["blocks"])


def grant_member(a):
    """The request's "grant": the chain's blocks and a proof binding them to this request's to and nonce."""
    blocks, kind = read_chain(a.grant), a.grant_mutate
    to, nonce = a.to, lax_b64(a.nonce)
    if kind == "flip-block":  # one bit of an ASCII letter or digit in name: still valid JSON and UTF-8
        body = lax_b64(blocks[0]["payload"])
        m = re.search(rb'"name":"[^"\\]*?[A-Za-z0-9]', body)
        if not m:
            raise ValueError("block 0's name has no ASCII letter or digit to flip")
        body = body[:m.end() - 1] + bytes([body[m.end() - 1] ^ 1]) + body[m.end():]
        blocks[0] = {"payload": b64u_encode(body), "sig": blocks[0]["sig"]}
    elif kind == "block-wrong-domain":  # block 0's signer is the request's own key
        body = lax_b64(blocks[0]["payload"])
        blocks[0] = {"payload": blocks[0]["payload"], "sig": b64u_encode(load_seed(a.seed).sign(REQUEST_PREFIX + body))}
    elif kind == "drop-last":
        blocks.pop()
    elif kind == "proof-other-nonce":
        nonce = secrets.token_bytes(16)
    elif kind == "proof-other-to":
        to += "-other"
    prefix = GRANT_PREFIX if kind == "proof-wrong-domain" else GRANT_PROOF_PREFIX
    proof = load_seed(a.grant_seed).sign(prefix + to.encode() + b"\x00" + nonce)
    return join_object([["blocks", jenc(blocks)], ["proof", jenc(b64u_encode(proof))]])


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
    a.grant_raw = grant_member(a) if a.grant else None
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

def write_seed(path, key):
    # O_EXCL: never silently replace an existing private key.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.private_bytes_raw().hex() + "\n")


def cmd_keygen(a):
    if "\n" in a.name or "\r" in a.name:
        raise ValueError("--name must be a single line")
    key = Ed25519PrivateKey.generate()
    write_seed(a.seed_out, key)
    raw = raw_public(key)
    print(json.dumps({"pub": pub_line(raw, a.name), "fingerprint": fingerprint(raw)}))


def cmd_fingerprint(a):
    if a.file:
        with open(a.file, encoding="utf-8") as fh:
            line = fh.read()
    else:
        line = a.line
    print(fingerprint(parse_pub_line(line)))


def cmd_grant_block(a):
    # Builds whatever it is told (no checks), so hostile chains can be made; --raw-extra appends raw members.
    nxt = Ed25519PrivateKey.generate()
    values = {"v": 1, "id": a.id or b64u_encode(secrets.token_bytes(16)), "name": a.name, "iss": a.iss,
              "targets": a.target, "clis": a.cli, "cwd": a.cwd,
              "args": [json.loads(shape) for shape in a.args_shape] if a.args_shape else None,
              "max": a.max, "iat": a.iat, "exp": a.exp, "next": b64u_encode(raw_public(nxt))}
    fields = [[k, jenc(values[k])] for k in BLOCK_ORDER if values[k] is not None]
    for extra in a.raw_extra or []:
        key, sep, raw = extra.partition("=")
        if not sep:
            raise ValueError(f"--raw-extra {extra!r} is not KEY=JSONVALUE")
        fields.append([key, raw.encode("utf-8")])
    payload = join_object(fields)
    chain = read_chain(a.chain) if a.chain else []
    chain.append({"payload": b64u_encode(payload), "sig": b64u_encode(load_seed(a.seed).sign(GRANT_PREFIX + payload))})
    write_seed(a.next_seed_out, nxt)
    sys.stdout.buffer.write(jenc({"blocks": chain}) + b"\n")


def cmd_sign(a):
    if a.mutate == "list" or a.grant_mutate == "list":
        for kind, reason in ((k, r) for k, (r, _) in KINDS.items()) if a.mutate == "list" else GRANT_KINDS.items():
            print(f"{kind}\t{reason}")
        return
    if bool(a.grant) != bool(a.grant_seed) or (a.grant_mutate and not a.grant):
        raise ValueError("--grant needs --grant-seed, and --grant-mutate needs both")
    missing = [f"--{n.rstrip('_')}" for n in ("seed", "from_", "to", "name", "cli", "iat", "exp")
               if getattr(a, n) is None]
    if missing:
        raise ValueError(f"sign needs {', '.join(missing)}")
    sys.stdout.buffer.write(build_envelope(a) + b"\n")


def cmd_verify(a, prefix, check):
    raw = parse_pub_line(a.pub)
    try:
        _, value = verify_envelope(read_stdin_envelope(), raw, prefix)
        shown = check(value, raw)
    except Reject as rej:
        print(str(rej).replace("\n", " "))
        return 1
    print(json.dumps(value if shown is None else shown, ensure_ascii=False, separators=(",", ":")))
    return 0


def check_request(value, raw):
    check_request_payload(value)
    if "grant" in value:  # a strict verifier never accepts a request whose grant does not verify
        verify_grant(value, raw)


def cmd_verify_grant(a):
    def check(value, raw):
        check_request_payload(value)
        if "grant" not in value:
            raise grant_invalid("the request carries no grant")
        blocks = verify_grant(value, raw, a.now)
        if a.check_request:
            check_grant_request(value, blocks)
        return {"id": "/".join(b["id"] for b in blocks), "blocks": blocks}
    return cmd_verify(a, REQUEST_PREFIX, check)


def cmd_verify_receipt(a):
    if not re.fullmatch(r"[0-9a-f]{64}", a.request_id):
        raise ValueError("--request-id must be 64 lowercase hex characters")

    def check(value, _raw):
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

        # Grants: block 0 by the broker's key, block 1 (narrower) by block 0's next key, proof by block 1's.
        serial = iter(range(1000))
        gi, ge, now = 1699990000, 1700086400, "1700000100"

        def grant_block(signer, *opts, chain=None, iat=gi, exp=ge):
            n = next(serial)
            nxt, path = os.path.join(tmp, f"next{n}"), os.path.join(tmp, f"chain{n}")
            out = run("grant-block", "--seed", signer, "--iat", str(iat), "--exp", str(exp), "--next-seed-out", nxt,
                      *opts, *(["--chain", chain] if chain else []))
            with open(path, "wb") as fh:
                fh.write(out.stdout)
            return path, nxt

        def verdict(envelope, *opts, detail=False):
            r = run("verify-grant", "--pub", kg["pub"], "--now", now, *opts, stdin=envelope)
            text = {0: "ok", 1: r.stdout.decode().strip()}.get(r.returncode, f"exit {r.returncode}")
            return text if detail else text.split(":")[0]

        wide = ["--target", "broker-b", "--target", "broker-c", "--cli", "claude", "--cli", "codex",
                "--cwd", "/srv/app/**", "--args-shape", "[]", "--args-shape", '["-p|--print"]', "--max", "5"]
        chain0, next0 = grant_block(seed, "--name", "ci", "--iss", "broker-a", *wide)
        chain1, next1 = grant_block(next0, "--name", "ci-narrow", "--target", "broker-b", "--cli", "claude",
                                    "--args-shape", '["-p"]', chain=chain0)
        with open(chain0) as f0, open(chain1) as f1:
            blocks0, blocks1 = json.load(f0)["blocks"], json.load(f1)["blocks"]
        check("grant-block appends to --chain; next seed is 0600",
              len(blocks1) == 2 and blocks1[0] == blocks0[0] and os.stat(next1).st_mode & 0o777 == 0o600)
        block_keys = [k for k, _ in json.loads(lax_b64(blocks0[0]["payload"]), object_pairs_hook=list)]
        check("grant block member order", block_keys == [k for k in BLOCK_ORDER])
        gbase = base + ["--grant", chain1, "--grant-seed", next1]
        granted = run(*gbase).stdout
        keys = [k for k, _ in json.loads(b64u_decode_strict(json.loads(granted)["payload"]), object_pairs_hook=list)]
        check("grant is the last payload member", keys[-2:] == ["nonce", "grant"])
        ok = run("verify-grant", "--pub", kg["pub"], "--now", now, "--check-request", stdin=granted)
        shown = json.loads(ok.stdout) if ok.returncode == 0 else {}
        ids = [json.loads(lax_b64(b["payload"]))["id"] for b in blocks1]
        check("verify-grant accepts the 2-block chain, id has two parts",
              shown.get("id") == "/".join(ids) and len(shown["id"].split("/")) == 2
              and [b["name"] for b in shown["blocks"]] == ["ci", "ci-narrow"])
        check("verify-request accepts the granted request", run("verify-request", "--pub", kg["pub"], stdin=granted).returncode == 0)
        check("a 1-block chain with its own next key verifies",
              verdict(run(*base, "--grant", chain0, "--grant-seed", next0).stdout) == "ok")

        listing = run("sign", "--grant-mutate", "list").stdout.decode().splitlines()
        check("--grant-mutate list covers every kind", listing == [f"{k}\t{r}" for k, r in GRANT_KINDS.items()])
        # Where each kind must be caught, so a kind that breaks something else by accident shows up.
        where = {"flip-block": "block 0 signature", "block-wrong-domain": "block 0 signature"}
        for kind, reason in GRANT_KINDS.items():
            out = run(*gbase, "--grant-mutate", kind).stdout
            got = verdict(out, detail=True)
            strict = run("verify-request", "--pub", kg["pub"], stdin=out).stdout.decode().strip()
            check(f"grant-mutate {kind}: {reason} at {where.get(kind, 'proof')} (got {got!r})",
                  out != granted and got == strict and got.startswith(f"{reason}: {where.get(kind, 'proof')}"))

        for label, at in (("after exp", str(ge)), ("before iat", str(gi - 1))):
            r = run("verify-grant", "--pub", kg["pub"], "--now", at, stdin=granted)
            check(f"verify-grant --now {label}: grant_expired", r.returncode == 1 and r.stdout.startswith(b"grant_expired"))
        expired, next_e = grant_block(seed, "--name", "old", "--iss", "broker-a", *wide, iat=gi - 200, exp=gi - 100)
        check("an expired chain is grant_expired with --now",
              verdict(run(*base, "--grant", expired, "--grant-seed", next_e).stdout) == "grant_expired")

        # (--check-request only: the target checks cli and args against the policy, not in the signature stage)
        print_arg = [x.replace("--arg=-p", "--arg=--print") for x in gbase]
        for label, argv, opts in (("a target block 1 does not name", gbase + ["--to", "broker-c"], []),
                                  ("a cli block 1 does not allow", gbase + ["--cli", "codex"], ["--check-request"]),
                                  ("args only block 0 allows", print_arg, ["--check-request"])):
            out = run(*argv).stdout
            check(f"grant_exceeded for {label}", verdict(out, *opts, detail=True).startswith("grant_exceeded: block 1")
                  and (opts == [] or verdict(out) == "ok"))

        for label, opts0, opts1, exp1, detail in (
                ("iss in a later block", [], ["--raw-extra", 'iss="broker-a"'], ge, "block 1: refused members ['iss']"),
                ("max 0", ["--max", "0"], [], ge, "block 0: max"),
                ("a lifetime over 30 days", [], [], gi + MAX_GRANT_LIFETIME + 1, "block 1: lifetime"),
                ("a duplicate member", [], ["--raw-extra", 'name="x"'], ge, "block 1: malformed: duplicate key"),
                ("an unknown member", [], ["--raw-extra", 'shell="/bin/sh"'], ge, "block 1: refused members ['shell']")):
            c0, n0 = grant_block(seed, "--name", "h", "--iss", "broker-a", *wide, *opts0)
            c1, n1 = grant_block(n0, "--name", "h1", *opts1, chain=c0, exp=exp1)
            got = verdict(run(*base, "--grant", c1, "--grant-seed", n1).stdout, detail=True)
            check(f"grant_invalid for {label} (got {got!r})", got.startswith(f"grant_invalid: {detail}"))
        other_from = [x if x != "broker-a" else "broker-z" for x in gbase]
        check("grant_invalid when iss is not the request's from",
              verdict(run(*other_from).stdout, detail=True).startswith("grant_invalid: issuer"))

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
    p.add_argument("--grant", metavar="CHAIN_FILE")
    p.add_argument("--grant-seed", metavar="LAST_NEXT_SEED_FILE")
    p.add_argument("--grant-mutate", choices=list(GRANT_KINDS) + ["list"], metavar="KIND")
    p = sub.add_parser("grant-block", help="append a signed grant block to a chain; print the chain")
    p.add_argument("--seed", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--iss")
    for opt in ("target", "cli", "cwd", "args-shape", "raw-extra"):
        p.add_argument(f"--{opt}", action="append")
    p.add_argument("--max", type=int)
    p.add_argument("--iat", type=int, required=True)
    p.add_argument("--exp", type=int, required=True)
    p.add_argument("--next-seed-out", required=True)
    p.add_argument("--chain")
    p.add_argument("--id")
    p = sub.add_parser("verify-receipt", help="verify a receipt envelope on stdin")
    p.add_argument("--pub", required=True)
    p.add_argument("--request-id", required=True)
    p = sub.add_parser("verify-request", help="strictly verify a request envelope on stdin")
    p.add_argument("--pub", required=True)
    p = sub.add_parser("verify-grant", help="strictly verify a request envelope on stdin and its grant")
    p.add_argument("--pub", required=True)
    p.add_argument("--now", type=int)
    p.add_argument("--check-request", action="store_true")
    sub.add_parser("request-id", help="hex SHA-256 of the payload of the envelope on stdin")
    sub.add_parser("selftest", help="exercise every command and mutation")
    a = ap.parse_args()
    handlers = {"keygen": cmd_keygen, "fingerprint": cmd_fingerprint, "sign": cmd_sign,
                "verify-receipt": cmd_verify_receipt, "request-id": cmd_request_id,
                "verify-request": lambda a: cmd_verify(a, REQUEST_PREFIX, check_request),
                "verify-grant": cmd_verify_grant, "grant-block": cmd_grant_block,
                "selftest": cmd_selftest}
    try:
        return handlers[a.cmd](a) or 0
    except (ValueError, OSError, UnicodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
