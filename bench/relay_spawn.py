#!/usr/bin/env python3
"""Starting an Agent Relay relay worker: the broker's own POST /api/spawn against the same start through spawngate.

On loopback and offline (Tests/Interop/relaycast_standin.py plays the Relaycast cloud; telemetry off) it runs the real
v6 broker (.build-relay/v6/agent-relay-broker) in a project directory and two spawngate homes (laptop, vps), `spawngate
serve` deciding for the vps under a `spawner: agent-relay` rule, and times, interleaved per round:
  a    POST /api/spawn {name, cli, task, cwd} with the broker's X-API-Key, to its HTTP answer, and to the moment the
       program runs (its first act is to log the time: the broker answers before it has run);
  b1   `agent.add` through a resident `spawngate mcp` (one JSON-RPC tools/call) to the verified receipt: the gateway
       decides and calls the same POST /api/spawn with `spawngate-launch SOCKET TICKET` as the program; the broker
       runs the launcher (a small C program) in the worker's PTY; it shows the ticket to the waiting gateway, which
       redeems it and hands over the prepared start; the launcher starts the CLI in the `standard` sandbox, reports;
  b2   the same through a fresh `spawngate spawn` process (its own start adds ~15-20 ms here).
The same small bash CLI every time; each worker is released and waited for after its measurement; names never repeat.
Prints medians, 95th percentiles, per-round differences and where the time goes (from the broker's log times).
Python 3 standard library only.

usage: bench/relay_spawn.py BINDIR [N] [--markdown FILE]   (BINDIR holds spawngate, spawngate-serve, spawngate-mcp)
"""
import datetime, http.client, json, os, re, select, shutil, signal, statistics, subprocess, sys, tempfile, time

from targets import add_target

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROKER = os.path.join(ROOT, ".build-relay", "v6", "agent-relay-broker")
GIVE_UP = time.monotonic() + 170  # the whole run ends within ~3 minutes, measured or not
TITLE = "## Relay worker start: spawngate vs the broker's own POST /api/spawn"
# The CLI logs its start time first (bash: $EPOCHREALTIME needs no fork), then acts as a coding agent in a terminal:
# a prompt with Agent Relay's ready marker, a new prompt per typed line. Absolute paths: the sandbox gives it no PATH.
CLI = """#!/bin/bash
echo "$EPOCHREALTIME" >> '{log}'
printf 'Welcome to relay-bench ->pty:ready\\n> '
while IFS= read -r line; do printf '\\n> '; done
exec /bin/sleep 600
"""
med = statistics.median


class Fail(Exception):
    pass


def p95(xs):
    return sorted(xs)[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


def wait_for(what, probe, within):
    """Polls probe() until it answers something truthy, never past `within` seconds nor the whole run's bound."""
    end = min(time.monotonic() + within, GIVE_UP)
    while time.monotonic() < end:
        try:
            got = probe()
        except OSError:  # not there yet: a file not written, a port not listening
            got = None
        if got:
            return got
        time.sleep(0.002)
    raise Fail(f"gave up waiting for {what} ({'the run took too long' if time.monotonic() >= GIVE_UP else f'{within} s'})")


def run(argv, what):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=max(1, min(60, GIVE_UP - time.monotonic())))
    if r.returncode != 0:
        raise Fail(f"{what} failed (exit {r.returncode}): {(r.stdout + r.stderr).strip()[:600]}")
    return r.stdout


