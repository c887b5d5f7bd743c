// Canvas 2D rendering of the picture: the map view (Web Mercator, coastlines and
// borders) and the range view (the east/north plane around the range origin, with range
// rings and azimuth spokes in the current units). It reads the store; it never decides
// what time it is (the cursor comes from the store).

import { mercator, inverseMercator, niceStep } from './geo.js';
import { linesOf } from './topo.js';

const M_PER_PX_Z0 = 156543.03392; // Web Mercator metres per pixel at zoom 0
const GREY = '#6d7b85';

export function scaleOf(zoom) {
  return Math.pow(2, zoom) / M_PER_PX_Z0; // pixels per metre
}

export class MapView {
  constructor(canvas, store) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d', { alpha: false });
    this.store = store;
    this.kind = 'map';
    this.zoom = 8;
    this.center = { map: mercator(34.9, -117.9), range: [0, 0] };
    this.follow = null;
    this.selected = null;
    this.fitted = false;
    this.world = { low: null, high: null, loadingHigh: false };
    this.base = document.createElement('canvas');
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
    if (kind === 'range' && !this.store.plane) kind = 'map';
    this.kind = kind;
    this.baseKey = '';
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
      if (!t.pos) continue;
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
    const key = `${this.kind}|${w}|${h}|${this.dpr}|${this.zoom}|${c[0]}|${c[1]}|${world === this.world.high}|${!!world}|${this.store.settings.units}`;
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
    const step = niceStep((reach / 6) / perUnit) * perUnit;
    g.strokeStyle = '#21404f';
    g.fillStyle = '#5d8196';
    g.lineWidth = 1;
    g.font = '11px "DejaVu Sans", sans-serif';
    for (let r = step, i = 1; r <= reach && i <= 40; r += step, i++) {
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
    const colour = this.store.colour();
    const trailFrom = cursor - this.store.trailMs;
    const visible = [];
    for (const t of this.store.tracks.values()) {
      if (!t.pos || !this.xy(t.pos)) continue;
      const q = this.xy(t.pos);
      const x = X(q);
      const y = Y(q);
      if (x < -50 || y < -50 || x > w + 50 || y > h + 50) continue;
      visible.push({ t, x, y, stale: this.store.isStale(t, cursor) });
    }
    // Trails: one path each for live and stale tracks.
    if (this.store.trailMs > 0) {
      for (const stale of [false, true]) {
        ctx.beginPath();
        for (const v of visible) {
          if (v.stale !== stale) continue;
          let first = true;
          for (const p of v.t.trail) {
            if (p.ms < trailFrom || p.ms > cursor) continue;
            const q = this.xy(p);
            if (first) ctx.moveTo(X(q), Y(q));
            else ctx.lineTo(X(q), Y(q));
            first = false;
          }
        }
        ctx.strokeStyle = stale ? GREY : colour;
        ctx.globalAlpha = stale ? 0.5 : 0.55;
        ctx.lineWidth = 1.2;
        ctx.stroke();
      }
      ctx.globalAlpha = 1;
    }
    // Markers: a triangle along the heading, a diamond without one; stale ones hollow.
    for (const stale of [false, true]) {
      ctx.beginPath();
      for (const v of visible) {
        if (v.stale !== stale) continue;
        const hdg = v.t.fix.hdg;
        if (hdg === null || hdg === undefined) {
          ctx.moveTo(v.x, v.y - 5);
          ctx.lineTo(v.x + 5, v.y);
          ctx.lineTo(v.x, v.y + 5);
          ctx.lineTo(v.x - 5, v.y);
        } else {
          const a = (hdg * Math.PI) / 180;
          const sx = Math.sin(a);
          const cy = Math.cos(a);
          ctx.moveTo(v.x + sx * 8, v.y - cy * 8);
          ctx.lineTo(v.x - sx * 5 + cy * 4.5, v.y + cy * 5 + sx * 4.5);
          ctx.lineTo(v.x - sx * 5 - cy * 4.5, v.y + cy * 5 - sx * 4.5);
        }
        ctx.closePath();
      }
      if (stale) {
        ctx.strokeStyle = GREY;
        ctx.lineWidth = 1.5;
        ctx.setLineDash([2, 2]);
        ctx.stroke();
        ctx.setLineDash([]);
      } else {
        ctx.fillStyle = colour;
        ctx.fill();
      }
    }
    this.labels(ctx, visible);
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

  /** Labels (sensor id; altitude and speed in the current units), decluttered on a grid. */
  labels(ctx, visible) {
    const f = this.store.factors();
    const taken = new Set();
    ctx.font = '11px "DejaVu Sans", sans-serif';
    const order = visible.slice().sort((a, b) => (b.t.id === this.follow) - (a.t.id === this.follow) || a.t.id - b.t.id);
    for (const v of order) {
      const cell = `${Math.floor(v.x / 110)}:${Math.floor(v.y / 30)}`;
      const always = v.t.id === this.follow || v.t.id === this.selected;
      if (taken.has(cell) && !always) continue;
      taken.add(cell);
      const x = v.t.fix;
      const alt = x.alt === null ? '—' : `${Math.round(x.alt * f.altitude.per_si)} ${f.altitude.unit}`;
      const spd = x.spd === null ? '—' : `${Math.round(x.spd * f.speed.per_si)} ${f.speed.unit}`;
      ctx.fillStyle = v.stale ? GREY : '#e8f1f7';
      ctx.fillText(`${x.id}${v.stale ? ' STALE' : ''}`, v.x + 9, v.y - 2);
      ctx.fillStyle = v.stale ? GREY : '#9fb3c0';
      ctx.fillText(`${alt}  ${spd}`, v.x + 9, v.y + 10);
    }
  }
}
