/* tiergate dashboard: small SVG charts and live job progress. No dependencies, no network but this gateway. */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(e); }
    return e;
  }

  function fmt(v, kind) {
    if (kind === "usd") {
      // as the pages print money (gateway/store/money.py usd): a sign, and three significant digits below $1
      var a = Math.abs(v), sign = v < 0 ? "-" : "", s;
      if (a < 5e-9) { return "$0.00"; }
      if (a >= 100) { s = Math.round(a).toLocaleString("en-US"); }
      else if (a >= 1) { s = a.toFixed(2); }
      else {
        s = a.toFixed(Math.max(2, 2 - Math.floor(Math.log10(a))));
        while (/\.\d{3,}$/.test(s) && s.charAt(s.length - 1) === "0") { s = s.slice(0, -1); }
      }
      return sign + "$" + s;
    }
    return Math.round(v).toLocaleString();
  }

  function text(parent, x, y, s, anchor) {
    var t = el("text", { x: x, y: y, "text-anchor": anchor || "start" }, parent);
    t.textContent = s;
    return t;
  }

  function bars(div, series, kind) {
    // series: [[label, value], ...] or [{tier, requests}, ...]; negative values hang below the axis
    var pairs = series.map(function (p) { return Array.isArray(p) ? p : [p.tier, p.requests]; });
    var W = 600, H = 180, pad = 30;
    var values = pairs.map(function (p) { return Number(p[1]) || 0; });
    var hi = Math.max.apply(null, values.concat([0])), lo = Math.min.apply(null, values.concat([0]));
    var span = Math.max(hi - lo, 1e-12);
    var zero = pad + (H - 2 * pad) * hi / span;  // the axis: y of value 0
    var bw = (W - 2 * pad) / Math.max(1, pairs.length);
    var root = el("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "bar chart" }, div);
    el("line", { x1: pad, y1: zero, x2: W - pad, y2: zero, "class": "axis" }, root);
    pairs.forEach(function (p, i) {
      var v = values[i], neg = v < 0;
      var h = (H - 2 * pad) * Math.abs(v) / span;
      var x = pad + i * bw + bw * 0.15;
      el("rect", { x: x, y: neg ? zero : zero - h, width: bw * 0.7, height: Math.max(h, 0.5),
                   "class": "bar s" + (i % 3) + (neg ? " neg" : ""), "data-value": v }, root);
      text(root, x + bw * 0.35, neg ? zero - 4 : H - pad + 14, String(p[0]), "middle");
      var label = text(root, x + bw * 0.35, neg ? zero + h + 12 : zero - h - 4, fmt(v, kind), "middle");
      if (neg) { label.setAttribute("class", "neg"); }
    });
  }

  function lines(div, series, times, kind) {
    var names = Object.keys(series);
    var W = 600, H = 180, pad = 52;
    var svg = el("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "line chart" }, div);
    var all = [];
    names.forEach(function (n) { all = all.concat(series[n].map(Number)); });
    var max = Math.max.apply(null, all.concat([1e-12]));
    var n = Math.max(1, times.length - 1);
    el("line", { x1: pad, y1: H - pad, x2: W - 8, y2: H - pad, "class": "axis" }, svg);
    text(svg, pad - 4, pad, fmt(max, kind), "end");
    text(svg, pad - 4, H - pad, "0", "end");
    if (times.length) {
      text(svg, pad, H - pad + 14, new Date(times[0] * 1000).toLocaleTimeString());
      text(svg, W - 8, H - pad + 14, new Date(times[times.length - 1] * 1000).toLocaleTimeString(), "end");
    }
    names.forEach(function (name, k) {
      var d = series[name].map(function (v, i) {
        var x = pad + (W - pad - 8) * (times.length > 1 ? i / n : 0.5);
        var y = H - pad - (H - 2 * pad) * Number(v || 0) / max;
        return (i ? "L" : "M") + x.toFixed(1) + "," + y.toFixed(1);
      }).join(" ");
      el("path", { d: d || "M0,0", "class": "line s" + (k % 3) }, svg);
      el("rect", { x: pad + 8 + k * 110, y: 6, width: 10, height: 10, "class": "s" + (k % 3) }, svg);
      text(svg, pad + 22 + k * 110, 15, name).setAttribute("class", "legend");
    });
  }

  function drawCharts() {
    document.querySelectorAll("[data-chart]").forEach(function (div) {
      var series = JSON.parse(div.getAttribute("data-series") || "[]");
      var kind = div.getAttribute("data-format") || "";
      if (div.getAttribute("data-chart") === "bars") { bars(div, series, kind); }
      else { lines(div, series, JSON.parse(div.getAttribute("data-times") || "[]"), kind); }
    });
  }

  var ACTIVE = { queued: 1, generating: 1, training: 1, evaluating: 1 };

  function followJobs() {
    document.querySelectorAll(".job[data-job]").forEach(function (box) {
      if (!ACTIVE[box.getAttribute("data-state")]) { return; }
      var id = box.getAttribute("data-job");
      var timer = setInterval(function () {
        fetch("/dashboard/jobs/" + id + ".json", { credentials: "same-origin" })
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (j) {
            if (!j) { return; }
            box.setAttribute("data-state", j.state);
            var s = box.querySelector("[data-field=state]");
            s.textContent = j.state; s.className = "status " + j.state;
            box.querySelector("[data-field=progress]").value = j.progress;
            box.querySelector("[data-field=pct]").textContent = Math.round(j.progress * 100) + "%";
            if (!ACTIVE[j.state]) { clearInterval(timer); setTimeout(function () { location.reload(); }, 500); }
          })
          .catch(function () { /* the gateway restarted: keep polling */ });
      }, 1000);
    });
  }

  document.addEventListener("DOMContentLoaded", function () { drawCharts(); followJobs(); });
})();
