//! Range boundaries and where a track would come down: polygons in WGS-84 latitude and
//! longitude (point-in-polygon by ray casting in the lat/lon plane, as NASA's Range Safety
//! Algorithm applies it to present position and impact point), checked closed and simple
//! when they are loaded, and the vacuum instantaneous impact point.
//!
//! The lat/lon plane is exact enough for a range (a polygon's edges are the straight
//! lines of that plane, which is what a boundary drawn on a chart means); polygons may
//! not cross the antimeridian or enclose a pole.

use tspi_core::geo::Geodetic;

/// Latitude bands a polygon's edges are sorted into, so a test looks at a few edges.
const BANDS: usize = 32;
/// Cells per side of the grid over a polygon's bounding box: a cell no edge comes near is
/// wholly inside or outside, answered without looking at an edge.
const GRID: usize = 64;
const OUTSIDE: u8 = 0;
const INSIDE: u8 = 1;
const MIXED: u8 = 2;

/// A closed, simple polygon of (lat, lon) vertices, ready for fast containment tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon {
    /// Vertices, (lat, lon) degrees, the ring closed (last = first).
    pub ring: Vec<[f64; 2]>,
    min: [f64; 2],
    max: [f64; 2],
    /// Edge indices crossing each latitude band.
    bands: Vec<Vec<u32>>,
    /// `GRID`×`GRID` cells over the bounding box, row by latitude: `OUTSIDE`, `INSIDE`
    /// or `MIXED` (an edge's bounding box reaches into it: ask the edges).
    grid: Vec<u8>,
}

/// Why a ring is not a boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolygonError {
    TooFew,
    NotClosed,
    BadVertex(usize),
    SelfIntersecting(usize, usize),
}

impl std::fmt::Display for PolygonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolygonError::TooFew => write!(f, "needs at least 3 distinct vertices"),
            PolygonError::NotClosed => {
                write!(f, "is not closed (its last vertex must repeat its first)")
            }
            PolygonError::BadVertex(i) => write!(
                f,
                "vertex {} is not a position (latitude within ±90, longitude within ±180)",
                i + 1
            ),
            PolygonError::SelfIntersecting(a, b) => {
                write!(f, "intersects itself (edges {} and {} cross)", a + 1, b + 1)
            }
        }
    }
}

