// A field of the followed track over time (its trail): altitude or speed in the units
// shown, the trail's span on the time axis, the cursor at the right edge.

export class Plot {
  constructor(canvas, title, store, map) {
    this.canvas = canvas;
    this.title = title;
    this.store = store;
    this.map = map;
    this.field = 'alt';
    this.shown = null;
  }

  /** What is plotted: {sensor, field, unit, points, min, max, last}, or null. */
  data(cursor) {
    const id = this.map.follow ?? this.map.selected;
    const t = id === null ? null : this.store.tracks.get(id);
    if (!t) return null;
    const f = this.store.factors();
    const per = this.field === 'alt' ? f.altitude : f.speed;
    const from = cursor - Math.max(this.store.trailMs, 10000);
    const points = [];
    for (const p of t.trail) {
      const v = p[this.field];
      if (p.ms >= from && p.ms <= cursor && v !== null && v !== undefined) points.push([p.ms, v * per.per_si]);
    }
    if (points.length === 0) return { sensor: id, field: this.field, unit: per.unit, points: 0, min: null, max: null, last: null, from, to: cursor, series: [] };
    const vs = points.map((p) => p[1]);
    return {
      sensor: id, field: this.field, unit: per.unit, points: points.length,
      min: Math.min(...vs), max: Math.max(...vs), last: vs[vs.length - 1], from, to: cursor, series: points,
    };
  }

  draw(cursor) {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth;
    const h = c.clientHeight;
    if (w === 0 || h === 0) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.fillStyle = '#0e151a';
    g.fillRect(0, 0, w, h);
    const d = this.data(cursor);
    this.shown = d;
    const name = this.field === 'alt' ? 'altitude' : 'speed';
    if (!d) {
      this.title.textContent = `Follow or select a track to plot its ${name}`;
      return;
    }
    this.title.textContent = d.last === null ? `${d.sensor}: no ${name} yet` : `${d.sensor} ${name}: ${Math.round(d.last)} ${d.unit}`;
    if (d.points < 2) return;
    const pad = 4;
    const lo = d.min === d.max ? d.min - 1 : d.min;
    const hi = d.min === d.max ? d.max + 1 : d.max;
    // The span the track has been followed (at least 10 s), not an empty trail's worth.
    const from = Math.max(d.from, Math.min(d.series[0][0], d.to - 10000));
    const X = (ms) => 34 + ((ms - from) / (d.to - from)) * (w - 38);
    const Y = (v) => pad + (1 - (v - lo) / (hi - lo)) * (h - 2 * pad - 10);
    g.fillStyle = '#7f909c';
    g.font = '10px "DejaVu Sans", sans-serif';
    g.fillText(String(Math.round(hi)), 2, 10);
    g.fillText(String(Math.round(lo)), 2, h - 12);
    g.fillText(`−${Math.round((d.to - from) / 1000)} s`, 34, h - 1);
    g.strokeStyle = '#36d6ff';
    g.lineWidth = 1.5;
    g.beginPath();
    d.series.forEach(([ms, v], i) => (i === 0 ? g.moveTo(X(ms), Y(v)) : g.lineTo(X(ms), Y(v))));
    g.stroke();
  }
}
