// The console's script layer: confirmations for actions, and the live page. A page's
// <div id="live" data-feed="..."> names its event stream; each message (JSON) carries
// server-rendered fragments to swap in, new log lines, new metric points or tuning data.
// Text from the server goes in through textContent (log lines, labels); only fragments the
// server rendered (and escaped) go in as HTML.
(function () {
  "use strict";

  document.addEventListener("submit", function (ev) {
    var f = ev.target;
    if (f.dataset && f.dataset.confirm && !window.confirm(f.dataset.confirm)) {
      ev.preventDefault();
    }
  }, true);

  function duration(secs) {
    var s = Math.max(0, Math.floor(secs)), h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
    s = s % 60;
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    if (h) { return h + "h " + pad(m) + "m " + pad(s) + "s"; }
    if (m) { return m + "m " + pad(s) + "s"; }
    return s + "s";
  }

  // Timeline segments are sized by their duration (style attributes are barred by the CSP);
  // the open stage, and every running duration, counts up here rather than on the server.
  function sizeTimelines() {
    var now = Date.now() / 1000;
    document.querySelectorAll(".timeline .seg").forEach(function (s) {
      s.style.flexGrow = s.dataset.secs || String(Math.max(0.5, now - Number(s.dataset.start)));
    });
    document.querySelectorAll("[data-since]").forEach(function (el) {
      el.textContent = duration(now - Number(el.dataset.since));
    });
  }
  setInterval(sizeTimelines, 1000);

  // ------------------------------------------------------------ charts
  var charts = {};

  function chartBox(parentId, name, title) {
    var parent = document.getElementById(parentId);
    var box = document.createElement("figure");
    box.className = "chart";
    box.dataset.chart = name;
    box.dataset.points = "0";
    var cap = document.createElement("figcaption");
    cap.textContent = title;
    box.appendChild(cap);
    var plot = document.createElement("div");
    box.appendChild(plot);
    parent.appendChild(box);
    return { box: box, el: plot };
  }

  // Two charts side by side where the page is wide enough.
  function width(el) {
    var row = el.parentNode.parentNode.clientWidth || 1100;
    return Math.max(320, Math.min(560, Math.floor(row / 2) - 24));
  }

  // A line chart of time series, one per label (a host, a variant).
  function timeChart(parentId, name, title) {
    var c = charts[parentId + "/" + name];
    if (!c) {
      var b = chartBox(parentId, name, title);
      c = charts[parentId + "/" + name] = { box: b.box, el: b.el, series: {}, labels: [], plot: null };
    }
    return c;
  }

  var MAX_POINTS = 3600;
  var palette = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];

  function drawTime(c) {
    var xs = {};
    c.labels.forEach(function (l) { c.series[l].forEach(function (p) { xs[p[0]] = true; }); });
    var x = Object.keys(xs).map(Number).sort(function (a, b) { return a - b; });
    var data = [x];
    var total = 0, max = null;
    c.labels.forEach(function (l) {
      var at = {};
      c.series[l].forEach(function (p) { at[p[0]] = p[1]; if (max === null || p[1] > max) { max = p[1]; } });
      total += c.series[l].length;
      data.push(x.map(function (t) { return t in at ? at[t] : null; }));
    });
    c.box.dataset.points = String(total);
    c.box.dataset.max = String(max);
    if (!window.uPlot) { return; }
    if (c.plot && c.plot.series.length === c.labels.length + 1) {
      c.plot.setData(data);
      return;
    }
    if (c.plot) { c.plot.destroy(); }
    var series = [{}].concat(c.labels.map(function (l, i) {
      return { label: l, stroke: palette[i % palette.length], width: 2, spanGaps: true, points: { show: x.length < 60 } };
    }));
    c.plot = new uPlot({ width: width(c.el), height: 220, series: series, scales: { x: { time: true } } }, data, c.el);
  }

  function addSeries(parentId, items) {
    var touched = {};
    items.forEach(function (s) {
      var c = timeChart(parentId, s.chart, s.chart);
      if (!c.series[s.label]) { c.series[s.label] = []; c.labels.push(s.label); }
      Array.prototype.push.apply(c.series[s.label], s.points);
      // A page left open keeps the last hour or so of each series.
      if (c.series[s.label].length > MAX_POINTS) { c.series[s.label].splice(0, c.series[s.label].length - MAX_POINTS); }
      touched[s.chart] = c;
    });
    Object.keys(touched).forEach(function (k) { drawTime(touched[k]); });
  }

  // A scatter of points [x, y]: no lines, x categorical when `categories` name them.
  function scatter(parentId, name, title, points, categories, time, log) {
    var c = charts[parentId + "/" + name];
    if (!c) {
      var b = chartBox(parentId, name, title);
      c = charts[parentId + "/" + name] = { box: b.box, el: b.el, plot: null };
    }
    var sorted = points.slice().sort(function (a, b) { return a[0] - b[0]; });
    var data = [sorted.map(function (p) { return p[0]; }), sorted.map(function (p) { return p[1]; })];
    c.box.dataset.points = String(sorted.length);
    if (!window.uPlot) { return; }
    if (c.plot) { c.plot.setData(data); return; }
    var xAxis = {};
    if (categories && categories.length) {
      xAxis = { values: function (u, ticks) { return ticks.map(function (t) { return categories[t] !== undefined && t === Math.round(t) ? categories[t] : ""; }); } };
    }
    c.plot = new uPlot({
      width: width(c.el), height: 220,
      scales: { x: log ? { time: false, distr: 3 } : { time: !!time } },
      axes: [xAxis, {}],
      series: [{}, { label: title, stroke: palette[0], paths: function () { return null; }, points: { show: true, size: 8, fill: palette[0] } }]
    }, data, c.el);
  }

  function tuning(d) {
    scatter("tuning-charts", "objective-over-time", d.objective + " over time", d.overTime, null, true);
    d.params.forEach(function (p) {
      scatter("tuning-charts", "param-" + p.name, d.objective + " by " + p.name, p.points, p.categories, false, p.log);
    });
  }

  // ------------------------------------------------------------ logs
  var MAX_LINES = 5000;

  function logPane(stream) {
    var logs = document.getElementById("logs");
    var pane = logs.querySelector('pre[data-stream="' + CSS.escape(stream) + '"]');
    if (!pane) {
      var h = document.createElement("h3");
      h.textContent = stream;
      pane = document.createElement("pre");
      pane.className = "log";
      pane.dataset.stream = stream;
      logs.appendChild(h);
      logs.appendChild(pane);
    }
    return pane;
  }

  function addLogs(items) {
    items.forEach(function (item) {
      var pane = logPane(item.stream);
      var atBottom = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 4;
      var frag = document.createDocumentFragment();
      item.lines.forEach(function (l) {
        var line = document.createElement("span");
        line.textContent = l[1] + "\n";
        frag.appendChild(line);
      });
      pane.appendChild(frag);
      while (pane.childNodes.length > MAX_LINES) { pane.removeChild(pane.firstChild); }
      if (atBottom) { pane.scrollTop = pane.scrollHeight; }
    });
  }

  // ------------------------------------------------------------ fragments
  function swap(name, html) {
    var el = document.querySelector('[data-fragment="' + name + '"]');
    if (!el) { return; }
    if (el.tagName === "TABLE") {
      el.querySelectorAll("tbody, tfoot").forEach(function (n) { n.remove(); });
      el.insertAdjacentHTML("beforeend", html);
    } else {
      el.innerHTML = html;
    }
  }

  function apply(m) {
    if (m.fragments) {
      Object.keys(m.fragments).forEach(function (k) { swap(k, m.fragments[k]); });
      sizeTimelines();
    }
    if (m.logs) { addLogs(m.logs); }
    if (m.series) { addSeries("charts", m.series); }
    if (m.tuning) { tuning(m.tuning); }
    if (m.gone) {
      var s = document.getElementById("status");
      if (s) { s.textContent = "This endpoint has been deleted."; }
    }
  }

  function start() {
    sizeTimelines();
    var live = document.getElementById("live");
    if (!live || !live.dataset.feed || !window.EventSource) { return; }
    var es = new EventSource(live.dataset.feed);
    live.dataset.state = "connecting";
    es.onopen = function () { live.dataset.state = "live"; };
    es.onmessage = function (ev) { apply(JSON.parse(ev.data)); live.dataset.updates = String((Number(live.dataset.updates) || 0) + 1); };
    es.addEventListener("end", function () { es.close(); live.dataset.state = "ended"; });
    es.addEventListener("failed", function (ev) {
      es.close();
      live.dataset.state = "failed";
      var p = document.createElement("p");
      p.className = "error";
      try { p.textContent = JSON.parse(ev.data).error; } catch (e) { p.textContent = "The live view stopped."; }
      live.insertBefore(p, live.firstChild);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
