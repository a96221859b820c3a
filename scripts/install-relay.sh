#!/usr/bin/env bash
# Puts the real Agent Relay broker binaries where the interop tests look for them:
#   .build-relay/v6/agent-relay-broker   (agent-relay-sdk 6.0.0, the version users run)
#   .build-relay/v14/agent-relay-broker  (agent-relay-sdk 14.0.0, the latest)
# The PyPI wheels of Agent Relay's Python SDK carry the broker (Linux x86_64). Each wheel is downloaded with
# `pip download --no-deps` and only the broker is unpacked from it: nothing is installed, system-wide or otherwise.
# Idempotent: a binary that is present and answers `--version` is left alone.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=.build-relay
VERSIONS="${RELAY_VERSIONS:-6.0.0 14.0.0}"
MEMBER=agent_relay/bin/agent-relay-broker

fail() { echo "install-relay: $*" >&2; exit 1; }

# v6 has no --version (only --help); v14 has both.
runs() { "$1" --version >/dev/null 2>&1 || "$1" --help >/dev/null 2>&1; }

[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] || \
  fail "the agent-relay-sdk wheels carry a Linux x86_64 broker only; this is $(uname -s)-$(uname -m), so the real-relay tests stay disabled."

if ! python3 -m pip --version >/dev/null 2>&1; then
  bash scripts/install-deps.sh python3-pip
  python3 -m pip --version >/dev/null 2>&1 || fail "pip is missing: install python3-pip (apt-get install -y python3-pip) and run 'make relay' again."
fi

for version in $VERSIONS; do
  major=${version%%.*}
  dest="$ROOT/v$major/agent-relay-broker"
  if [ -x "$dest" ] && runs "$dest"; then
    continue
  fi
  mkdir -p "$ROOT/v$major" "$ROOT/wheels"
  if ! ls "$ROOT"/wheels/agent_relay_sdk-"$version"-*.whl >/dev/null 2>&1; then
    echo "install-relay: downloading agent-relay-sdk==$version from PyPI"
    if ! python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --retries 1 --timeout 20 \
        "agent-relay-sdk==$version" -d "$ROOT/wheels" >"$ROOT/wheels/pip-$version.log" 2>&1; then
      tail -n 3 "$ROOT/wheels/pip-$version.log" >&2
      fail "could not download agent-relay-sdk==$version (no network, or PyPI unreachable: check 'python3 -m pip download --no-deps agent-relay-sdk==$version -d /tmp' and any proxy or index settings), so the real-relay tests cannot run."
    fi
  fi
  wheel=$(ls "$ROOT"/wheels/agent_relay_sdk-"$version"-*.whl | head -n 1)
  # A wheel is a zip file; Python's zipfile is always there (unzip may not be).
  python3 - "$wheel" "$MEMBER" "$dest.tmp" <<'EOF' || fail "the wheel $wheel has no $MEMBER (the package layout changed); pick another version with RELAY_VERSIONS."
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
  chmod +x "$dest.tmp"
  mv "$dest.tmp" "$dest"
  runs "$dest" || fail "$dest does not run (neither --version nor --help answers): delete $ROOT and run 'make relay' again."
  echo "install-relay: $dest ready (from agent-relay-sdk $version)"
done
