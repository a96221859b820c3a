/// The dashboard's page: one HTML file, one script, one style sheet, served by the dashboard itself (no build step,
/// nothing from another origin; the Content-Security-Policy allows only these). The script puts every text it shows
/// into the page as text (`textContent`), never as HTML: names, working directories and details come from requests
/// other brokers signed.
enum DashboardAssets {
    static let html = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>spawngate dashboard</title>
        <link rel="stylesheet" href="/app.css">
        <script src="/app.js" defer></script>
        </head>
        <body>
        <header>
          <h1>spawngate <span id="self-name"></span></h1>
          <span id="self-fingerprint" class="mono dim"></span>
          <span id="status" class="dim">loading…</span>
          <button id="spawn-open" type="button">Spawn Agent</button>
        </header>
        <main>
          <section id="brokers-section">
            <h2>Brokers</h2>
            <table id="brokers"><thead><tr><th>broker</th><th>url</th><th>key</th><th>answers</th></tr></thead><tbody></tbody></table>
          </section>
          <section id="agents-section">
            <h2>Agents <span class="dim">(this broker's, on each broker; from each one's signed listing)</span></h2>
            <table id="agents"><thead><tr><th>broker</th><th>name</th><th>cli</th><th>cwd</th><th>pid</th><th>sandbox</th><th>state</th><th></th></tr></thead><tbody></tbody></table>
          </section>
          <section id="approvals-section">
            <h2>Waiting for approval <span class="dim">(held here by rules that say approve:)</span></h2>
            <table id="approvals"><thead><tr><th>id</th><th>from</th><th>name</th><th>rule</th><th>argv</th><th>cwd</th><th>state</th><th></th></tr></thead><tbody></tbody></table>
          </section>
          <section id="decisions-section">
            <h2>Recent decisions <span class="dim">(this broker's audit log)</span></h2>
            <table id="decisions"><thead><tr><th>time</th><th>decision</th><th>reason</th><th>rule</th><th>from</th><th>detail</th></tr></thead><tbody></tbody></table>
          </section>
          <section id="policy-section">
            <h2>Policy</h2>
            <p id="policy-status"></p>
            <ul id="policy-tests"></ul>
          </section>
          <p id="message" role="status"></p>
        </main>
        <dialog id="spawn-dialog">
          <form id="spawn-form" method="dialog">
            <h2>Spawn Agent</h2>
            <p class="dim">Signed with this broker's key; the chosen broker's policy decides.</p>
            <label>Broker <select id="spawn-broker" required></select></label>
            <label>Name <input id="spawn-name" required maxlength="128" autocomplete="off"></label>
            <label>CLI <input id="spawn-cli" required maxlength="128" autocomplete="off" placeholder="claude"></label>
            <label>Task <textarea id="spawn-task" rows="3" maxlength="32000"></textarea></label>
            <label>Working directory <input id="spawn-cwd" maxlength="4096" autocomplete="off" placeholder="/srv/app"></label>
            <label>Model <input id="spawn-model" maxlength="128" autocomplete="off"></label>
            <label>Arguments <span class="dim">(one per line)</span> <textarea id="spawn-args" rows="2" maxlength="4096"></textarea></label>
            <p id="spawn-result" role="status"></p>
            <div class="buttons">
              <button id="spawn-cancel" type="button">Close</button>
              <button id="spawn-submit" type="submit">Spawn</button>
            </div>
          </form>
        </dialog>
        </body>
        </html>

        """

    static let style = """
        :root { color-scheme: light; font: 14px/1.4 system-ui, sans-serif; color: #1d2330; background: #f5f6f8; }
        body { margin: 0; }
        header { display: flex; align-items: baseline; gap: 1em; padding: .8em 1.5em; background: #1d2330; color: #fff; }
        header h1 { font-size: 1.2em; margin: 0; }
        header .dim { color: #aab; }
        header button { margin-left: auto; }
        main { padding: .5em 1.5em 2em; }
        section { background: #fff; border: 1px solid #dde; border-radius: 6px; padding: .3em 1em .8em; margin: 1em 0; }
        h2 { font-size: 1em; margin: .6em 0; }
        table { border-collapse: collapse; width: 100%; }
        th, td { text-align: left; padding: .25em .6em; border-bottom: 1px solid #eef; vertical-align: top; }
        th { font-weight: 600; color: #556; }
        .mono, td.mono { font-family: ui-monospace, monospace; font-size: .92em; }
        .dim { color: #778; font-weight: normal; }
        .ok { color: #17733b; font-weight: 600; }
        .bad { color: #b3261e; font-weight: 600; }
        .wrap { max-width: 38em; overflow-wrap: anywhere; }
        #decisions td:nth-child(-n+5) { white-space: nowrap; }
        button { font: inherit; padding: .3em .9em; border-radius: 4px; border: 1px solid #889; background: #fff; cursor: pointer; }
        button.primary, #spawn-submit, #spawn-open { background: #2956c7; color: #fff; border-color: #2956c7; }
        dialog { border: 1px solid #889; border-radius: 8px; width: 32em; }
        dialog label { display: block; margin: .5em 0; }
        dialog input, dialog select, dialog textarea { display: block; width: 100%; box-sizing: border-box; font: inherit; }
        .buttons { display: flex; justify-content: flex-end; gap: .6em; }
        #policy-tests { margin: 0; padding-left: 1.2em; }
        #message:empty, #spawn-result:empty { display: none; }

        """

    static let script = """
        "use strict";
        // The secret comes in the URL's fragment (#s=…), which the browser never sends; it is kept for this tab only
        // and sent back as a header on every API call. It is taken out of the address bar.
        const secret = (() => {
          const m = /(?:^#|&)s=([A-Za-z0-9_-]+)/.exec(location.hash);
          if (m) { sessionStorage.setItem("spawngate-secret", m[1]); history.replaceState(null, "", location.pathname); }
          return sessionStorage.getItem("spawngate-secret") || "";
        })();

        async function api(path, body) {
          const init = { headers: { "X-Spawngate-Secret": secret }, cache: "no-store" };
          if (body !== undefined) {
            init.method = "POST";
            init.headers["Content-Type"] = "application/json";
            init.body = JSON.stringify(body);
          }
          const r = await fetch(path, init);
          let data = {};
          try { data = await r.json(); } catch (e) { data = { error: "HTTP " + r.status }; }
          if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
          return data;
        }

        function el(tag, text, cls) {
          const e = document.createElement(tag);
          if (text !== undefined && text !== null) e.textContent = String(text);
          if (cls) e.className = cls;
          return e;
        }
        function row(cells) {
          const tr = document.createElement("tr");
          for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", c));
          return tr;
        }
        function fill(id, rows) { const b = document.querySelector("#" + id + " tbody"); b.replaceChildren(...rows); }
        function when(t) { return typeof t === "number" ? new Date(t * 1000).toLocaleString() : "-"; }
        const show = (v) => (v === null || v === undefined ? "-" : v);

        let last = null;
        function render(s) {
          last = s;
          document.getElementById("self-name").textContent = s.self;
          document.getElementById("self-fingerprint").textContent = s.fingerprint;
          fill("brokers", s.brokers.map((b) => {
            const name = el("td", b.name + (b.self ? " (this broker)" : ""));
            const answers = el("td", b.answers ? "answers" : "no: " + show(b.detail), b.answers ? "ok" : "bad wrap");
            return row([name, el("td", show(b.url), "mono"), el("td", b.fingerprint, "mono"), answers]);
          }));
          const agents = [];
          for (const b of s.brokers) {
            if (b.error) agents.push(row([b.name, el("td", b.error, "bad wrap")]));
            for (const a of b.agents || []) {
              const tr = row([b.name, a.name, a.cli, el("td", a.cwd, "mono"), show(a.pid), show(a.sandbox),
                el("td", a.state === "running" ? "running" : "exited " + show(a.exit_status), a.state === "running" ? "ok" : "dim")]);
              tr.dataset.broker = b.name; tr.dataset.agent = a.name; tr.dataset.state = a.state;
              const cell = el("td");
              if (a.state === "running") {
                const button = el("button", "Release", "release");
                button.type = "button";
                button.addEventListener("click", () => release(b.name, a.name, button));
                cell.appendChild(button);
              }
              tr.appendChild(cell);
              agents.push(tr);
            }
          }
          if (agents.length === 0) agents.push(row([el("td", "no agents of this broker on any broker that answers", "dim")]));
          fill("agents", agents);
          const ap = s.approvals || { entries: [] };
          if (ap.error) fill("approvals", [row([el("td", ap.error, "bad")])]);
          else if (ap.entries.length === 0) fill("approvals", [row([el("td", "no requests held for approval", "dim")])]);
          else fill("approvals", ap.entries.map((h) => {
            const waiting = h.state === "pending";
            const tr = row([el("td", h.id, "mono"), show(h.broker), show(h.name), show(h.rule), el("td", (h.argv || []).join(" "), "mono wrap"),
              el("td", h.cwd, "mono"), el("td", waiting ? "waits until " + when(h.expires_at) : h.state + (h.by ? " by " + h.by : ""), waiting ? "" : "dim")]);
            tr.dataset.approval = h.id; tr.dataset.state = h.state;
            const cell = el("td");
            if (waiting) {
              for (const [label, verb] of [["Approve", "approve"], ["Deny", "deny"]]) {
                const button = el("button", label, verb);
                button.type = "button";
                button.addEventListener("click", () => settle(h.id, verb, button));
                cell.appendChild(button);
              }
            }
            tr.appendChild(cell);
            return tr;
          }));
          const d = s.decisions;
          if (d.error) fill("decisions", [row([el("td", d.error, "bad")])]);
          else fill("decisions", d.entries.map((e) => row([when(e.time), el("td", e.decision, e.decision === "allow" ? "ok" : e.decision === "pending" ? "" : "bad"),
            el("td", e.reason, "mono"), show(e.rule), show(e.broker), el("td", show(e.detail), "wrap")])));
          const p = s.policy, status = document.getElementById("policy-status");
          status.replaceChildren();
          if (p.status === "invalid") {
            status.appendChild(el("span", "invalid: ", "bad"));
            status.appendChild(el("span", p.errors.join("; ")));
          } else {
            status.appendChild(el("span", p.status === "ok" ? "ok" : "tests failing", p.status === "ok" ? "ok" : "bad"));
            status.appendChild(el("span", " " + p.file + ": " + p.clis + " CLI(s), " + p.rules + " rule(s), " + p.passed + " test(s) passed, " +
              p.failed + " failed" + (p.accept_remote_spawn ? "" : "; remote spawn is disabled") + "; hash " + p.hash.slice(0, 19) + "…"));
          }
          document.getElementById("policy-tests").replaceChildren(...(p.tests || []).map((t) => el("li", t.line, t.passed ? "" : "bad"))
            .concat((p.warnings || []).map((w) => el("li", w, "dim"))));
          const select = document.getElementById("spawn-broker"), chosen = select.value;
          select.replaceChildren(...s.brokers.map((b) => {
            const o = el("option", b.name + (b.self ? " (this broker)" : "") + (b.answers ? "" : " (not answering)"));
            o.value = b.name; o.disabled = !b.configured;
            return o;
          }));
          if (chosen && s.brokers.some((b) => b.name === chosen && b.configured)) select.value = chosen;
          else { const first = s.brokers.find((b) => b.configured); if (first) select.value = first.name; }
        }

        let refreshing = false, streaming = false;
        async function refresh() {
          if (refreshing) return;
          refreshing = true;
          const status = document.getElementById("status");
          try { render(await api("/api/state")); if (!streaming) { status.textContent = "updated " + new Date().toLocaleTimeString(); status.className = "dim"; } }
          catch (e) { status.textContent = e.message; status.className = "bad"; }
          finally { refreshing = false; }
        }

        function outcome(r) {
          if (r.ok) return "";
          return r.reason + ": " + r.detail + " (" + r.broker + "'s signed decision)";
        }

        async function spawn(ev) {
          ev.preventDefault();
          const v = (id) => document.getElementById(id).value;
          const args = v("spawn-args").split("\\n").map((a) => a.trim()).filter((a) => a !== "");
          const body = { broker: v("spawn-broker"), name: v("spawn-name").trim(), cli: v("spawn-cli").trim() };
          for (const [k, id] of [["task", "spawn-task"], ["cwd", "spawn-cwd"], ["model", "spawn-model"]]) { if (v(id).trim()) body[k] = v(id).trim(); }
          if (args.length) body.args = args;
          const out = document.getElementById("spawn-result"), submit = document.getElementById("spawn-submit");
          submit.disabled = true; out.className = "dim"; out.textContent = "asking " + body.broker + "…";
          try {
            const r = await api("/api/spawn", body);
            if (r.ok) { out.className = "ok"; out.textContent = "started " + r.name + " on " + r.broker + ": pid " + r.pid + ", sandbox " + show(r.sandbox) + " (receipt verified)"; }
            else { out.className = "bad"; out.textContent = outcome(r); }
          } catch (e) { out.className = "bad"; out.textContent = e.message; }
          finally { submit.disabled = false; refresh(); }
        }

        async function settle(id, verb, button) {
          const msg = document.getElementById("message");
          button.disabled = true;
          try {
            const r = await api("/api/settle", { id, settle: verb });
            msg.textContent = verb === "approve"
              ? (r.ok ? "approved " + id + ": started, pid " + show(r.pid) : id + " not started: " + r.reason + ": " + r.detail)
              : (r.ok ? "denied " + id : id + ": " + r.reason + ": " + r.detail);
            msg.className = r.ok ? "ok" : "bad";
          } catch (e) { msg.textContent = e.message; msg.className = "bad"; }
          finally { button.disabled = false; refresh(); }
        }

        async function release(broker, name, button) {
          button.disabled = true;
          const msg = document.getElementById("message");
          try {
            const r = await api("/api/release", { broker, name });
            msg.className = r.ok ? "ok" : "bad";
            msg.textContent = r.ok ? "released " + name + " on " + broker + " (receipt verified)" : outcome(r);
          } catch (e) { msg.className = "bad"; msg.textContent = e.message; button.disabled = false; }
          refresh();
        }

        // Live updates: the server-sent events of /api/events, read through fetch (EventSource cannot send the
        // secret's header). When the stream is refused or ends, the page polls once and tries again 3 s later.
        async function live() {
          const status = document.getElementById("status");
          for (;;) {
            try {
              const r = await fetch("/api/events", { headers: { "X-Spawngate-Secret": secret }, cache: "no-store" });
              if (!r.ok || !r.body) throw new Error("live updates refused (HTTP " + r.status + ")");
              streaming = true;
              const reader = r.body.getReader(), decoder = new TextDecoder();
              let buffer = "";
              for (;;) {
                const { value, done } = await reader.read();
                if (done) break;
                buffer += decoder.decode(value, { stream: true });
                let end;
                while ((end = buffer.indexOf("\\n\\n")) >= 0) {
                  const block = buffer.slice(0, end).split("\\n");
                  buffer = buffer.slice(end + 2);
                  const kind = (block.find((l) => l.startsWith("event: ")) || "").slice(7);
                  const data = block.filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\\n");
                  if (!data) continue;
                  const s = JSON.parse(data);
                  if (kind === "state") { render(s); status.textContent = "live, " + new Date().toLocaleTimeString(); status.className = "dim"; }
                  else { status.textContent = s.error; status.className = "bad"; }
                }
              }
            } catch (e) { status.textContent = e.message; status.className = "bad"; }
            streaming = false;
            await refresh();
            await new Promise((resolve) => setTimeout(resolve, 3000));
          }
        }

        document.addEventListener("DOMContentLoaded", () => {
          const dialog = document.getElementById("spawn-dialog");
          document.getElementById("spawn-open").addEventListener("click", () => { document.getElementById("spawn-result").textContent = ""; dialog.showModal(); });
          document.getElementById("spawn-cancel").addEventListener("click", () => dialog.close());
          document.getElementById("spawn-form").addEventListener("submit", spawn);
          if (!secret) { document.getElementById("status").textContent = "no secret: open the URL that 'spawngate dashboard' printed"; return; }
          refresh();
          live();
        });

        """
}
