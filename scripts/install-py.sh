#!/usr/bin/env bash
# The Python packages the tests drive spawngate with, in venvs of the build tree (.build-py/, git-ignored):
#   mcp  the reference MCP client (PyPI `mcp`), which Tests/Interop/mcp_client.py uses to drive `spawngate mcp`,
#        in both release lines the tests cover: 1.x in .build-py/venv, 2.x in .build-py/venv2.
# The system Python is not touched. If `python3 -m venv` is missing (Debian ships it apart), python3-venv is
# installed through install-deps.sh. Idempotent: a venv that already imports its pinned version is left alone.
set -euo pipefail

cd "$(dirname "$0")/.."
MCP_V1=1.30.0   # the 1.x line, in .build-py/venv
MCP_V2=2.3.0    # the current 2.x line, in .build-py/venv2
PYTHON=${PYTHON:-python3}

fail() { echo "install-py: $*" >&2; exit 1; }

# has_mcp VENV VERSION: the venv exists and its `mcp` is exactly VERSION.
has_mcp() {
  [ -x "$1/bin/python" ] && "$1/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$2')" 2>/dev/null
}

# install_mcp VENV VERSION: a fresh venv with mcp==VERSION, unless it is there already.
install_mcp() {
  local venv=$1 version=$2 log=$1.pip.log
  has_mcp "$venv" "$version" && return 0
  if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
    bash scripts/install-deps.sh python3-venv
  fi
  # Both lines need Python 3.10 or later; say so rather than let pip find "no matching distribution".
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || fail "mcp==$version needs Python 3.10 or later, and $PYTHON is $("$PYTHON" -V 2>&1); set PYTHON=/path/to/python3.10+"
  mkdir -p .build-py
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv" || fail "cannot make a venv with $PYTHON (install python3-venv: apt-get install -y python3-venv)"
  echo "install-py: installing mcp==$version into $venv"
  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --retries 1 --timeout 30 "mcp==$version" >"$log" 2>&1; then
    tail -n 5 "$log" >&2
    fail "could not install mcp==$version into $venv from PyPI (no network, or an index/proxy setting: see $log), so the MCP tests cannot run"
  fi
  "$venv/bin/python" -c 'import mcp.client.stdio' || fail "mcp==$version installed into $venv but does not import"
  has_mcp "$venv" "$version" || fail "$venv holds another mcp than $version after installing it"
}

install_mcp .build-py/venv "$MCP_V1"
install_mcp .build-py/venv2 "$MCP_V2"
