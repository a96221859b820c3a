#!/usr/bin/env python3
"""Drives headless Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe: commands on fd 3,
answers on fd 4, each a JSON text ended by a NUL byte). Standard library only.

    browser.py CHROMIUM URL < steps.json > results.json

Steps (a JSON array), run in order in one page:
  {"op": "eval", "js": EXPR}                       the value of EXPR (promises awaited)
  {"op": "wait", "js": EXPR, "timeout": SECONDS}   polls until EXPR is truthy; its value, or {"timeout": true}
  {"op": "screenshot", "path": FILE}                a PNG of the viewport
The browser gets a throwaway profile, no network beyond loopback (every name but 127.0.0.1 fails to resolve, and
any other address goes to a dead proxy), no first-run, sync, metrics or component updates. The results (one per
step) go to stdout as a JSON array; the page's console errors and failed loads are the last element.
"""
import base64
import json
import os
import shutil
import signal
import sys
import tempfile
import time


class Browser:
    def __init__(self, chromium, profile):
        cmd_r, cmd_w = os.pipe()   # we write commands, the browser reads them on fd 3
        out_r, out_w = os.pipe()   # the browser writes answers on fd 4
        args = [chromium, "--headless=new", "--remote-debugging-pipe", "--user-data-dir=" + profile,
                "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
                "--disable-breakpad", "--disable-crash-reporter", "--disable-domain-reliability", "--no-pings",
                "--metrics-recording-only", "--disable-client-side-phishing-detection", "--disable-dev-shm-usage",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--proxy-server=http://127.0.0.1:9",   # loopback bypasses it; anything else goes nowhere
                "--disable-gpu", "--hide-scrollbars", "--mute-audio", "--window-size=1200,1000", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")   # Chromium refuses to run as root with its sandbox
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.setsid()
                os.dup2(cmd_r, 3)
                os.dup2(out_w, 4)
                for fd in (3, 4):
                    os.set_inheritable(fd, True)
                devnull = os.open(os.devnull, os.O_RDWR)
                os.dup2(devnull, 0)
                os.dup2(devnull, 1)
                log = os.open(os.path.join(profile, "chromium.log"), os.O_WRONLY | os.O_CREAT, 0o600)
                os.dup2(log, 2)
                os.closerange(5, 1024)
                os.execv(chromium, args)
            finally:
                os._exit(127)
        os.close(cmd_r)
        os.close(out_w)
        self.w, self.r = cmd_w, out_r
        self.buffer = b""
        self.next_id = 0
        self.events = []

    def send(self, method, params=None, session=None):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.w, json.dumps(message).encode() + b"\0")
        while True:
            answer = self.read()
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def read(self):
        while b"\0" not in self.buffer:
            chunk = os.read(self.r, 65536)
            if not chunk:
                raise RuntimeError("the browser closed its DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)


def main():
    chromium, url = sys.argv[1], sys.argv[2]
    steps = json.load(sys.stdin)
    profile = tempfile.mkdtemp(prefix="spawngate-chromium-")
    signal.alarm(150)   # a hung browser never hangs the test run
    browser = Browser(chromium, profile)
    results, problems = [], []
    try:
        target = next(t for t in browser.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        session = browser.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
        browser.send("Page.enable", session=session)
        browser.send("Runtime.enable", session=session)
        browser.send("Log.enable", session=session)
        browser.send("Page.navigate", {"url": url}, session=session)

        def evaluate(js):
            r = browser.send("Runtime.evaluate", {"expression": js, "returnByValue": True, "awaitPromise": True}, session=session)
            if "exceptionDetails" in r:
                return {"exception": r["exceptionDetails"].get("exception", {}).get("description") or r["exceptionDetails"].get("text")}
            return r["result"].get("value")

        def wait(js, timeout):
            deadline = time.time() + timeout
            while True:
                value = evaluate(js)
                if value and not (isinstance(value, dict) and "exception" in value):
                    return value
                if time.time() >= deadline:
                    return {"timeout": True, "last": value}
                time.sleep(0.1)

        wait("document.readyState === 'complete'", 20)
        for step in steps:
            if step["op"] == "eval":
                results.append(evaluate(step["js"]))
            elif step["op"] == "wait":
                results.append(wait(step["js"], step.get("timeout", 10)))
            elif step["op"] == "screenshot":
                png = base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"}, session=session)["data"])
                with open(step["path"], "wb") as f:
                    f.write(png)
                results.append(len(png))
            else:
                raise RuntimeError(f"unknown step {step['op']}")
        for e in browser.events:
            if e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error":
                problems.append(e["params"]["entry"].get("text"))
            if e.get("method") == "Runtime.exceptionThrown":
                problems.append(e["params"]["exceptionDetails"].get("text"))
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)
    results.append({"problems": problems})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
