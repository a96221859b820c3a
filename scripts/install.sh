#!/usr/bin/env bash
# Installs spawngate into PREFIX: the binaries built in FROM (default: `make release`'s static build), and the
# shell completions (and man pages, when MANDIR_SRC holds them) generated from the installed binary itself.
#
#   scripts/install.sh PREFIX [FROM]        DESTDIR=… is honoured, as packagers expect.
#
# Everything spawngate needs at run time is in the binaries (Swift runtime and Foundation linked statically by
# `make release`); `spawngate serve` runs `spawngate-serve` from the same directory, and every agent's init is
# `spawngate-init` from there too, and an Agent Relay broker's worker runs `spawngate-launch` from there, so they go
# in together.
set -euo pipefail

prefix=${1:?usage: scripts/install.sh PREFIX [FROM]  (FROM defaults to .build-static/release)}
from=${2:-.build-static/release}
root="${DESTDIR:-}${prefix}"

for needed in spawngate spawngate-serve spawngate-init spawngate-launch; do
  if [ ! -x "$from/$needed" ]; then
    echo "install: $from/$needed is missing; run 'make release' first (or give the directory that holds all four)" >&2
    exit 1
  fi
done

install -d "$root/bin"
# spawngate, spawngate-serve and any other spawngate-* tool that was built (not the benchmark: it measures, and
# starts a private sshd, so it has no place on a server's PATH).
for f in "$from"/spawngate "$from"/spawngate-*; do
  name=$(basename "$f")
  case "$name" in *.*|spawngate-bench) continue ;; esac
  [ -f "$f" ] && [ -x "$f" ] || continue
  install -m 0755 "$f" "$root/bin/$name"
done

bin="$root/bin/spawngate"
install -d "$root/share/bash-completion/completions" "$root/share/zsh/site-functions" "$root/share/fish/vendor_completions.d"
"$bin" --generate-completion-script bash > "$root/share/bash-completion/completions/spawngate"
"$bin" --generate-completion-script zsh > "$root/share/zsh/site-functions/_spawngate"
"$bin" --generate-completion-script fish > "$root/share/fish/vendor_completions.d/spawngate.fish"

if [ -n "${MANDIR_SRC:-}" ] && ls "$MANDIR_SRC"/*.1 >/dev/null 2>&1; then
  install -d "$root/share/man/man1"
  # "spawngate serve.1" (the server's command name has a space) becomes spawngate-serve.1, the program's name.
  for page in "$MANDIR_SRC"/*.1; do
    name=$(basename "$page"); install -m 0644 "$page" "$root/share/man/man1/${name// /-}"
  done
fi

echo "installed spawngate $("$bin" --version) into $root"
