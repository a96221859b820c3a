#!/bin/bash
# A stand-in coding-agent CLI for the Agent Relay interop tests: the brokers start it instead of claude/codex and it
# writes down what it was given. Bash and /bin/mkdir only (no PATH lookups), so it works even with a scrubbed environment.
#
# Records go into "$PROBE_DIR/<agent>/", where <agent> is $RELAY_AGENT_NAME (else "pid-<pid>"); without PROBE_DIR
# (a scrubbed environment) into "<cwd>/.probe/<agent>/". Files:
#   argv     its arguments, one per line, exactly as received (not $0)
#   env      the names of its environment variables as exec'd (from /proc/self/environ), one per line, no values
#   cwd      its working directory (physical)
#   tty      "tty" when standard input is a terminal, else "notty"
#   pid      its process id
#   ready    the time (epoch seconds with nanoseconds) it printed its prompt
#   input    every line typed into its terminal, appended as read (raw: escape sequences and all)
#   typed    the time of each input line, "EPOCHREALTIME line-number"
#
# It then shows a prompt the brokers recognise: "Welcome to relay-probe" and a bare "> " line (v6's generic prompt
# patterns and its stricter Claude rule, welcome banner plus a bare ">" line, both match; "->pty:ready" is the
# broker's explicit ready marker). It answers every line with a new prompt, and keeps running until killed.
#
# "Dies young" variant: with PROBE_EXIT=N in the environment, or an argument --probe-exit=N, it records as above,
# writes a last line to stderr and exits with status N at once.

name="${RELAY_AGENT_NAME:-pid-$$}"
name="${name//\//_}"
here="$(pwd -P)"
dir="${PROBE_DIR:-$here/.probe}/$name"
/bin/mkdir -p "$dir"

for a in "$@"; do printf '%s\n' "$a"; done > "$dir/argv"
while IFS= read -r -d '' kv; do printf '%s\n' "${kv%%=*}"; done < /proc/$$/environ > "$dir/env"
printf '%s\n' "$here" > "$dir/cwd"
if [ -t 0 ]; then echo tty; else echo notty; fi > "$dir/tty"
echo "$$" > "$dir/pid"

exit_status="${PROBE_EXIT:-}"
for a in "$@"; do
  case "$a" in --probe-exit=*) exit_status="${a#--probe-exit=}" ;; esac
done
if [ -n "$exit_status" ]; then
  echo "relay-probe: exiting at once with status $exit_status, as asked (PROBE_EXIT / --probe-exit)" >&2
  exit "$exit_status"
fi

printf 'Welcome to relay-probe ->pty:ready\n> '
echo "$EPOCHREALTIME" > "$dir/ready"
n=0
while IFS= read -r line; do
  n=$((n + 1))
  printf '%s\n' "$line" >> "$dir/input"
  echo "$EPOCHREALTIME $n" >> "$dir/typed"
  printf '\n> '
done
# Standard input ended (not a terminal, or the terminal went away without a hangup): keep running until killed,
# blocked on a pipe nobody writes to (no child process is left behind).
exec 3<> <(:)
read -r -u 3 _
