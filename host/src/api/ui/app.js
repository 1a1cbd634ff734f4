// Object Primitive inspector: plain JavaScript, no framework, no network beyond this station.
//
// The overview polls GET /cluster/stations, GET /objects and GET /admin/stats?scope=cluster once
// a second and updates the tables in place (rows keyed by id, cells changed only when their text
// changes). An object's page adds its versions and state (polled) and its log, followed over the
// Server-Sent Events stream read with fetch() so the admin token can be sent. A 401 opens the
// token form; the token lives in sessionStorage and every request is retried with it.
'use strict';

(() => {
  const TOKEN_KEY = 'op-admin-token';
  const POLL_MS = 1000;
  const DETAIL_POLL_MS = 2000;
  const MAX_LOG_LINES = 1000;
  const MAX_STATE_ROWS = 200;

  const $ = (selector) => document.querySelector(selector);

  // ---------------------------------------------------------------- HTTP

  /** A failed request: the station's JSON error `{error, message}` or what went wrong. */
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function toError(res) {
    let code = 'http_' + res.status;
    let message = res.status + ' ' + res.statusText;
    try {
      const body = await res.json();
      code = body.error || code;
      message = body.message || message;
    } catch (_) { /* not JSON */ }
    return new ApiError(res.status, code, message);
  }

  let tokenWait = null;

  /** Opens the token form (once for all waiting requests); resolves when a token is entered. */
  function askToken(refused) {
    if (!tokenWait) {
      let resolve;
      const promise = new Promise((r) => { resolve = r; });
      tokenWait = { promise, resolve };
      const error = $('#token-error');
      error.hidden = !refused;
      error.textContent = refused ? 'The station refused that token.' : '';
      $('#token-input').value = '';
      const dialog = $('#token-dialog');
      if (!dialog.open) dialog.showModal();
      $('#token-input').focus();
    }
    return tokenWait.promise;
  }

  function submitToken(event) {
    event.preventDefault();
    const token = $('#token-input').value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('#token-dialog').close();
    const wait = tokenWait;
    tokenWait = null;
    if (wait) wait.resolve();
  }

  /**
   * Fetches `path` with the admin token when one is stored. `opts.json` is sent as a JSON body;
   * `opts.raw` returns the Response itself (for streams). A 401 asks for the token and retries.
   */
  async function api(path, opts = {}) {
    for (;;) {
      const headers = new Headers(opts.headers || {});
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (token) headers.set('Authorization', 'Bearer ' + token);
      let body = opts.body;
      if (opts.json !== undefined) {
        headers.set('Content-Type', 'application/json');
        body = JSON.stringify(opts.json);
      }
      const res = await fetch(path, {
        method: opts.method || 'GET', headers, body, signal: opts.signal, cache: 'no-store',
      });
      if (res.status === 401) {
        // Another request may have brought a new token meanwhile: then retry at once.
        if (sessionStorage.getItem(TOKEN_KEY) === token) {
          if (token) sessionStorage.removeItem(TOKEN_KEY);
          await askToken(Boolean(token));
        }
        continue;
      }
      if (!res.ok) throw await toError(res);
      if (opts.raw) return res;
      const type = res.headers.get('content-type') || '';
      return type.includes('json') ? res.json() : res.text();
    }
  }

  // ---------------------------------------------------------------- small helpers

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name === 'class') node.className = value;
      else if (name === 'text') node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function setText(node, text) {
    const value = String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  function setAttr(node, name, value) {
    if (node.getAttribute(name) !== value) node.setAttribute(name, value);
  }

  function cell(label, field, cls = '') {
    return el('td', { 'data-label': label, 'data-field': field, class: cls });
  }

  function field(row, name) {
    return row.querySelector(`[data-field="${name}"]`);
  }

  /** Makes `tbody` hold one row per item, in order: rows are built once and updated in place. */
  function syncRows(tbody, items, key, build, update) {
    const existing = new Map();
    for (const row of tbody.rows) existing.set(row.dataset.key, row);
    let previous = null;
    for (const item of items) {
      const k = key(item);
      let row = existing.get(k);
      if (row) existing.delete(k);
      else {
        row = build(item);
        row.dataset.key = k;
      }
      update(row, item);
      const expected = previous ? previous.nextSibling : tbody.firstChild;
      if (row !== expected) tbody.insertBefore(row, expected);
      previous = row;
    }
    for (const row of existing.values()) row.remove();
  }

  function setChips(container, values) {
    const text = values.join(',');
    if (container.dataset.values === text) return;
    container.dataset.values = text;
    container.replaceChildren(...values.map((v) => el('span', { class: 'chip', text: v })));
  }

  function bytes(n) {
    if (n === null || n === undefined) return '—';
    if (n < 1024) return n + ' B';
    const units = ['KiB', 'MiB', 'GiB'];
    let value = n / 1024;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return value.toFixed(value < 10 ? 1 : 0) + ' ' + units[unit];
  }

  function millis(ms) {
    if (ms === null || ms === undefined) return '—';
    if (ms < 1) return (ms * 1000).toFixed(0) + ' µs';
    if (ms < 1000) return ms.toFixed(ms < 10 ? 2 : 1) + ' ms';
    return (ms / 1000).toFixed(2) + ' s';
  }

  function rate(r) {
    if (r === null || r === undefined) return '—';
    return r < 10 ? r.toFixed(1) : r.toFixed(0);
  }

  function clock(ms) {
    const d = new Date(ms);
    const pad = (n, w = 2) => String(n).padStart(w, '0');
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  function when(ms) {
    return new Date(ms).toLocaleString();
  }

  function toast(message, bad = false) {
    const node = el('div', { class: bad ? 'toast bad' : 'toast', role: 'status', text: message });
    $('#toasts').append(node);
    setTimeout(() => node.remove(), bad ? 8000 : 4000);
  }

  /** A confirm dialog; resolves true when confirmed. */
  function confirmAction(title, message, label) {
    const dialog = $('#confirm-dialog');
    setText($('#confirm-title'), title);
    setText($('#confirm-message'), message);
    setText($('#confirm-ok'), label);
    dialog.returnValue = '';
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    });
  }

  /** Runs `fn` every `ms` until the returned function is called; one run at a time. */
  function every(ms, fn) {
    let stopped = false;
    let timer = null;
    const run = async () => {
      if (stopped) return;
      try { await fn(); } catch (e) { if (!stopped) failed(e); }
      if (!stopped) timer = setTimeout(run, ms);
    };
    run();
    return () => { stopped = true; clearTimeout(timer); };
  }

  function failed(error) {
    const live = $('#live');
    live.dataset.state = 'error';
    setText($('#live-text'), error.message || String(error));
  }

  function succeeded() {
    const live = $('#live');
    live.dataset.state = 'live';
    setText($('#live-text'), 'live');
  }

  // ---------------------------------------------------------------- the model

  const model = {
    self: null,
    stations: [],
    directory: null,
    objects: [],
    /** id → figures summed over the stations that run the object. */
    stats: new Map(),
    /** `station\0id` → {calls, at} of the previous sample, for calls/s. */
    samples: new Map(),
    statsKnown: false,
    statsError: null,
    unreachable: [],
  };

  async function pollStations() {
    const body = await api('/cluster/stations');
    model.self = body.station;
    model.stations = body.stations || [];
    model.directory = body.directory || null;
    succeeded();
    renderStations();
    renderObjectPage();
  }

  async function pollObjects() {
    const body = await api('/objects');
    model.objects = body.objects || [];
    succeeded();
    renderObjects();
    renderObjectPage();
  }

  async function pollStats() {
    let body;
    try {
      body = await api('/admin/stats?scope=cluster');
    } catch (e) {
      // The lists still update; say why the figures do not.
      model.statsError = e.message;
      renderObjects();
      return;
    }
    model.statsError = null;
    ingestStats(body.stations || []);
    model.unreachable = body.unreachable || [];
    renderObjects();
    renderObjectPage();
  }

  /** Sums each object's figures over the stations that answered; calls/s from the last sample. */
  function ingestStats(stations) {
    const stats = new Map();
    const samples = new Map();
    for (const station of stations) {
      for (const o of station.objects || []) {
        let s = stats.get(o.id);
        if (!s) {
          s = { calls: 0, rate: null, traps: 0, errors: 0, p99: null, stateBytes: null, stateKeys: null };
          stats.set(o.id, s);
        }
        s.calls += o.calls;
        s.traps += o.traps;
        s.errors += (o.by_status['5xx'] || 0) + (o.by_status.error || 0);
        if (o.p99_ms !== null) s.p99 = Math.max(s.p99 || 0, o.p99_ms);
        if (o.state_bytes !== null) s.stateBytes = Math.max(s.stateBytes || 0, o.state_bytes);
        if (o.state_keys !== null) s.stateKeys = Math.max(s.stateKeys || 0, o.state_keys);
        const key = station.station + '\0' + o.id;
        const now = { calls: o.calls, at: station.at_ms };
        samples.set(key, now);
        const before = model.samples.get(key);
        if (before && now.at > before.at) {
          const perSecond = Math.max(0, now.calls - before.calls) * 1000 / (now.at - before.at);
          s.rate = (s.rate || 0) + perSecond;
        }
      }
    }
    model.stats = stats;
    model.samples = samples;
    model.statsKnown = true;
  }

  // ---------------------------------------------------------------- the overview

  function renderStations() {
    setText($('#station-self'), model.self || '');
    const tbody = $('#stations tbody');
    syncRows(tbody, model.stations, (s) => s.id, buildStationRow, updateStationRow);
    $('#stations-empty').hidden = model.stations.length > 0;
    const group = model.directory;
    if (group) {
      const voters = (group.voters || []).length;
      const learners = (group.learners || []).length;
      setText($('#directory-summary'),
        `directory term ${group.term} · ${voters} voter${voters === 1 ? '' : 's'}` +
        (learners ? ` · ${learners} learner${learners === 1 ? '' : 's'}` : ''));
    }
  }

  function buildStationRow(s) {
    const row = el('tr', { 'data-station-id': s.id });
    const id = cell('Station', 'id', 'mono');
    // One child per cell: on a phone a cell lays out its label and its one value side by side.
    id.append(el('span', {}, el('span', { 'data-field': 'name' }), ' ',
      el('span', { class: 'badge', 'data-field': 'self', text: 'this station' })));
    row.append(
      id,
      cell('Address', 'address', 'mono'),
      cell('State', 'state'),
      cell('Role', 'role'),
      cell('CPU', 'cpu', 'num'),
      cell('Memory', 'memory', 'num'),
      cell('In flight', 'in_flight', 'num'),
      cell('Objects', 'objects', 'num'),
    );
    field(row, 'state').append(el('span', { class: 'badge' }));
    field(row, 'role').append(el('span', { class: 'badge' }));
    return row;
  }

  function updateStationRow(row, s) {
    setText(field(row, 'name'), s.id);
    field(row, 'self').hidden = !s.self;
    setText(field(row, 'address'), s.address);
    const state = field(row, 'state').firstChild;
    setText(state, s.ready || s.state !== 'alive' ? s.state : s.state + ' (not ready)');
    setAttr(state, 'data-state', s.state);
    const role = field(row, 'role').firstChild;
    setText(role, s.role);
    setAttr(role, 'class', 'badge role-' + s.role);
    const load = s.load || {};
    setText(field(row, 'cpu'), load.cpu === undefined ? '—' : load.cpu.toFixed(0) + ' %');
    setText(field(row, 'memory'), load.memory === undefined ? '—' : load.memory.toFixed(0) + ' %');
    setText(field(row, 'in_flight'), load.in_flight === undefined ? '—' : load.in_flight);
    setText(field(row, 'objects'), (s.objects || []).length);
  }

  function renderObjects() {
    const tbody = $('#objects tbody');
    syncRows(tbody, model.objects, (o) => o.id, buildObjectRow, updateObjectRow);
    $('#objects-empty').hidden = model.objects.length > 0;
    const n = model.objects.length;
    let summary = `${n} object${n === 1 ? '' : 's'}`;
    if (model.statsError) summary += ` · figures unavailable: ${model.statsError}`;
    else if (model.unreachable.length) {
      summary += ` · no figures from ${model.unreachable.map((u) => u.station).join(', ')}`;
    }
    setText($('#objects-summary'), summary);
  }

  function buildObjectRow(o) {
    const row = el('tr', { 'data-object-id': o.id });
    const name = cell('Object', 'id', 'mono');
    name.append(el('a', { href: '#/objects/' + encodeURIComponent(o.id), text: o.id }));
    const replicas = cell('Replicas', 'replicas');
    replicas.append(el('div', { class: 'chips' }));
    row.append(
      name,
      cell('Version', 'version', 'num'),
      cell('Home', 'home', 'mono'),
      replicas,
      cell('Epoch', 'epoch', 'num'),
      cell('Calls/s', 'rate', 'num'),
      cell('p99', 'p99', 'num'),
      cell('Traps', 'traps', 'num'),
      cell('State', 'state', 'num'),
    );
    return row;
  }

  function updateObjectRow(row, o) {
    const s = model.stats.get(o.id);
    const unknown = model.statsKnown ? '0' : '—';
    setText(field(row, 'version'), o.version);
    setText(field(row, 'home'), o.stateless ? 'stateless' : o.home || '—');
    setChips(field(row, 'replicas').firstChild, (o.stateless ? o.stations : o.replicas) || []);
    setText(field(row, 'epoch'), o.epoch === undefined ? '—' : o.epoch);
    setText(field(row, 'rate'), s ? rate(s.rate === null ? 0 : s.rate) : unknown);
    setText(field(row, 'p99'), s ? millis(s.p99) : '—');
    setText(field(row, 'traps'), s ? s.traps : unknown);
    setText(field(row, 'state'), s ? bytes(s.stateBytes) : '—');
  }

  // ---------------------------------------------------------------- one object's page

  /** What the object page runs while shown: its id and how to stop its loops. */
  let page = null;

  function openObject(id) {
    closeObject();
    page = { id, stops: [], history: null, abort: new AbortController(), paused: false, queue: [], seen: new Set() };
    $('#overview').hidden = true;
    $('#object').hidden = false;
    setText($('#object-id'), id);
    setText($('#call-prefix'), `/objects/${id}/`);
    $('#call-result').hidden = true;
    $('#state-history').hidden = true;
    $('#log').replaceChildren();
    $('#versions tbody').replaceChildren();
    $('#state tbody').replaceChildren();
    setText($('#log-pause'), 'Pause');
    for (const f of ['version', 'home', 'replicas', 'epoch', 'rate', 'calls', 'p99', 'traps', 'state-size']) {
      setText($('#object-' + f), '—');
    }
    renderObjectPage();
    const current = page;
    page.stops.push(every(DETAIL_POLL_MS, () => loadVersions(current)));
    page.stops.push(every(DETAIL_POLL_MS, () => loadState(current)));
    followLog(current);
  }

  function closeObject() {
    if (!page) return;
    for (const stop of page.stops) stop();
    page.abort.abort();
    page = null;
  }

  function showOverview() {
    closeObject();
    $('#object').hidden = true;
    $('#overview').hidden = false;
  }

  function route() {
    const match = location.hash.match(/^#\/objects\/(.+)$/);
    if (match) {
      const id = decodeURIComponent(match[1]);
      if (!page || page.id !== id) openObject(id);
    } else {
      showOverview();
    }
  }

  function renderObjectPage() {
    if (!page) return;
    const o = model.objects.find((x) => x.id === page.id);
    const s = model.stats.get(page.id);
    setText($('#object-kind'), o ? (o.stateless ? 'stateless' : 'stateful') : 'not listed');
    if (o) {
      setText($('#object-version'), o.version);
      setText($('#object-home'), o.stateless ? 'stateless' : o.home || '—');
      setText($('#object-replicas'), ((o.stateless ? o.stations : o.replicas) || []).join(', ') || 'none');
      setText($('#object-epoch'), o.epoch === undefined ? '—' : o.epoch);
    }
    if (s) {
      setText($('#object-rate'), rate(s.rate === null ? 0 : s.rate));
      setText($('#object-calls'), s.calls);
      setText($('#object-p99'), millis(s.p99));
      setText($('#object-traps'), s.traps);
      setText($('#object-state-size'),
        s.stateBytes === null ? '—' : `${bytes(s.stateBytes)} · ${s.stateKeys} key${s.stateKeys === 1 ? '' : 's'}`);
    }
    renderMigrateTargets(o);
  }

  function renderMigrateTargets(o) {
    const select = $('#migrate-target');
    const home = o && !o.stateless ? o.home : null;
    const targets = model.stations.filter((s) => s.state === 'alive' && s.id !== home).map((s) => s.id);
    const text = targets.join(',');
    if (select.dataset.values !== text) {
      const chosen = select.value;
      select.dataset.values = text;
      select.replaceChildren(...targets.map((id) => el('option', { value: id, text: id })));
      if (targets.includes(chosen)) select.value = chosen;
    }
    const movable = Boolean(home) && targets.length > 0;
    $('#migrate-button').disabled = !movable;
    select.disabled = !movable;
  }

  async function loadVersions(current) {
    const body = await api(`/admin/objects/${encodeURIComponent(current.id)}/versions`, { signal: current.abort.signal });
    if (page !== current) return;
    const versions = (body.versions || []).slice().reverse();
    syncRows($('#versions tbody'), versions, (v) => String(v.version), buildVersionRow,
      (row, v) => updateVersionRow(row, v, body.current));
  }

  function buildVersionRow(v) {
    const row = el('tr', { 'data-version': v.version });
    const number = cell('Version', 'version', 'num');
    number.append(el('span', {}, el('span', { 'data-field': 'number', text: v.version }), ' ',
      el('span', { class: 'badge ok', 'data-field': 'current', text: 'current' })));
    const sha = cell('SHA-256', 'sha256', 'mono');
    sha.title = v.sha256;
    sha.textContent = v.sha256.slice(0, 12);
    const action = cell('', 'action');
    const button = el('button', { type: 'button', class: 'small quiet', 'data-rollback': v.version, text: 'Roll back' });
    action.append(button);
    row.append(number, cell('Deployed', 'deployed'), sha, cell('Size', 'size', 'num'), cell('Note', 'note'), action);
    setText(field(row, 'deployed'), when(v.deployed_at));
    setText(field(row, 'size'), bytes(v.size));
    setText(field(row, 'note'), [v.note, v.deployed_by && `by ${v.deployed_by}`].filter(Boolean).join(' · '));
    return row;
  }

  function updateVersionRow(row, v, current) {
    const isCurrent = v.version === current;
    row.classList.toggle('current', isCurrent);
    row.querySelector('[data-field="current"]').hidden = !isCurrent;
    row.querySelector('[data-rollback]').hidden = isCurrent;
  }

  async function rollback(version) {
    const id = page.id;
    const ok = await confirmAction(`Roll back ${id}?`,
      `Version ${version}'s component is deployed again as a new version.`, 'Roll back');
    if (!ok) return;
    const outcome = await api(`/admin/objects/${encodeURIComponent(id)}/rollback`, { method: 'POST', json: { version } });
    toast(`${id}: version ${outcome.version} is current (the bytes of version ${version})`);
    await Promise.all([pollObjects(), page ? loadVersions(page) : null]);
  }

  async function migrate() {
    const id = page.id;
    const target = $('#migrate-target').value;
    if (!target) return;
    const ok = await confirmAction(`Migrate ${id}?`,
      `Its state and versions move to ${target}; calls pause while it moves.`, 'Migrate');
    if (!ok) return;
    const button = $('#migrate-button');
    button.disabled = true;
    try {
      const report = await api('/cluster/migrate', { method: 'POST', json: { object_id: id, target_station: target } });
      const pause = report.pause_ms === undefined ? '' : ` (paused ${millis(report.pause_ms)})`;
      toast(`${id} moved from ${report.from} to ${report.to}${pause}`);
    } finally {
      button.disabled = false;
    }
    await pollObjects();
  }

  async function undeploy() {
    const id = page.id;
    const ok = await confirmAction(`Undeploy ${id}?`,
      'The object stops serving calls. Its state is kept on disk.', 'Undeploy');
    if (!ok) return;
    await api(`/admin/objects/${encodeURIComponent(id)}`, { method: 'DELETE' });
    toast(`${id} undeployed`);
    location.hash = '#/';
    await pollObjects();
  }

  async function loadState(current) {
    const body = await api(`/admin/objects/${encodeURIComponent(current.id)}/state`, { signal: current.abort.signal });
    if (page !== current) return;
    current.state = body;
    renderState();
    if (current.history) await loadHistory(current, current.history);
  }

  function renderState() {
    const body = page && page.state;
    if (!body) return;
    const filter = $('#state-filter').value.trim();
    const entries = Object.entries(body.state || {});
    const shown = entries.filter(([k]) => !filter || k.includes(filter)).slice(0, MAX_STATE_ROWS);
    syncRows($('#state tbody'), shown, ([k]) => k, buildStateRow, updateStateRow);
    $('#state-empty').hidden = shown.length > 0;
    const more = entries.length > shown.length ? ` (${shown.length} shown)` : '';
    setText($('#state-summary'), `${entries.length} key${entries.length === 1 ? '' : 's'}${more} · seq ${body.seq}`);
  }

  function buildStateRow([key]) {
    const row = el('tr', { 'data-key': key });
    const name = cell('Key', 'key', 'mono');
    name.textContent = key;
    const value = cell('Value', 'value');
    value.append(el('div', { class: 'value' }));
    const action = cell('', 'action');
    action.append(el('button', { type: 'button', class: 'small quiet', 'data-history-key': key, text: 'History' }));
    row.append(name, value, action);
    return row;
  }

  function updateStateRow(row, [, value]) {
    const node = field(row, 'value').firstChild;
    setText(node, value);
    if (node.title !== value) node.title = value;
  }

  async function loadHistory(current, key) {
    const url = `/admin/objects/${encodeURIComponent(current.id)}/state?key=${encodeURIComponent(key)}&limit=50`;
    const body = await api(url, { signal: current.abort.signal });
    if (page !== current || current.history !== key) return;
    setText($('#history-key'), key);
    const rows = (body.history || []).slice().reverse();
    syncRows($('#history-rows'), rows, (h) => String(h.seq), (h) => {
      const row = el('tr', { 'data-seq': h.seq });
      row.append(cell('Seq', 'seq', 'num'), cell('At', 'at'), cell('Value', 'value', 'mono'));
      setText(field(row, 'seq'), h.seq);
      setText(field(row, 'at'), when(h.at_ms));
      setText(field(row, 'value'), h.value === null ? '(deleted)' : h.value);
      return row;
    }, () => {});
    $('#state-history').hidden = false;
  }

  // ---------------------------------------------------------------- the call form

  async function sendCall(event) {
    event.preventDefault();
    if (!page) return;
    const method = $('#call-method').value;
    const path = $('#call-path').value.trim().replace(/^\/+/, '');
    const url = `/objects/${encodeURIComponent(page.id)}/${path}`;
    const init = { method, cache: 'no-store' };
    const body = $('#call-body').value;
    if (method !== 'GET' && body) init.body = body;
    const button = $('#call-send');
    button.disabled = true;
    const started = performance.now();
    try {
      // The object's own call: the admin token is never sent to an object.
      const res = await fetch(url, init);
      const text = await res.text();
      showCallResult(res, text, performance.now() - started);
    } catch (e) {
      toast(`call failed: ${e.message}`, true);
    } finally {
      button.disabled = false;
    }
  }

  function showCallResult(res, text, took) {
    const status = $('#call-status');
    setText(status, `${res.status} ${res.statusText}`.trim());
    const cls = res.status < 300 ? 'ok' : res.status < 500 ? 'warn' : 'bad';
    status.className = 'badge ' + cls;
    status.dataset.status = res.status;
    setText($('#call-time'), `${took.toFixed(1)} ms`);
    const lines = [];
    res.headers.forEach((value, name) => lines.push(`${name}: ${value}`));
    setText($('#call-headers'), lines.join('\n'));
    let shown = text;
    try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON */ }
    setText($('#call-response'), shown);
    $('#call-result').hidden = false;
  }

  // ---------------------------------------------------------------- the live log

  function setLogStatus(text, state) {
    const node = $('#log-status');
    setText(node, text);
    node.dataset.state = state;
  }

  /** Follows the object's log (SSE over fetch) while its page is open, reconnecting on loss. */
  async function followLog(current) {
    const url = `/admin/objects/${encodeURIComponent(current.id)}/logs?follow=true&limit=100`;
    const signal = current.abort.signal;
    while (!signal.aborted) {
      setLogStatus('connecting', 'connecting');
      try {
        const res = await api(url, { raw: true, signal, headers: { Accept: 'text/event-stream' } });
        setLogStatus('live', 'live');
        await readEvents(res.body, signal, (name, data) => {
          if (name === 'log') logLine(current, JSON.parse(data));
        });
        setLogStatus('reconnecting', 'reconnecting');
      } catch (e) {
        if (signal.aborted) return;
        setLogStatus('reconnecting', 'reconnecting');
        $('#log-status').title = e.message;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  /** Reads a text/event-stream body, calling `onEvent(name, data)` for each event. */
  async function readEvents(stream, signal, onEvent) {
    const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
    signal.addEventListener('abort', () => reader.cancel().catch(() => {}), { once: true });
    let buffer = '';
    let name = 'message';
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(buffer[end] === '\r' && buffer[end + 1] === '\n' ? end + 2 : end + 1);
        if (line === '') {
          if (data.length) onEvent(name, data.join('\n'));
          name = 'message';
          data = [];
        } else if (!line.startsWith(':')) {
          const colon = line.indexOf(':');
          const key = colon < 0 ? line : line.slice(0, colon);
          let rest = colon < 0 ? '' : line.slice(colon + 1);
          if (rest.startsWith(' ')) rest = rest.slice(1);
          if (key === 'event') name = rest;
          else if (key === 'data') data.push(rest);
        }
      }
    }
  }

  function logLine(current, record) {
    // A reconnect replays the last lines: show each line once.
    const key = [record.ts, record.request_id, record.event, record.message].join('\u0000');
    if (current.seen.has(key)) return;
    current.seen.add(key);
    if (current.seen.size > 4 * MAX_LOG_LINES) current.seen = new Set([...current.seen].slice(-2 * MAX_LOG_LINES));
    if (current.paused) {
      current.queue.push(record);
      return;
    }
    appendLog([record]);
  }

  function appendLog(records) {
    const log = $('#log');
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
    for (const r of records) {
      const line = el('div', {
        class: 'log-line', 'data-level': r.level, 'data-event': r.event, 'data-request-id': r.request_id,
      });
      line.append(
        el('span', { class: 'ts', text: clock(r.ts), title: new Date(r.ts).toISOString() }),
        el('span', { class: 'lvl', text: r.level }),
        el('span', { class: 'ev', text: r.event }),
        el('span', { class: 'msg', text: r.message }),
      );
      log.append(line);
    }
    while (log.childElementCount > MAX_LOG_LINES) log.firstElementChild.remove();
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function togglePause() {
    if (!page) return;
    page.paused = !page.paused;
    setText($('#log-pause'), page.paused ? 'Resume' : 'Pause');
    if (!page.paused) {
      appendLog(page.queue);
      page.queue = [];
    }
  }

  // ---------------------------------------------------------------- wiring

  /** Runs an action from a button, showing its error as a message. */
  function action(fn) {
    return (event) => {
      Promise.resolve(fn(event)).catch((e) => toast(e.message || String(e), true));
    };
  }

  function wire() {
    $('#token-form').addEventListener('submit', submitToken);
    // The token is needed to go on: Escape does not dismiss the form.
    $('#token-dialog').addEventListener('cancel', (e) => e.preventDefault());
    $('#migrate-button').addEventListener('click', action(migrate));
    $('#undeploy-button').addEventListener('click', action(undeploy));
    $('#versions').addEventListener('click', action((e) => {
      const button = e.target.closest('[data-rollback]');
      if (button && page) return rollback(Number(button.dataset.rollback));
      return null;
    }));
    $('#state').addEventListener('click', action((e) => {
      const button = e.target.closest('[data-history-key]');
      if (!button || !page) return null;
      page.history = button.dataset.historyKey;
      return loadHistory(page, page.history);
    }));
    $('#history-close').addEventListener('click', () => {
      if (page) page.history = null;
      $('#state-history').hidden = true;
    });
    $('#state-filter').addEventListener('input', renderState);
    $('#call-form').addEventListener('submit', action(sendCall));
    $('#log-pause').addEventListener('click', togglePause);
    $('#log-clear').addEventListener('click', () => $('#log').replaceChildren());
    window.addEventListener('hashchange', route);
  }

  wire();
  route();
  every(POLL_MS, pollStations);
  every(POLL_MS, pollObjects);
  every(POLL_MS, pollStats);
})();
