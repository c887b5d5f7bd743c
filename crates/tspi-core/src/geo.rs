//! WGS-84 geodetic ↔ ECEF, so a display can show where a geocentric track is (SPEC §5).
//!
//! ECEF → geodetic uses Heikkinen's closed form (no iteration), which is exact to well
//! under a millimetre from the Earth's centre region out to geostationary altitude.

/// Semi-major axis, m.
pub const WGS84_A: f64 = 6_378_137.0;
/// Flattening.
pub const WGS84_F: f64 = 1.0 / 298.257_223_563;
const WGS84_B: f64 = WGS84_A * (1.0 - WGS84_F);
const E2: f64 = WGS84_F * (2.0 - WGS84_F);
const EP2: f64 = E2 / (1.0 - E2);

/// A position on the WGS-84 ellipsoid.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Geodetic {
    pub lat_deg: f64,
    pub lon_deg: f64,
    /// Height above the ellipsoid, m.
    pub alt_m: f64,
}

/// Geodetic → ECEF metres.
pub fn geodetic_to_ecef(lat_deg: f64, lon_deg: f64, alt_m: f64) -> [f64; 3] {
    let (lat, lon) = (lat_deg.to_radians(), lon_deg.to_radians());
    let n = WGS84_A / (1.0 - E2 * lat.sin().powi(2)).sqrt();
    [
        (n + alt_m) * lat.cos() * lon.cos(),
        (n + alt_m) * lat.cos() * lon.sin(),
        (n * (1.0 - E2) + alt_m) * lat.sin(),
    ]
}

/// ECEF metres → geodetic (Heikkinen 1982). `None` for non-finite input or the Earth's
/// centre, where latitude is undefined.
pub fn ecef_to_geodetic(x: f64, y: f64, z: f64) -> Option<Geodetic> {
    if !(x.is_finite() && y.is_finite() && z.is_finite()) {
        return None;
    }
    let p = x.hypot(y);
    if p < 1e-9 {
        // On the polar axis.
        if z.abs() < 1e-9 {
            return None;
        }
        let lat = if z > 0.0 { 90.0 } else { -90.0 };
        return Some(Geodetic {
            lat_deg: lat,
            lon_deg: 0.0,
            alt_m: z.abs() - WGS84_B,
        });
    }
    let (a, b) = (WGS84_A, WGS84_B);
    let f = 54.0 * b * b * z * z;
    let g = p * p + (1.0 - E2) * z * z - E2 * (a * a - b * b);
    let c = E2 * E2 * f * p * p / (g * g * g);
    let s = (1.0 + c + (c * c + 2.0 * c).sqrt()).cbrt();
    let k = s + 1.0 + 1.0 / s;
    let pp = f / (3.0 * k * k * g * g);
    let q = (1.0 + 2.0 * E2 * E2 * pp).sqrt();
    let r0 = -(pp * E2 * p) / (1.0 + q)
        + (0.5 * a * a * (1.0 + 1.0 / q)
            - pp * (1.0 - E2) * z * z / (q * (1.0 + q))
            - 0.5 * pp * p * p)
            .max(0.0)
            .sqrt();
    let u = ((p - E2 * r0).powi(2) + z * z).sqrt();
    let v = ((p - E2 * r0).powi(2) + (1.0 - E2) * z * z).sqrt();
    let z0 = b * b * z / (a * v);
    let alt = u * (1.0 - b * b / (a * v));
    let lat = (z + EP2 * z0).atan2(p);
    let lon = y.atan2(x);
    let out = Geodetic {
        lat_deg: lat.to_degrees(),
        lon_deg: lon.to_degrees(),
        alt_m: alt,
    };
    (out.lat_deg.is_finite() && out.alt_m.is_finite()).then_some(out)
}

/// A local east/north/up tangent plane at a site: where a radar reports spherical tracks
/// from, and what a range display draws around.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalFrame {
    pub origin: Geodetic,
    origin_ecef: [f64; 3],
    /// Rows: the east, north and up unit vectors in ECEF.
    axes: [[f64; 3]; 3],
}