fn orient(a: [f64; 2], b: [f64; 2], c: [f64; 2]) -> f64 {
    (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
}

fn on_segment(a: [f64; 2], b: [f64; 2], c: [f64; 2]) -> bool {
    c[0] >= a[0].min(b[0])
        && c[0] <= a[0].max(b[0])
        && c[1] >= a[1].min(b[1])
        && c[1] <= a[1].max(b[1])
}

/// Whether segments ab and cd share a point.
fn segments_meet(a: [f64; 2], b: [f64; 2], c: [f64; 2], d: [f64; 2]) -> bool {
    let (o1, o2, o3, o4) = (
        orient(a, b, c),
        orient(a, b, d),
        orient(c, d, a),
        orient(c, d, b),
    );
    if ((o1 > 0.0 && o2 < 0.0) || (o1 < 0.0 && o2 > 0.0))
        && ((o3 > 0.0 && o4 < 0.0) || (o3 < 0.0 && o4 > 0.0))
    {
        return true;
    }
    (o1 == 0.0 && on_segment(a, b, c))
        || (o2 == 0.0 && on_segment(a, b, d))
        || (o3 == 0.0 && on_segment(c, d, a))
        || (o4 == 0.0 && on_segment(c, d, b))
}

impl Polygon {
    /// A ring of (lat, lon) vertices, which must be closed (last = first) and simple.
    pub fn new(ring: Vec<[f64; 2]>) -> Result<Polygon, PolygonError> {
        for (i, v) in ring.iter().enumerate() {
            if !(v[0].is_finite() && v[1].is_finite() && v[0].abs() <= 90.0 && v[1].abs() <= 180.0)
            {
                return Err(PolygonError::BadVertex(i));
            }
        }
        if ring.len() < 4 {
            return Err(if ring.len() >= 2 && ring.first() != ring.last() {
                PolygonError::NotClosed
            } else {
                PolygonError::TooFew
            });
        }
        if ring.first() != ring.last() {
            return Err(PolygonError::NotClosed);
        }
        let n = ring.len() - 1; // edges
                                // Simple: no two edges meet except neighbours at their shared vertex. O(n²) once,
                                // at load; boundaries have tens to hundreds of vertices.
        for i in 0..n {
            for j in i + 1..n {
                let neighbours = j == i + 1 || (i == 0 && j == n - 1);
                let (a, b, c, d) = (ring[i], ring[i + 1], ring[j], ring[j + 1]);
                if neighbours {
                    // Neighbours share one vertex; they must not fold back along each other.
                    let shared = if j == i + 1 { b } else { a };
                    let (p, q) = if j == i + 1 { (a, d) } else { (b, c) };
                    if orient(p, shared, q) == 0.0 && !on_segment(p, q, shared) {
                        return Err(PolygonError::SelfIntersecting(i, j));
                    }
                    continue;
                }
                if segments_meet(a, b, c, d) {
                    return Err(PolygonError::SelfIntersecting(i, j));
                }
            }
        }
        let mut min = [f64::INFINITY; 2];
        let mut max = [f64::NEG_INFINITY; 2];
        for v in &ring {
            for k in 0..2 {
                min[k] = min[k].min(v[k]);
                max[k] = max[k].max(v[k]);
            }
        }
        if max[0] - min[0] <= 0.0 || max[1] - min[1] <= 0.0 {
            return Err(PolygonError::TooFew);
        }
        let mut bands = vec![Vec::new(); BANDS];
        let height = (max[0] - min[0]) / BANDS as f64;
        for e in 0..n {
            let (lo, hi) = (
                ring[e][0].min(ring[e + 1][0]),
                ring[e][0].max(ring[e + 1][0]),
            );
            let first = (((lo - min[0]) / height) as usize).min(BANDS - 1);
            let last = (((hi - min[0]) / height) as usize).min(BANDS - 1);
            for band in &mut bands[first..=last] {
                band.push(e as u32);
            }
        }
        let mut polygon = Polygon {
            ring,
            min,
            max,
            bands,
            grid: vec![MIXED; GRID * GRID],
        };
        let mut marked = vec![false; GRID * GRID];
        for e in 0..n {
            let (a, b) = (polygon.ring[e], polygon.ring[e + 1]);
            let [r0, c0] = polygon.cell(a[0].min(b[0]), a[1].min(b[1]));
            let [r1, c1] = polygon.cell(a[0].max(b[0]), a[1].max(b[1]));
            for r in r0..=r1 {
                for c in c0..=c1 {
                    marked[r * GRID + c] = true;
                }
            }
        }
        let (h, w) = (
            (max[0] - min[0]) / GRID as f64,
            (max[1] - min[1]) / GRID as f64,
        );
        for r in 0..GRID {
            for c in 0..GRID {
                if !marked[r * GRID + c] {
                    let centre = [min[0] + (r as f64 + 0.5) * h, min[1] + (c as f64 + 0.5) * w];
                    polygon.grid[r * GRID + c] = if polygon.ray_cast(centre[0], centre[1]) {
                        INSIDE
                    } else {
                        OUTSIDE
                    };
                }
            }
        }
        Ok(polygon)
    }

    /// The grid cell of a point in the bounding box: [row, column].
    fn cell(&self, lat: f64, lon: f64) -> [usize; 2] {
        let row = ((lat - self.min[0]) / (self.max[0] - self.min[0]) * GRID as f64) as usize;
        let col = ((lon - self.min[1]) / (self.max[1] - self.min[1]) * GRID as f64) as usize;
        [row.min(GRID - 1), col.min(GRID - 1)]
    }

    /// Whether (lat, lon) is inside (the boundary counts as inside).
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        if lat < self.min[0] || lat > self.max[0] || lon < self.min[1] || lon > self.max[1] {
            return false;
        }
        let [r, c] = self.cell(lat, lon);
        match self.grid[r * GRID + c] {
            INSIDE => true,
            OUTSIDE => false,
            _ => self.ray_cast(lat, lon),
        }
    }

    /// Ray casting over the edges of the point's latitude band.
    fn ray_cast(&self, lat: f64, lon: f64) -> bool {
        let height = (self.max[0] - self.min[0]) / BANDS as f64;
        let band = (((lat - self.min[0]) / height) as usize).min(BANDS - 1);
        let mut inside = false;
        for &e in &self.bands[band] {
            let a = self.ring[e as usize];
            let b = self.ring[e as usize + 1];
            // On the edge itself: inside.
            if orient(a, b, [lat, lon]) == 0.0 && on_segment(a, b, [lat, lon]) {
                return true;
            }
            // Ray towards +longitude; edges half-open in latitude so a vertex counts once.
            if (a[0] > lat) != (b[0] > lat) {
                let cross_lon = a[1] + (lat - a[0]) * (b[1] - a[1]) / (b[0] - a[0]);
                if lon < cross_lon {
                    inside = !inside;
                }
            }
        }
        inside
    }

    /// The vertices' mean: where a label goes.
    pub fn centre(&self) -> [f64; 2] {
        let n = (self.ring.len() - 1) as f64;
        let s = self.ring[..self.ring.len() - 1]
            .iter()
            .fold([0.0, 0.0], |acc, v| [acc[0] + v[0], acc[1] + v[1]]);
        [s[0] / n, s[1] / n]
    }
}

