// Canvas 2D rendering of the picture: the map view (Web Mercator, coastlines and
// borders) and the range view (the east/north plane around the range origin, with range
// rings and azimuth spokes in the current units). It reads the store; it never decides
// what time it is (the cursor comes from the store).

import { mercator, inverseMercator, niceStep } from './geo.js';
import { linesOf } from './topo.js';
import { drawOverlays } from './overlays.js';
import { ALARM_COLOURS, altitudeColour, passes } from './tools.js';

const M_PER_PX_Z0 = 156543.03392; // Web Mercator metres per pixel at zoom 0
const GREY = '#6d7b85';
const DEFAULT_MARKER = '#36d6ff';
/** Marker sprite size, device pixels (covers the 8 px triangle at 2× pixel ratio). */
const SPRITE = 36;
/** Label image width, CSS pixels (the longest label: "65535 STALE", "99,990 ft  999 kn"). */
const LABEL_W = 104;

export function scaleOf(zoom) {
  return Math.pow(2, zoom) / M_PER_PX_Z0; // pixels per metre
}

export class MapView {
  constructor(canvas, store) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d', { alpha: false, desynchronized: true });
    this.store = store;
    // The view asked for (the address, the selector, the API); `kind` is the one shown:
    // the range view needs the origin, which arrives with the server's hello, so an
    // address's view=range waits for it instead of falling back to the map for good.
    this.wantedKind = 'map';
    this.zoom = 8;
    this.center = { map: mercator(34.9, -117.9), range: [0, 0] };
    this.follow = null;
    this.selected = null;
    this.labelMode = 'auto';
    /** The operators' tools: a filter (tools.parseFilter), colours by altitude, the
     *  range/bearing ruler ({from, to}: sensor ids or 'origin'), the range rings' spacing
     *  (metres; null: chosen for the zoom). */
    this.filter = null;
    this.colourBy = 'none';
    this.ruler = null;
    this.ringSpacing = null;
    this.spriteSets = new Map();
    // Screenshot mode draws once: labels then show their exact text, never a held one.
    this.frozen = document.body.classList.contains('screenshot');
    this.fitted = false;
    this.world = { low: null, high: null, loadingHigh: false };
    this.base = document.createElement('canvas');
    this.trailLayer = document.createElement('canvas');
    this.trailScratch = document.createElement('canvas');
    this.trailKey = '';
    this.trailAt = 0;
    this.trailCursor = 0;
    this.trailCenter = [0, 0];
    this.baseKey = '';
    this.dpr = window.devicePixelRatio || 1;
    this.listeners();
    this.load('countries-50m.json', 'low');
  }

  async load(file, slot) {
    try {
      const r = await fetch(`/assets/vendor/world-atlas/${file}`);
      const topo = await r.json();
      this.world[slot] = linesOf(topo);
      this.baseKey = '';
      this.store.version++;
    } catch (e) {
      console.warn('map data', file, e);
    }
  }

  /** Projected metres of a trail point in the current view (null when not placeable). */
  xy(p) {
    return this.kind === 'range' ? p.en : p.m;
  }

  size() {
    return [this.canvas.clientWidth, this.canvas.clientHeight];
  }

  toScreen(x, y) {
    const [w, h] = this.size();
    const s = scaleOf(this.zoom);
    const c = this.center[this.kind];
    return [w / 2 + (x - c[0]) * s, h / 2 - (y - c[1]) * s];
  }

  fromScreen(px, py) {
    const [w, h] = this.size();
    const s = scaleOf(this.zoom);
    const c = this.center[this.kind];
    return [c[0] + (px - w / 2) / s, c[1] - (py - h / 2) / s];
  }

  setKind(kind) {
    this.wantedKind = kind === 'range' ? 'range' : 'map';
    this.baseKey = '';
  }

  get kind() {
    return this.wantedKind === 'range' && this.store.plane ? 'range' : 'map';
  }

  /** Centre and zoom to show every track (or the origin's surroundings). */
  fit() {
    const pts = [];
    for (const t of this.store.tracks.values()) {
      if (t.pos) {
        const q = this.xy(t.pos);
        if (q) pts.push(q);
      }
    }
    const [w, h] = this.size();
    if (pts.length === 0) {
      if (this.kind === 'range') {
        this.center.range = [0, 0];
      } else if (this.store.config.origin) {
        const o = this.store.config.origin;
        this.center.map = mercator(o.lat, o.lon);
      }
      this.zoom = Math.log2((Math.min(w, h) / 120000) * M_PER_PX_Z0);
      return;
    }
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const [x, y] of pts) {
      x0 = Math.min(x0, x);
      y0 = Math.min(y0, y);
      x1 = Math.max(x1, x);
      y1 = Math.max(y1, y);
    }
    if (this.kind === 'range') {
      const r = Math.max(Math.abs(x0), Math.abs(x1), Math.abs(y0), Math.abs(y1), 5000);
      [x0, y0, x1, y1] = [-r, -r, r, r];
    }
    this.center[this.kind] = [(x0 + x1) / 2, (y0 + y1) / 2];
    const span = Math.max((x1 - x0) / Math.max(w - 80, 50), (y1 - y0) / Math.max(h - 80, 50), 5);
    this.zoom = Math.log2(M_PER_PX_Z0 / span);
    this.fitted = true;
  }

  listeners() {
    const c = this.canvas;
    let drag = null;
    c.addEventListener('mousedown', (e) => {
      drag = { x: e.offsetX, y: e.offsetY, c: [...this.center[this.kind]], moved: false };
    });
    window.addEventListener('mousemove', (e) => {
      if (!drag) return;
      const s = scaleOf(this.zoom);
      const dx = e.clientX - c.getBoundingClientRect().left - drag.x;
      const dy = e.clientY - c.getBoundingClientRect().top - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      if (drag.moved) {
        this.follow = null;
        this.center[this.kind] = [drag.c[0] - dx / s, drag.c[1] + dy / s];
        this.fitted = true;
        this.store.version++;
      }
    });
    window.addEventListener('mouseup', (e) => {
      if (drag && !drag.moved) {
        const id = this.hit(drag.x, drag.y);
        // Shift+click measures from the selected track to the one clicked (to the origin
        // when the click is on no track).
        if (e.shiftKey && this.selected !== null) {
          this.ruler = { from: this.selected, to: id === null ? 'origin' : id };
          this.store.version++;
          drag = null;
          return;
        }
        this.selected = id;
        if (id !== null && e.detail >= 2) this.follow = id;
        this.store.version++;
      }
      drag = null;
    });
    c.addEventListener('wheel', (e) => {
      e.preventDefault();
      const before = this.fromScreen(e.offsetX, e.offsetY);
      this.zoom = Math.max(1, Math.min(20, this.zoom - Math.sign(e.deltaY) * 0.25));
      const after = this.fromScreen(e.offsetX, e.offsetY);
      const cc = this.center[this.kind];
      if (this.follow === null) this.center[this.kind] = [cc[0] + before[0] - after[0], cc[1] + before[1] - after[1]];
      this.fitted = true;
      this.store.version++;
    }, { passive: false });
  }

  /** The track under a screen point (within 10 px), or null. */
  hit(px, py) {
    let best = null;
    let bestD = 100;
    for (const t of this.store.tracks.values()) {
      if (!t.pos || !this.shows(t)) continue;
      const q = this.xy(t.pos);
      if (!q) continue;
      const [x, y] = this.toScreen(q[0], q[1]);
      const d = (x - px) ** 2 + (y - py) ** 2;
      if (d < bestD) {
        bestD = d;
        best = t.id;
      }
    }
    return best;
  }

  resize() {
    const [w, h] = this.size();
    const dpr = window.devicePixelRatio || 1;
    if (this.canvas.width !== Math.round(w * dpr) || this.canvas.height !== Math.round(h * dpr)) {
      this.canvas.width = Math.round(w * dpr);
      this.canvas.height = Math.round(h * dpr);
      this.base.width = this.canvas.width;
      this.base.height = this.canvas.height;
      this.dpr = dpr;
      this.baseKey = '';
      return true;
    }
    return false;
  }

  /** Lines of the basemap for the current scale: 1:10m when zoomed in (loaded on first need). */
  worldLines() {
    const fine = this.zoom >= 7.5;
    if (fine && !this.world.high && !this.world.loadingHigh) {
      this.world.loadingHigh = true;
      this.load('countries-10m.json', 'high');
    }
    return (fine && this.world.high) || this.world.low;
  }

  drawBase() {
    const world = this.worldLines();
    const [w, h] = this.size();
    const c = this.center[this.kind];
    const key = `${this.kind}|${w}|${h}|${this.dpr}|${this.zoom}|${c[0]}|${c[1]}|${world === this.world.high}|${!!world}|${this.store.settings.units}|${this.ringSpacing}`;
    if (key === this.baseKey) return;
    this.baseKey = key;
    const g = this.base.getContext('2d');
    g.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    g.fillStyle = '#0b1014';
    g.fillRect(0, 0, w, h);
    if (world) {
      // The view's lon/lat bounds, to skip lines off screen.
      let bounds;
      if (this.kind === 'map') {
        const [x0, y1] = this.fromScreen(0, 0);
        const [x1, y0] = this.fromScreen(w, h);
        const [lat0, lon0] = inverseMercator(x0, y0);
        const [lat1, lon1] = inverseMercator(x1, y1);
        bounds = [lon0, lat0, lon1, lat1];
      } else {
        const o = this.store.config.origin;
        const r = Math.hypot(w, h) / scaleOf(this.zoom) + Math.hypot(c[0], c[1]);
        const dLat = r / 111000 + 0.1;
        const dLon = dLat / Math.max(0.05, Math.cos((o.lat * Math.PI) / 180));
        bounds = [o.lon - dLon, o.lat - dLat, o.lon + dLon, o.lat + dLat];
      }
      this.lines(g, world.borders, bounds, '#2c3b46', 1);
      this.lines(g, world.coast, bounds, '#4c6677', 1.2);
    }
    if (this.kind === 'range') this.rings(g);
    this.graticule(g);
  }

  lines(g, lines, b, colour, width) {
    const s = scaleOf(this.zoom);
    const [w, h] = this.size();
    const c = this.center[this.kind];
    g.strokeStyle = colour;
    g.lineWidth = width;
    g.beginPath();
    for (const line of lines) {
      const bx = line.box;
      if (bx[2] < b[0] || bx[0] > b[2] || bx[3] < b[1] || bx[1] > b[3]) continue;
      const p = this.projectLine(line);
      for (let i = 0; i < p.length; i += 2) {
        const x = w / 2 + (p[i] - c[0]) * s;
        const y = h / 2 - (p[i + 1] - c[1]) * s;
        if (i === 0 || Number.isNaN(p[i - 2])) g.moveTo(x, y);
        else g.lineTo(x, y);
      }
    }
    g.stroke();
  }

  /** A line's vertices in this view's metres, computed once per line and view. */
  projectLine(line) {
    if (this.kind === 'map') {
      if (!line.merc) {
        const pts = line.points;
        const out = new Float64Array(pts.length);
        for (let i = 0; i < pts.length; i += 2) {
          const [x, y] = mercator(pts[i + 1], pts[i]);
          out[i] = x;
          out[i + 1] = y;
        }
        line.merc = out;
      }
      return line.merc;
    }
    const plane = this.store.plane;
    if (!line.en || line.enPlane !== plane) {
      const pts = line.points;
      const out = new Float64Array(pts.length);
      for (let i = 0; i < pts.length; i += 2) {
        const [e, n] = plane.en(pts[i + 1], pts[i], 0);
        // Beyond 3,000 km the plane says little: break the line there.
        const far = Math.hypot(e, n) > 3.0e6;
        out[i] = far ? NaN : e;
        out[i + 1] = far ? NaN : n;
      }
      line.en = out;
      line.enPlane = plane;
    }
    return line.en;
  }

  rings(g) {
    const [w, h] = this.size();
    const s = scaleOf(this.zoom);
    const f = this.store.factors().range;
    const perUnit = 1 / f.per_si; // metres per display unit (km or NM)
    const [ox, oy] = this.toScreen(0, 0);
    const reach = Math.hypot(Math.max(ox, w - ox), Math.max(oy, h - oy)) / s; // metres
    const step = this.ringSpacing || niceStep((reach / 6) / perUnit) * perUnit;
    g.strokeStyle = '#21404f';
    g.fillStyle = '#5d8196';
    g.lineWidth = 1;
    g.font = '11px "DejaVu Sans", sans-serif';
    for (let r = step, i = 1; r <= reach && i <= 200; r += step, i++) {
      g.beginPath();
      g.arc(ox, oy, r * s, 0, 2 * Math.PI);
      g.stroke();
      const label = `${+(r / perUnit).toFixed(3)} ${f.unit}`;
      g.fillText(label, ox + 3, oy - r * s - 3);
    }
    for (let az = 0; az < 360; az += 30) {
      const a = (az * Math.PI) / 180;
      g.beginPath();
      g.moveTo(ox, oy);
      g.lineTo(ox + Math.sin(a) * reach * s, oy - Math.cos(a) * reach * s);
      g.stroke();
      const lr = Math.min(w, h) * 0.45;
      g.fillText(`${String(az).padStart(3, '0')}°`, ox + Math.sin(a) * lr - 10, oy - Math.cos(a) * lr + 4);
    }
    g.strokeStyle = '#36d6ff';
    g.beginPath();
    g.moveTo(ox - 6, oy);
    g.lineTo(ox + 6, oy);
    g.moveTo(ox, oy - 6);
    g.lineTo(ox, oy + 6);
    g.stroke();
  }

  graticule(g) {
    if (this.kind !== 'map') return;
    const [w, h] = this.size();
    const [x0, y1] = this.fromScreen(0, 0);
    const [x1, y0] = this.fromScreen(w, h);
    const [lat0, lon0] = inverseMercator(x0, y0);
    const [lat1, lon1] = inverseMercator(x1, y1);
    const step = niceStep(Math.max(lon1 - lon0, lat1 - lat0) / 6);
    g.strokeStyle = '#151f26';
    g.fillStyle = '#4a5a65';
    g.font = '10px "DejaVu Sans", sans-serif';
    g.beginPath();
    for (let lon = Math.ceil(lon0 / step) * step; lon <= lon1; lon += step) {
      const [x] = this.toScreen(mercator(0, lon)[0], 0);
      g.moveTo(x, 0);
      g.lineTo(x, h);
      g.fillText(`${+lon.toFixed(4)}°`, x + 2, h - 4);
    }
    for (let lat = Math.ceil(lat0 / step) * step; lat <= lat1; lat += step) {
      const [, y] = this.toScreen(0, mercator(lat, 0)[1]);
      g.moveTo(0, y);
      g.lineTo(w, y);
      g.fillText(`${+lat.toFixed(4)}°`, 2, y - 2);
    }
    g.stroke();
  }

  draw(cursor) {
    this.resize();
    const ctx = this.ctx;
    const [w, h] = this.size();
    if (!this.fitted && this.store.tracks.size > 0) this.fit();
    if (this.follow !== null) {
      const t = this.store.tracks.get(this.follow);
      if (t && t.pos && this.xy(t.pos)) this.center[this.kind] = [...this.xy(t.pos)];
    }
    this.drawBase();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.drawImage(this.base, 0, 0);
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    const s = scaleOf(this.zoom);
    const c = this.center[this.kind];
    const X = (q) => w / 2 + (q[0] - c[0]) * s;
    const Y = (q) => h / 2 - (q[1] - c[1]) * s;
    const perSi = this.store.factors().altitude.per_si;
    const visible = [];
    for (const t of this.store.tracks.values()) {
      if (!t.pos || !this.xy(t.pos) || !passes(this.filter, t.fix, perSi)) continue;
      const q = this.xy(t.pos);
      const x = X(q);
      const y = Y(q);
      if (x < -50 || y < -50 || x > w + 50 || y > h + 50) continue;
      visible.push({ t, x, y, stale: this.store.isStale(t, cursor) });
    }
    // Trails: kept on a layer of their own, drawn as they grow (see trails()).
    const perf = this.store.perf;
    const avg = (k, v) => { perf[k] = (perf[k] || 0) * 0.9 + v * 0.1; };
    let t0 = performance.now();
    if (this.store.trailMs > 0) {
      this.trails(cursor);
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.globalAlpha = 0.6;
      ctx.drawImage(this.trailLayer, 0, 0);
      ctx.globalAlpha = 1;
      ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    }
    // Markers: small pre-drawn sprites (a triangle per 10° of heading, a diamond without
    // a heading; stale ones hollow and grey): one image copy each, not a path to fill.
    let t1 = performance.now();
    avg('trails', t1 - t0);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    const half = SPRITE / 2;
    for (const v of visible) {
      const hdg = v.t.fix.hdg;
      const k = hdg === null || hdg === undefined ? 36 : Math.round(hdg / 10) % 36;
      ctx.drawImage(this.sprites(this.trackColour(v.t)), k * SPRITE, v.stale ? SPRITE : 0, SPRITE, SPRITE,
        Math.round(v.x * this.dpr - half), Math.round(v.y * this.dpr - half), SPRITE, SPRITE);
    }
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    t0 = performance.now();
    avg('markers', t0 - t1);
    if (this.labelMode !== 'off') this.labels(ctx, visible);
    avg('labels', performance.now() - t0);
    drawOverlays(ctx, this, visible);
    for (const id of [this.selected, this.follow]) {
      const v = visible.find((x) => x.t.id === id);
      if (v) {
        ctx.strokeStyle = '#ffffff';
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        ctx.arc(v.x, v.y, 11, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }
  }

  /**
   * The trails' layer. Redrawn whole when the view or the picture changes, and once a
   * second (old parts drop off, stale tracks turn grey); in between only the segments
   * new since the last frame are drawn. A view that only moved (following a track) is
   * shifted, not redrawn. At 1,000 tracks this is what keeps a frame cheap.
   */
  trails(cursor) {
    const store = this.store;
    const [w, h] = this.size();
    const c = this.center[this.kind];
    const s = scaleOf(this.zoom);
    const L = this.trailLayer;
    if (L.width !== this.canvas.width || L.height !== this.canvas.height) {
      L.width = this.canvas.width;
      L.height = this.canvas.height;
      this.trailScratch.width = L.width;
      this.trailScratch.height = L.height;
      this.trailKey = '';
    }
    const g = L.getContext('2d');
    const key = `${this.kind}|${w}|${h}|${this.dpr}|${this.zoom}|${store.trailMs}|${store.colour()}|${store.gen}|${this.filter ? this.filter.text : ''}`;
    const now = performance.now();
    const full = key !== this.trailKey || cursor < this.trailCursor || now - this.trailAt > 1000;
    if (!full && (c[0] !== this.trailCenter[0] || c[1] !== this.trailCenter[1])) {
      const dx = (this.trailCenter[0] - c[0]) * s * this.dpr;
      const dy = (c[1] - this.trailCenter[1]) * s * this.dpr;
      const k = this.trailScratch.getContext('2d');
      k.setTransform(1, 0, 0, 1, 0, 0);
      k.clearRect(0, 0, L.width, L.height);
      k.drawImage(L, 0, 0);
      g.setTransform(1, 0, 0, 1, 0, 0);
      g.clearRect(0, 0, L.width, L.height);
      g.drawImage(this.trailScratch, dx, dy);
    }
    this.trailCenter = [c[0], c[1]];
    this.trailCursor = cursor;
    g.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    const X = (q) => w / 2 + (q[0] - c[0]) * s;
    const Y = (q) => h / 2 - (q[1] - c[1]) * s;
    const from = cursor - store.trailMs;
    g.lineWidth = 1.2;
    if (full) {
      g.clearRect(0, 0, w, h);
      this.trailKey = key;
      this.trailAt = now;
      for (const stale of [false, true]) {
        g.beginPath();
        for (const t of store.tracks.values()) {
          if (!t.pos || store.isStale(t, cursor) !== stale || !this.shows(t)) continue;
          let first = true;
          let px = 0;
          let py = 0;
          t.drawnPt = null;
          const last = t.trail.length - 1;
          for (let i = 0; i <= last; i++) {
            const p = t.trail[i];
            if (p.ms < from || p.ms > cursor) continue;
            const q = this.xy(p);
            if (!q) continue;
            const x = X(q);
            const y = Y(q);
            // Points within a pixel and a half of the last one drawn add nothing to see
            // (zoomed out, most of a thousand trails), only to raster.
            if (first) g.moveTo(x, y);
            else if (i === last || Math.abs(x - px) + Math.abs(y - py) >= 1.5) g.lineTo(x, y);
            else continue;
            first = false;
            px = x;
            py = y;
            t.drawnPt = p;
          }
        }
        g.strokeStyle = stale ? GREY : store.colour();
        g.stroke();
      }
      return;
    }
    g.beginPath();
    for (const t of store.tracks.values()) {
      const last = t.trail[t.trail.length - 1];
      if (!last || last === t.drawnPt || last.ms > cursor || !this.shows(t)) continue;
      let prev = t.drawnPt ? this.xy(t.drawnPt) : null;
      const since = t.drawnPt ? t.drawnPt.ms : from;
      for (let i = t.trail.length - 1; i >= 0 && t.trail[i].ms > since; i--) {
        // (walk back to the first new point, then draw forwards)
        if (i === 0 || t.trail[i - 1].ms <= since) {
          for (let j = i; j < t.trail.length && t.trail[j].ms <= cursor; j++) {
            const q = this.xy(t.trail[j]);
            if (!q) continue;
            if (prev) {
              g.moveTo(X(prev), Y(prev));
              g.lineTo(X(q), Y(q));
            }
            prev = q;
            t.drawnPt = t.trail[j];
          }
          break;
        }
      }
    }
    g.strokeStyle = store.colour();
    g.stroke();
  }

  /** A track's marker colour: its worst alarm's, else its altitude's (when colouring by
   *  altitude), else the colour commanded for every marker. */
  trackColour(t) {
    const level = this.store.alarmLevel(t.id);
    if (level) return ALARM_COLOURS[level];
    if (this.colourBy === 'altitude') return altitudeColour(t.fix.alt);
    return this.store.colour();
  }

  /** Whether a track is shown (the filter). */
  shows(t) {
    return passes(this.filter, t.fix, this.store.factors().altitude.per_si);
  }

  /** Marker sprites for a colour: 36 headings and a diamond, live and stale (one atlas
   *  per colour, kept). */
  sprites(colour) {
    const key = `${colour}|${this.dpr}`;
    const kept = this.spriteSets.get(key);
    if (kept) return kept;
    if (this.spriteSets.size > 64) this.spriteSets.clear();
    // One atlas image (a row of live sprites over a row of stale ones): a thousand
    // copies from one source are cheaper than from 74 small canvases.
    const atlas = document.createElement('canvas');
    atlas.width = SPRITE * 37;
    atlas.height = SPRITE * 2;
    const g = atlas.getContext('2d');
    const make = (k, stale) => {
      g.setTransform(this.dpr, 0, 0, this.dpr, SPRITE * k + SPRITE / 2, (stale ? SPRITE : 0) + SPRITE / 2);
      g.setLineDash([]);
      g.beginPath();
      if (k === 36) {
        g.moveTo(0, -5);
        g.lineTo(5, 0);
        g.lineTo(0, 5);
        g.lineTo(-5, 0);
      } else {
        const a = (k * 10 * Math.PI) / 180;
        const sx = Math.sin(a);
        const cy = Math.cos(a);
        g.moveTo(sx * 8, -cy * 8);
        g.lineTo(-sx * 5 + cy * 4.5, cy * 5 + sx * 4.5);
        g.lineTo(-sx * 5 - cy * 4.5, cy * 5 - sx * 4.5);
      }
      g.closePath();
      if (stale) {
        g.strokeStyle = GREY;
        g.lineWidth = 1.5;
        g.setLineDash([2, 2]);
        g.stroke();
      } else {
        g.fillStyle = DEFAULT_MARKER;
        g.fillStyle = colour; // a colour the canvas does not know leaves the default
        g.fill();
      }
    };
    for (let k = 0; k < 37; k++) {
      make(k, false);
      make(k, true);
    }
    this.spriteSets.set(key, atlas);
    return atlas;
  }

  /** Labels (sensor id; altitude and speed in the current units), decluttered on a grid. */
  labels(ctx, visible) {
    const f = this.store.factors();
    const taken = new Set();
    const all = this.labelMode === 'on';
    const order = visible.slice().sort((a, b) => (b.t.id === this.follow) - (a.t.id === this.follow) || a.t.id - b.t.id);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    for (const v of order) {
      const cell = `${Math.floor(v.x / 110)}:${Math.floor(v.y / 30)}`;
      const always = all || v.t.id === this.follow || v.t.id === this.selected;
      if (taken.has(cell) && !always) continue;
      taken.add(cell);
      const x = v.t.fix;
      // Altitude to 10 units, speed to 1: a label's text changes a few times a second.
      const alt = x.alt === null ? '—' : `${Math.round((x.alt * f.altitude.per_si) / 10) * 10} ${f.altitude.unit}`;
      const spd = x.spd === null ? '—' : `${Math.round(x.spd * f.speed.per_si)} ${f.speed.unit}`;
      const img = this.labelImage(v.t, `${x.id}${v.stale ? ' STALE' : ''}`, `${alt}  ${spd}`, v.stale);
      ctx.drawImage(img, Math.round((v.x + 9) * this.dpr), Math.round((v.y - 12) * this.dpr));
    }
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
  }

  /**
   * A track's label as an image, drawn again only when its text changes, and at most
   * twice a second while it keeps changing (a climbing aircraft's altitude would
   * otherwise redraw it at the data rate); a change of units or staleness shows at once.
   * The image keeps its size, so a redraw allocates nothing.
   */
  labelImage(t, line1, line2, stale) {
    const key = `${line1}|${line2}|${this.dpr}`;
    const now = performance.now();
    const l = t.label;
    if (l && (l.key === key || (!this.frozen && l.stale === stale && l.units === this.store.settings.units && now - l.at < 500))) {
      return l.canvas;
    }
    let c = l && l.canvas;
    if (!c || c.width !== Math.ceil(LABEL_W * this.dpr)) {
      c = document.createElement('canvas');
      c.width = Math.ceil(LABEL_W * this.dpr);
      c.height = Math.ceil(26 * this.dpr);
    }
    const g = c.getContext('2d');
    g.setTransform(1, 0, 0, 1, 0, 0);
    g.clearRect(0, 0, c.width, c.height);
    g.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    g.font = '11px "DejaVu Sans", sans-serif';
    g.fillStyle = stale ? GREY : '#e8f1f7';
    g.fillText(line1, 0, 10, LABEL_W);
    g.fillStyle = stale ? GREY : '#9fb3c0';
    g.fillText(line2, 0, 22, LABEL_W);
    t.label = { key, canvas: c, at: now, stale, units: this.store.settings.units };
    return c;
  }
}
