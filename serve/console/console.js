// The console of `nodeos-vm serve` (docs/serve.md, "The web console"): it polls the admin API
// with the token and draws what it answers. App names, log lines and whatever else the server
// sends are data, some of it written by hostile guests: they only ever become text nodes and
// attribute values, never markup.
'use strict';

(() => {
  const POLL_MS = 2000;
  /** Snapshots of the metrics kept per app for the charts: five minutes at POLL_MS. */
  const SAMPLES = 150;
  const SPAN_MS = SAMPLES * POLL_MS;
  /** The newest log lines shown (the API answers up to 2000). */
  const SHOWN_LINES = 500;
  const TOKEN_KEY = 'nodeos-serve-token';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  /** Where a chart draws in its 320 x 120 viewBox; the rest is for its labels. */
  const PLOT = { left: 40, right: 314, top: 8, bottom: 102 };

  const state = {
    token: null,
    /** The app whose charts and logs are shown. */
    selected: null,
    /** The logs' invocation filter ('' for every call). */
    invocation: '',
    /** App name -> snapshots of its metrics, oldest first. */
    history: new Map(),
    /** What the logs list shows, to redraw it only when that changes. */
    logsKey: '',
    timer: null,
    busy: false,
    again: false,
  };

  const $ = (id) => document.getElementById(id);

  /** An HTML element with these attributes and children (anything but a node becomes text). */
  const el = (tag, attributes, ...children) =>
    fill(document.createElement(tag), attributes, children);
  const svg = (tag, attributes, ...children) =>
    fill(document.createElementNS(SVG_NS, tag), attributes, children);

  function fill(node, attributes = {}, children = []) {
    for (const [name, value] of Object.entries(attributes)) {
      if (value !== null && value !== undefined) node.setAttribute(name, String(value));
    }
    node.append(
      ...children
        .filter((c) => c !== null && c !== undefined)
        .map((c) => (c instanceof Node ? c : String(c))),
    );
    return node;
  }

  // ---- the token ----

  /** The token: given once in the fragment (`/ui#token=...`, never sent to any server), then
   *  kept in this tab's session storage and taken out of the address bar and the history. */
  function takeToken() {
    const given = new URLSearchParams(location.hash.slice(1)).get('token');
    if (given) {
      sessionStorage.setItem(TOKEN_KEY, given);
      window.history.replaceState(null, '', location.pathname + location.search);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function start(token) {
    state.token = token;
    $('login').hidden = true;
    $('console').hidden = false;
    $('forget').hidden = false;
    schedule(0);
  }

  function signIn(why) {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(state.timer);
    $('console').hidden = true;
    $('forget').hidden = true;
    $('login').hidden = false;
    $('login-why').textContent = why;
    status('');
    $('token').focus();
  }

  // ---- the admin API ----

  class Refused extends Error {}

  async function api(path, method = 'GET') {
    const response = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${state.token}` },
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
    });
    if (response.status === 401) throw new Refused(await errorOf(response));
    return response;
  }

  async function errorOf(response) {
    try {
      return String((await response.json()).error);
    } catch {
      return `HTTP ${response.status}`;
    }
  }

  async function expect(response, what) {
    if (!response.ok) throw new Error(`${what}: ${await errorOf(response)}`);
    return response;
  }

  const json = async (path) => (await expect(await api(path), `GET ${path}`)).json();

  // ---- polling ----

  function schedule(delay) {
    clearTimeout(state.timer);
    state.timer = setTimeout(tick, delay);
  }

  async function tick() {
    if (state.busy) {
      state.again = true;
      return;
    }
    state.busy = true;
    // A hidden tab asks nothing: logs can be large.
    if (state.token && !document.hidden) await refresh();
    state.busy = false;
    if (state.token) schedule(state.again ? 0 : POLL_MS);
    state.again = false;
  }

  async function refresh() {
    try {
      const [apps, metrics, sandboxes] = await Promise.all([
        json('/apps'),
        api('/metrics').then((r) => expect(r, 'GET /metrics')).then((r) => r.text()),
        api('/sandboxes'),
      ]);
      const now = Date.now();
      const samples = parseMetrics(metrics);
      record(apps.apps, samples, now);
      if (!apps.apps.some((app) => app.name === state.selected)) {
        select(apps.apps.length ? apps.apps[0].name : null);
      }
      renderApps(apps.apps, samples, now);
      renderCharts(now);
      await renderSandboxes(sandboxes);
      if (state.selected) {
        const path = logsPath();
        const logs = await json(path);
        // Another app or filter may have been chosen meanwhile.
        if (path === logsPath()) renderLogs(logs);
      }
      status(`updated ${clock(now)}`);
    } catch (error) {
      failed(error);
    }
  }

  function failed(error) {
    if (error instanceof Refused) signIn(`The server refused the token: ${error.message}`);
    else status(error.message, true);
  }

  function status(text, bad = false) {
    $('status').textContent = text;
    $('status').classList.toggle('bad', bad);
  }

  // ---- metrics: Prometheus' text format ----

  /** Every sample of the text: {name, labels, value}. */
  function parseMetrics(text) {
    const samples = [];
    for (const line of text.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
      if (m) samples.push({ name: m[1], labels: parseLabels(m[2] || ''), value: Number(m[3]) });
    }
    return samples;
  }

  function parseLabels(text) {
    const labels = {};
    for (const m of text.matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[m[1]] = m[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    return labels;
  }

  /** What the metrics say of one app: calls answered, errors, its latency histogram. */
  function figures(samples, app) {
    const mine = samples.filter((s) => s.labels.app === app);
    const total = (name) =>
      mine.filter((s) => s.name === name).reduce((sum, s) => sum + s.value, 0);
    const buckets = mine
      .filter((s) => s.name === 'nodeos_serve_invocation_seconds_bucket')
      .map((s) => ({ le: s.labels.le === '+Inf' ? Infinity : Number(s.labels.le), count: s.value }))
      .sort((a, b) => a.le - b.le);
    return {
      calls: total('nodeos_serve_invocations_total'),
      errors: total('nodeos_serve_errors_total'),
      buckets,
    };
  }

  function record(apps, samples, now) {
    for (const name of [...state.history.keys()]) {
      if (!apps.some((app) => app.name === name)) state.history.delete(name);
    }
    for (const app of apps) {
      const kept = state.history.get(app.name) || [];
      kept.push({ t: now, ...figures(samples, app.name) });
      if (kept.length > SAMPLES + 1) kept.shift();
      state.history.set(app.name, kept);
    }
  }

  /** Between each two snapshots: calls/s, and the p50 and p95 latencies (ms) of the calls
   *  answered then (null without any). */
  function intervals(kept) {
    const out = [];
    for (let i = 1; i < kept.length; i++) {
      const [a, b] = [kept[i - 1], kept[i]];
      // A counter that went down started again (the app was deleted and deployed anew).
      const reset = b.calls < a.calls;
      const before = (le) => (reset ? 0 : (a.buckets.find((x) => x.le === le) || { count: 0 }).count);
      const buckets = b.buckets.map(({ le, count }) => ({ le, count: count - before(le) }));
      out.push({
        t: b.t,
        rate: (reset ? b.calls : b.calls - a.calls) / ((b.t - a.t) / 1000),
        p50: quantile(0.5, buckets),
        p95: quantile(0.95, buckets),
      });
    }
    return out;
  }

  /** The q-quantile (ms) of a cumulative histogram, interpolated within its bucket as
   *  Prometheus' histogram_quantile does; null without calls. */
  function quantile(q, buckets) {
    const total = buckets.length ? buckets[buckets.length - 1].count : 0;
    if (!(total > 0)) return null;
    const rank = q * total;
    let [below, lower] = [0, 0];
    for (const { le, count } of buckets) {
      if (count >= rank) {
        if (le === Infinity) return lower * 1000;
        return (lower + (le - lower) * ((rank - below) / (count - below))) * 1000;
      }
      [below, lower] = [count, le];
    }
    return lower * 1000;
  }

  // ---- apps ----

  function select(name) {
    state.selected = name;
    state.logsKey = '';
    $('metrics-app').textContent = name || '-';
    $('logs-app').textContent = name || '-';
    $('logs').replaceChildren();
    state.invocation = '';
    $('invocation').value = '';
    for (const row of $('apps').tBodies[0].rows) {
      row.classList.toggle('selected', row.dataset.app === name);
    }
    renderCharts(Date.now());
  }

  function renderApps(apps, samples, now) {
    $('apps').tBodies[0].replaceChildren(
      ...apps.map((app) => appRow(app, figures(samples, app.name), now)),
    );
    $('apps-empty').hidden = apps.length > 0;
  }

  function appRow(app, f, now) {
    const o = app.options || {};
    const list = app.instance_list || [];
    const cell = (field, text, attributes = {}) =>
      el('td', { 'data-field': field, ...attributes }, text);
    const name = el('button', { type: 'button', class: 'app-name', title: 'show its metrics and logs' }, app.name);
    name.addEventListener('click', () => {
      select(app.name);
      schedule(0);
    });
    return el(
      'tr',
      { 'data-app': app.name, class: app.name === state.selected ? 'selected' : null },
      el('td', { 'data-field': 'name' }, name),
      cell('version', `v${app.version}`),
      cell('deployed', `${ago(now - app.deployed_at_ms)} ago`, {
        title: new Date(app.deployed_at_ms).toLocaleString(),
      }),
      cell('instances', app.instances),
      cell('busy', list.filter((i) => i.state === 'busy').length),
      cell('warm', app.warm),
      el(
        'td',
        { 'data-field': 'roster' },
        ...list.map((i) =>
          el('span', { class: `instance ${i.state}`, title: `started ${new Date(i.started_ms).toLocaleString()}` },
            `#${i.id} ${i.state}, up ${ago(now - i.started_ms)}`),
        ),
      ),
      cell('standby', app.standby || '—', {
        title: 'a VM booted ahead, its package mounted: a cold start only starts the runner in it',
      }),
      cell('memory', `${(app.instances + (app.standby ? 1 : 0)) * o.memory_mib} MiB`, {
        title: `${o.memory_mib} MiB and ${o.cpus} vCPU per instance and for the standby VM`,
      }),
      cell('scale', `${o.min} / ${o.max}`),
      cell('calls', f.calls),
      cell('errors', f.errors, { class: f.errors ? 'bad' : null }),
    );
  }

  // ---- charts ----

  function renderCharts(now) {
    const kept = state.history.get(state.selected) || [];
    const recent = intervals(kept).filter((p) => now - p.t <= SPAN_MS);
    const series = (key) => recent.map((p) => [p.t, p[key]]);
    lineChart($('chart-throughput'), [['rate', series('rate')]], now, (v) => `${short(v)}/s`);
    lineChart($('chart-latency'), [['p50', series('p50')], ['p95', series('p95')]], now,
      (v) => `${short(v)} ms`);
    histogramChart($('chart-histogram'), kept.length ? kept[kept.length - 1].buckets : []);
  }

  /** Lines of [time, value] points (value null: no point) over the last SPAN_MS. */
  function lineChart(chart, lines, now, label) {
    const values = lines.flatMap(([, points]) => points.map(([, v]) => v)).filter((v) => v !== null);
    const top = ceiling(Math.max(0, ...values));
    const x = (t) => PLOT.right - ((now - t) / SPAN_MS) * (PLOT.right - PLOT.left);
    const y = (v) => PLOT.bottom - (v / top) * (PLOT.bottom - PLOT.top);
    const parts = axes(label(top));
    parts.push(
      svg('text', { class: 'tick', x: PLOT.left, y: 114 }, `-${SPAN_MS / 60000} min`),
      svg('text', { class: 'tick', x: PLOT.right, y: 114, 'text-anchor': 'end' }, 'now'),
    );
    for (const [name, points] of lines) {
      for (const run of runs(points)) {
        const at = run.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
        parts.push(svg('polyline', { class: `line ${name}`, points: at }));
      }
      for (const [t, v] of points.filter(([, v]) => v !== null)) {
        parts.push(svg('circle', {
          class: `point ${name}`, cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 1.6,
          'data-point': name, 'data-value': v,
        }, svg('title', {}, `${clock(t)}: ${label(v)}`)));
      }
    }
    chart.replaceChildren(...parts);
  }

  /** The stretches of points without a gap (a null value). */
  function runs(points) {
    const out = [[]];
    for (const point of points) {
      if (point[1] === null) out.push([]);
      else out[out.length - 1].push(point);
    }
    return out.filter((run) => run.length > 1);
  }

  /** One bar per bucket: the calls whose latency fell in it. */
  function histogramChart(chart, buckets) {
    const bars = buckets.map((b, i) => ({ ...b, count: b.count - (i ? buckets[i - 1].count : 0) }));
    const top = ceiling(Math.max(0, ...bars.map((b) => b.count)));
    const width = (PLOT.right - PLOT.left) / Math.max(1, bars.length);
    const parts = axes(String(top));
    bars.forEach((bar, i) => {
      const height = (bar.count / top) * (PLOT.bottom - PLOT.top);
      const within = bar.le !== Infinity ? `up to ${seconds(bar.le)}`
        : i ? `over ${seconds(bars[i - 1].le)}` : 'in all';
      parts.push(
        svg('rect', {
          class: 'bar', x: (PLOT.left + i * width + 1).toFixed(1), y: (PLOT.bottom - height).toFixed(1),
          width: Math.max(1, width - 2).toFixed(1), height: height.toFixed(1),
          'data-point': 'bucket', 'data-value': bar.count,
        }, svg('title', {}, `${bar.count} calls ${within}`)),
        svg('text', { class: 'tick', x: (PLOT.left + (i + 0.5) * width).toFixed(1), y: 114, 'text-anchor': 'middle' },
          bucketLabel(bar.le, i)),
      );
    });
    chart.replaceChildren(...parts);
  }

  function axes(topLabel) {
    return [
      svg('line', { class: 'axis', x1: PLOT.left, y1: PLOT.bottom, x2: PLOT.right, y2: PLOT.bottom }),
      svg('line', { class: 'axis', x1: PLOT.left, y1: PLOT.top, x2: PLOT.left, y2: PLOT.bottom }),
      svg('text', { class: 'tick', x: PLOT.left - 3, y: PLOT.top + 4, 'text-anchor': 'end' }, topLabel),
      svg('text', { class: 'tick', x: PLOT.left - 3, y: PLOT.bottom, 'text-anchor': 'end' }, '0'),
    ];
  }

  /** The round number (1, 2 or 5 times a power of ten) at or above v; 1 for nothing. */
  function ceiling(v) {
    if (!(v > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(v));
    return [1, 2, 5, 10].map((m) => m * power).find((c) => c >= v * (1 - 1e-9));
  }

  const short = (v) => (v >= 10 ? String(Math.round(v)) : String(Number(v.toPrecision(2))));
  const seconds = (s) => (s < 1 ? `${Math.round(s * 1000)}ms` : `${s}s`);
  /** A bucket's label under its bar, short: the unit only on the first bar and from 1 s on. */
  const bucketLabel = (le, i) =>
    le === Infinity ? 'more' : i === 0 || le >= 1 ? seconds(le) : String(Math.round(le * 1000));

  // ---- logs ----

  function logsPath() {
    const query = new URLSearchParams({ limit: String(SHOWN_LINES) });
    if (state.invocation) query.set('invocation', state.invocation);
    return `/apps/${encodeURIComponent(state.selected)}/logs?${query}`;
  }

  function filter(invocation) {
    state.invocation = invocation;
    $('invocation').value = invocation;
    state.logsKey = '';
    if (state.token) schedule(0);
  }

  function renderLogs(logs) {
    const lines = logs.lines.slice(-SHOWN_LINES);
    const last = lines[lines.length - 1];
    const key = JSON.stringify([logs.app, state.invocation, last && last.seq]);
    if (key === state.logsKey) return;
    state.logsKey = key;
    const list = $('logs');
    list.replaceChildren(...lines.map(logLine));
    if (!lines.length) {
      list.append(el('li', { class: 'empty' }, state.invocation ? 'No line of this call.' : 'No line yet.'));
    }
    if ($('follow').checked) list.scrollTop = list.scrollHeight;
  }

  function logLine(line) {
    const id = line.invocation || '';
    const call = id
      ? el('button', { type: 'button', class: 'invocation', title: 'only this call' }, id)
      : el('span', { class: 'invocation' }, line.stream === 'system' ? 'serve' : '-');
    if (id) call.addEventListener('click', () => filter(id));
    return el(
      'li',
      { class: line.stream, 'data-invocation': id },
      el('time', { datetime: new Date(line.time_ms).toISOString() }, clock(line.time_ms, true)),
      call,
      el('span', { class: 'text' }, line.text),
    );
  }

  // ---- sandboxes (GET /sandboxes; a server without that API answers 404) ----

  async function renderSandboxes(response) {
    const panel = $('sandboxes');
    const none = () => panel.replaceChildren(el('p', { class: 'empty' }, 'No sandboxes.'));
    if (response.status === 404) return none();
    await expect(response, 'GET /sandboxes');
    const { sandboxes } = await response.json();
    if (!Array.isArray(sandboxes) || !sandboxes.length) return none();
    const heads = ['Sandbox', 'State', '', 'Memory', 'vCPUs', 'Created', 'Last activity', 'Commands'];
    return panel.replaceChildren(el('table', {},
      el('thead', {}, el('tr', {}, ...heads.map((h) => el('th', {}, h)))),
      el('tbody', {}, ...sandboxes.map(sandboxRow))));
  }

  function sandboxRow(s) {
    const paused = s.state === 'paused';
    const action = paused ? 'resume' : 'pause';
    const button = el('button', { type: 'button', 'data-action': action,
      title: paused ? 'run its vCPUs again: its commands go on' : 'stop its vCPUs, its memory kept' },
    paused ? 'Resume' : 'Pause');
    button.addEventListener('click', () => act(button, s.id, action));
    return el('tr', { 'data-sandbox': s.id, class: paused ? 'paused' : null },
      el('td', {}, s.id),
      el('td', { 'data-field': 'state', title: paused ? `paused at ${when(s.pausedAt)}` : null }, s.state),
      el('td', {}, button),
      el('td', {}, `${s.memoryMib} MiB`),
      el('td', {}, s.cpus),
      el('td', {}, when(s.createdAt)),
      el('td', {}, when(s.lastActivityAt)),
      el('td', {}, el('ul', { class: 'execs' }, ...(s.execs || []).map(execItem))));
  }

  /** POST /sandboxes/{id}/pause or /resume, then the sandboxes asked again. */
  async function act(button, id, action) {
    button.disabled = true;
    const path = `/sandboxes/${encodeURIComponent(id)}/${action}`;
    try {
      await expect(await api(path, 'POST'), `POST ${path}`);
      schedule(0);
    } catch (error) {
      button.disabled = false;
      failed(error);
    }
  }

  function execItem(e) {
    const argv = Array.isArray(e.argv) ? e.argv.join(' ') : e.argv;
    const given = (v) => v !== null && v !== undefined;
    const end = given(e.exitCode) ? `, exit ${e.exitCode}` : given(e.signal) ? `, signal ${e.signal}` : '';
    return el('li', { 'data-exec': e.id }, el('code', {}, argv), ` ${e.state}${end}`);
  }

  // ---- time ----

  function clock(ms, millis = false) {
    const d = new Date(ms);
    const pad = (n, width = 2) => String(n).padStart(width, '0');
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return millis ? `${time}.${pad(d.getMilliseconds(), 3)}` : time;
  }

  function ago(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 120) return `${s} s`;
    if (s < 7200) return `${Math.round(s / 60)} min`;
    if (s < 172800) return `${Math.round(s / 3600)} h`;
    return `${Math.round(s / 86400)} days`;
  }

  function when(value) {
    if (value === null || value === undefined) return '-';
    const date = new Date(value);
    return Number.isNaN(date.getTime())
      ? String(value)
      : `${date.toLocaleString()} (${ago(Date.now() - date.getTime())} ago)`;
  }

  // ---- start ----

  $('login').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('token').value.trim();
    $('token').value = '';
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    start(token);
  });
  $('forget').addEventListener('click', () => signIn('The token is forgotten.'));
  $('logs-filter').addEventListener('submit', (event) => {
    event.preventDefault();
    filter($('invocation').value.trim());
  });
  $('logs-all').addEventListener('click', () => filter(''));
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.token) schedule(0);
  });

  const token = takeToken();
  if (token) start(token);
  else signIn('The console calls the admin API with its token.');
})();