/// Standard gravity, m/s².
pub const G: f64 = 9.806_65;

/// The vacuum instantaneous impact point of a body at `position` moving at east/north/up
/// `velocity` (m/s): where it would reach `ground_alt_m` (ellipsoidal height) if its
/// thrust stopped now and nothing but constant gravity acted — a flat earth in the local
/// tangent plane at the body, no drag, no rotation. `None` when it is at or below the
/// ground already and not climbing.
pub fn impact_point(position: Geodetic, velocity: [f64; 3], ground_alt_m: f64) -> Option<Geodetic> {
    let h = position.alt_m - ground_alt_m;
    let [ve, vn, vu] = velocity;
    if !(h.is_finite() && ve.is_finite() && vn.is_finite() && vu.is_finite())
        || (h <= 0.0 && vu <= 0.0)
    {
        return None;
    }
    // h + vu t - g t²/2 = 0, the later root.
    let t = (vu + (vu * vu + 2.0 * G * h.max(0.0)).sqrt()) / G;
    // The horizontal run, east and north, laid on the ground with the WGS-84 radii of
    // curvature under the body: the flat-earth model's own precision (the tangent plane
    // and the ground part by d²/2R, 8 m at 10 km), and one sine instead of two full
    // conversions, for every record an impact rule watches.
    const A: f64 = 6_378_137.0;
    const E2: f64 = 6.694_379_990_14e-3;
    let (sin, cos) = position.lat_deg.to_radians().sin_cos();
    let w = (1.0 - E2 * sin * sin).sqrt();
    let meridian = A * (1.0 - E2) / (w * w * w) + ground_alt_m;
    let normal = A / w + ground_alt_m;
    let lat_deg = position.lat_deg + (vn * t / meridian).to_degrees();
    let lon_deg = position.lon_deg + (ve * t / (normal * cos.max(1e-9))).to_degrees();
    (lat_deg.abs() <= 90.0 && t.is_finite()).then(|| Geodetic {
        lat_deg,
        lon_deg: (lon_deg + 540.0).rem_euclid(360.0) - 180.0,
        alt_m: ground_alt_m,
    })
}