impl LocalFrame {
    /// `None` when the site is not a position (latitude beyond ±90°, non-finite values).
    pub fn new(lat_deg: f64, lon_deg: f64, alt_m: f64) -> Option<LocalFrame> {
        if !(lat_deg.is_finite() && lon_deg.is_finite() && alt_m.is_finite())
            || lat_deg.abs() > 90.0
            || lon_deg.abs() > 360.0
        {
            return None;
        }
        let (lat, lon) = (lat_deg.to_radians(), lon_deg.to_radians());
        Some(LocalFrame {
            origin: Geodetic {
                lat_deg,
                lon_deg,
                alt_m,
            },
            origin_ecef: geodetic_to_ecef(lat_deg, lon_deg, alt_m),
            axes: [
                [-lon.sin(), lon.cos(), 0.0],
                [-lat.sin() * lon.cos(), -lat.sin() * lon.sin(), lat.cos()],
                [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()],
            ],
        })
    }

    /// East/north/up metres of an ECEF position relative to the site.
    pub fn ecef_to_enu(&self, ecef: [f64; 3]) -> [f64; 3] {
        let d = [
            ecef[0] - self.origin_ecef[0],
            ecef[1] - self.origin_ecef[1],
            ecef[2] - self.origin_ecef[2],
        ];
        self.axes
            .map(|axis| axis[0] * d[0] + axis[1] * d[1] + axis[2] * d[2])
    }

    /// The ECEF position at east/north/up metres from the site.
    pub fn enu_to_ecef(&self, enu: [f64; 3]) -> [f64; 3] {
        let [e, n, u] = self.axes;
        let mut out = self.origin_ecef;
        for (i, o) in out.iter_mut().enumerate() {
            *o += e[i] * enu[0] + n[i] * enu[1] + u[i] * enu[2];
        }
        out
    }

