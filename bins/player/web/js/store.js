// The one state store. The WebSocket feeds it (apply); renderers and the automation API
// read from it. It also keeps the time cursor's model: what moment is shown is computed
// here from the server's mode message and the clock, never by the drawing code.

import { mercator, LocalPlane } from './geo.js';

export const DEFAULT_COLOUR = '#36d6ff';
/** How long a clock sample counts (the server sends one every 2 s). */
const CLOCK_WINDOW_MS = 10000;

function iso(ms) {
  return new Date(ms).toISOString();
}

/** Severity of alarm levels, lowest first. */
export const LEVELS = ['watch', 'warning', 'critical'];

/** A track row from the server: [id, recv_ms, time_s, lat, lon, alt, spd, hdg, sph,
 *  iip_lat, iip_lon]. */
function fixOf(row) {
  return {
    iip: row[9] === null || row[9] === undefined ? null : { lat: row[9], lon: row[10] },
    id: row[0],
    recvMs: row[1],
    timeS: row[2],
    lat: row[3],
    lon: row[4],
    alt: row[5],
    spd: row[6],
    hdg: row[7],
    spherical: row[8] === 1,
  };
}

export class Store {
  constructor() {
    this.config = { trail_s: 60, rate_hz: 10, stale_s: 2, track_timeout_s: 300, origin: null, sites: [], units: null };
    this.clientId = null;
    this.operator = null;
    this.settings = { units: 'metric', colour: null, session: null };
    this.mode = { mode: 'live', state: 'FOLLOWING_LIVESTREAM', channel: null, channel_id: 'livestream',
      cursor_kind: 'live', cursor: {}, speed: 1, paused: false, gen: 0 };
    this.clockOffset = 0;
    this.clockSamples = [];
    this.tracks = new Map();
    this.pending = null;
    this.gen = 0;
    this.tags = new Map();
    this.groups = [];
    this.coverage = null;
    this.connected = false;
    this.trailMs = 60000;
    this.plane = null;
    this.version = 0;
    /** Frames drawn in the last second; null until a second has been measured. */
    this.fps = null;
    this.waiters = [];
    this.toasts = [];
    this.lastFrameArrival = 0;
    this.perf = { frame: 0, map: 0, trails: 0, markers: 0, labels: 0, timeline: 0, header: 0, table: 0, apply: 0 };
    this.latencies = [];
    /** When this page (performance.now(), ms from navigation) first had its socket open,
     *  the server's hello, a complete picture, and that picture drawn: what a cold load
     *  costs, and where. */
    this.timing = { open: null, hello: null, picture: null, drawn: null };
    /** The window chosen on the timeline (to export): {start, end} ms, or null. */
    this.selection = null;
    /** Alarms in force for what this tab shows (live, or the replay), by id: each one's
     *  latest transition. */
    this.alarms = new Map();
    /** The alarmer's rules (boundaries to draw), or null. */
    this.overlays = null;
  }

  /** The worst level of a sensor's active alarms that are not shelved, or null. */
  alarmLevel(sensor) {
    let worst = -1;
    for (const a of this.alarms.values()) {
      if (!a.active || a.shelved_until_ms || !a.sensors.includes(sensor)) continue;
      worst = Math.max(worst, LEVELS.indexOf(a.level));
    }
    return worst < 0 ? null : LEVELS[worst];
  }

  /** Alarms newest first: active ones, then shelved ones. */
  alarmList() {
    return [...this.alarms.values()].sort((a, b) =>
      (!!a.shelved_until_ms - !!b.shelved_until_ms) || b.at_ms - a.at_ms || (a.id < b.id ? -1 : 1));
  }

  selectRange(range) {
    this.selection = range;
    this.version++;
  }

  /** Note the first time of `what` (see timing). */
  mark(what) {
    if (this.timing[what] === null) this.timing[what] = Math.round(performance.now());
  }

  now() {
    return Date.now() + this.clockOffset;
  }

  /** The server's clock from its stamp on a message. A message is only ever late, so
   *  the largest offset is the one least delayed — of the last 10 s only (on the
   *  monotonic clock), so a page clock stepped forward (NTP, a laptop waking, a headless
   *  browser's virtual time) is followed within seconds instead of showing every track
   *  stale for good. */
  syncClock(serverMs) {
    const at = performance.now();
    const samples = this.clockSamples;
    samples.push([at, serverMs - Date.now()]);
    while (samples.length > 64 || at - samples[0][0] > CLOCK_WINDOW_MS) samples.shift();
    this.clockOffset = Math.max(...samples.map((s) => s[1]));
  }