/// East/north/up velocity of an ECEF velocity at a position.
pub fn enu_velocity(at: &Geodetic, v: [f64; 3]) -> [f64; 3] {
    let (slat, clat) = at.lat_deg.to_radians().sin_cos();
    let (slon, clon) = at.lon_deg.to_radians().sin_cos();
    let east = -slon * v[0] + clon * v[1];
    let north = -slat * clon * v[0] - slat * slon * v[1] + clat * v[2];
    let up = clat * clon * v[0] + clat * slon * v[1] + slat * v[2];
    [east, north, up]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tspi_core::geo::LocalFrame;

    /// A wavy ring of `n` vertices around (34.9, -117.9), `k` waves: concave everywhere.
    fn wavy(n: usize, k: f64, depth: f64) -> Polygon {
        let ring: Vec<[f64; 2]> = (0..=n)
            .map(|i| {
                let a = (i % n) as f64 / n as f64 * std::f64::consts::TAU;
                let r = 0.2 * (1.0 + depth * (k * a).sin());
                [34.9 + r * a.sin(), -117.9 + r * a.cos()]
            })
            .collect();
        Polygon::new(ring).unwrap()
    }

    proptest! {
        #[test]
        fn the_grid_answers_what_the_edges_answer(
            n in 8usize..200, k in 1u32..9, depth in 0.0f64..0.6,
            lat in 34.6f64..35.2, lon in -118.2f64..-117.6,
        ) {
            let p = wavy(n, f64::from(k), depth);
            let by_edges = lat >= p.min[0] && lat <= p.max[0] && lon >= p.min[1] && lon <= p.max[1]
                && p.ray_cast(lat, lon);
            prop_assert_eq!(p.contains(lat, lon), by_edges);
        }
    }

    fn square() -> Vec<[f64; 2]> {
        vec![
            [34.0, -118.0],
            [34.0, -117.0],
            [35.0, -117.0],
            [35.0, -118.0],
            [34.0, -118.0],
        ]
    }

    #[test]
    fn inside_outside_and_on_the_boundary() {
        let p = Polygon::new(square()).unwrap();
        assert!(p.contains(34.5, -117.5));
        assert!(!p.contains(35.5, -117.5));
        assert!(!p.contains(34.5, -116.9));
        assert!(p.contains(34.0, -117.5), "on an edge");
        assert!(p.contains(35.0, -118.0), "on a vertex");
        // A concave ring: a U open to the north.
        let u = Polygon::new(vec![
            [0.0, 0.0],
            [0.0, 3.0],
            [3.0, 3.0],
            [3.0, 2.0],
            [1.0, 2.0],
            [1.0, 1.0],
            [3.0, 1.0],
            [3.0, 0.0],
            [0.0, 0.0],
        ])
        .unwrap();
        assert!(u.contains(0.5, 1.5));
        assert!(!u.contains(2.0, 1.5), "in the notch");
        assert!(u.contains(2.0, 0.5) && u.contains(2.0, 2.5));
    }

    #[test]
    fn matches_a_plain_ray_cast_everywhere() {
        let ring: Vec<[f64; 2]> = (0..=100)
            .map(|i| {
                let a = (i % 100) as f64 / 100.0 * std::f64::consts::TAU;
                let r = 0.5 + 0.2 * (5.0 * a).sin();
                [34.9 + r * a.sin(), -117.9 + r * a.cos()]
            })
            .collect();
        let p = Polygon::new(ring.clone()).unwrap();
        let plain = |lat: f64, lon: f64| {
            let mut inside = false;
            for w in ring.windows(2) {
                let (a, b) = (w[0], w[1]);
                if (a[0] > lat) != (b[0] > lat)
                    && lon < a[1] + (lat - a[0]) * (b[1] - a[1]) / (b[0] - a[0])
                {
                    inside = !inside;
                }
            }
            inside
        };
        let mut s = 7u64;
        for _ in 0..100_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let lat = 34.0 + (s % 20_000) as f64 / 10_000.0;
            let lon = -118.9 + (s / 20_000 % 20_000) as f64 / 10_000.0;
            assert_eq!(p.contains(lat, lon), plain(lat, lon), "{lat} {lon}");
        }
    }

    #[test]
    fn open_crossed_and_degenerate_rings_are_refused() {
        let mut open = square();
        open.pop();
        assert_eq!(Polygon::new(open), Err(PolygonError::NotClosed));
        let bow = vec![[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]];
        assert!(matches!(
            Polygon::new(bow),
            Err(PolygonError::SelfIntersecting(..))
        ));
        assert_eq!(
            Polygon::new(vec![[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]),
            Err(PolygonError::TooFew)
        );
        assert_eq!(
            Polygon::new(vec![[0.0, 0.0], [91.0, 1.0], [1.0, 0.0], [0.0, 0.0]]),
            Err(PolygonError::BadVertex(1))
        );
        let line = vec![[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [0.0, 0.0]];
        assert!(Polygon::new(line).is_err());
    }

    #[test]
    fn a_ballistic_body_comes_down_where_the_formula_says() {
        let at = Geodetic {
            lat_deg: 34.9,
            lon_deg: -117.9,
            alt_m: 1000.0,
        };
        // Dropped from 1000 m at 100 m/s east: t = sqrt(2h/g) ≈ 14.28 s, 1428 m east.
        let p = impact_point(at, [100.0, 0.0, 0.0], 0.0).unwrap();
        let f = LocalFrame::new(34.9, -117.9, 1000.0).unwrap();
        let [e, n, _] = f.ecef_to_enu(tspi_core::geo::geodetic_to_ecef(
            p.lat_deg, p.lon_deg, p.alt_m,
        ));
        assert!((e - 100.0 * (2.0 * 1000.0 / G).sqrt()).abs() < 0.5, "{e}");
        assert!(n.abs() < 0.5, "{n}");
        // Climbing at 100 m/s from the ground: up and down in 2·100/g.
        let p = impact_point(Geodetic { alt_m: 0.0, ..at }, [0.0, 50.0, 100.0], 0.0).unwrap();
        let f = LocalFrame::new(34.9, -117.9, 0.0).unwrap();
        let [_, n, _] = f.ecef_to_enu(tspi_core::geo::geodetic_to_ecef(
            p.lat_deg, p.lon_deg, p.alt_m,
        ));
        assert!((n - 50.0 * 2.0 * 100.0 / G).abs() < 1.0, "{n}");
        assert!(impact_point(Geodetic { alt_m: 0.0, ..at }, [10.0, 0.0, -1.0], 0.0).is_none());
    }
}
