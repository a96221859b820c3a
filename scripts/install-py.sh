#!/usr/bin/env bash
# The Python packages the tests drive spawngate with, in a venv of the build tree (.build-py/venv, git-ignored):
#   mcp  the reference MCP client (PyPI `mcp`), which Tests/Interop/mcp_client.py uses to drive `spawngate mcp`.
# The system Python is not touched. If `python3 -m venv` is missing (Debian ships it apart), python3-venv is
# installed through install-deps.sh. Idempotent: a venv that already imports the pinned version is left alone.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=.build-py/venv
MCP_VERSION=1.30.0
PYTHON=${PYTHON:-python3}

fail() { echo "install-py: $*" >&2; exit 1; }

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$MCP_VERSION')" 2>/dev/null; then
  exit 0
fi

if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
  bash scripts/install-deps.sh python3-venv
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV" || fail "cannot make a venv with $PYTHON (install python3-venv: apt-get install -y python3-venv)"
mkdir -p .build-py
echo "install-py: installing mcp==$MCP_VERSION into $VENV"
if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --retries 1 --timeout 30 "mcp==$MCP_VERSION" >.build-py/pip.log 2>&1; then
  tail -n 5 .build-py/pip.log >&2
  fail "could not install mcp==$MCP_VERSION from PyPI (no network, or an index/proxy setting: see .build-py/pip.log), so the MCP tests cannot run"
fi
"$VENV/bin/python" -c 'import mcp.client.stdio' || fail "mcp installed but does not import"
