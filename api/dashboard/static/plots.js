/* pesflow plots: small SVG line and bar charts (no dependencies, no CDN).
 * Every drawn data point is an element carrying data-series (and data-x), so the number of
 * points can be counted in the DOM: svg circle[data-series="accurate"]. */
(function () {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
                  "#7f7f7f", "#17becf"];

  function el(tag, attrs, parent) {
    const e = document.createElementNS(NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  function niceTicks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1; }
    const raw = (hi - lo) / Math.max(1, n);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(10));
    return out;
  }

  function fmt(v) {
    const a = Math.abs(v);
    if (a === 0) return "0";
    if (a >= 1e4 || a < 1e-3) return v.toExponential(1);
    return +v.toPrecision(3) + "";
  }

  function frame(container, opts) {
    container.innerHTML = "";
    const W = opts.width || 460, H = opts.height || 240;
    const m = {l: 52, r: 12, t: 10, b: 36};
    const svg = el("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img"}, container);
    return {svg, W, H, m, pw: W - m.l - m.r, ph: H - m.t - m.b};
  }

  function axes(f, xs, ys, opts) {
    const g = el("g", {class: "axes"}, f.svg);
    el("line", {x1: f.m.l, y1: f.m.t + f.ph, x2: f.m.l + f.pw, y2: f.m.t + f.ph, class: "axis"}, g);
    el("line", {x1: f.m.l, y1: f.m.t, x2: f.m.l, y2: f.m.t + f.ph, class: "axis"}, g);
    for (const t of ys.ticks) {
      const y = ys.map(t);
      el("line", {x1: f.m.l, y1: y, x2: f.m.l + f.pw, y2: y, class: "gridline"}, g);
      el("text", {x: f.m.l - 5, y: y + 3, "text-anchor": "end", class: "tick"}, g).textContent = fmt(t);
    }
    for (const t of xs.ticks) {
      const x = xs.map(t);
      el("text", {x: x, y: f.m.t + f.ph + 14, "text-anchor": "middle", class: "tick"}, g).textContent = fmt(t);
    }
    if (opts.xlabel) el("text", {x: f.m.l + f.pw / 2, y: f.H - 4, "text-anchor": "middle", class: "label"}, g).textContent = opts.xlabel;
  }

  function legend(container, series) {
    const d = document.createElement("div");
    d.className = "legend";
    series.forEach((s, i) => {
      const span = document.createElement("span");
      const swatch = document.createElement("i");  // colour set through the CSSOM: CSP-safe
      swatch.style.background = s.color || COLORS[i % COLORS.length];
      span.appendChild(swatch);
      span.appendChild(document.createTextNode(s.label || s.name));
      d.appendChild(span);
    });
    container.appendChild(d);
  }

  function scale(lo, hi, a, b, nt) {
    if (!(hi > lo)) { hi = lo + 1; }
    const ticks = niceTicks(lo, hi, nt);
    return {ticks, lo, hi, map: v => a + (v - lo) / (hi - lo) * (b - a)};
  }

  /* linePlot(container, {x: [...], series: [{name, label, values, color}], xlabel, ymin}) */
  function linePlot(container, opts) {
    const f = frame(container, opts);
    const x = opts.x || [];
    const vals = opts.series.flatMap(s => s.values.filter(v => v !== null && v !== undefined && isFinite(v)));
    if (!x.length || !vals.length) {
      el("text", {x: f.W / 2, y: f.H / 2, "text-anchor": "middle", class: "empty"}, f.svg).textContent = "no data yet";
    }
    const xlo = x.length ? Math.min(...x) : 0, xhi = x.length ? Math.max(...x) : 1;
    const ylo = opts.ymin !== undefined ? opts.ymin : (vals.length ? Math.min(0, ...vals) : 0);
    let yhi = opts.ymax !== undefined ? opts.ymax : (vals.length ? Math.max(...vals) : 1);
    if (!(yhi > ylo)) yhi = ylo + 1;
    const xs = scale(xlo, xhi === xlo ? xlo + 1 : xhi, f.m.l + 6, f.m.l + f.pw - 6, Math.min(8, Math.max(1, x.length - 1)));
    const ys = scale(ylo, yhi * 1.05, f.m.t + f.ph, f.m.t, 4);
    axes(f, xs, ys, opts);
    const dense = x.length > 60;
    opts.series.forEach((s, i) => {
      const color = s.color || COLORS[i % COLORS.length];
      const g = el("g", {class: "series", "data-series-group": s.name}, f.svg);
      const pts = [];
      s.values.forEach((v, j) => {
        if (v === null || v === undefined || !isFinite(v)) return;
        pts.push([xs.map(x[j]), ys.map(v), x[j], v]);
      });
      if (pts.length > 1) {
        el("polyline", {points: pts.map(p => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" "),
                        fill: "none", stroke: color, "stroke-width": 1.6}, g);
      }
      for (const p of pts) {
        const c = el("circle", {cx: p[0].toFixed(1), cy: p[1].toFixed(1), r: dense ? 1.6 : 3,
                                fill: color, "data-series": s.name, "data-x": p[2], "data-y": p[3]}, g);
        el("title", {}, c).textContent = `${s.label || s.name} @ ${p[2]}: ${fmt(p[3])}`;
      }
    });
    legend(container, opts.series);
    return f.svg;
  }

  /* histogram(container, {counts, edges, lo, hi, xlabel}): bars + trust-window lines */
  function histogram(container, opts) {
    const f = frame(container, opts);
    const counts = opts.counts || [], edges = opts.edges || [];
    const n = counts.reduce((a, b) => a + b, 0);
    if (!n) {
      el("text", {x: f.W / 2, y: f.H / 2, "text-anchor": "middle", class: "empty"}, f.svg).textContent = "no explored frames yet";
    }
    const xs = scale(edges[0] || 0, edges[edges.length - 1] || 1, f.m.l, f.m.l + f.pw, 6);
    const ys = scale(0, Math.max(1, ...counts) * 1.05, f.m.t + f.ph, f.m.t, 4);
    axes(f, xs, ys, opts);
    const lo = opts.lo, hi = opts.hi;
    if (lo !== null && lo !== undefined && hi !== null && hi !== undefined) {
      el("rect", {x: xs.map(lo), y: f.m.t, width: Math.max(0, xs.map(hi) - xs.map(lo)), height: f.ph,
                  class: "trust-window", "data-trust": "window"}, f.svg);
    }
    const g = el("g", {class: "bars"}, f.svg);
    counts.forEach((c, i) => {
      const x0 = xs.map(edges[i]), x1 = xs.map(edges[i + 1]);
      const r = el("rect", {x: x0 + 0.5, y: ys.map(c), width: Math.max(0.5, x1 - x0 - 1),
                            height: f.m.t + f.ph - ys.map(c), "data-series": "frames",
                            "data-bin": i, "data-count": c, class: "bar"}, g);
      el("title", {}, r).textContent = `${fmt(edges[i])}–${fmt(edges[i + 1])} eV/Å: ${c}`;
    });
    for (const [name, v] of [["lo", lo], ["hi", hi]]) {
      if (v === null || v === undefined) continue;
      const x = xs.map(v);
      el("line", {x1: x, x2: x, y1: f.m.t, y2: f.m.t + f.ph, class: "trust-line", "data-trust": name}, f.svg);
      el("text", {x: x + 3, y: f.m.t + 10, class: "tick"}, f.svg).textContent = `${name} ${fmt(v)}`;
    }
    return f.svg;
  }

  /* parity(container, {series: [{name, label, x: ref, y: pred}], xlabel, ylabel}):
   * predicted vs reference, one point per value (data-series = the series name), y = x line */
  function parity(container, opts) {
    const f = frame(container, opts);
    const all = opts.series.flatMap(s => s.x.concat(s.y)).filter(v => isFinite(v));
    if (!all.length) {
      el("text", {x: f.W / 2, y: f.H / 2, "text-anchor": "middle", class: "empty"}, f.svg).textContent = "no validation predictions yet";
    }
    let lo = all.length ? Math.min(...all) : 0, hi = all.length ? Math.max(...all) : 1;
    const pad = (hi - lo) * 0.03 || 1;
    lo -= pad; hi += pad;
    const xs = scale(lo, hi, f.m.l, f.m.l + f.pw, 5), ys = scale(lo, hi, f.m.t + f.ph, f.m.t, 5);
    axes(f, xs, ys, opts);
    if (opts.ylabel) {
      el("text", {x: 12, y: f.m.t + f.ph / 2, "text-anchor": "middle", class: "label",
                  transform: `rotate(-90 12 ${f.m.t + f.ph / 2})`}, f.svg).textContent = opts.ylabel;
    }
    el("line", {x1: xs.map(lo), y1: ys.map(lo), x2: xs.map(hi), y2: ys.map(hi), class: "gridline",
                "data-role": "diagonal"}, f.svg);
    opts.series.forEach((s, i) => {
      const color = s.color || COLORS[i % COLORS.length];
      const g = el("g", {class: "series", "data-series-group": s.name}, f.svg);
      s.x.forEach((xv, j) => {
        const yv = s.y[j];
        if (!isFinite(xv) || !isFinite(yv)) return;
        el("circle", {cx: xs.map(xv).toFixed(1), cy: ys.map(yv).toFixed(1), r: 1.6, fill: color,
                      "fill-opacity": 0.6, "data-series": s.name}, g);
      });
    });
    legend(container, opts.series);
    return f.svg;
  }

  window.pesflowPlots = {linePlot, histogram, parity, COLORS};
})();
