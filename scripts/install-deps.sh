#!/usr/bin/env bash
# Installs the system packages named on the command line when they are missing.
# apt-get where present (as root, or through sudo); elsewhere, says exactly what to install.
set -euo pipefail

missing=()
for pkg in "$@"; do
  if command -v dpkg-query >/dev/null 2>&1; then
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  fi
done

if ! command -v dpkg-query >/dev/null 2>&1; then
  # Not Debian/Ubuntu: check the essentials by what they provide.
  if ! pkg-config --exists libsodium 2>/dev/null || ! command -v ssh-keygen >/dev/null || ! command -v python3 >/dev/null; then
    echo "spawngate needs libsodium (with pkg-config), ssh-keygen and python3." >&2
    if [ "$(uname -s)" = Darwin ]; then
      echo "On macOS: brew install libsodium pkg-config python3   (ssh-keygen ships with macOS)" >&2
    else
      echo "Install them with your package manager, e.g. 'dnf install libsodium-devel pkgconf openssh-clients python3'." >&2
    fi
    exit 1
  fi
elif [ ${#missing[@]} -gt 0 ]; then
  echo "installing missing packages: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "missing packages: ${missing[*]}; run as root: apt-get install -y ${missing[*]}" >&2; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The interop tests' independent implementation uses Python's `cryptography` package.
if ! python3 -c 'import cryptography' 2>/dev/null; then
  echo "installing the Python package 'cryptography' (for the interop tests)"
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq python3-cryptography >/dev/null 2>&1 || python3 -m pip install --quiet cryptography
  else
    python3 -m pip install --quiet --user cryptography
  fi
fi
