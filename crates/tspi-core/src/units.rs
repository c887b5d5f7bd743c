//! Display-unit conversions (SPEC §5). Stored and published data stay SI; these exist
//! only for what a display shows after a `display.units` command.

use serde::{Deserialize, Serialize};

/// Exact by definition of the international foot (0.3048 m).
pub const METRES_PER_FOOT: f64 = 0.3048;
/// Exact by definition of the international nautical mile.
pub const METRES_PER_NAUTICAL_MILE: f64 = 1852.0;
/// One knot is one nautical mile per hour.
pub const MPS_PER_KNOT: f64 = METRES_PER_NAUTICAL_MILE / 3600.0;

/// The unit systems a display can be switched to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitSystem {
    #[default]
    Metric,
    Imperial,
}

impl UnitSystem {
    pub fn as_str(self) -> &'static str {
        match self {
            UnitSystem::Metric => "metric",
            UnitSystem::Imperial => "imperial",
        }
    }
}

impl std::str::FromStr for UnitSystem {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "metric" => Ok(UnitSystem::Metric),
            "imperial" => Ok(UnitSystem::Imperial),
            other => Err(format!(
                "unknown units {other:?}: expected \"metric\" or \"imperial\""
            )),
        }
    }
}

pub fn metres_to_feet(m: f64) -> f64 {
    m / METRES_PER_FOOT
}
pub fn feet_to_metres(ft: f64) -> f64 {
    ft * METRES_PER_FOOT
}
pub fn metres_to_nautical_miles(m: f64) -> f64 {
    m / METRES_PER_NAUTICAL_MILE
}
pub fn nautical_miles_to_metres(nm: f64) -> f64 {
    nm * METRES_PER_NAUTICAL_MILE
}
pub fn kilometres_to_nautical_miles(km: f64) -> f64 {
    km * 1000.0 / METRES_PER_NAUTICAL_MILE
}
pub fn nautical_miles_to_kilometres(nm: f64) -> f64 {
    nm * METRES_PER_NAUTICAL_MILE / 1000.0
}
pub fn mps_to_knots(v: f64) -> f64 {
    v / MPS_PER_KNOT
}
pub fn knots_to_mps(kn: f64) -> f64 {
    kn * MPS_PER_KNOT
}
pub fn mps_to_kmh(v: f64) -> f64 {
    v * 3.6
}
pub fn kmh_to_mps(kmh: f64) -> f64 {
    kmh / 3.6
}
pub fn knots_to_kmh(kn: f64) -> f64 {
    mps_to_kmh(knots_to_mps(kn))
}
pub fn mps2_to_fps2(a: f64) -> f64 {
    a / METRES_PER_FOOT
}
pub fn fps2_to_mps2(a: f64) -> f64 {
    a * METRES_PER_FOOT
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} vs {b}");
    }

    #[test]
    fn reference_values() {
        close(metres_to_feet(1.0), 3.280839895, 1e-9);
        close(knots_to_mps(1.0), 0.514444, 1e-6);
        close(nautical_miles_to_metres(1.0), 1852.0, 0.0);
        close(kilometres_to_nautical_miles(1.852), 1.0, 1e-12);
        close(knots_to_kmh(1.0), 1.852, 1e-12);
        close(mps2_to_fps2(9.80665), 32.174048556, 1e-9);
    }

    #[test]
    fn inverses() {
        for v in [-1e6, -3.5, 0.0, 1.0, 299.79, 4.2e7] {
            close(
                feet_to_metres(metres_to_feet(v)),
                v,
                1e-9 * v.abs().max(1.0),
            );
            close(knots_to_mps(mps_to_knots(v)), v, 1e-9 * v.abs().max(1.0));
            close(kmh_to_mps(mps_to_kmh(v)), v, 1e-9 * v.abs().max(1.0));
            close(fps2_to_mps2(mps2_to_fps2(v)), v, 1e-9 * v.abs().max(1.0));
            close(
                nautical_miles_to_kilometres(kilometres_to_nautical_miles(v)),
                v,
                1e-9 * v.abs().max(1.0),
            );
            close(
                nautical_miles_to_metres(metres_to_nautical_miles(v)),
                v,
                1e-9 * v.abs().max(1.0),
            );
        }
    }

    #[test]
    fn unit_system_parses_only_known_names() {
        assert_eq!("imperial".parse::<UnitSystem>(), Ok(UnitSystem::Imperial));
        assert!("furlongs".parse::<UnitSystem>().is_err());
    }
}
