//! What a display shows for a frame: the record converted to the operator's unit system,
//! plus geodetic position for geocentric tracks. Conversion is for display only — the
//! bus and the archive stay SI (SPEC §5).

use serde::Serialize;

use crate::geo::{ecef_to_geodetic, Geodetic};
use crate::record::{RecordPayload, TelemetryRecord};
use crate::units::{self, UnitSystem};

/// One value with its unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quantity {
    pub value: f64,
    pub unit: &'static str,
}

/// A frame as shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DisplayFrame {
    pub sensor_id: u16,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub day: u16,
    pub time_s: f64,
    pub recv_iso: String,
    pub units: &'static str,
    /// The nine payload fields, converted, in record order (a JSON object).
    #[serde(serialize_with = "as_map")]
    pub values: Vec<(&'static str, Quantity)>,
    /// Speed over ground (geocentric: |v|; spherical: |range rate|).
    pub speed: Quantity,
    /// WGS-84 position of a geocentric track (altitude in display units).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<DisplayPosition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DisplayPosition {
    pub lat_deg: f64,
    pub lon_deg: f64,
    pub alt: Quantity,
}

fn as_map<S: serde::Serializer>(v: &[(&'static str, Quantity)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(v.len()))?;
    for (k, q) in v {
        m.serialize_entry(k, q)?;
    }
    m.end()
}

fn length(m: f64, u: UnitSystem) -> Quantity {
    match u {
        UnitSystem::Metric => Quantity {
            value: m,
            unit: "m",
        },
        UnitSystem::Imperial => Quantity {
            value: units::metres_to_feet(m),
            unit: "ft",
        },
    }
}

fn range(m: f64, u: UnitSystem) -> Quantity {
    match u {
        UnitSystem::Metric => Quantity {
            value: m / 1000.0,
            unit: "km",
        },
        UnitSystem::Imperial => Quantity {
            value: units::metres_to_nautical_miles(m),
            unit: "NM",
        },
    }
}

fn speed(mps: f64, u: UnitSystem) -> Quantity {
    match u {
        UnitSystem::Metric => Quantity {
            value: mps,
            unit: "m/s",
        },
        UnitSystem::Imperial => Quantity {
            value: units::mps_to_knots(mps),
            unit: "kn",
        },
    }
}

fn accel(mps2: f64, u: UnitSystem) -> Quantity {
    match u {
        UnitSystem::Metric => Quantity {
            value: mps2,
            unit: "m/s²",
        },
        UnitSystem::Imperial => Quantity {
            value: units::mps2_to_fps2(mps2),
            unit: "ft/s²",
        },
    }
}

fn angle(v: f64, unit: &'static str) -> Quantity {
    Quantity { value: v, unit }
}

impl DisplayFrame {
    pub fn new(r: &TelemetryRecord, u: UnitSystem) -> Self {
        let (values, speed_q, position) = match r.payload {
            RecordPayload::Geocentric(g) => {
                let v = (g.vx_mps.powi(2) + g.vy_mps.powi(2) + g.vz_mps.powi(2)).sqrt();
                let pos = ecef_to_geodetic(g.x_m, g.y_m, g.z_m).map(
                    |Geodetic {
                         lat_deg,
                         lon_deg,
                         alt_m,
                     }| {
                        DisplayPosition {
                            lat_deg,
                            lon_deg,
                            alt: length(alt_m, u),
                        }
                    },
                );
                (
                    vec![
                        ("x", length(g.x_m, u)),
                        ("y", length(g.y_m, u)),
                        ("z", length(g.z_m, u)),
                        ("vx", speed(g.vx_mps, u)),
                        ("vy", speed(g.vy_mps, u)),
                        ("vz", speed(g.vz_mps, u)),
                        ("ax", accel(g.ax_mps2, u)),
                        ("ay", accel(g.ay_mps2, u)),
                        ("az", accel(g.az_mps2, u)),
                    ],
                    speed(v, u),
                    pos,
                )
            }
            RecordPayload::Spherical(s) => (
                vec![
                    ("range", range(s.range_m, u)),
                    ("azimuth", angle(s.azimuth_deg, "deg")),
                    ("elevation", angle(s.elevation_deg, "deg")),
                    ("azimuth_rate", angle(s.azimuth_rate_dps, "deg/s")),
                    ("elevation_rate", angle(s.elevation_rate_dps, "deg/s")),
                    ("range_rate", speed(s.range_rate_mps, u)),
                    ("azimuth_accel", angle(s.azimuth_accel_dps2, "deg/s²")),
                    ("elevation_accel", angle(s.elevation_accel_dps2, "deg/s²")),
                    ("range_accel", accel(s.range_accel_mps2, u)),
                ],
                speed(s.range_rate_mps.abs(), u),
                None,
            ),
        };
        DisplayFrame {
            sensor_id: r.sensor_id,
            kind: r.kind.as_str(),
            day: r.day,
            time_s: r.time_s,
            recv_iso: r.recv_iso.clone(),
            units: u.as_str(),
            values,
            speed: speed_q,
            position,
        }
    }

    pub fn value(&self, name: &str) -> Option<Quantity> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, q)| *q)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::datagram::{Datagram, GeocentricRaw, Payload, SphericalRaw};

    #[test]
    fn imperial_converts_and_metric_is_si() {
        let [x, y, z] = crate::geo::geodetic_to_ecef(34.9, -117.9, 3048.0);
        let d = Datagram {
            sensor_id: 7,
            day: 1,
            time_ticks: 0,
            status: 0,
            status_flags: 0,
            payload: Payload::Geocentric(GeocentricRaw {
                x: (x * 100.0) as i32,
                y: (y * 100.0) as i32,
                z: (z * 100.0) as i32,
                vx: 5144, // 51.44 m/s ≈ 100 kn
                ax: 981,
                ..Default::default()
            }),
        };
        let rec = TelemetryRecord::from_datagram(&d, 0);
        let m = DisplayFrame::new(&rec, UnitSystem::Metric);
        let i = DisplayFrame::new(&rec, UnitSystem::Imperial);
        assert_eq!(
            m.value("vx").unwrap(),
            Quantity {
                value: 51.44,
                unit: "m/s"
            }
        );
        assert!((i.value("vx").unwrap().value - 99.99).abs() < 0.01);
        assert_eq!(i.value("vx").unwrap().unit, "kn");
        assert!((i.value("ax").unwrap().value - 32.185).abs() < 0.001);
        let pos = i.position.unwrap();
        assert!((pos.lat_deg - 34.9).abs() < 1e-6 && (pos.lon_deg + 117.9).abs() < 1e-6);
        assert!(
            (pos.alt.value - 10_000.0).abs() < 0.1,
            "3048 m is 10,000 ft: {pos:?}"
        );
        assert_eq!(pos.alt.unit, "ft");
        assert!((m.position.unwrap().alt.value - 3048.0).abs() < 0.05);
    }

    #[test]
    fn spherical_range_in_km_or_nautical_miles() {
        let d = Datagram {
            sensor_id: 8,
            day: 1,
            time_ticks: 0,
            status: 0,
            status_flags: 0,
            payload: Payload::Spherical(SphericalRaw {
                range: 185_200,
                azimuth: 90_000_000,
                ..Default::default()
            }),
        };
        let rec = TelemetryRecord::from_datagram(&d, 0);
        let i = DisplayFrame::new(&rec, UnitSystem::Imperial);
        assert_eq!(
            i.value("range").unwrap(),
            Quantity {
                value: 1.0,
                unit: "NM"
            }
        );
        assert_eq!(
            i.value("azimuth").unwrap(),
            Quantity {
                value: 90.0,
                unit: "deg"
            }
        );
        let m = DisplayFrame::new(&rec, UnitSystem::Metric);
        assert_eq!(
            m.value("range").unwrap(),
            Quantity {
                value: 1.852,
                unit: "km"
            }
        );
        assert!(m.position.is_none());
        let json = serde_json::to_value(&i).unwrap();
        assert_eq!(json["values"]["range"]["unit"], "NM");
        assert_eq!(json["units"], "imperial");
    }
}
