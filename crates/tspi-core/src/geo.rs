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
}
