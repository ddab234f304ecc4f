// plan-queue's page for testers. Plain JavaScript, no framework, no build
// step: it talks only to the public HTTP API of the server that served it
// (docs/openapi.json), with the bearer token kept in this tab's
// sessionStorage. Views by hash: #/ plans, #/plans/{id} results grid,
// #/plans/{id}/history, #/plans/{id}/flakiness, #/executions/{id}.
"use strict";

(function () {
  const TOKEN_KEY = "planQueue.token";
  const USER_KEY = "planQueue.userId";
  const POLL_IN_FLIGHT_MS = 1500; // the grid follows running pairs within 2 s
  const POLL_IDLE_MS = 10000;
  const STATUSES = ["QUEUED", "RUNNING", "PASSED", "FAILED", "ERROR", "SKIPPED", "ABORTED"];
  const ICONS = { PASSED: "✓", FAILED: "✗", ERROR: "⚠", SKIPPED: "↷", ABORTED: "⊘", QUEUED: "◷", RUNNING: "▶" };
  // Why plan-queue itself ended a pair (contract, section 14), as the grid says it.
  const REASONS = {
    CANCELLED: "cancelled",
    QUEUE_TIMEOUT: "queue timeout",
    RUN_TIMEOUT: "run timeout",
    DEAD_LETTERED: "dead-lettered",
  };

  const main = document.getElementById("main");
  const notice = document.getElementById("notice");
  const who = document.getElementById("who");

  // Timings the benchmark reads (bench/BENCHMARKS.md, "The page").
  const stats = (window.planQueueStats = { gridRenders: 0, gridPatches: 0 });

  let view = { token: 0, timer: null, cleanup: null };

  // ---- sign-in ---------------------------------------------------------

  function takeTokenFromAddress() {
    const m = /^#token=([^&]+)/.exec(location.hash);
    if (!m) return;
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search + "#/");
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  /** The user the token speaks for (its `sub`), or the id typed in. */
  function userId() {
    const t = token();
    if (t) {
      try {
        const payload = JSON.parse(atob(t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
        const sub = Number(payload.sub);
        if (Number.isInteger(sub) && sub > 0) return sub;
      } catch (e) {
        /* not a JWT we can read: ask */
      }
    }
    const typed = Number(sessionStorage.getItem(USER_KEY));
    return Number.isInteger(typed) && typed > 0 ? typed : null;
  }

  function renderWho() {
    const t = token();
    const u = userId();
    who.innerHTML =
      (u ? `<span>User ${u}</span>` : "") +
      (t ? `<button type="button" id="signout">Sign out</button>` : "");
    const out = document.getElementById("signout");
    if (out)
      out.addEventListener("click", () => {
        sessionStorage.removeItem(TOKEN_KEY);
        sessionStorage.removeItem(USER_KEY);
        location.hash = "#/";
        route();
      });
  }

  function showSignIn(refused) {
    stopPolling();
    document.title = "Sign in · plan-queue";
    main.innerHTML = `
      <section class="card signin" aria-labelledby="signin-title">
        <h1 id="signin-title">Sign in</h1>
        ${refused ? `<p class="notice error" role="alert">The server refused the token: ${esc(refused)}</p>` : ""}
        <p>Paste a bearer token of the API (for example from
        <code>plan-queue token --user-id 13</code>, or open the link that
        <code>plan-queue token --user-id 13 --link</code> prints). It is kept in this tab only.</p>
        <form id="signin-form">
          <label for="token-input">Bearer token</label>
          <textarea id="token-input" name="token" autocomplete="off" spellcheck="false" required></textarea>
          <p><button class="primary" type="submit">Sign in</button></p>
        </form>
      </section>`;
    const form = document.getElementById("signin-form");
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = document.getElementById("token-input").value.trim().replace(/^Bearer\s+/i, "");
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      route();
    });
    document.getElementById("token-input").focus();
    renderWho();
  }

  // ---- the API ---------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  const etags = new Map(); // path → [etag, data]

  /**
   * Calls the API. Answers `data` of the envelope; throws ApiError with the
   * envelope's code and message otherwise. GETs send If-None-Match when the
   * server gave an ETag before, and a 304 answers the data seen then.
   */
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const t = token();
    if (t) headers.Authorization = "Bearer " + t;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const cached = method === "GET" ? etags.get(path) : undefined;
    if (cached) headers["If-None-Match"] = cached[0];
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "same-origin",
      });
    } catch (e) {
      throw new ApiError(0, 0, "The server cannot be reached");
    }
    if (response.status === 304 && cached) return cached[1];
    let envelope = null;
    try {
      envelope = await response.json();
    } catch (e) {
      /* not JSON: described below */
    }
    const result = envelope && envelope.result;
    if (response.ok && result && result.code === 0) {
      const tag = response.headers.get("ETag");
      if (method === "GET" && tag) etags.set(path, [tag, envelope.data]);
      return envelope.data;
    }
    throw new ApiError(
      response.status,
      result ? result.code : 0,
      result ? result.message : `HTTP ${response.status}`
    );
  }

  /** Shows the sign-in form for a 401; true when it did. */
  function handleAuth(e) {
    if (e instanceof ApiError && e.status === 401) {
      const had = token();
      sessionStorage.removeItem(TOKEN_KEY);
      showSignIn(had ? e.message : null);
      return true;
    }
    return false;
  }

  // ---- helpers ---------------------------------------------------------

  function esc(value) {
    return String(value == null ? "" : value).replace(/[&<>"']/g, (c) =>
      ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c])
    );
  }

  function when(text) {
    if (!text) return "—";
    const d = new Date(text);
    return isNaN(d) ? esc(text) : esc(d.toLocaleString());
  }

  function duration(ms) {
    if (ms == null) return "—";
    if (ms < 1000) return `${ms} ms`;
    const s = ms / 1000;
    return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  }

  function countChips(counts) {
    if (!counts) return `<span class="muted">never ran</span>`;
    const chips = STATUSES.filter((s) => counts[s] > 0).map(
      (s) => `<span class="chip s-${s}" title="${counts[s]} ${s}">${ICONS[s]} ${counts[s]}<span class="w"> ${s}</span></span>`
    );
    return `<span class="counts">${chips.join("") || '<span class="muted">no pairs</span>'}</span>`;
  }

  function reasonText(reason) {
    return reason ? REASONS[reason] || String(reason).toLowerCase() : "";
  }

  /** `USER` or `RETRY` (section 18); a retry links to the execution it retried. */
  function triggerText(x) {
    if (!x.trigger) return "";
    const of = x.retryOf ? ` of <a href="#/executions/${x.retryOf}">#${x.retryOf}</a>` : "";
    return `<span class="trig"><span class="trigger t-${esc(x.trigger)}">${esc(x.trigger)}</span>${of}</span>`;
  }

  function statusChip(status) {
    return `<span class="chip s-${esc(status)}">${ICONS[status] || ""} ${esc(status)}</span>`;
  }

  function say(text, kind) {
    notice.textContent = text;
    notice.className = "notice" + (kind ? " " + kind : "");
    notice.hidden = !text;
  }

  function fail(e) {
    if (handleAuth(e)) return;
    say(e.message || String(e), "error");
  }

  function stopPolling() {
    if (view.timer) clearTimeout(view.timer);
    if (view.cleanup) view.cleanup();
    view = { token: view.token + 1, timer: null, cleanup: null };
    return view.token;
  }

  function current(tok) {
    return view.token === tok;
  }

  function tabs(planId, active) {
    const tab = (href, name, label) =>
      `<a href="${href}"${active === name ? ' aria-current="page"' : ""}>${label}</a>`;
    return `<nav class="tabs" aria-label="Plan views">
      ${tab(`#/plans/${planId}`, "results", "Results")}
      ${tab(`#/plans/${planId}/history`, "history", "History")}
      ${tab(`#/plans/${planId}/flakiness`, "flakiness", "Flakiness")}
    </nav>`;
  }

  function planHeader(plan, active) {
    return `<div class="crumbs"><a href="#/">Plans</a> › ${esc(plan.projectName)}</div>
      <h1>${esc(plan.name)} <span class="muted">#${plan.planId}</span></h1>
      ${tabs(plan.planId, active)}`;
  }

  // ---- Plans -----------------------------------------------------------

  async function showPlans() {
    const tok = stopPolling();
    document.title = "Plans · plan-queue";
    const data = await api("GET", "/plans");
    if (!current(tok)) return;
    renderWho();
    const cards = data.plans.map((p) => {
      const run = p.latestRun;
      return `<article class="card" data-plan="${p.planId}">
        <h2><a href="#/plans/${p.planId}">${esc(p.name)}</a></h2>
        <div class="meta">${esc(p.projectName)} · ${esc(p.frameworkType || "no framework type")} ·
          ${p.scenarioCount} scenarios × ${p.environmentCount} environments</div>
        <div class="meta">${run ? `Latest run #${run.executionId}, ${when(run.requestedAt)} · ${esc(run.status)}` : "Never ran"}</div>
        ${run ? countChips(p.resultCounts) : ""}
      </article>`;
    });
    main.innerHTML = `<h1>Plans</h1>
      ${cards.length ? `<div class="plan-cards">${cards.join("")}</div>` : '<p class="muted">No plan you may read.</p>'}`;
  }

  // ---- A plan: the results grid ----------------------------------------

  function inFlight(status) {
    return status === "QUEUED" || status === "RUNNING";
  }

  function cellLabel(pair, scenario, environment) {
    return `${scenario} on ${environment}: ${pair.status}, attempt ${pair.attempt}` +
      (pair.flaky ? ", flaky" : "") + (pair.reason ? `, ${reasonText(pair.reason)}` : "");
  }

  function cellInner(pair) {
    return `${ICONS[pair.status] || ""} ${esc(pair.status)}<span class="att">#${pair.attempt}</span>` +
      (pair.flaky ? `<span class="flk" title="flaky">⚑</span>` : "") +
      (pair.reason ? `<span class="rsn">${esc(reasonText(pair.reason))}</span>` : "");
  }

  async function showPlan(planId) {
    const tok = stopPolling();
    const plan = await api("GET", `/plans/${planId}`);
    if (!current(tok)) return;
    renderWho();
    document.title = `${plan.name} · plan-queue`;
    const needsType = !plan.frameworkType;
    main.innerHTML = `${planHeader(plan, "results")}
      <div class="toolbar" role="toolbar" aria-label="Actions">
        <button type="button" class="primary" id="run">Run the plan</button>
        <button type="button" id="rerun-failed">Rerun failed</button>
        <button type="button" id="rerun-selected" disabled>Rerun selected (0)</button>
        <button type="button" id="clear-selection" disabled>Clear selection</button>
        <button type="button" id="cancel">Cancel in flight</button>
        ${needsType ? `<label>Framework type <input id="framework-type" size="10" placeholder="e.g. APPIUM"></label>` : ""}
        ${userId() ? "" : `<label>Your user id <input id="user-id" size="6" inputmode="numeric"></label>`}
        <span class="spacer"></span>
        <span id="summary" aria-live="polite"></span>
      </div>
      <div class="legend" aria-hidden="true">${STATUSES.map((s) => statusChip(s)).join("")}
        <span class="chip">⚑ flaky</span><span class="chip">#n attempt</span></div>
      <div class="layout">
        <div class="gridwrap" id="gridwrap"><p class="muted">Loading results…</p></div>
        <aside class="card panel" id="panel" aria-live="polite">
          <p class="muted">Choose a cell to see its attempts and select it for a rerun
          (Tab to move, Enter or Space to choose).</p>
        </aside>
      </div>`;

    const state = {
      plan,
      results: null,
      rows: [], // scenario ids, grid order
      cols: [], // environment ids, grid order
      cells: new Map(), // "s:e" → button
      pairs: new Map(), // "s:e" → result pair
      selected: new Set(),
      open: null,
      layout: "",
    };
    const scenarioName = new Map(plan.scenarios.map((s) => [s.id, s.name]));
    const environmentName = new Map(plan.environments.map((e) => [e.id, e.name]));
    const sName = (id) => scenarioName.get(id) || `Scenario ${id}`;
    const eName = (id) => environmentName.get(id) || `Environment ${id}`;
    const gridwrap = document.getElementById("gridwrap");
    const panel = document.getElementById("panel");
    const summary = document.getElementById("summary");

    function frameworkType() {
      if (plan.frameworkType) return plan.frameworkType;
      const input = document.getElementById("framework-type");
      const typed = input && input.value.trim();
      if (typed) return typed;
      const run = plan.latestRun;
      return run && run.frameworkType;
    }

    function actingUser() {
      const u = userId();
      if (u) return u;
      const input = document.getElementById("user-id");
      const typed = Number(input && input.value);
      if (Number.isInteger(typed) && typed > 0) {
        sessionStorage.setItem(USER_KEY, String(typed));
        return typed;
      }
      throw new Error("Enter your user id first: the API needs it to run or rerun");
    }

    function updateSelectionButtons() {
      const n = state.selected.size;
      const button = document.getElementById("rerun-selected");
      button.textContent = `Rerun selected (${n})`;
      button.disabled = n === 0;
      document.getElementById("clear-selection").disabled = n === 0;
    }

    /** Builds the whole grid in one innerHTML (one layout, not per cell). */
    function renderGrid() {
      const started = performance.now();
      const head = state.cols
        .map((e) => {
          const env = plan.environments.find((x) => x.id === e);
          return `<th scope="col">${esc(eName(e))}${env ? `<small>${esc(env.platform)} ${esc(env.version)}</small>` : ""}</th>`;
        })
        .join("");
      const body = state.rows
        .map((s) => {
          const cells = state.cols
            .map((e) => {
              const key = `${s}:${e}`;
              const pair = state.pairs.get(key);
              if (!pair) return `<td class="none" aria-label="${esc(sName(s))} on ${esc(eName(e))}: not in the run">—</td>`;
              return `<td><button type="button" class="cell s-${esc(pair.status)}" data-key="${key}"
                aria-pressed="${state.selected.has(key)}" aria-label="${esc(cellLabel(pair, sName(s), eName(e)))}">${cellInner(pair)}</button></td>`;
            })
            .join("");
          return `<tr><th scope="row" class="scn">${esc(sName(s))}</th>${cells}</tr>`;
        })
        .join("");
      gridwrap.innerHTML = `<table class="grid" id="grid" aria-label="Results: scenarios down, environments across">
        <thead><tr><th class="corner scn" scope="col">Scenario \\ Environment</th>${head}</tr></thead>
        <tbody>${body}</tbody></table>`;
      state.cells = new Map();
      for (const button of gridwrap.querySelectorAll("button.cell")) state.cells.set(button.dataset.key, button);
      void gridwrap.offsetHeight; // the layout too, in the figure below
      stats.gridRenders += 1;
      stats.lastRenderMs = performance.now() - started;
      performance.mark("planQueue:grid");
      gridwrap.dataset.rendered = String(stats.gridRenders);
    }

    /** Changes only the cells whose pair changed. */
    function patchGrid(changed) {
      const started = performance.now();
      for (const key of changed) {
        const button = state.cells.get(key);
        const pair = state.pairs.get(key);
        if (!button || !pair) continue;
        const [s, e] = key.split(":").map(Number);
        button.className = `cell s-${pair.status}` + (state.open === key ? " open" : "");
        button.setAttribute("aria-label", cellLabel(pair, sName(s), eName(e)));
        button.innerHTML = cellInner(pair);
      }
      stats.gridPatches += 1;
      stats.lastPatchMs = performance.now() - started;
      performance.mark("planQueue:patch");
    }

    function applyResults(results) {
      state.results = results;
      const rows = new Set(plan.scenarios.map((s) => s.id));
      const cols = new Set(plan.environments.map((e) => e.id));
      const pairs = new Map();
      for (const p of results ? results.pairs : []) {
        rows.add(p.scenarioId);
        cols.add(p.environmentId);
        pairs.set(`${p.scenarioId}:${p.environmentId}`, p);
      }
      const layout = `${results ? results.sourceExecutionId : ""}|${[...rows].join(",")}|${[...cols].join(",")}`;
      const changed = [];
      for (const [key, p] of pairs) {
        const before = state.pairs.get(key);
        if (!before || before.status !== p.status || before.attempt !== p.attempt || before.flaky !== p.flaky ||
            before.reason !== p.reason)
          changed.push(key);
      }
      state.pairs = pairs;
      for (const key of [...state.selected]) if (!pairs.has(key)) state.selected.delete(key);
      if (!results) {
        gridwrap.innerHTML = `<p class="muted pad">This plan never ran: press “Run the plan”.</p>`;
        state.layout = "";
      } else if (layout !== state.layout) {
        state.rows = [...rows].sort((a, b) => a - b);
        state.cols = [...cols].sort((a, b) => a - b);
        state.layout = layout;
        renderGrid();
      } else if (changed.length) {
        patchGrid(changed);
      }
      summary.innerHTML = results ? `<span>Run #${results.sourceExecutionId}</span> ${countChips(results.counts)}` : "";
      const flying = results && (results.counts.QUEUED > 0 || results.counts.RUNNING > 0);
      document.getElementById("cancel").disabled = !flying;
      document.getElementById("rerun-failed").disabled = !results || results.counts.FAILED + results.counts.ERROR === 0;
      updateSelectionButtons();
      if (state.open && changed.includes(state.open)) showAttempts(state.open);
      return flying;
    }

    async function refresh() {
      let flying = false;
      try {
        const results = await api("GET", `/plans/${planId}/results`).catch((e) => {
          if (e instanceof ApiError && e.code === 1004) return null; // never ran
          throw e;
        });
        if (!current(tok)) return;
        flying = applyResults(results);
      } catch (e) {
        if (!current(tok)) return;
        if (handleAuth(e)) return;
        say(`Could not refresh the results: ${e.message}`, "error");
      }
      schedule(flying ? POLL_IN_FLIGHT_MS : POLL_IDLE_MS);
    }

    function schedule(ms) {
      if (!current(tok)) return;
      clearTimeout(view.timer);
      view.timer = setTimeout(refresh, ms);
    }

    const details = new Map(); // finished executions never change
    async function execution(id) {
      if (details.has(id)) return details.get(id);
      const x = await api("GET", `/executions/${id}`);
      if (x.status === "FINISHED") details.set(id, x);
      return x;
    }

    async function showAttempts(key) {
      const pair = state.pairs.get(key);
      if (!pair) return;
      const [s, e] = key.split(":").map(Number);
      const selected = state.selected.has(key);
      panel.innerHTML = `<h2>${esc(sName(s))}<br><span class="muted">on ${esc(eName(e))}</span></h2>
        <p>${statusChip(pair.status)} attempt ${pair.attempt}${pair.flaky ? " · ⚑ flaky" : ""}${pair.reason ? ` · ${esc(reasonText(pair.reason))}` : ""}
        · ${selected ? "selected for rerun" : "not selected"}</p>
        <div id="attempts"><p class="muted">Loading attempts…</p></div>`;
      const attempts = pair.attempts || [{ attempt: pair.attempt, executionId: pair.executionId, status: pair.status }];
      try {
        const found = await Promise.all(
          attempts.map(async (a) => {
            const x = await execution(a.executionId);
            const p = x.pairs.find((q) => q.scenarioId === s && q.environmentId === e) || {};
            return { a, x, p };
          })
        );
        if (state.open !== key || !document.getElementById("attempts")) return;
        document.getElementById("attempts").innerHTML = found
          .reverse()
          .map(({ a, x, p }) => `<section class="attempt" aria-label="Attempt ${a.attempt}">
            <strong>Attempt ${a.attempt}</strong> ${statusChip(p.status || a.status)}
            <dl>
              <dt>Execution</dt><dd><a href="#/executions/${x.executionId}">#${x.executionId}</a> ${esc(x.kind)} ${triggerText(x)}</dd>
              <dt>Started</dt><dd>${when(p.startedAt)}</dd>
              <dt>Finished</dt><dd>${when(p.finishedAt)}</dd>
              <dt>Duration</dt><dd>${duration(p.durationMs)}</dd>
              ${p.reason ? `<dt>Reason</dt><dd>${esc(p.reason)} (${esc(reasonText(p.reason))})</dd>` : ""}
              ${p.reportUrl ? `<dt>Report</dt><dd><a href="${esc(p.reportUrl)}" target="_blank" rel="noopener noreferrer">${esc(p.reportUrl)}</a></dd>` : ""}
            </dl>
            ${p.detail ? `<pre>${esc(p.detail)}</pre>` : ""}
          </section>`)
          .join("");
      } catch (err) {
        if (!handleAuth(err) && document.getElementById("attempts"))
          document.getElementById("attempts").innerHTML = `<p class="notice error">${esc(err.message)}</p>`;
      }
    }

    gridwrap.addEventListener("click", (ev) => {
      const button = ev.target.closest("button.cell");
      if (!button) return;
      const key = button.dataset.key;
      if (state.selected.has(key)) state.selected.delete(key);
      else state.selected.add(key);
      button.setAttribute("aria-pressed", String(state.selected.has(key)));
      const previous = state.open && state.cells.get(state.open);
      if (previous) previous.classList.remove("open");
      state.open = key;
      button.classList.add("open");
      updateSelectionButtons();
      showAttempts(key);
    });

    async function act(button, method, path, body, done) {
      button.disabled = true;
      say("");
      try {
        const data = await api(method, path, body);
        say(done(data), "ok");
      } catch (e) {
        fail(e);
      } finally {
        button.disabled = false;
        if (current(tok)) refresh();
      }
    }

    document.getElementById("run").addEventListener("click", (ev) => {
      let userIdValue;
      try {
        userIdValue = actingUser();
      } catch (e) {
        return say(e.message, "error");
      }
      const body = { planId: plan.planId, userId: userIdValue };
      const type = frameworkType();
      if (type) body.frameworkType = type;
      act(ev.currentTarget, "POST", "/queue/run", body, (d) => `Run #${d.executionId} queued: ${d.queued.length} pairs.`);
    });

    function rerun(button, selection) {
      let body;
      try {
        body = { planId: plan.planId, userId: actingUser(), frameworkType: frameworkType() };
      } catch (e) {
        return say(e.message, "error");
      }
      if (!body.frameworkType) return say("Enter the framework type first", "error");
      Object.assign(body, selection);
      act(button, "POST", "/queue/rerun", body, (d) => {
        if (selection.scenarioEnvironmentPairs) {
          state.selected.clear();
          for (const b of state.cells.values()) b.setAttribute("aria-pressed", "false");
        }
        const skipped = d.skipped && d.skipped.length ? `, ${d.skipped.length} skipped` : "";
        return `Rerun #${d.executionId} queued: ${d.queued.length} pairs${skipped}.`;
      });
    }

    document.getElementById("rerun-failed").addEventListener("click", (ev) =>
      rerun(ev.currentTarget, { statuses: ["FAILED", "ERROR"] })
    );
    document.getElementById("rerun-selected").addEventListener("click", (ev) =>
      rerun(ev.currentTarget, {
        scenarioEnvironmentPairs: [...state.selected].sort().map((key) => {
          const [scenarioId, environmentId] = key.split(":").map(Number);
          return { scenarioId, environmentId };
        }),
      })
    );
    document.getElementById("clear-selection").addEventListener("click", () => {
      state.selected.clear();
      for (const b of state.cells.values()) b.setAttribute("aria-pressed", "false");
      updateSelectionButtons();
    });
    document.getElementById("cancel").addEventListener("click", (ev) =>
      act(ev.currentTarget, "POST", `/plans/${plan.planId}/cancel`, {}, (d) =>
        `Cancelled ${d.cancelled.length} pairs.`
      )
    );

    const onVisible = () => {
      if (!document.hidden) refresh();
    };
    document.addEventListener("visibilitychange", onVisible);
    view.cleanup = () => document.removeEventListener("visibilitychange", onVisible);
    await refresh();
  }

  // ---- History -----------------------------------------------------------

  async function showHistory(planId) {
    const tok = stopPolling();
    const plan = await api("GET", `/plans/${planId}`);
    if (!current(tok)) return;
    renderWho();
    document.title = `History of ${plan.name} · plan-queue`;
    main.innerHTML = `${planHeader(plan, "history")}
      <div class="scroll"><table class="list" id="history">
        <caption class="sr-only">Executions, newest first</caption>
        <thead><tr><th scope="col">Execution</th><th scope="col">Kind, trigger</th>
          <th scope="col" class="hide-narrow">Requested by</th><th scope="col">Requested</th>
          <th scope="col" class="hide-narrow">Status</th><th scope="col">Pairs</th></tr></thead>
        <tbody></tbody>
      </table></div>
      <p><button type="button" id="older" hidden>Older executions</button></p>`;
    const tbody = main.querySelector("#history tbody");
    const older = document.getElementById("older");
    async function page(before) {
      const data = await api("GET", `/plans/${planId}/executions?limit=20${before ? `&before=${before}` : ""}`);
      if (!current(tok)) return;
      tbody.insertAdjacentHTML(
        "beforeend",
        data.executions
          .map((x) => `<tr>
            <td><a href="#/executions/${x.executionId}">#${x.executionId}</a></td>
            <td>${esc(x.kind)}<br>${triggerText(x)}</td>
            <td class="hide-narrow">user ${x.requestedBy}</td>
            <td>${when(x.requestedAt)}</td>
            <td class="hide-narrow">${esc(x.status)}</td>
            <td>${countChips(x.counts)}</td></tr>`)
          .join("") || (before ? "" : `<tr><td colspan="6" class="muted">No execution yet.</td></tr>`)
      );
      older.hidden = !data.nextBefore;
      older.dataset.before = data.nextBefore || "";
    }
    older.addEventListener("click", () => page(older.dataset.before).catch(fail));
    await page(null);
  }

  // ---- An execution --------------------------------------------------------

  async function showExecution(executionId) {
    const tok = stopPolling();
    const x = await api("GET", `/executions/${executionId}`);
    const plan = await api("GET", `/plans/${x.planId}`);
    if (!current(tok)) return;
    renderWho();
    document.title = `Execution ${x.executionId} · plan-queue`;
    const sName = new Map(plan.scenarios.map((s) => [s.id, s.name]));
    const eName = new Map(plan.environments.map((e) => [e.id, e.name]));
    const rows = x.pairs
      .map((p) => `<tr>
        <td>${esc(sName.get(p.scenarioId) || `Scenario ${p.scenarioId}`)}</td>
        <td>${esc(eName.get(p.environmentId) || `Environment ${p.environmentId}`)}</td>
        <td>${p.attempt}</td><td>${statusChip(p.status)}${p.reason ? ` <span class="muted">${esc(reasonText(p.reason))}</span>` : ""}</td>
        <td class="hide-narrow">${when(p.startedAt)}</td><td class="hide-narrow">${duration(p.durationMs)}</td>
        <td class="hide-narrow">${p.reportUrl ? `<a href="${esc(p.reportUrl)}" target="_blank" rel="noopener noreferrer">report</a>` : ""}
          ${p.detail ? `<details><summary>detail</summary><pre>${esc(p.detail)}</pre></details>` : ""}</td>
      </tr>`)
      .join("");
    const flying = x.status !== "FINISHED";
    main.innerHTML = `<div class="crumbs"><a href="#/">Plans</a> › <a href="#/plans/${plan.planId}">${esc(plan.name)}</a> ›
        <a href="#/plans/${plan.planId}/history">History</a></div>
      <h1>Execution #${x.executionId} <span class="muted">${esc(x.kind)}</span></h1>
      <p>${x.trigger ? `${triggerText(x)} · ` : ""}Requested by user ${x.requestedBy} at ${when(x.requestedAt)} · ${esc(x.status)}
        ${x.sourceExecutionId !== x.executionId ? ` · rerun of run <a href="#/executions/${x.sourceExecutionId}">#${x.sourceExecutionId}</a>` : ""}</p>
      <div class="toolbar">${countChips(x.counts)}<span class="spacer"></span>
        ${flying ? `<button type="button" id="cancel-execution">Cancel this execution</button>` : ""}</div>
      <div class="scroll"><table class="list"><thead><tr><th scope="col">Scenario</th><th scope="col">Environment</th><th scope="col">Attempt</th>
        <th scope="col">Status</th><th scope="col" class="hide-narrow">Started</th><th scope="col" class="hide-narrow">Duration</th>
        <th scope="col" class="hide-narrow">Report</th></tr></thead><tbody>${rows}</tbody></table></div>`;
    const cancel = document.getElementById("cancel-execution");
    if (cancel)
      cancel.addEventListener("click", async () => {
        cancel.disabled = true;
        const path = `/executions/${x.executionId}/cancel`;
        try {
          const d = await api("POST", path, {});
          say(`Cancelled ${d.cancelled.length} pairs.`, "ok");
          showExecution(executionId).catch(fail);
        } catch (e) {
          fail(e);
          cancel.disabled = false;
        }
      });
    if (flying) view.timer = setTimeout(() => current(tok) && showExecution(executionId).catch(fail), POLL_IN_FLIGHT_MS);
  }

  // ---- Flakiness -------------------------------------------------------------

  async function showFlakiness(planId, runs) {
    const tok = stopPolling();
    const plan = await api("GET", `/plans/${planId}`);
    if (!current(tok)) return;
    renderWho();
    document.title = `Flakiness of ${plan.name} · plan-queue`;
    main.innerHTML = `${planHeader(plan, "flakiness")}
      <form class="toolbar" id="runs-form"><label>Last <input id="runs" type="number" min="1" max="100" value="${runs}" size="4"> full runs</label>
        <button type="submit">Show</button></form>
      <div id="heat"><p class="muted">Loading…</p></div>`;
    document.getElementById("runs-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      location.hash = `#/plans/${planId}/flakiness?runs=${document.getElementById("runs").value}`;
    });
    const heat = document.getElementById("heat");
    const data = await api("GET", `/plans/${planId}/flakiness?runs=${runs}`);
    if (!current(tok)) return;
    if (!data.runs) {
      heat.innerHTML = `<p class="muted">This plan never ran.</p>`;
      return;
    }
    const sName = new Map(plan.scenarios.map((s) => [s.id, s.name]));
    const envs = new Map(data.environments.map((e) => [e.environmentId, e]));
    const eName = new Map(plan.environments.map((e) => [e.id, e.name]));
    const cols = [...envs.keys()];
    const byPair = new Map(data.pairs.map((p) => [`${p.scenarioId}:${p.environmentId}`, p]));
    const bucket = (rate) => Math.min(7, Math.ceil(rate * 7));
    const percent = (rate) => `${(rate * 100).toFixed(rate > 0 && rate < 0.1 ? 1 : 0)} %`;
    const envLabel = (e) => esc(eName.get(e) || `Environment ${e}`);
    const head = cols
      .map((e) => {
        const env = envs.get(e);
        return `<th scope="col" class="${env.suspect ? "suspect" : ""}" data-environment="${e}">${envLabel(e)}
          ${env.suspect ? `<br><strong class="suspect-mark">⚠ suspect</strong>` : ""}</th>`;
      })
      .join("");
    const body = data.scenarios
      .map((s) => {
        const name = esc(sName.get(s.scenarioId) || `Scenario ${s.scenarioId}`);
        const cells = cols
          .map((e) => {
            const p = byPair.get(`${s.scenarioId}:${e}`);
            if (!p) return `<td class="muted" aria-label="not in these runs">—</td>`;
            const label = `${name} on ${envLabel(e)}: flaky in ${p.flaky} of ${p.runs} runs, failed first in ${p.failedFirst}`;
            return `<td class="h${bucket(p.flakeRate)}" data-key="${s.scenarioId}:${e}" title="${label}" aria-label="${label}">${p.flaky}/${p.runs}</td>`;
          })
          .join("");
        return `<tr><th scope="row" class="scn">${name}<small>${s.flaky}/${s.pairRuns} · ${percent(s.flakeRate)}</small></th>${cells}</tr>`;
      })
      .join("");
    const foot = cols
      .map((e) => {
        const env = envs.get(e);
        return `<td class="${env.suspect ? "suspect" : ""}">${env.flaky}/${env.pairRuns}<br><small>${percent(env.flakeRate)}</small></td>`;
      })
      .join("");
    const suspects = data.environments.filter((e) => e.suspect).map((e) => envLabel(e.environmentId));
    heat.innerHTML = `<p class="muted">Flaky runs / runs of each pair over the last ${data.runs} full runs; darker is flakier.
        A pair is flaky in a run when a failed attempt came before a passed one.</p>
      ${suspects.length ? `<p class="notice" id="suspects" role="status">⚠ Suspect environment${suspects.length > 1 ? "s" : ""}: ${suspects.join(", ")} —
        flaky at least twice as often as the others: the device, more than the tests, looks flaky.</p>` : ""}
      <div class="gridwrap"><table class="heat" id="heat-map" aria-label="Flakiness: scenarios down, environments across">
      <thead><tr><th class="scn" scope="col">Scenario</th>${head}</tr></thead><tbody>${body}</tbody>
      <tfoot><tr><th scope="row" class="scn">All scenarios</th>${foot}</tr></tfoot></table></div>`;
  }

  // ---- routing -----------------------------------------------------------------

  async function route() {
    takeTokenFromAddress();
    say("");
    renderWho();
    const hash = location.hash || "#/";
    let m;
    try {
      if ((m = /^#\/plans\/(\d+)\/history$/.exec(hash))) await showHistory(m[1]);
      else if ((m = /^#\/plans\/(\d+)\/flakiness(?:\?runs=(\d+))?$/.exec(hash))) await showFlakiness(m[1], m[2] || 20);
      else if ((m = /^#\/plans\/(\d+)$/.exec(hash))) await showPlan(m[1]);
      else if ((m = /^#\/executions\/(\d+)$/.exec(hash))) await showExecution(m[1]);
      else await showPlans();
      main.focus({ preventScroll: true });
    } catch (e) {
      if (handleAuth(e)) return;
      main.innerHTML = `<p class="notice error" role="alert">${esc(e.message)}</p><p><a href="#/">All plans</a></p>`;
    }
  }

  window.addEventListener("hashchange", route);
  route();
})();
