/* pesflow dashboard: fetches /api/v1 JSON, draws with pesflowPlots, polls while runs are active,
 * and calls the API (with the bearer token kept in localStorage) from the action buttons. */
(function () {
  "use strict";
  const API = "/api/v1";
  const P = () => window.pesflowPlots;
  const tokenInput = () => document.getElementById("token");

  function token() { return localStorage.getItem("pesflow-token") || ""; }

  function headers(json) {
    const h = {};
    if (token()) h["Authorization"] = "Bearer " + token();
    if (json) h["Content-Type"] = "application/json";
    return h;
  }

  async function api(method, path, body) {
    const r = await fetch(API + path, {method, headers: headers(body !== undefined),
                                       body: body === undefined ? undefined : JSON.stringify(body)});
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) {
      const d = data && data.detail;
      const msg = typeof d === "string" ? d : JSON.stringify(d);
      throw new Error(`${r.status}: ${msg}`);
    }
    return data;
  }

  function setupToken() {
    const t = tokenInput();
    if (!t) return;
    t.value = token();
    t.addEventListener("change", () => localStorage.setItem("pesflow-token", t.value.trim()));
  }

  function text(v, digits) {
    if (v === null || v === undefined) return "–";
    return typeof v === "number" && digits !== undefined ? v.toFixed(digits) : String(v);
  }

  function cell(tr, content, cls) {
    const td = document.createElement("td");
    if (content instanceof Node) td.appendChild(content); else td.textContent = content;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function link(href, label) {
    const a = document.createElement("a");
    a.href = href; a.textContent = label;
    return a;
  }

  function notice(msg, isError) {
    const n = document.getElementById("notice");
    n.textContent = msg;
    n.className = "notice" + (isError ? " error" : "");
  }

  // ------------------------------------------------------------------ campaign list
  async function refreshIndex() {
    const rows = await api("GET", "/campaigns");
    const tb = document.querySelector("#campaigns tbody");
    tb.innerHTML = "";
    for (const c of rows) {
      const tr = document.createElement("tr");
      tr.dataset.campaignId = c.id;
      cell(tr, String(c.id));
      cell(tr, link(`/campaigns/${c.id}`, c.name));
      const s = document.createElement("span");
      s.className = "status s-" + c.status; s.textContent = c.status;
      cell(tr, s);
      cell(tr, c.held_by || "", "held");  // the process running it (host, pid, purpose, since)
      cell(tr, String(c.n_iterations));
      cell(tr, `${c.labels.done} / ${c.labels.failed} / ${c.labels.pending + c.labels.running}`);
      cell(tr, c.status_message || "", "msg").title = c.status_message || "";
      tb.appendChild(tr);
    }
    document.getElementById("empty").hidden = rows.length > 0;
  }

  function startIndex(poll) {
    setupToken();
    const tick = () => refreshIndex().catch(() => {}).finally(() => setTimeout(tick, poll * 1000));
    setTimeout(tick, poll * 1000);
    if (!document.querySelector("#campaigns tbody tr")) refreshIndex().catch(() => {});
  }

  // ------------------------------------------------------------------ campaign page
  let state = {id: null, poll: 5, timer: null, last: null, watch: null, hist: ""};

  function draw(d) {
    const its = d.iterations, x = its.map(i => i.index), p = P();
    document.getElementById("name").textContent = d.campaign.name;
    document.title = d.campaign.name + " · pesflow";
    const st = document.getElementById("status");
    st.textContent = d.campaign.status; st.className = "status s-" + d.campaign.status;
    document.getElementById("message").textContent = d.campaign.status_message || "";
    const held = document.getElementById("held-by");  // who runs it (interrupted: nobody)
    held.textContent = d.campaign.held_by ? "held by " + d.campaign.held_by : "";
    held.hidden = !d.campaign.held_by;
    document.getElementById("live").hidden = !d.active;
    p.linePlot(document.getElementById("plot-labels"), {x, xlabel: "iteration", series: [
      {name: "labels_new", label: "new", values: d.labels_new},
      {name: "labels_cumulative", label: "cumulative", values: d.labels_cumulative}]});
    p.linePlot(document.getElementById("plot-fractions"), {x, xlabel: "iteration", ymin: 0, ymax: 1,
      series: [{name: "accurate", values: its.map(i => i.accurate_fraction), color: "#2ca02c"},
               {name: "candidate", values: its.map(i => i.candidate_fraction), color: "#ff7f0e"},
               {name: "failed", values: its.map(i => i.failed_fraction), color: "#d62728"}]});
    p.linePlot(document.getElementById("plot-force-rmse"), {x, xlabel: "iteration", series: [
      {name: "val_force_rmse", label: "force RMSE",
       values: its.map(i => i.val_force_rmse === null ? null : i.val_force_rmse * 1000)}]});
    p.linePlot(document.getElementById("plot-energy-rmse"), {x, xlabel: "iteration", series: [
      {name: "val_energy_rmse", label: "energy RMSE",
       values: its.map(i => i.val_energy_rmse === null ? null : i.val_energy_rmse * 1000)}]});
    const sel = document.getElementById("hist-iteration");
    const have = [...sel.options].map(o => o.value);
    for (const i of its.filter(i => i.n_explored > 0)) {
      if (!have.includes(String(i.index))) {
        const o = document.createElement("option");
        o.value = String(i.index); o.textContent = String(i.index);
        sel.appendChild(o);
      }
    }
    const h = d.histogram;
    document.getElementById("hist-caption").textContent =
      `Uncertainty of explored frames, iteration ${text(h.iteration_index)} (${h.n_frames} frames; max force deviation, eV/Å; trust window shaded)`;
    p.histogram(document.getElementById("plot-hist"), {counts: h.counts, edges: h.edges,
      lo: h.trust_lo, hi: h.trust_hi, xlabel: "max force deviation (eV/Å)"});
    const kinds = Object.keys(d.failures_by_kind);
    p.linePlot(document.getElementById("plot-failures"), {x, xlabel: "iteration", ymin: 0,
      series: kinds.length ? kinds.map(k => ({name: "failures_" + k, label: k, values: d.failures_by_kind[k]}))
                           : [{name: "failures_none", label: "no failures", values: its.map(() => 0)}]});
    const steps = [...new Set(its.flatMap(i => Object.keys(i.step_timings)))];
    p.linePlot(document.getElementById("plot-timings"), {x, xlabel: "iteration", ymin: 0, width: 940,
      series: steps.map(s => ({name: "time_" + s, label: s,
                               values: its.map(i => i.step_timings[s] === undefined ? null : i.step_timings[s])}))});
    drawTables(d);
    drawRegimes(d);
    const w = state.watch && d.runs.find(r => r.id === state.watch);
    if (w && !["queued", "running", "submitted"].includes(w.status)) {
      notice(`${w.kind} run ${w.id.slice(0, 8)} ${w.status}: ${w.message || ""}`, w.status === "failed");
      state.watch = null;
    }
  }

  function drawTables(d) {
    let tb = document.querySelector("#uncertain tbody");
    tb.innerHTML = "";
    for (const u of d.most_uncertain) {
      const tr = document.createElement("tr");
      tr.dataset.structureId = u.structure_id;
      cell(tr, link(`${API}/structures/${u.structure_id}`, String(u.structure_id)));
      cell(tr, u.formula); cell(tr, text(u.iteration_index)); cell(tr, text(u.walker));
      cell(tr, text(u.temperature)); cell(tr, u.max_force_dev.toFixed(3)); cell(tr, text(u.label_status));
      tb.appendChild(tr);
    }
    tb = document.querySelector("#models tbody");
    tb.innerHTML = "";
    for (const m of d.models.slice().reverse()) {
      const tr = document.createElement("tr");
      tr.dataset.modelId = m.id;
      const rmse = m.validation.val_force_rmse;
      cell(tr, String(m.id)); cell(tr, m.iteration_index === null ? "API retrain" : text(m.iteration_index)); cell(tr, String(m.member_count));
      cell(tr, String(m.n_training_labels));
      cell(tr, rmse === null || rmse === undefined ? "–" : (rmse * 1000).toFixed(1));
      cell(tr, new Date(m.created_at).toLocaleString());
      cell(tr, link(m.download_url, "checkpoint"));
      tb.appendChild(tr);
    }
    tb = document.querySelector("#runs tbody");
    tb.innerHTML = "";
    for (const r of d.runs) {
      const tr = document.createElement("tr");
      tr.dataset.runId = r.id; tr.dataset.status = r.status;
      cell(tr, link(`${API}/runs/${r.id}`, r.id.slice(0, 8))); cell(tr, r.kind); cell(tr, r.status);
      cell(tr, new Date(r.submitted_at).toLocaleString());
      cell(tr, r.prefect_flow_run_id ? (r.prefect_url ? link(r.prefect_url, r.prefect_flow_run_id.slice(0, 8))
                                                      : r.prefect_flow_run_id.slice(0, 8)) : "–");
      cell(tr, r.message || "", "msg");
      tb.appendChild(tr);
    }
  }

  function drawRegimes(d) {
    const latest = d.models.length ? d.models[d.models.length - 1] : null;
    const tb = document.querySelector("#regimes tbody");
    tb.innerHTML = "";
    const regimes = latest ? (latest.regimes || {}) : {};
    const ms = v => (v === null || v === undefined ? "–" : v.toFixed(1));
    for (const [name, r] of Object.entries(regimes)) {
      const tr = document.createElement("tr");
      tr.dataset.regime = name;
      cell(tr, name); cell(tr, text(r.n_frames)); cell(tr, ms(r.force_rmse_meV));
      cell(tr, ms(r.force_mae_meV)); cell(tr, ms(r.force_max_meV)); cell(tr, r.energy_rmse_meV === null ? "–" : r.energy_rmse_meV.toFixed(2));
      cell(tr, r.bound_scale === null || r.bound_scale === undefined ? "–" : r.bound_scale.toFixed(2) + " × deviation");
      cell(tr, r.covered === null || r.covered === undefined ? "–" : `${Math.round(100 * r.covered)} % of ${r.covered_n}`);
      tb.appendChild(tr);
    }
    if (!latest || !latest.parity_url || state.parityFor === latest.id) return;
    state.parityFor = latest.id;
    api("GET", `/models/${latest.id}/parity`).then(par => {
      const names = Object.keys(par.regimes), p = P();
      document.getElementById("parity-caption").textContent =
        `Parity, model ${latest.id} on its ${names.reduce((n, k) => n + par.regimes[k].n_frames, 0)} validation frames`;
      p.parity(document.getElementById("plot-parity-forces"), {xlabel: "reference force component (eV/Å)",
        ylabel: "predicted (eV/Å)", series: names.map(k => ({name: "force_" + k, label: k,
        x: par.regimes[k].force_ref, y: par.regimes[k].force_pred}))});
      p.parity(document.getElementById("plot-parity-energies"), {xlabel: "reference energy (eV/atom)",
        ylabel: "predicted (eV/atom)", series: names.map(k => ({name: "energy_" + k, label: k,
        x: par.regimes[k].energy_ref, y: par.regimes[k].energy_pred}))});
      document.body.dataset.parity = String(latest.id);
    }).catch(e => { state.parityFor = null; notice("could not load the parity data: " + e.message, true); });
  }

  async function refreshFlowRuns() {
    const box = document.getElementById("flow-runs-box");
    let fr;
    try { fr = await api("GET", `/campaigns/${state.id}/flow-runs`); } catch (e) { return; }
    box.hidden = !(fr.available && fr.runs.length);
    if (box.hidden) return;
    document.getElementById("flow-runs-deployment").textContent = fr.deployment;
    const tb = document.querySelector("#flow-runs tbody");
    tb.innerHTML = "";
    for (const r of fr.runs) {
      const tr = document.createElement("tr");
      tr.dataset.flowRunId = r.id; tr.dataset.state = r.state || "";
      cell(tr, r.url ? link(r.url, r.name) : r.name);
      cell(tr, r.state_name || "–");
      cell(tr, r.expected_start_time ? new Date(r.expected_start_time).toLocaleString() : "–");
      cell(tr, text(r.parameters.iterations));
      tb.appendChild(tr);
    }
  }

  async function refreshCampaign() {
    clearTimeout(state.timer);
    try {
      const q = state.hist === "" ? "" : `?histogram_iteration=${state.hist}`;
      const d = await api("GET", `/campaigns/${state.id}/dashboard${q}`);
      state.last = d;
      draw(d);
      document.body.dataset.loaded = "true";
      refreshFlowRuns();
      if (d.active) state.timer = setTimeout(refreshCampaign, state.poll * 1000);
      else state.timer = setTimeout(refreshCampaign, Math.max(state.poll, 30) * 1000);
    } catch (e) {
      notice("could not load the campaign: " + e.message, true);
      state.timer = setTimeout(refreshCampaign, Math.max(state.poll, 10) * 1000);
    }
  }

  async function act(action) {
    const path = `/campaigns/${state.id}/${action}`;
    try {
      const out = await api("POST", path, action === "pause" ? {message: null} : undefined);
      if (out && out.kind) {
        state.watch = out.id;
        notice(`${action}: run ${out.id.slice(0, 8)} ${out.status}`);
      }
      else notice(`${action}: campaign ${out.status}`);
    } catch (e) {
      notice(`${action} failed: ${e.message}`, true);
    }
    setTimeout(refreshCampaign, 300);
    state.timer = setTimeout(refreshCampaign, 1000);
  }

  function startCampaign(id, poll) {
    state.id = id; state.poll = poll;
    setupToken();
    document.getElementById("hist-iteration").addEventListener("change", e => {
      state.hist = e.target.value;
      refreshCampaign();
    });
    document.querySelectorAll("button[data-action]").forEach(b =>
      b.addEventListener("click", () => act(b.dataset.action)));
    refreshCampaign();
  }

  window.pesflow = {startIndex, startCampaign, refreshCampaign, api};

  // The page says what it is on <main data-page> (no inline script: the CSP allows none).
  const main = document.querySelector("main[data-page]");
  if (main) {
    const poll = Number(main.dataset.poll);
    if (main.dataset.page === "index") startIndex(poll);
    else if (main.dataset.page === "campaign") startCampaign(Number(main.dataset.campaignId), poll);
  }
})();
