// `window.tspiDisplay`: the automation API (SPEC §5, player --web), for tests and for
// users' own scripts. Every method returns a Promise that resolves when the display
// shows the result (the server's answer is in, the picture complete, a frame drawn).

import { rulerEnds } from './overlays.js';
import { rangeBearing } from './tools.js';

export const API_VERSION = 1;

function drawn() {
  return new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
}

export function installApi(store, link, map, ui) {
  const settled = (test, what) => store.until(() => store.settled() && test(), 15000, what);
  // The store's picture and the view it is drawn in, with the tools' state.
  const snapshot = () => {
    const s = store.snapshot();
    for (const t of s.tracks) {
      const track = store.tracks.get(t.sensor_id);
      t.colour = map.trackColour(track);
      t.shown = map.shows(track);
    }
    const ends = rulerEnds(store, map.ruler);
    const measured = ends && rangeBearing(ends[0], ends[1]);
    const plot = ui.plotData();
    return Object.assign(s, {
      view: map.kind,
      zoom: map.zoom,
      follow: map.follow,
      selected: map.selected,
      filter: map.filter ? map.filter.text : null,
      colour_by: map.colourBy,
      ring_spacing_m: map.ringSpacing,
      ruler: map.ruler && {
        from: map.ruler.from, to: map.ruler.to,
        range_m: measured ? measured.range : null, bearing_deg: measured ? measured.bearing : null,
      },
      plot: plot && { sensor: plot.sensor, field: plot.field, unit: plot.unit, points: plot.points, series: plot.series, min: plot.min, max: plot.max, last: plot.last },
    });
  };
  const api = {
    version: API_VERSION,
    /** A plain object: mode, cursor, speed, paused, units, channel, connected, fps, view, tracks, tags, … */
    state: snapshot,
    /** Replay the moment `rfc3339` (this tab only). */
    async seek(rfc3339) {
      const ms = Date.parse(rfc3339);
      if (!Number.isFinite(ms)) throw new Error(`${rfc3339} is not an RFC 3339 time`);
      await link.request('seek', { to: new Date(ms).toISOString() });
      await settled(() => true, 'the replay picture');
      await drawn();
      return snapshot();
    },
    /** Back to the live picture. */
    async live() {
      await link.request('live');
      await settled(() => store.mode.mode === 'live', 'the live picture');
      await drawn();
      return snapshot();
    },
    /** Replay speed: 1, 2, 5, 10, 20 (any factor up to 1000). Kept for the next replay when live. */
    async setSpeed(x) {
      await link.request('speed', { speed: Number(x) });
      await settled(() => store.mode.mode !== 'replay' || store.mode.speed === Number(x), 'the speed');
      await drawn();
      return snapshot();
    },
    /** Pause (a paused replay of the present when live). */
    async pause() {
      await link.request('pause');
      await settled(() => store.mode.paused, 'the pause');
      await drawn();
      return snapshot();
    },
    async resume() {
      await link.request('resume');
      await settled(() => !store.mode.paused, 'the resume');
      await drawn();
      return snapshot();
    },
    /** Tag the cursor's moment, as `console tag` does; resolves with the tag once shown. */
    async tag(comment, at) {
      const fields = { comment: String(comment) };
      if (at) fields.at = new Date(Date.parse(at)).toISOString();
      const r = await link.request('tag', fields);
      await store.until(() => store.tags.has(r.tag.id), 10000, 'the tag');
      await drawn();
      return r.tag;
    },
    /** Join the running group replay. */
    async join(channel) {
      await link.request('join', channel ? { channel } : {});
      await settled(() => store.mode.mode === 'channel', 'the group replay');
      await drawn();
      return snapshot();
    },
    /** Trail length in seconds (0: none). */
    async setTrail(seconds) {
      await ui.setTrail(Number(seconds));
      await drawn();
      return snapshot();
    },
    /** "map" or "range"; optionally where: {lat, lon, zoom} (map), {e_km, n_km, zoom} (range). */
    async setView(kind, where) {
      ui.setView(kind, where || null);
      await drawn();
      return snapshot();
    },
    /** How old live updates were when they reached this page (receive time → page),
     *  since the last call: {n, p50, p99, max} in ms. */
    latency: () => store.takeLatency(),
    /** Track labels: "auto" (as many as fit), "on" (every one), "off". */
    async setLabels(mode) {
      if (!['auto', 'on', 'off'].includes(mode)) throw new Error('labels: auto, on or off');
      map.labelMode = mode;
      store.version++;
      await drawn();
      return snapshot();
    },
    /** Choose the window to export (RFC 3339 start and end; null forgets the choice). */
    async selectRange(start, end) {
      if (start === null) {
        store.selectRange(null);
      } else {
        const [a, b] = [Date.parse(start), Date.parse(end)];
        if (!(Number.isFinite(a) && Number.isFinite(b) && b > a)) throw new Error('selectRange needs RFC 3339 start < end');
        store.selectRange({ start: a, end: b });
      }
      await drawn();
      return snapshot();
    },
    /** Download the chosen window (or the span shown) as `format` (csv, csv-wide, jsonl,
     *  parquet, kml, czml, geojson, pcap); options {sensors: [ids], clock, start, end}.
     *  Resolves with the download's address once it started; rejects with the reason
     *  the archive gives (an empty window, an unknown sensor). */
    exportWindow: (format, options) => ui.exportWindow(String(format), options || {}),
    /** Acknowledge an alarm as this tab's operator; resolves with its new state. */
    async ackAlarm(id) {
      const a = await ui.alarmAction('ack', id);
      await store.until(() => { const x = store.alarms.get(id); return !x || x.seq >= a.seq; }, 10000, 'the acknowledgement');
      await drawn();
      return a;
    },
    /** Shelve an alarm for `seconds` (default an hour) / take it off the shelf. */
    async shelveAlarm(id, seconds) {
      const a = await ui.alarmAction('shelve', id, seconds === undefined ? 3600 : seconds);
      await store.until(() => { const x = store.alarms.get(id); return !x || x.seq >= a.seq; }, 10000, 'the shelving');
      await drawn();
      return a;
    },
    async unshelveAlarm(id) {
      const a = await ui.alarmAction('unshelve', id);
      await store.until(() => { const x = store.alarms.get(id); return !x || x.seq >= a.seq; }, 10000, 'the unshelving');
      await drawn();
      return a;
    },
    /** Show only the tracks that pass a filter (`10001 10005-10009 type:geo alt:1000-5000`; '' for all). */
    async setFilter(text) {
      ui.setFilter(text);
      await drawn();
      return snapshot();
    },
    /** Marker colours: 'altitude' (with a legend) or 'none' (the commanded colour). */
    async setColourBy(how) {
      ui.setColourBy(how);
      await drawn();
      return snapshot();
    },
    /** Range rings every `units` range units (km or NM); null: chosen for the zoom. */
    async setRingSpacing(units) {
      ui.setRingSpacing(units);
      await drawn();
      return snapshot();
    },
    /** Range and bearing from a track (or 'origin') to another (or 'origin'); null removes it. */
    async setRuler(from, to) {
      ui.setRuler(from, to === undefined ? 'origin' : to);
      await drawn();
      return snapshot();
    },
    /** The plotted field of the followed (or selected) track: 'alt' or 'spd'. */
    async setPlot(field) {
      ui.setPlot(field);
      await drawn();
      return snapshot();
    },
    /** Keep a track centred (null: stop following). */
    async follow(sensorId) {
      map.follow = sensorId === null ? null : Number(sensorId);
      store.version++;
      await drawn();
      return snapshot();
    },
  };
  Object.freeze(api);
  window.tspiDisplay = api;
  return api;
}
