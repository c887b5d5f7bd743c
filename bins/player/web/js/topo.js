// TopoJSON (world-atlas) → coastlines and borders as lon/lat polylines. A coastline is
// an arc used by one country only; a border is an arc two countries share. Each line
// keeps its bounding box so the renderer skips what is off screen.

function decodeArcs(topology) {
  const t = topology.transform;
  const [kx, ky] = t ? t.scale : [1, 1];
  const [dx, dy] = t ? t.translate : [0, 0];
  return topology.arcs.map((arc) => {
    let x = 0;
    let y = 0;
    const out = new Float64Array(arc.length * 2);
    arc.forEach((p, i) => {
      if (t) {
        x += p[0];
        y += p[1];
      } else {
        x = p[0];
        y = p[1];
      }
      out[2 * i] = x * kx + dx;
      out[2 * i + 1] = y * ky + dy;
    });
    return out;
  });
}

function collectArcRefs(geometry, uses) {
  const visit = (ref) => {
    const i = ref < 0 ? ~ref : ref;
    uses.set(i, (uses.get(i) || 0) + 1);
  };
  const walk = (g) => {
    if (!g) return;
    if (g.type === 'GeometryCollection') g.geometries.forEach(walk);
    else if (g.type === 'Polygon') g.arcs.forEach((ring) => ring.forEach(visit));
    else if (g.type === 'MultiPolygon') g.arcs.forEach((poly) => poly.forEach((ring) => ring.forEach(visit)));
    else if (g.type === 'LineString') g.arcs.forEach(visit);
    else if (g.type === 'MultiLineString') g.arcs.forEach((line) => line.forEach(visit));
  };
  walk(geometry);
}

function withBox(points) {
  let minX = Infinity;
  let minY = Infinity;
  let maxX = -Infinity;
  let maxY = -Infinity;
  for (let i = 0; i < points.length; i += 2) {
    minX = Math.min(minX, points[i]);
    maxX = Math.max(maxX, points[i]);
    minY = Math.min(minY, points[i + 1]);
    maxY = Math.max(maxY, points[i + 1]);
  }
  return { points, box: [minX, minY, maxX, maxY] };
}

/** `{coast: [{points, box}], borders: [...]}`; points are [lon, lat, lon, lat, …]. */
export function linesOf(topology) {
  const arcs = decodeArcs(topology);
  const uses = new Map();
  collectArcRefs(topology.objects.countries, uses);
  const coast = [];
  const borders = [];
  uses.forEach((n, i) => {
    const line = withBox(arcs[i]);
    (n > 1 ? borders : coast).push(line);
  });
  return { coast, borders };
}
