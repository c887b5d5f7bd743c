// The operators' tools, as pure functions the views and the automation API share: the
// track filter, altitude colours and their legend, colours of alarm levels, and the
// range/bearing between two positions (WGS-84, through ECEF and the local plane at the
// first one: slant range, bearing from true north).

import { ecef, LocalPlane } from './geo.js';

export const ALARM_COLOURS = { watch: '#f2d03b', warning: '#ff8c1a', critical: '#ff3b3b' };

/** Altitude bands (metres, lower bounds) and their colours, low to high (tar1090-like). */
export const ALTITUDE_BANDS = [
  [-Infinity, '#ff8c1a'],
  [500, '#ffd21a'],
  [1000, '#c6f21a'],
  [2000, '#4ef21a'],
  [3000, '#1af2a0'],
  [4500, '#1acbf2'],
  [6000, '#1a7cf2'],
  [9000, '#7a4ef2'],
  [12000, '#e04ef2'],
];

export function altitudeColour(altM) {
  if (altM === null || altM === undefined) return '#6d7b85';
  let c = ALTITUDE_BANDS[0][1];
  for (const [from, colour] of ALTITUDE_BANDS) if (altM >= from) c = colour;
  return c;
}

/**
 * A filter typed by an operator: terms separated by spaces, all of them must hold —
 * ids and id ranges (`10001 10005-10009`, any of them), `type:geocentric|spherical`
 * (`geo`, `sph` will do), `alt:LOW-HIGH` (in the altitude unit shown; either side may be
 * empty). `null` when the text is empty; an Error naming the term it does not understand.
 */
export function parseFilter(text) {
  const terms = String(text || '').trim().split(/\s+/).filter(Boolean);
  if (terms.length === 0) return null;
  const f = { ids: [], type: null, alt: null, text: terms.join(' ') };
  for (const t of terms) {
    let m;
    if ((m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(t))) {
      const a = Number(m[1]);
      const b = m[2] === undefined ? a : Number(m[2]);
      if (a > 65535 || b > 65535 || b < a) throw new Error(`filter: ${t} is not an id or a range of ids`);
      f.ids.push([a, b]);
    } else if ((m = /^type:(geo|geocentric|sph|spherical)$/i.exec(t))) {
      f.type = m[1].toLowerCase().startsWith('geo') ? 'geocentric' : 'spherical';
    } else if ((m = /^alt:(-?\d+(?:\.\d+)?)?-(-?\d+(?:\.\d+)?)?$/i.exec(t)) && (m[1] !== undefined || m[2] !== undefined)) {
      f.alt = [m[1] === undefined ? -Infinity : Number(m[1]), m[2] === undefined ? Infinity : Number(m[2])];
    } else {
      throw new Error(`filter: ${t} is not an id, a range a-b, type:geo|sph or alt:low-high`);
    }
  }
  return f;
}

/** Whether a track's latest fix passes the filter (`perSi`: the altitude unit's factor). */
export function passes(filter, fix, perSi) {
  if (!filter) return true;
  if (filter.ids.length && !filter.ids.some(([a, b]) => fix.id >= a && fix.id <= b)) return false;
  if (filter.type && (filter.type === 'spherical') !== fix.spherical) return false;
  if (filter.alt) {
    if (fix.alt === null) return false;
    const alt = fix.alt * perSi;
    if (alt < filter.alt[0] || alt > filter.alt[1]) return false;
  }
  return true;
}

/** Slant range (m) and bearing (degrees from true north) from position a to position b. */
export function rangeBearing(a, b) {
  const p = ecef(a.lat, a.lon, a.alt || 0);
  const q = ecef(b.lat, b.lon, b.alt || 0);
  const range = Math.hypot(q[0] - p[0], q[1] - p[1], q[2] - p[2]);
  const [e, n] = new LocalPlane(a.lat, a.lon, a.alt || 0).en(b.lat, b.lon, b.alt || 0);
  const bearing = ((Math.atan2(e, n) * 180) / Math.PI + 360) % 360;
  return { range, bearing };
}