def api(method, url, path, body=None, key=None):
    """One request on a fresh connection, as spawngate's client makes it (http.client sends a small body in one write)."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        c.request(method, path, body=body, headers={"Content-Type": "application/json", **({"X-API-Key": key} if key else {})})
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


class MCP:
    """`spawngate mcp` over stdio: newline-delimited JSON-RPC, one request at a time, every read bounded."""

    def __init__(self, argv, procs):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(self.p)
        self.id, self.buf = 0, b""
        self.request("initialize", {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "relay_spawn.py", "version": "1"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def send(self, msg):
        self.p.stdin.write(json.dumps(msg).encode() + b"\n")
        self.p.stdin.flush()

    def request(self, method, params):
        self.id += 1
        self.send({"jsonrpc": "2.0", "id": self.id, "method": method, "params": params})
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                if (msg := json.loads(line)).get("id") == self.id:
                    return msg
            if not select.select([self.p.stdout], [], [], max(0, min(60, GIVE_UP - time.monotonic())))[0]:
                raise Fail(f"spawngate mcp did not answer {method}")
            if not (chunk := os.read(self.p.stdout.fileno(), 65536)):
                raise Fail("spawngate mcp closed its output")
            self.buf += chunk

    def call(self, tool, args):
        res = self.request("tools/call", {"name": tool, "arguments": args}).get("result") or {}
        if res.get("isError", True):
            raise Fail(f"{tool} failed: {json.dumps(res)[:600]}")


def main():
    args, md = sys.argv[1:], None
    if "--markdown" in args:
        md = args.pop(args.index("--markdown") + 1)
        args.remove("--markdown")
    if not args:
        sys.exit(__doc__.strip().splitlines()[-1])
    rounds, sg = int(args[1]) if len(args) > 1 else 21, os.path.join(os.path.abspath(args[0]), "spawngate")

    def out(text):
        print(text)
        if md:
            with open(md, "a") as f:
                f.write(text + "\n")

    if not os.access(BROKER, os.X_OK):
        return out(f"\n{TITLE}\n\nNot measured: the Agent Relay broker is not installed ({BROKER} is missing; `make relay` puts it there).")
    work = os.path.realpath(tempfile.mkdtemp(prefix="spawngate-relay-bench-"))
    laptop, vps, project, cli, starts = (f"{work}/{p}" for p in ("laptop", "vps", "project", "bin/relay-bench-cli", "project/starts.log"))
    marker = f"SPAWNGATE_RELAY_BENCH={os.getpid()}-{time.time_ns()}"  # in the broker's environment: finds what it leaves
    procs = []

    def start(argv, name, **kw):
        log = f"{work}/{name}.log"
        procs.append(subprocess.Popen(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True, **kw))
        return lambda: next((ln[ln.index("http://"):].split()[0].rstrip(",") for ln in open(log) if "listening on http" in ln), None)

    try:
        for d in (f"{work}/bin", project, f"{work}/relay-home"):
            os.makedirs(d)
        open(starts, "w").close()
        with open(cli, "w") as f:
            f.write(CLI.format(log=starts))
        os.chmod(cli, 0o755)  # the policy wants a CLI owned by us and writable by no one else

        # The Relaycast stand-in, then the broker pointed at it and at nothing else.
        rc = wait_for("the Relaycast stand-in", start([sys.executable, f"{ROOT}/Tests/Interop/relaycast_standin.py", "--log", f"{work}/relaycast.jsonl"], "standin"), 20)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": f"{work}/relay-home", "AGENT_RELAY_TELEMETRY_DISABLED": "1",
               "DO_NOT_TRACK": "1", "DISABLE_AUTOUPDATER": "1", "RELAYCAST_BASE_URL": rc, "RELAY_BASE_URL": rc,
               "RELAYCAST_WS_URL": rc.replace("http:", "ws:"), "RELAY_BROKER_API_KEY": f"br_bench_{os.getpid()}", **dict([marker.split("=", 1)])}
        start([BROKER, "init", "--name", "vps-broker", "--api-port", "0", "--persist"], "broker", cwd=project, env=env)
        conn = wait_for("the broker's .agent-relay/connection.json", lambda: (lambda c: c.get("api_key") == env["RELAY_BROKER_API_KEY"] and c)(
            json.load(open(f"{project}/.agent-relay/connection.json"))), 30)
        broker, key = conn["url"], conn["api_key"]
        wait_for("the broker's /health", lambda: api("GET", broker, "/health")[0] == 200, 20)

        # Two spawngate homes; the vps enrolls the laptop's key and allows the CLI as a relay worker in the project.
        # startup_check: 0s, so the receipt comes once the launcher has started the CLI (the default, 1s, watches it
        # for a second first: a deliberate wait, not start-up cost).
        run([sg, "init", "--home", laptop, "--name", "mac-laptop"], "init")
        run([sg, "init", "--home", vps, "--name", "vps-broker"], "init")
        lkey, lfp = run([sg, "key", "show", "--home", laptop], "key show").strip().splitlines()[-2:]
        run([sg, "key", "enroll", "mac-laptop", "--key", lkey, "--fingerprint", lfp, "--home", vps], "key enroll")
        with open(f"{vps}/policy/policy.yaml", "w") as f:
            f.write(f"version: 1\naccept_remote_spawn: true\nclis:\n  benchcli: {{path: {cli}, args: [[]]}}\nrules:\n  - {{name: laptop-relay, "
                    f"brokers: [mac-laptop], clis: [benchcli], cwd: [{project}/**], spawner: agent-relay, sandbox: standard, "
                    f"startup_check: 0s, rate: 100000/second, burst: 100000}}\n")
        os.chmod(f"{vps}/policy/policy.yaml", 0o600)
        run([sg, "policy", "check", "--home", vps], "policy check")
        gw = wait_for("spawngate serve", start([sg, "serve", "--home", vps, "--listen", "127.0.0.1:0"], "serve"), 20)
        vkey, vfp = run([sg, "key", "show", "--home", vps], "key show").strip().splitlines()[-2:]
        run([sg, "peer", "add", "vps-broker", "--url", gw, "--key", vkey, "--fingerprint", vfp, "--home", laptop], "peer add")
        mcp, logged = MCP([sg, "mcp", "--home", laptop], procs), [0]

        def program_ran():
            lines = open(starts).read().splitlines()
            if len(lines) > logged[0]:
                logged[0] = len(lines)
                return float(lines[-1])

        def no_cli_left():  # by command line: a sandboxed CLI has a pid namespace, so the pid it sees is no help
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    if cli.encode() in open(f"/proc/{pid}/cmdline", "rb").read() and open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
                        return False
                except OSError:
                    pass
            return True

        def measure(kind, name, within):
            """One start: (wall time sent, seconds to the answer, wall time the program ran); then released."""
            sent, t0 = time.time(), time.perf_counter()
            if kind == "a":
                status, text = api("POST", broker, "/api/spawn", json.dumps({"name": name, "cli": cli, "task": "Implement the plan", "cwd": project}).encode(), key)
                if status // 100 != 2:
                    raise Fail(f"the broker answered POST /api/spawn with {status}: {text[:400]}")
            elif kind == "b1":
                mcp.call("agent.add", {"name": name, "cli": "benchcli", "task": "Implement the plan", "broker": "vps-broker", "cwd": project})
            else:
                run([sg, "spawn", name, "benchcli", "Implement the plan", "--broker", "vps-broker", "--cwd", project, "--home", laptop, "--timeout", "10"], "spawngate spawn")
            answered, ran = time.perf_counter() - t0, wait_for(f"{name}'s program to run", program_ran, within)
            if kind != "a":
                mcp.call("agent.remove", {"name": name, "broker": "vps-broker"})
            # The broker forgets the worker (and ends it, for a). v6 wants a JSON body here: an empty one gets a 400.
            api("DELETE", broker, f"/api/spawned/{name}", b"{}", key)
            wait_for(f"{name}'s program to exit", no_cli_left, 10)
            return sent, answered, ran

        # 3 warm-up rounds with long bounds: they also show the broker really works (a v6 broker has stalled ~16 s on
        # the stand-in early on).
        res = {k: [] for k in ("a", "b1", "b2")}
        # The launcher's own start, interleaved: `spawngate-launch` given a socket nobody listens at (it starts, fails
        # to connect and stops; it starts nothing).
        fresh = []

        def timed(argv, want):
            t0 = time.perf_counter()
            r = subprocess.run(argv, capture_output=True, timeout=10)
            if r.returncode != want:
                raise Fail(f"{' '.join(argv)} exited {r.returncode}, not {want}: {r.stderr.decode()[-400:]}")
            return (time.perf_counter() - t0) * 1e3
        for i in range(3 + rounds):
            for kind in res:
                name = f"bench-{kind}-{os.getpid()}-{i}"
                m = measure(kind, name, 40 if i < 3 else 15)
                if i >= 3:
                    res[kind].append((name,) + m)
            v = timed([sg + "-launch", f"{work}/no-such.sock", "A" * 43], 1)
            if i >= 3:
                fresh.append(v)

        # When the broker began each spawn ("spawning worker" in its log) splits each path in three: before the
        # broker, the broker until the program runs, the program running until the answer.
        began = {}
        for line in open(f"{work}/broker.log"):
            if m := re.match(r"(\S+Z) .*spawning worker.*name=(\S+)", re.sub(r"\x1b\[[0-9;]*m", "", line)):
                began[m.group(2)] = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()

        def split(kind):
            parts = [((began[n] - s) * 1e3, (r - began[n]) * 1e3, (s + t - r) * 1e3) for n, s, t, r in res[kind] if n in began]
            return [med(p[i] for p in parts) for i in range(3)] if parts else [float("nan")] * 3
        (a0, a1, _), (b0, b1, b2) = split("a"), split("b1")
        ms = {k: [x[2] * 1e3 for x in v] for k, v in res.items()}
        ran = {k: [(x[3] - x[1]) * 1e3 for x in v] for k, v in res.items()}
        d1, d2, d3 = ([b - a for a, b in zip(x, y)] for x, y in ((ms["a"], ms["b1"]), (ms["a"], ms["b2"]), (ran["a"], ms["b1"])))
        rows = [("(a) broker `POST /api/spawn` → its HTTP answer", ms["a"]), ("(a) broker `POST /api/spawn` → the program runs", ran["a"]),
                ("(b1) `agent.add` via a running `spawngate mcp` → verified receipt", ms["b1"]), ("(b1) `agent.add` → the program runs", ran["b1"]),
                ("(b2) a `spawngate spawn` process → verified receipt", ms["b2"]), ("(b1) − (a)", d1), ("(b2) − (a)", d2),
                ("(b1) receipt − (a) program runs", d3)]
        out(f"\n{TITLE}\n\n"
            f"The same small CLI started as a relay worker of the real Agent Relay broker (v6.0.0) on loopback, {rounds} rounds "
            "interleaved after 3 warm-up ones. (a) is the broker's native path, `POST /api/spawn` straight to its API. It answers "
            "once it has accepted the spawn, before the worker's program has run, so a second (a) row times until the program "
            "itself logs that it runs. (b) goes through spawngate: a signed request decided by the target's gateway (`spawner: "
            "agent-relay`, `sandbox: standard`, `startup_check: 0s`), which calls the same `POST /api/spawn` with its launcher as "
            "the worker's program; the launcher shows its ticket to the waiting gateway, which redeems it and hands over the start it "
            "prepared; the launcher starts the CLI in the sandbox and reports it started, and only "
            "then does the requester get its verified receipt. So (b) waits for the program to be started and (a) does not, and (b) "
            "has one more process start, the launcher. (b1) is an agent's `agent.add` through a running `spawngate mcp`, (b2) a "
            "fresh `spawngate spawn` process. Differences are per round.\n\n"
            "| path | median | p95 |\n|---|---|---|\n" + "\n".join(f"| {l} | {med(x):.1f} ms | {p95(x):.1f} ms |" for l, x in rows) +
            f"\n\nWhere (b1)'s time goes (medians, from the broker's log): {b0:.1f} ms until the broker begins the spawn (signing, "
            f"the gateway's decision and audit; (a): {a0:.1f} ms), {b1:.1f} ms from there until the program runs ((a): {a1:.1f} ms; "
            f"the difference is the launcher: its process, the ticket's redemption by the gateway and the sandbox), and {b2:.1f} ms "
            "from the program running to the receipt (the launcher's report to the waiting gateway, the record, the signed receipt). "
            f"Of the launcher's {b1 - a1:.1f} ms (measured in the same rounds): starting `spawngate-launch` "
            f"(the same program given a socket nobody listens at, so it stops at once) {med(fresh):.1f} ms; the other {b1 - a1 - med(fresh):.1f} ms "
            "are the gateway redeeming the ticket (the key, the policy and the binary checked again) and preparing the start "
            "(the cwd opened, the Landlock ruleset, the seccomp program), the hand-over on the socket, and the CLI started under "
            "`standard`.\n\n"
            + f"Target (b) ≤ (a) + 5 ms, as the median of (b1) − (a): {med(d1):.1f} ms: " + ("met." if med(d1) <= 5 else "**not met**."))
        if md:
            add_target(md, "a relay worker through spawngate ≤ 5 ms over the broker's own `POST /api/spawn` (the median of (b1) − (a))",
                       f"{med(d1):.1f} ms ((b1) {med(ms['b1']):.1f} ms, (a) {med(ms['a']):.1f} ms)", med(d1) <= 5,
                       f"(b1) against (a), split at the broker's log line: before the broker begins the spawn {b0:.1f} ms against {a0:.1f} "
                       f"(signing, the gateway's decision, audit and commit); from there until the program runs {b1:.1f} ms against {a1:.1f} "
                       f"(the launcher's own start {med(fresh):.1f} ms, the gateway's redemption of its ticket, the hand-over and the sandboxed "
                       f"start {b1 - a1 - med(fresh):.1f} ms); from the program running to the verified receipt {b2:.1f} ms (the launcher's "
                       f"report, the record of the start, the signed receipt). (a) answers {med(ran['a']) - med(ms['a']):.1f} ms before its own "
                       f"program runs, (b) only once its program has started: against (a)'s program running, (b1)'s receipt is {med(d3):.1f} ms later. "
                       "See the relay section below")
    except (Fail, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as e:
        out(f"\n{TITLE}\n\nNot measured: {e}")
        for n in ("broker", "serve"):
            if os.path.exists(f"{work}/{n}.log"):
                print(f"--- the end of {n}.log:\n" + open(f"{work}/{n}.log").read()[-1500:], file=sys.stderr)
        sys.exit(1)
    finally:
        cleanup(sg, vps, procs, marker, work)


def cleanup(sg, vps, procs, marker, work):
    """On success and failure alike: releases what the gateway started, stops every process this run started and any
    the broker left (found by the marker in their environment), then removes the temp directory."""
    try:
        if os.path.exists(f"{vps}/state.db"):
            agents = subprocess.run([sg, "agents", "--json", "--home", vps], capture_output=True, text=True, timeout=10).stdout
            for n in {a["name"] for a in json.loads(agents or "[]")}:
                subprocess.run([sg, "release", n, "--grace", "1", "--home", vps], capture_output=True, timeout=10)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        pass
    for p in reversed(procs):  # each leads its own session: its group is what it started
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in open(f"/proc/{pid}/environ", "rb").read().split(b"\0"):
                os.kill(int(pid), signal.SIGKILL)
        except OSError:  # gone meanwhile
            pass
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
