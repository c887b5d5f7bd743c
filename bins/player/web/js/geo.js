// Projections for drawing. Positions themselves come from the server (tspi-core's
// WGS-84 conversion); this only decides where on the canvas they go.

const A = 6378137.0;
const F = 1 / 298.257223563;
const E2 = F * (2 - F);
const DEG = Math.PI / 180;

/** WGS-84 geodetic → ECEF metres. */
export function ecef(latDeg, lonDeg, alt) {
  const lat = latDeg * DEG;
  const lon = lonDeg * DEG;
  const s = Math.sin(lat);
  const n = A / Math.sqrt(1 - E2 * s * s);
  const c = Math.cos(lat);
  return [(n + alt) * c * Math.cos(lon), (n + alt) * c * Math.sin(lon), (n * (1 - E2) + alt) * s];
}

/** A local east/north/up plane at a site. */
export class LocalPlane {
  constructor(latDeg, lonDeg, alt) {
    this.lat = latDeg;
    this.lon = lonDeg;
    this.alt = alt;
    this.o = ecef(latDeg, lonDeg, alt);
    const la = latDeg * DEG;
    const lo = lonDeg * DEG;
    this.e = [-Math.sin(lo), Math.cos(lo), 0];
    this.n = [-Math.sin(la) * Math.cos(lo), -Math.sin(la) * Math.sin(lo), Math.cos(la)];
  }
  /** East and north metres of a position from the site. */
  en(latDeg, lonDeg, alt) {
    const p = ecef(latDeg, lonDeg, alt);
    const d0 = p[0] - this.o[0];
    const d1 = p[1] - this.o[1];
    const d2 = p[2] - this.o[2];
    return [
      this.e[0] * d0 + this.e[1] * d1 + this.e[2] * d2,
      this.n[0] * d0 + this.n[1] * d1 + this.n[2] * d2,
    ];
  }
}

/** Spherical Web Mercator metres (x east, y north). */
export function mercator(latDeg, lonDeg) {
  const lat = Math.max(-85.05, Math.min(85.05, latDeg)) * DEG;
  return [A * lonDeg * DEG, A * Math.log(Math.tan(Math.PI / 4 + lat / 2))];
}

export function inverseMercator(x, y) {
  return [(2 * Math.atan(Math.exp(y / A)) - Math.PI / 2) / DEG, x / A / DEG];
}

/** Great-circle distance in metres (for choosing map detail; not for measurement). */
export function roughDistance(lat1, lon1, lat2, lon2) {
  const p1 = lat1 * DEG;
  const p2 = lat2 * DEG;
  const dp = p2 - p1;
  const dl = (lon2 - lon1) * DEG;
  const h = Math.sin(dp / 2) ** 2 + Math.cos(p1) * Math.cos(p2) * Math.sin(dl / 2) ** 2;
  return 2 * A * Math.asin(Math.min(1, Math.sqrt(h)));
}

/** A round step near `raw` (1, 2, 5 × 10^k). */
export function niceStep(raw) {
  const k = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 5, 10]) {
    if (raw <= m * k) return m * k;
  }
  return 10 * k;
}
