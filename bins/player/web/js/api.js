// `window.tspiDisplay`: the automation API (SPEC §5, player --web), for tests and for
// users' own scripts. Every method returns a Promise that resolves when the display
// shows the result (the server's answer is in, the picture complete, a frame drawn).

export const API_VERSION = 1;

function drawn() {
  return new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
}

export function installApi(store, link, map, ui) {
  const settled = (test, what) => store.until(() => store.settled() && test(), 15000, what);
  // The store's picture and the view it is drawn in.
  const snapshot = () => Object.assign(store.snapshot(), {
    view: map.kind,
    zoom: map.zoom,
    follow: map.follow,
  });
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
