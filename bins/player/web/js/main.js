// Boot: read the address, connect, wire the controls, draw on every animation frame.

import { Store } from './store.js';
import { Link } from './socket.js';
import { MapView } from './map.js';
import { Timeline } from './timeline.js';
import { TrackTable } from './table.js';
import { readUrl, applyView, writeUrl } from './url.js';
import { installApi } from './api.js';
import { AlarmPanel } from './alarms.js';
import { Plot } from './plot.js';
import { parseFilter } from './tools.js';

const u = readUrl();
const $ = (id) => document.getElementById(id);
if (u.screenshot) document.body.classList.add('screenshot');

const store = new Store();
if (u.trail !== null && u.trail >= 0 && u.trail <= 3600) store.setTrail(u.trail);

// A tab keeps its client id across reloads (sessionStorage), not across tabs.
function clientId() {
  if (u.client && /^[A-Za-z0-9_-]{1,40}$/.test(u.client)) return u.client;
  let id = sessionStorage.getItem('tspi.client');
  if (!id) {
    const r = new Uint8Array(4);
    crypto.getRandomValues(r);
    id = `tab-${[...r].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
    sessionStorage.setItem('tspi.client', id);
  }
  return id;
}
const operator = u.operator || localStorage.getItem('tspi.operator') || '';
$('operator').value = operator;

const map = new MapView($('map'), store);
applyView(u, map);

// What to show after (re)connecting: first what the address says, later where we were.
let wanted = { mode: u.mode, t: u.t, speed: u.speed, paused: u.paused };
const iso = (ms) => new Date(ms).toISOString();

async function restore(link) {
  const w = wanted;
  try {
    await link.request('trail', { seconds: store.trailMs / 1000 });
    if (w.speed) await link.request('speed', { speed: w.speed });
    if (w.mode === 'replay' && w.t !== null) {
      if (w.paused) await link.request('pause');
      await link.request('seek', { to: iso(w.t) });
    }
  } catch (e) {
    toast(`could not restore the view: ${e.message}`, true);
  }
}

const link = new Link(store, { client: clientId(), operator }, () => restore(link));

const ui = {
  async setTrail(seconds) {
    if (!(seconds >= 0 && seconds <= 3600)) throw new Error('trail must be 0 to 3600 s');
    store.setTrail(seconds);
    $('trail-select').value = String(seconds);
    if (seconds > 0) await link.request('trail', { seconds });
  },
  setView(kind, where) {
    map.setKind(kind);
    map.fitted = false;
    if (where) {
      applyView({
        view: null, follow: null, zoom: where.zoom ?? null,
        lat: where.lat ?? null, lon: where.lon ?? null,
        e: where.e_km ?? null, n: where.n_km ?? null,
      }, map);
    }
    $('view-select').value = map.kind;
    store.version++;
  },
};
const api = installApi(store, link, map, ui);

const timeline = new Timeline($('timeline'), store, {
  seek: (ms) => api.seek(iso(ms)).catch((e) => toast(e.message, true)),
  live: () => api.live().catch((e) => toast(e.message, true)),
  coverage: (start, end, buckets) =>
    link.request('timeline', { start: iso(start), end: iso(end), buckets })
      .then(() => { store.archiveError = null; })
      .catch((e) => { store.archiveError = e.message; }),
});
const table = new TrackTable($('tracks'), store, map);
const plot = new Plot($('plot'), $('plot-title'), store, map);

// Alarms: acknowledge and shelve go to the alarmer as this tab's operator.
async function alarmAction(action, id, seconds) {
  const fields = { action, alarm: String(id) };
  if (seconds !== undefined) fields.seconds = Number(seconds);
  const r = await link.request('alarm', fields);
  return r.alarm;
}
const alarmPanel = new AlarmPanel($('alarm-list'), $('alarm-head'), store,
  (action, id) => alarmAction(action, id, action === 'shelve' ? 3600 : undefined).catch((e) => toast(e.message, true)));

// The tools: filter, colours, ring spacing, the plotted field, the ruler.
ui.setFilter = (text) => {
  map.filter = parseFilter(text);
  if ($('filter').value !== (text || '')) $('filter').value = text || '';
  store.version++;
};
ui.setColourBy = (how) => {
  if (!['none', 'altitude'].includes(how)) throw new Error('colour by none or altitude');
  map.colourBy = how;
  $('colour-by').value = how;
  store.version++;
};
ui.setRingSpacing = (units) => {
  if (units === null || units === '' || units === undefined) {
    map.ringSpacing = null;
  } else {
    const v = Number(units);
    if (!(v > 0 && v <= 10000)) throw new Error('ring spacing must be more than 0 range units');
    map.ringSpacing = v / store.factors().range.per_si;
  }
  store.version++;
};
ui.setPlot = (field) => {
  if (!['alt', 'spd'].includes(field)) throw new Error('plot alt or spd');
  plot.field = field;
  $('plot-field').value = field;
  plot.draw(store.cursorMs());
  store.version++;
};
ui.setRuler = (from, to) => {
  map.ruler = from === null || from === undefined ? null : { from: from === 'origin' ? 'origin' : Number(from), to: to === 'origin' ? 'origin' : Number(to) };
  store.version++;
};
ui.alarmAction = alarmAction;
ui.plotData = () => plot.data(store.cursorMs());
$('filter').addEventListener('input', (e) => {
  try {
    ui.setFilter(e.target.value);
    e.target.classList.remove('bad');
    e.target.title = '';
  } catch (x) {
    e.target.classList.add('bad');
    e.target.title = x.message;
  }
});
$('colour-by').addEventListener('change', (e) => ui.setColourBy(e.target.value));
$('ring-spacing').addEventListener('change', (e) => {
  try {
    ui.setRingSpacing(e.target.value.trim());
  } catch (x) {
    toast(x.message, true);
  }
});
$('plot-field').addEventListener('change', (e) => ui.setPlot(e.target.value));
$('ruler-btn').addEventListener('click', () => {
  if (map.ruler) ui.setRuler(null);
  else if (map.selected !== null) ui.setRuler(map.selected, 'origin');
  else toast('select a track first (click it); shift+click another to measure to it', false);
});

// Export: the chosen window (or the span shown) as a file. The display asks first (the
// replayer answers an empty window or an unknown sensor in a line), then downloads.
function exportUrl(format, span, options = {}) {
  const q = new URLSearchParams({ start: iso(span.start), end: iso(span.end), format });
  if (options.sensors && options.sensors.length) q.set('sensors', options.sensors.join(','));
  if (options.clock) q.set('clock', options.clock);
  return `/export?${q}`;
}
async function exportWindow(format, options = {}) {
  const span = options.start && options.end
    ? { start: Date.parse(options.start), end: Date.parse(options.end) }
    : timeline.exportWindow(store.now());
  const url = exportUrl(format, span, options);
  const check = await fetch(`${url}&check=1`);
  if (!check.ok) throw new Error((await check.text()).trim() || `export refused (${check.status})`);
  const a = document.createElement('a');
  a.href = url;
  a.download = '';
  document.body.appendChild(a);
  a.click();
  a.remove();
  return url;
}
ui.exportWindow = exportWindow;

// Controls.
$('pause-btn').addEventListener('click', () => (store.mode.paused ? api.resume() : api.pause()).catch((e) => toast(e.message, true)));
document.querySelectorAll('#speed-group [data-speed]').forEach((b) => {
  b.addEventListener('click', () => api.setSpeed(Number(b.dataset.speed)).catch((e) => toast(e.message, true)));
});
$('live-btn').addEventListener('click', () => api.live().catch((e) => toast(e.message, true)));
$('leave-btn').addEventListener('click', () => api.live().catch((e) => toast(e.message, true)));
$('rejoin-btn').addEventListener('click', () => api.join().catch((e) => toast(e.message, true)));
$('view-select').addEventListener('change', (e) => ui.setView(e.target.value));
$('trail-select').value = String(store.trailMs / 1000);
$('trail-select').addEventListener('change', (e) => ui.setTrail(Number(e.target.value)).catch((x) => toast(x.message, true)));
$('operator').addEventListener('change', (e) => {
  const name = e.target.value.trim();
  localStorage.setItem('tspi.operator', name);
  if (name) link.request('operator', { name }).catch((x) => toast(x.message, true));
});
$('export-form').addEventListener('submit', (e) => {
  e.preventDefault();
  exportWindow($('export-format').value)
    .then(() => toast('export started: see your downloads', false))
    .catch((x) => toast(x.message, true));
});
$('tag-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = $('tag-comment');
  const comment = input.value.trim();
  if (!comment) return;
  api.tag(comment).then(() => { input.value = ''; }).catch((x) => toast(x.message, true));
});
window.addEventListener('keydown', (e) => {
  if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
  if (e.key === ' ') {
    e.preventDefault();
    $('pause-btn').click();
  } else if (e.key === 'l' || e.key === 'L') {
    $('live-btn').click();
  } else if (e.key === 'f' && map.selected !== null) {
    map.follow = map.follow === map.selected ? null : map.selected;
    store.version++;
  } else if (e.key === '+' || e.key === '-') {
    map.zoom += e.key === '+' ? 0.5 : -0.5;
    map.fitted = true;
    store.version++;
  }
});
window.addEventListener('resize', () => store.version++);

let toastTimer = null;
function toast(text, error) {
  store.toasts.push({ text, error });
}
function showToasts() {
  if (toastTimer || store.toasts.length === 0) return;
  const t = store.toasts.shift();
  const el = $('toast');
  el.textContent = t.text;
  el.classList.toggle('error', t.error);
  el.hidden = false;
  toastTimer = setTimeout(() => {
    el.hidden = true;
    toastTimer = null;
  }, 4000);
}

function header(cursor) {
  const m = store.mode;
  const badge = $('mode-badge');
  badge.textContent = m.mode === 'live' ? 'LIVE' : m.mode === 'channel' ? 'GROUP REPLAY' : m.paused ? 'REPLAY ❚❚' : `REPLAY ${m.speed}×`;
  badge.className = `badge ${m.mode === 'replay' ? 'replay' : m.mode}`;
  $('cursor-text').textContent = `${iso(cursor).replace('T', ' ').slice(0, 23)}Z`;
  document.querySelectorAll('#speed-group [data-speed]').forEach((b) => {
    b.classList.toggle('on', m.mode === 'replay' && Number(b.dataset.speed) === m.speed);
  });
  $('pause-btn').classList.toggle('on', !!m.paused);
  $('live-btn').disabled = m.mode === 'live';
  const f = store.factors();
  $('units-text').textContent = `${store.settings.units} · ${f.altitude.unit} · ${f.speed.unit}${store.settings.session ? ` · ${store.settings.session.name} ${store.settings.session.id}` : ''}`;
  const conn = $('conn');
  const fps = store.fps === null ? '' : ` · ${store.fps} fps`;
  conn.textContent = store.connected ? `connected${fps}` : 'disconnected — retrying';
  conn.classList.toggle('down', !store.connected);
  const banner = $('banner');
  const running = store.groups[store.groups.length - 1];
  if (m.mode === 'channel' && m.channel) {
    banner.hidden = false;
    $('banner-text').textContent = `Following group replay "${m.channel.name}"`;
    $('leave-btn').hidden = false;
    $('rejoin-btn').hidden = true;
  } else if (running) {
    banner.hidden = false;
    $('banner-text').textContent = `Group replay "${running.name}" is running`;
    $('leave-btn').hidden = true;
    $('rejoin-btn').hidden = false;
  } else {
    banner.hidden = true;
  }
  const origin = store.config.origin;
  $('view-select').querySelector('option[value=range]').disabled = !origin;
  if ($('view-select').value !== map.kind) $('view-select').value = map.kind;
  const info = [];
  if (map.kind === 'range' && origin) info.push(`origin ${origin.lat.toFixed(4)}, ${origin.lon.toFixed(4)}`);
  if (store.archiveError) info.push(`archive: ${store.archiveError}`);
  $('map-info').textContent = info.join(' · ');
  const w = timeline.exportWindow(store.now());
  const span = `${store.selection ? 'chosen' : 'shown'}: ${iso(w.start).slice(11, 19)}–${iso(w.end).slice(11, 19)}Z`;
  if ($('export-span').textContent !== span) $('export-span').textContent = span;
}

// Drawing: every animation frame; in screenshot mode only when something changed.
let frames = 0;
let fpsAt = performance.now();
let lastVersion = -1;
let lastTable = 0;
let lastHeader = 0;
let lastPrune = 0;
let lastUrl = 0;
let lastMode = '';
function frame(ts) {
  const frameStart = performance.now();
  const now = store.now();
  const cursor = store.cursorMs(now);
  if (ts - lastPrune > 250) {
    store.prune(cursor);
    lastPrune = ts;
  }
  const modeKey = `${store.mode.mode}|${store.mode.gen}`;
  if (!u.screenshot || store.version !== lastVersion || modeKey !== lastMode) {
    lastVersion = store.version;
    lastMode = modeKey;
    const t0 = performance.now();
    map.draw(cursor);
    if (store.tracks.size > 0) store.mark('drawn');
    const t1 = performance.now();
    timeline.draw(cursor, now);
    const t2 = performance.now();
    // The DOM around the canvases changes a few times a second at most.
    if (ts - lastHeader > 200 || u.screenshot) {
      header(cursor);
      lastHeader = ts;
    }
    const t3 = performance.now();
    const avg = (k, v) => { store.perf[k] = store.perf[k] * 0.9 + v * 0.1; };
    avg('map', t1 - t0);
    avg('timeline', t2 - t1);
    avg('header', t3 - t2);
    frames++;
  }
  if (ts - lastTable > 500) {
    const t = performance.now();
    table.render();
    alarmPanel.render();
    plot.draw(cursor);
    store.perf.table = store.perf.table * 0.8 + (performance.now() - t) * 0.2;
    lastTable = ts;
  }
  if (ts - lastUrl > 500) {
    writeUrl(store, map, u.screenshot);
    lastUrl = ts;
    if (store.connected) {
      wanted = { mode: store.mode.mode === 'replay' ? 'replay' : 'live', t: store.cursorMs(), speed: store.mode.speed, paused: store.mode.paused };
    }
  }
  // The first figure after half a second, then one a second.
  if (ts - fpsAt >= (store.fps === null ? 500 : 1000)) {
    store.fps = Math.round((frames * 1000) / (ts - fpsAt));
    frames = 0;
    fpsAt = ts;
  }
  showToasts();
  store.perf.frame = store.perf.frame * 0.9 + (performance.now() - frameStart) * 0.1;
  requestAnimationFrame(frame);
}
requestAnimationFrame(frame);
