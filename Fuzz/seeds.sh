#!/usr/bin/env bash
# Regenerates the fuzz seed corpora in Fuzz/Corpus/ from a real spawngate: envelopes, hook inputs, sealed bodies
# and receipts as the gateway meets them, policies from policy/ and the tests, key lines and an OpenSSH key file.
# Usage: Fuzz/seeds.sh [path/to/spawngate]   (run from the repository root; throw-away keys only)
set -euo pipefail
BIN=${1:-.build/debug/spawngate}
C=Fuzz/Corpus
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
rm -rf "$C" && mkdir -p "$C"/{FuzzEnvelope,FuzzPolicy,FuzzKeyLine,FuzzHookInput,FuzzWireBody}

"$BIN" init --home "$W/laptop" --name mac-laptop >/dev/null
"$BIN" init --home "$W/vps" --name vps-broker >/dev/null
"$BIN" sign --home "$W/laptop" --to vps-broker --name coder --cli claude --task "Implement the plan" --cwd /srv/app \
  --model opus --arg --resume --arg x --channel general --team core > "$C/FuzzEnvelope/spawn-envelope.json"
"$BIN" sign --home "$W/laptop" --to vps-broker --name c --cli codex > "$C/FuzzEnvelope/minimal-envelope.json"
python3 - "$C" <<'PY'
import base64, json, sys
c = sys.argv[1]
env = json.load(open(f"{c}/FuzzEnvelope/spawn-envelope.json"))
payload = base64.urlsafe_b64decode(env["payload"] + "=" * (-len(env["payload"]) % 4))
open(f"{c}/FuzzEnvelope/spawn-payload.json", "wb").write(payload)
req = json.loads(payload)
ctl = {"op": "release", "name": "coder", "from": req["from"], "to": req["to"], "iat": req["iat"], "exp": req["exp"], "nonce": req["nonce"]}
open(f"{c}/FuzzEnvelope/control-payload.json", "w").write(json.dumps(ctl, separators=(",", ":")))
spawn = {k: req[k] for k in ("name", "cli", "task", "cwd", "model", "args", "channels", "team") if k in req}
open(f"{c}/FuzzHookInput/bare-envelope.json", "w").write(json.dumps(env, separators=(",", ":")))
open(f"{c}/FuzzHookInput/with-spawn.json", "w").write(json.dumps({"envelope": env, "spawn": spawn}, separators=(",", ":")))
open(f"{c}/FuzzHookInput/extra-field.json", "w").write(json.dumps({"envelope": env, "spawn": dict(spawn, shadow_of="x")}))
receipt = {"v": 1, "decision": "allow", "reason": "allowed", "detail": "allowed by rule 'laptop-app'", "request_id": "00",
           "rule": "laptop-app", "pid": 4242, "started_at": req["iat"], "layers": ["landlock", "seccomp"],
           "agents": [{"name": "coder", "pid": 4242}], "released": []}
open(f"{c}/FuzzWireBody/receipt-payload", "wb").write(b"\x01" + json.dumps(receipt).encode())
deny = {"v": 1, "decision": "deny", "reason": "replay", "detail": "nonce already used", "request_id": None}
open(f"{c}/FuzzWireBody/deny-payload", "wb").write(b"\x01" + json.dumps(deny).encode())
open(f"{c}/FuzzWireBody/receipt-envelope", "wb").write(b"\x02" + json.dumps(env).encode())
open(f"{c}/FuzzWireBody/sealed-junk", "wb").write(b"\x00" + json.dumps({"sealed": base64.urlsafe_b64encode(bytes(120)).decode().rstrip("=")}).encode())
open(f"{c}/FuzzWireBody/base64", "wb").write(b"\x03" + base64.urlsafe_b64encode(bytes(range(64))).rstrip(b"="))
PY

cp policy/policy.yaml "$C/FuzzPolicy/default.yaml"
for f in policy/examples/*.yaml; do cp "$f" "$C/FuzzPolicy/example-$(basename "$f")"; done
cp "$W/laptop/peers.yaml" "$C/FuzzPolicy/peers.yaml" 2>/dev/null || true

cp "$W/laptop/identity.pub" "$C/FuzzKeyLine/identity.pub" 2>/dev/null || "$BIN" key show --home "$W/laptop" > "$C/FuzzKeyLine/identity.pub"
printf 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl \r\n' > "$C/FuzzKeyLine/crlf.pub"
printf 'command="/bin/true",restrict ssh-ed25519 AAAA x\n' > "$C/FuzzKeyLine/options.pub"
printf 'SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU\n' > "$C/FuzzKeyLine/fingerprint"
ssh-keygen -q -t ed25519 -N '' -C fuzz-seed -f "$W/seed" && cp "$W/seed" "$C/FuzzKeyLine/openssh-private-key"

# HTTP framing: answers a peer could send (the first byte says where the target cuts them in two) and requests a
# local caller could pipeline on the hook socket.
mkdir -p "$C"/{FuzzHTTPResponse,FuzzHTTPRequest}
printf '\x80HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}' > "$C/FuzzHTTPResponse/content-length.http"
printf '\x80HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{"a"\r\n3\r\n:1}\r\n0\r\nX-Trailer: t\r\n\r\n' > "$C/FuzzHTTPResponse/chunked.http"
printf '\x40HTTP/1.0 401 Unauthorized\r\nConnection: close\r\n\r\nno' > "$C/FuzzHTTPResponse/to-end.http"
printf 'POST /v1/hook HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n' > "$C/FuzzHTTPRequest/pipelined.http"
printf 'POST /v1/hook HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n' > "$C/FuzzHTTPRequest/chunked.http"
echo "seeds written to $C: $(find "$C" -type f | wc -l) files"