    /// Where a sensor at this site sees a target at slant `range_m`, `azimuth_deg`
    /// (clockwise from true north) and `elevation_deg` (above the local horizontal): the
    /// straight line of sight, without refraction. `None` for non-finite input.
    pub fn aer_to_geodetic(
        &self,
        azimuth_deg: f64,
        elevation_deg: f64,
        range_m: f64,
    ) -> Option<Geodetic> {
        let (az, el) = (azimuth_deg.to_radians(), elevation_deg.to_radians());
        let horizontal = range_m * el.cos();
        let enu = [
            horizontal * az.sin(),
            horizontal * az.cos(),
            range_m * el.sin(),
        ];
        let [x, y, z] = self.enu_to_ecef(enu);
        ecef_to_geodetic(x, y, z)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn within_mm(g: Geodetic, lat: f64, lon: f64, alt: f64) {
        // Compare as positions: 1 mm in ECEF.
        let a = geodetic_to_ecef(g.lat_deg, g.lon_deg, g.alt_m);
        let b = geodetic_to_ecef(lat, lon, alt);
        let d = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt();
        assert!(d < 1e-3, "{g:?} vs ({lat}, {lon}, {alt}): {d} m apart");
        assert!(
            (g.alt_m - alt).abs() < 1e-3,
            "altitude {} vs {alt}",
            g.alt_m
        );
    }

    #[test]
    fn reference_points() {
        // Exact by construction of the ellipsoid.
        within_mm(ecef_to_geodetic(WGS84_A, 0.0, 0.0).unwrap(), 0.0, 0.0, 0.0);
        within_mm(
            ecef_to_geodetic(0.0, WGS84_A + 1000.0, 0.0).unwrap(),
            0.0,
            90.0,
            1000.0,
        );
        within_mm(ecef_to_geodetic(0.0, 0.0, WGS84_B).unwrap(), 90.0, 0.0, 0.0);
        within_mm(
            ecef_to_geodetic(0.0, 0.0, -WGS84_B - 50.0).unwrap(),
            -90.0,
            0.0,
            50.0,
        );
        // The generator's default range origin, through the forward formula and back.
        let [x, y, z] = geodetic_to_ecef(34.905, -117.884, 700.0);
        within_mm(ecef_to_geodetic(x, y, z).unwrap(), 34.905, -117.884, 700.0);
    }

    #[test]
    fn round_trips_everywhere_within_a_millimetre() {
        for lat in (-89..=89).step_by(7) {
            for lon in (-180..=180).step_by(23) {
                for alt in [-400.0, 0.0, 700.0, 12_000.0, 400_000.0, 35_786_000.0] {
                    let (lat, lon) = (
                        f64::from(lat) + 0.123_456_789,
                        f64::from(lon) - 0.987_654_321,
                    );
                    let [x, y, z] = geodetic_to_ecef(lat, lon, alt);
                    within_mm(ecef_to_geodetic(x, y, z).unwrap(), lat, lon, alt);
                }
            }
        }
    }

    #[test]
    fn bad_input_is_none() {
        assert!(ecef_to_geodetic(f64::NAN, 0.0, 0.0).is_none());
        assert!(ecef_to_geodetic(0.0, 0.0, 0.0).is_none());
        assert!(ecef_to_geodetic(f64::INFINITY, 1.0, 1.0).is_none());
    }

    #[test]
    fn local_frame_round_trips_and_looks_the_right_way() {
        let site = LocalFrame::new(34.9, -117.9, 700.0).unwrap();
        // Straight up from the site.
        let up = site.aer_to_geodetic(0.0, 90.0, 1000.0).unwrap();
        assert!((up.lat_deg - 34.9).abs() < 1e-9 && (up.lon_deg + 117.9).abs() < 1e-9);
        assert!((up.alt_m - 1700.0).abs() < 1e-6, "{up:?}");
        // 10 km due north on the horizon: further north, same longitude, and higher than
        // the site above the ellipsoid (the Earth curves away below the line of sight).
        let north = site.aer_to_geodetic(0.0, 0.0, 10_000.0).unwrap();
        assert!(north.lat_deg > 34.98 && north.lat_deg < 35.0, "{north:?}");
        assert!((north.lon_deg + 117.9).abs() < 1e-9);
        assert!(north.alt_m > 700.0 && north.alt_m < 710.0, "{north:?}");
        // Due east: same latitude within the curvature, greater longitude.
        let east = site.aer_to_geodetic(90.0, 0.0, 10_000.0).unwrap();
        assert!(
            east.lon_deg > -117.9 && (east.lat_deg - 34.9).abs() < 1e-3,
            "{east:?}"
        );
        // ENU and back through ECEF, to the micrometre, on a grid of directions.
        for az in (0..360).step_by(15) {
            for el in [-5.0, 0.0, 10.0, 45.0, 89.0] {
                let p = site.aer_to_geodetic(f64::from(az), el, 42_000.0).unwrap();
                let enu = site.ecef_to_enu(geodetic_to_ecef(p.lat_deg, p.lon_deg, p.alt_m));
                let (e, n, u) = (enu[0], enu[1], enu[2]);
                let range = (e * e + n * n + u * u).sqrt();
                assert!((range - 42_000.0).abs() < 1e-6, "range {range}");
                let az_back = e.atan2(n).to_degrees();
                let off = (az_back - f64::from(az) + 540.0).rem_euclid(360.0) - 180.0;
                assert!(off.abs() < 1e-9, "{az} -> {az_back}");
                let el_back = u.atan2(e.hypot(n)).to_degrees();
                assert!((el_back - el).abs() < 1e-9, "{el} -> {el_back}");
            }
        }
        assert!(LocalFrame::new(91.0, 0.0, 0.0).is_none());
        assert!(LocalFrame::new(f64::NAN, 0.0, 0.0).is_none());
        assert!(site.aer_to_geodetic(f64::NAN, 0.0, 1.0).is_none());
    }
}
