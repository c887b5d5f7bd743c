// What is drawn over the tracks: the alarmer's boundaries (geofences solid, impact-point
// boundaries dashed, in their level's colour), each watched track's impact point, the
// range/bearing ruler, and the altitude legend when tracks are coloured by altitude.
// Reads the store and the view; decides nothing.

import { mercator } from './geo.js';
import { ALARM_COLOURS, ALTITUDE_BANDS, rangeBearing } from './tools.js';

/** This view's metres for a WGS-84 position (null when it cannot be drawn here). */
export function project(map, lat, lon, alt = 0) {
  if (map.kind === 'map') return mercator(lat, lon);
  const plane = map.store.plane;
  return plane ? plane.en(lat, lon, alt) : null;
}

/** The ruler's two ends as positions ({lat, lon, alt}), or null when one is gone. */
export function rulerEnds(store, ruler) {
  if (!ruler) return null;
  const at = (end) => {
    if (end === 'origin') {
      const o = store.config.origin;
      return o ? { lat: o.lat, lon: o.lon, alt: o.alt || 0, label: 'origin' } : null;
    }
    const t = store.tracks.get(end);
    return t && t.fix.lat !== null ? { lat: t.fix.lat, lon: t.fix.lon, alt: t.fix.alt || 0, label: String(end) } : null;
  };
  const a = at(ruler.from);
  const b = at(ruler.to);
  return a && b ? [a, b] : null;
}

export function drawOverlays(ctx, map, visible) {
  const store = map.store;
  const [w, h] = map.size();
  const screen = (q) => map.toScreen(q[0], q[1]);
  // Boundaries.
  const rules = store.overlays ? store.overlays.rules : [];
  ctx.lineWidth = 1.5;
  ctx.font = '11px "DejaVu Sans", sans-serif';
  // Each label inside its boundary's top-left corner, moved down past labels already
  // there (boundaries often share an edge).
  const labels = [];
  for (const r of rules) {
    if (!r.polygon) continue;
    ctx.strokeStyle = ALARM_COLOURS[r.level] || '#f2d03b';
    ctx.setLineDash(r.kind === 'impact' ? [6, 4] : []);
    ctx.beginPath();
    let first = true;
    let top = null;
    for (const [lat, lon] of r.polygon) {
      const q = project(map, lat, lon);
      if (!q) continue;
      const [x, y] = screen(q);
      if (first) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
      first = false;
      if (!top || y < top[1] - 0.5 || (Math.abs(y - top[1]) <= 0.5 && x < top[0])) top = [x, y];
    }
    ctx.stroke();
    ctx.setLineDash([]);
    if (top) {
      const text = `${r.name}${r.kind === 'impact' ? ' (impact)' : ''}`;
      const width = ctx.measureText(text).width;
      const x = Math.min(Math.max(top[0] + 4, 2), w - width - 2);
      let y = Math.min(Math.max(top[1] + 14, 12), h - 4);
      while (labels.some((l) => Math.abs(l[1] - y) < 12 && x < l[0] + l[2] && l[0] < x + width)) y += 13;
      labels.push([x, y, width]);
      ctx.fillStyle = ctx.strokeStyle;
      ctx.fillText(text, x, y);
    }
  }
  // Impact points of watched tracks: a cross, and a dotted line from the track.
  ctx.strokeStyle = '#ff6b6b';
  ctx.lineWidth = 1.2;
  for (const v of visible) {
    const iip = v.t.fix.iip;
    if (!iip) continue;
    const q = project(map, iip.lat, iip.lon);
    if (!q) continue;
    const [x, y] = screen(q);
    ctx.setLineDash([2, 3]);
    ctx.beginPath();
    ctx.moveTo(v.x, v.y);
    ctx.lineTo(x, y);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.beginPath();
    ctx.moveTo(x - 5, y - 5);
    ctx.lineTo(x + 5, y + 5);
    ctx.moveTo(x - 5, y + 5);
    ctx.lineTo(x + 5, y - 5);
    ctx.stroke();
  }
  // The ruler.
  const ends = rulerEnds(store, map.ruler);
  if (ends) {
    const [a, b] = ends;
    const pa = project(map, a.lat, a.lon, a.alt);
    const pb = project(map, b.lat, b.lon, b.alt);
    if (pa && pb) {
      const [x0, y0] = screen(pa);
      const [x1, y1] = screen(pb);
      ctx.strokeStyle = '#ffffff';
      ctx.lineWidth = 1.5;
      ctx.setLineDash([8, 4]);
      ctx.beginPath();
      ctx.moveTo(x0, y0);
      ctx.lineTo(x1, y1);
      ctx.stroke();
      ctx.setLineDash([]);
      const { range, bearing } = rangeBearing(a, b);
      const f = store.factors().range;
      const text = `${(range * f.per_si).toFixed(2)} ${f.unit}  ${String(Math.round(bearing) % 360).padStart(3, '0')}°`;
      ctx.font = 'bold 12px "DejaVu Sans", sans-serif';
      const tw = ctx.measureText(text).width;
      const mx = (x0 + x1) / 2;
      const my = (y0 + y1) / 2;
      ctx.fillStyle = 'rgba(11, 16, 20, 0.85)';
      ctx.fillRect(mx - tw / 2 - 4, my - 16, tw + 8, 18);
      ctx.fillStyle = '#ffffff';
      ctx.fillText(text, mx - tw / 2, my - 3);
    }
  }
  // The altitude legend.
  if (map.colourBy === 'altitude') {
    const fa = store.factors().altitude;
    const bands = ALTITUDE_BANDS;
    const x = w - 120;
    let y = h - 18 * bands.length - 10;
    ctx.fillStyle = 'rgba(11, 16, 20, 0.85)';
    ctx.fillRect(x - 8, y - 14, 124, 18 * bands.length + 12);
    ctx.font = '11px "DejaVu Sans", sans-serif';
    for (let i = bands.length - 1; i >= 0; i--) {
      const [from, colour] = bands[i];
      ctx.fillStyle = colour;
      ctx.fillRect(x, y - 9, 12, 12);
      ctx.fillStyle = '#d7e2ea';
      const label = from === -Infinity
        ? `< ${Math.round(bands[1][0] * fa.per_si)} ${fa.unit}`
        : `≥ ${Math.round(from * fa.per_si)} ${fa.unit}`;
      ctx.fillText(label, x + 18, y + 1);
      y += 18;
    }
  }
}
