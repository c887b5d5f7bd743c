// The address holds the view, so a pasted link shows the same thing: mode and cursor
// (a replay's moment), speed, pause, the followed track, the trail, the view (map or
// range), its centre and zoom. `?screenshot=1` freezes animation.

import { mercator, inverseMercator } from './geo.js';

export function readUrl() {
  const q = new URLSearchParams(location.search);
  const num = (k) => {
    const v = q.get(k);
    if (v === null || v === '') return null;
    const n = Number(v);
    return Number.isFinite(n) ? n : null;
  };
  const t = q.get('t');
  const tMs = t ? Date.parse(t) : NaN;
  return {
    mode: q.get('mode') === 'replay' && Number.isFinite(tMs) ? 'replay' : 'live',
    t: Number.isFinite(tMs) ? tMs : null,
    speed: num('speed'),
    paused: q.get('paused') === '1',
    follow: num('follow'),
    trail: num('trail'),
    view: q.get('view') === 'range' ? 'range' : q.get('view') === 'map' ? 'map' : null,
    lat: num('lat'),
    lon: num('lon'),
    e: num('e'),
    n: num('n'),
    zoom: num('zoom'),
    screenshot: q.get('screenshot') === '1',
    client: q.get('client'),
    operator: q.get('operator'),
  };
}

/** Apply the view part of the address to the map. */
export function applyView(u, map) {
  if (u.view) map.setKind(u.view);
  if (u.zoom !== null) {
    map.zoom = Math.max(1, Math.min(20, u.zoom));
    map.fitted = true;
  }
  if (u.lat !== null && u.lon !== null) {
    map.center.map = mercator(u.lat, u.lon);
    map.fitted = true;
  }
  if (u.e !== null && u.n !== null) {
    map.center.range = [u.e * 1000, u.n * 1000];
    map.fitted = true;
  }
  if (u.follow !== null) map.follow = u.follow;
}

/** Write the current state into the address (without a history entry). */
export function writeUrl(store, map, screenshot) {
  const q = new URLSearchParams();
  const m = store.mode;
  if (m.mode === 'replay') {
    q.set('mode', 'replay');
    q.set('t', new Date(store.cursorMs()).toISOString());
    if (m.paused) q.set('paused', '1');
  }
  if (m.speed !== 1 && m.mode === 'replay') q.set('speed', String(m.speed));
  if (map.follow !== null) q.set('follow', String(map.follow));
  q.set('trail', String(store.trailMs / 1000));
  // Until the server has said whether there is an origin, the view asked for stands.
  const view = store.clientId === null ? map.wantedKind : map.kind;
  q.set('view', view);
  if (view === 'map') {
    const [lat, lon] = inverseMercator(map.center.map[0], map.center.map[1]);
    q.set('lat', lat.toFixed(5));
    q.set('lon', lon.toFixed(5));
  } else {
    q.set('e', (map.center.range[0] / 1000).toFixed(3));
    q.set('n', (map.center.range[1] / 1000).toFixed(3));
  }
  q.set('zoom', map.zoom.toFixed(2));
  if (screenshot) q.set('screenshot', '1');
  const next = `${location.pathname}?${q}`;
  if (next !== `${location.pathname}${location.search}`) history.replaceState(null, '', next);
}
