// Phloem status page. No dependencies and no external requests: it polls "api"
// (relative to the page) every POLL_MS and redraws SVG charts from the monitor's
// history. Every chart series is a <polyline class="series" data-series=… 
// data-points=N> plus a <circle class="pt"> on its latest point, so tests (and
// curious operators) can read the data back from the DOM.
(function () {
  'use strict';
  var POLL_MS = 1500;
  var SVGNS = 'http://www.w3.org/2000/svg';
  var W = 640, H = 170, PL = 62, PR = 12, PT = 8, PB = 20;

  function h(tag, attrs, parent, text) {
    var e = document.createElement(tag);
    setAttrs(e, attrs);
    if (text !== undefined && text !== null) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function s(tag, attrs, parent, text) {
    var e = document.createElementNS(SVGNS, tag);
    setAttrs(e, attrs);
    if (text !== undefined && text !== null) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function setAttrs(e, attrs) {
    if (!attrs) return;
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }

  function fmtNum(v, digits) {
    if (v === null || v === undefined || !isFinite(v)) return 'n/a';
    var a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1) + 'G';
    if (a >= 1e6) return (v / 1e6).toFixed(1) + 'M';
    if (a >= 1e3) return (v / 1e3).toFixed(1) + 'k';
    return v.toFixed(digits === undefined ? (a < 10 && a !== Math.floor(a) ? 2 : 0) : digits);
  }
  function fmtRate(v) { return v === null || v === undefined ? 'n/a' : fmtNum(v, 1) + 'B/s'; }
  function fmtRatio(v) { return v === null || v === undefined ? 'n/a' : v.toFixed(2) + '×'; }
  function fmtTime(ms) { return new Date(ms).toLocaleTimeString(); }
  function fmtDur(sec) {
    if (sec >= 60 && sec % 60 === 0) return (sec / 60) + 'm';
    return sec + 's';
  }

  // chart draws series (arrays aligned with times; null = gap) into host.
  // opts: {times, series: [{name, cls, values}], bands: [{rule, min, max, state}], fmt, title}
  function chart(host, opts) {
    var card = h('div', { 'class': 'card chart-card', 'data-chart': opts.id }, host);
    h('h3', null, card, opts.title);
    var legend = h('div', { 'class': 'legend' }, card);
    var svg = s('svg', { 'class': 'chart', viewBox: '0 0 ' + W + ' ' + H, 'data-chart': opts.id, role: 'img' }, card);
    var times = opts.times;
    var ymax = 0;
    opts.series.forEach(function (se) {
      se.values.forEach(function (v) { if (v !== null && isFinite(v) && v > ymax) ymax = v; });
    });
    (opts.bands || []).forEach(function (b) { if (b.max > ymax) ymax = b.max; });
    ymax = ymax > 0 ? ymax * 1.1 : 1;
    var t0 = times.length ? times[0] : 0, t1 = times.length ? times[times.length - 1] : 1;
    if (t1 <= t0) t1 = t0 + 1;
    var x = function (t) { return PL + (W - PL - PR) * (t - t0) / (t1 - t0); };
    var y = function (v) { return PT + (H - PT - PB) * (1 - v / ymax); };

    [0, 0.5, 1].forEach(function (f) {
      var yy = y(ymax * f);
      s('line', { 'class': 'axis', x1: PL, x2: W - PR, y1: yy, y2: yy }, svg);
      s('text', { x: PL - 4, y: yy + 3, 'text-anchor': 'end' }, svg, opts.fmt(ymax * f));
    });
    if (times.length) {
      s('text', { x: PL, y: H - 4 }, svg, fmtTime(t0));
      s('text', { x: W - PR, y: H - 4, 'text-anchor': 'end' }, svg, fmtTime(t1));
    }
    (opts.bands || []).forEach(function (b) {
      s('rect', {
        'class': 'band state-' + b.state, 'data-rule': b.rule, 'data-min': b.min, 'data-max': b.max,
        x: PL, width: W - PL - PR, y: y(b.max), height: Math.max(1, y(b.min) - y(b.max))
      }, svg);
      h('span', { 'class': 'l-band' }, legend, '▭ ' + b.rule + ' band [' + b.min + ', ' + b.max + ']');
    });
    opts.series.forEach(function (se) {
      var pts = [], last = null;
      for (var i = 0; i < se.values.length && i < times.length; i++) {
        var v = se.values[i];
        if (v === null || !isFinite(v)) continue;
        last = [x(times[i]), y(v), v];
        pts.push(last[0].toFixed(1) + ',' + last[1].toFixed(1));
      }
      s('polyline', {
        'class': 'series s-' + se.cls, 'data-series': se.name, 'data-points': pts.length, points: pts.join(' ')
      }, svg);
      if (last) {
        s('circle', { 'class': 'pt s-' + se.cls, 'data-series': se.name, 'data-value': last[2], cx: last[0], cy: last[1], r: 3 }, svg);
      }
      h('span', { 'class': 'l-' + se.cls }, legend,
        '— ' + se.name + ': ' + (last ? opts.fmt(last[2]) : 'n/a'));
    });
    return card;
  }

  function renderAlerts(st) {
    var ul = document.getElementById('alerts');
    clear(ul);
    var shown = st.alerts.filter(function (a) { return a.state !== 'inactive'; });
    var order = { firing: 0, pending: 1, resolved: 2 };
    shown.sort(function (a, b) { return order[a.state] - order[b.state]; });
    if (!shown.length) {
      h('li', { 'class': 'none' }, ul, 'No active alerts.');
    }
    shown.forEach(function (a) {
      var li = h('li', { 'class': 'alert state-' + a.state, 'data-rule': a.rule, 'data-state': a.state }, ul);
      h('span', { 'class': 'badge' }, li, a.state);
      h('b', null, li, a.rule + ' ');
      h('span', null, li, a.summary);
      var when = a.state === 'firing' ? a.fired_at : a.state === 'resolved' ? a.resolved_at : a.active_since;
      if (when) h('span', { 'class': 'muted' }, li, ' — since ' + new Date(when).toLocaleTimeString());
    });
    var tbody = document.querySelector('#rules tbody');
    clear(tbody);
    st.alerts.forEach(function (a) {
      var tr = h('tr', { 'data-rule': a.rule }, tbody);
      h('td', null, tr, a.rule);
      h('td', null, tr, a.kind);
      h('td', { 'class': 'state-' + a.state }, tr, a.state);
      h('td', { 'class': 'num' }, tr, a.kind === 'ratio' ? fmtRatio(a.value) : fmtNum(a.value));
      h('td', { 'class': 'num' }, tr, fmtDur(a.for_seconds));
      h('td', null, tr, a.summary);
    });
  }

  function renderComponents(st) {
    var host = document.getElementById('components');
    clear(host);
    st.components.forEach(function (c) {
      var sec = h('div', { 'class': 'component', id: 'comp-' + c.name }, host);
      h('h2', null, sec, c.title);
      var kv = h('div', { 'class': 'kv' }, sec);
      [['ingress', fmtRate(c.ingress_bytes_per_second)], ['egress', fmtRate(c.egress_bytes_per_second)],
       ['ratio', fmtRatio(c.ratio)]].forEach(function (p) {
        var span = h('span', null, kv, p[0] + ' ');
        h('b', { 'data-value': p[0] }, span, p[1]);
      });
      var grid = h('div', { 'class': 'grid' }, sec);
      chart(grid, {
        id: c.name + '-rates', title: 'Ingress and egress', times: st.times, fmt: fmtRate,
        series: [{ name: 'ingress', cls: 'ingress', values: c.ingress }, { name: 'egress', cls: 'egress', values: c.egress }]
      });
      chart(grid, {
        id: c.name + '-ratio', title: 'Egress / ingress ratio', times: st.times, fmt: fmtRatio,
        series: [{ name: 'ratio', cls: 'ratio', values: c.ratios }], bands: c.bands
      });
    });
  }

  function renderGauges(st) {
    var vals = document.getElementById('gauge-values');
    clear(vals);
    var kv = h('div', { 'class': 'kv' }, vals);
    st.gauges.forEach(function (g) {
      var span = h('span', { 'data-gauge': g.name }, kv, g.title + ' ');
      h('b', null, span, fmtNum(g.value));
    });
    var charts = document.getElementById('gauge-charts');
    clear(charts);
    st.gauges.filter(function (g) { return g.chart; }).forEach(function (g) {
      chart(charts, {
        id: 'gauge-' + g.name, title: g.title, times: st.times, fmt: function (v) { return fmtNum(v); },
        series: [{ name: g.name, cls: 'gauge', values: g.history || [] }]
      });
    });
  }

  function renderBreakdowns(st) {
    var host = document.getElementById('breakdowns');
    clear(host);
    st.breakdowns.forEach(function (b) {
      var card = h('div', { 'class': 'card', 'data-breakdown': b.name }, host);
      h('h3', null, card, b.title);
      var t = h('table', null, card);
      var hr = h('tr', null, h('thead', null, t));
      h('th', null, hr, b.by);
      h('th', null, hr, 'rate');
      var tb = h('tbody', null, t);
      if (!b.rows.length) {
        h('td', { colspan: 2, 'class': 'muted' }, h('tr', null, tb), 'no series in this process');
      }
      b.rows.forEach(function (r) {
        var tr = h('tr', { 'data-label': r.label }, tb);
        h('td', null, tr, r.label);
        h('td', { 'class': 'num' }, tr, fmtRate(r.bytes_per_second));
      });
    });
  }

  function renderZombies(st) {
    var host = document.getElementById('zombies');
    clear(host);
    if (!st.zombies.length) {
      h('p', { 'class': 'muted' }, host, 'None.');
      return;
    }
    var t = h('table', null, host);
    var hr = h('tr', null, h('thead', null, t));
    ['meter', 'tenant', 'last record'].forEach(function (c) { h('th', null, hr, c); });
    var tb = h('tbody', null, t);
    st.zombies.forEach(function (z) {
      var tr = h('tr', { 'data-meter': z.id }, tb);
      h('td', null, tr, z.id);
      h('td', null, tr, z.tenant);
      h('td', null, tr, new Date(z.last_record).toLocaleString());
    });
  }

  function render(st) {
    var upd = document.getElementById('updated');
    upd.textContent = (st.instance ? st.instance + ' · ' : '') + 'updated ' +
      new Date(st.now).toLocaleTimeString() + ' · rates over ' + fmtDur(st.window_seconds) +
      ' · ' + st.times.length + ' points';
    upd.setAttribute('data-points', st.times.length);
    renderAlerts(st);
    renderComponents(st);
    renderGauges(st);
    renderBreakdowns(st);
    renderZombies(st);
    document.body.setAttribute('data-loaded', 'true');
  }

  function refresh() {
    fetch('api', { cache: 'no-store' })
      .then(function (r) {
        if (!r.ok) throw new Error('status api answered ' + r.status);
        return r.json();
      })
      .then(render)
      .catch(function (err) {
        var upd = document.getElementById('updated');
        upd.textContent = 'cannot load status: ' + err.message;
      })
      .then(function () { setTimeout(refresh, POLL_MS); });
  }
  refresh();
})();