  /** The moment the display shows. */
  cursorMs(now = this.now()) {
    const m = this.mode;
    const c = m.cursor || {};
    if (m.cursor_kind === 'replay') {
      if (c.paused || !c.started) return c.anchor_ms;
      const run = Math.max(0, now - c.anchor_wall_ms) * c.speed;
      return Math.min(c.anchor_ms + run, Math.max(c.end_ms, c.anchor_ms));
    }
    if (m.cursor_kind === 'following') {
      // The newest replayed frame, coasting at 1× between frames.
      if (this.newestMs === undefined) return now;
      return this.newestMs + Math.min(Math.max(0, now - this.lastFrameArrival), c.coast_ms || 2000);
    }
    return now;
  }

  factors() {
    const u = this.config.units || {};
    return u[this.settings.units] || { altitude: { unit: 'm', per_si: 1 }, speed: { unit: 'm/s', per_si: 1 }, range: { unit: 'km', per_si: 0.001 } };
  }

  colour() {
    return this.settings.colour || DEFAULT_COLOUR;
  }

  changed() {
    this.version++;
    const ready = [];
    this.waiters = this.waiters.filter((w) => {
      if (w.test()) {
        ready.push(w.resolve);
        return false;
      }
      return true;
    });
    ready.forEach((r) => r());
  }

  /** Resolve when `test()` holds (checked at every change), or reject after `ms`. */
  until(test, ms = 10000, what = 'the display') {
    if (test()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w = { test, resolve };
      this.waiters.push(w);
      setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) {
          this.waiters.splice(i, 1);
          reject(new Error(`${what} did not settle within ${ms} ms`));
        }
      }, ms);
    });
  }

  /** No replay picture is being assembled. */
  settled() {
    return this.pending === null;
  }

  setTrail(seconds) {
    this.trailMs = seconds * 1000;
    this.version++;
  }

  apply(msg) {
    const started = performance.now();
    this.applyMessage(msg);
    this.perf.apply += performance.now() - started;
  }

  applyMessage(msg) {
    switch (msg.t) {
      case 'hello':
        this.mark('hello');
        this.config = msg.config;
        this.clientId = msg.client_id;
        this.operator = msg.operator;
        this.clockSamples = [];
        this.syncClock(msg.server_ms);
        if (msg.config.origin) {
          const o = msg.config.origin;
          this.plane = new LocalPlane(o.lat, o.lon, o.alt);
        }
        break;
      case 'clock':
        this.syncClock(msg.server_ms);
        return;
      case 'settings':
        this.settings = { units: msg.units, colour: msg.colour, session: msg.session };
        break;
      case 'mode':
        this.mode = msg;
        this.syncClock(msg.server_ms);
        if (msg.cursor_kind !== 'following') this.newestMs = undefined;
        break;
      case 'reset':
        this.pending = { gen: msg.gen, tracks: new Map() };
        break;
      case 'trail':
        this.rows(msg.gen, msg.u, true);
        break;
      case 'tracks':
        this.rows(msg.gen, msg.u, false);
        break;
      case 'ready':
        if (this.pending && this.pending.gen === msg.gen) {
          this.tracks = this.pending.tracks;
          this.gen = msg.gen;
          this.pending = null;
        }
        this.mark('picture');
        break;
      case 'tags':
        if (msg.full) this.tags = new Map();
        for (const t of msg.tags) {
          if (t.status === 'deleted') this.tags.delete(t.id);
          else this.tags.set(t.id, t);
        }
        break;
      case 'tag_shown':
        this.toasts.push({ text: `Tag: ${msg.tag.comment}`, error: false });
        break;
      case 'groups':
        this.groups = msg.active;
        break;
      case 'coverage':
        this.coverage = msg;
        break;
      case 'alarms':
        if (msg.full) this.alarms = new Map();
        for (const a of msg.alarms) this.takeAlarm(a);
        break;
      case 'alarm':
        this.takeAlarm(msg.alarm);
        break;
      case 'overlays':
        this.overlays = msg.rules;
        break;
      case 'error':
        this.toasts.push({ text: msg.error, error: true });
        break;
      default:
        return;
    }
    this.changed();
  }

  takeAlarm(a) {
    if (a.active || a.shelved_until_ms) this.alarms.set(a.id, a);
    else this.alarms.delete(a.id);
  }

  rows(gen, rows, whole) {
    let target = null;
    if (this.pending && this.pending.gen === gen) target = this.pending.tracks;
    else if (gen === this.gen && !this.pending) target = this.tracks;
    if (!target) return;
    const arrival = Date.now() + this.clockOffset;
    const live = !whole && this.mode.mode === 'live';
    for (const row of rows) {
      const f = fixOf(row);
      this.update(target, f, whole);
      // How old each live update is when it reaches the page (receive time → here).
      if (live && this.latencies.length < 100000) this.latencies.push(arrival - f.recvMs);
      if (this.mode.cursor_kind === 'following' && (this.newestMs === undefined || f.recvMs > this.newestMs)) {
        this.newestMs = f.recvMs;
        this.lastFrameArrival = arrival;
      }
    }
  }

  /** Keep the newest fix and a trail (points projected once, for every view). */
  update(map, f, whole) {
    let t = map.get(f.id);
    if (!t) {
      t = { id: f.id, trail: [] };
      map.set(f.id, t);
    }
    if (t.fix && f.recvMs < t.fix.recvMs && !whole) return;
    t.fix = f;
    if (f.lat === null) return;
    const p = { ms: f.recvMs, lat: f.lat, lon: f.lon, alt: f.alt, spd: f.spd, m: mercator(f.lat, f.lon), en: null };
    if (this.plane) p.en = this.plane.en(f.lat, f.lon, f.alt);
    // The trail keeps a point per step and a head that moves with every update: the head
    // is replaced until it is a step past the point before it, then it stays and a new
    // head starts. (Measured from the head itself, each update replaced the last and
    // the trail never grew past one point.)
    const n = t.trail.length;
    const step = Math.max(100, this.trailMs / 120);
    const head = t.trail[n - 1];
    const before = t.trail[n - 2];
    if (head && before && p.ms >= head.ms && p.ms - before.ms < step) t.trail[n - 1] = p;
    else t.trail.push(p);
    t.pos = p;
  }

  /** Forget what is older than the trail and tracks silent past the track timeout. */
  prune(cursor) {
    const from = cursor - this.trailMs;
    const gone = cursor - this.config.track_timeout_s * 1000;
    for (const [id, t] of this.tracks) {
      if (t.fix.recvMs < gone) {
        this.tracks.delete(id);
        continue;
      }
      let n = 0;
      while (n < t.trail.length - 1 && t.trail[n].ms < from) n++;
      if (n > 0) t.trail.splice(0, n);
    }
  }

  isStale(t, cursor) {
    return cursor - t.fix.recvMs > this.config.stale_s * 1000;
  }

  /** Live updates' age on arrival (ms) since the last call: {n, p50, p99, max}. */
  takeLatency() {
    const v = this.latencies.sort((a, b) => a - b);
    this.latencies = [];
    const at = (p) => (v.length ? v[Math.round((v.length - 1) * p)] : null);
    return { n: v.length, p50: at(0.5), p99: at(0.99), max: at(1) };
  }

  /** `window.tspiDisplay.state()`: a plain object (SPEC §5, player --web). */
  snapshot() {
    const cursor = this.cursorMs();
    const f = this.factors();
    const colour = this.colour();
    const tracks = [];
    for (const t of this.tracks.values()) {
      const x = t.fix;
      tracks.push({
        sensor_id: x.id,
        time_s: x.timeS,
        lat_deg: x.lat,
        lon_deg: x.lon,
        alt_m: x.alt,
        altitude: x.alt === null ? null : x.alt * f.altitude.per_si,
        speed: x.spd === null ? null : x.spd * f.speed.per_si,
        colour,
        stale: this.isStale(t, cursor),
        recv_ms: x.recvMs,
        heading_deg: x.hdg,
        spherical: x.spherical,
        // Trail points drawn behind the marker (those within the trail before the cursor).
        trail_points: t.trail.reduce((n, p) => n + (p.ms <= cursor && p.ms >= cursor - this.trailMs ? 1 : 0), 0),
        alarm_level: this.alarmLevel(x.id),
        iip: x.iip,
      });
    }
    tracks.sort((a, b) => a.sensor_id - b.sensor_id);
    const tags = [...this.tags.values()]
      .map((t) => ({ id: t.id, comment: t.comment, at: t.at }))
      .sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
    return {
      version: 1,
      mode: this.mode.mode,
      cursor: iso(cursor),
      speed: this.mode.speed,
      paused: this.mode.paused,
      units: this.settings.units,
      units_shown: { altitude: f.altitude.unit, speed: f.speed.unit },
      channel: this.mode.mode === 'channel' ? this.mode.channel_id : null,
      connected: this.connected,
      fps: this.fps ?? 0,
      perf: { ...this.perf },
      clock_offset_ms: this.clockOffset,
      client_id: this.clientId,
      operator: this.operator,
      state: this.mode.state,
      marker_colour: colour,
      session: this.settings.session,
      groups: this.groups.map((g) => ({ id: g.id, name: g.name })),
      trail_s: this.trailMs / 1000,
      timing_ms: { ...this.timing },
      selection: this.selection && { start: iso(this.selection.start), end: iso(this.selection.end) },
      alarms: this.alarmList().map((a) => ({
        id: a.id, rule: a.rule, kind: a.kind, sensors: a.sensors, level: a.level, active: a.active,
        acknowledged: a.acknowledged, operator: a.operator, shelved_until: a.shelved_until_ms ? iso(a.shelved_until_ms) : null,
        at: a.at, value: a.value, threshold: a.threshold, unit: a.unit, text: a.text,
      })),
      overlays: this.overlays ? this.overlays.rules.filter((r) => r.polygon).map((r) => r.name) : [],
      tracks,
      tags,
    };
  }
}
