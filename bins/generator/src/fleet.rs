//! Synthetic aircraft: where each one is at a given time, as TSPI datagrams.
//!
//! Normal style flies level orbits; airshow style flies vertical loops (pulls capped at
//! 9 g); a script (`--script FILE`) flies each aircraft along straight legs, for
//! rehearsals whose every moment is known (a corridor crossed, a floor descended
//! through, two tracks closing). Kinematics are analytic (position, velocity and acceleration agree with each
//! other), computed in a local east-north-up frame around the range origin and rotated
//! into ECEF (WGS-84), or observed from a radar at the origin for spherical messages.

use rand::{Rng, SeedableRng};
use tspi_core::datagram::{to_wire_angle, to_wire_i16, to_wire_i32};
use tspi_core::{Datagram, GeocentricRaw, Payload, SphericalRaw};

pub use tspi_core::geo::geodetic_to_ecef;
#[cfg(test)]
use tspi_core::geo::{WGS84_A, WGS84_F};
const G: f64 = 9.806_65;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Style {
    Normal,
    Airshow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Geocentric,
    Spherical,
    /// Even aircraft geocentric, odd spherical.
    Mixed,
}

#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub count: u16,
    pub sensor_base: u16,
    pub style: Style,
    pub kind: Kind,
    pub min_speed_mps: f64,
    pub max_speed_mps: f64,
    /// Range origin (radar site for spherical messages).
    pub origin_lat_deg: f64,
    pub origin_lon_deg: f64,
    pub origin_alt_m: f64,
    pub seed: u64,
}

type Vec3 = [f64; 3];

fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
fn scale(a: Vec3, k: f64) -> Vec3 {
    [a[0] * k, a[1] * k, a[2] * k]
}

/// A scripted flight: from `start` (east, north, up metres in the origin's plane) at
/// `velocity`, changing velocity at each leg's time.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedAircraft {
    pub sensor: u16,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    pub start: Vec3,
    pub velocity: Vec3,
    #[serde(default)]
    pub legs: Vec<ScriptedLeg>,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedLeg {
    /// Seconds after the start.
    pub at: f64,
    pub velocity: Vec3,
}

/// A flight script (TOML): `[[aircraft]]` tables of [`ScriptedAircraft`].
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    pub aircraft: Vec<ScriptedAircraft>,
}

impl Script {
    /// Read and check a script: one line naming what is wrong.
    pub fn load(path: &std::path::Path) -> Result<Script, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let script: Script = toml::from_str(&text).map_err(|e| {
            let line = e.span().map_or(1, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            format!(
                "{}:{line}: {}",
                path.display(),
                e.message().trim().replace('\n', " ")
            )
        })?;
        if script.aircraft.is_empty() {
            return Err(format!("{}: no [[aircraft]]", path.display()));
        }
        for a in &script.aircraft {
            let finite = |v: &Vec3| v.iter().all(|x| x.is_finite());
            if !finite(&a.start)
                || !finite(&a.velocity)
                || a.legs
                    .iter()
                    .any(|l| !(finite(&l.velocity) && l.at.is_finite() && l.at >= 0.0))
            {
                return Err(format!(
                    "{}: aircraft {}: numbers must be finite, leg times 0 or more",
                    path.display(),
                    a.sensor
                ));
            }
            if !matches!(a.kind.as_deref(), None | Some("geocentric" | "spherical")) {
                return Err(format!(
                    "{}: aircraft {}: type is geocentric or spherical",
                    path.display(),
                    a.sensor
                ));
            }
            if a.legs.windows(2).any(|w| w[1].at < w[0].at) {
                return Err(format!(
                    "{}: aircraft {}: legs must be in time order",
                    path.display(),
                    a.sensor
                ));
            }
        }
        Ok(script)
    }
}

#[derive(Debug, Clone)]
struct Aircraft {
    sensor_id: u16,
    spherical: bool,
    /// Scripted straight legs: (from t, position then, velocity); empty for the styles.
    legs: Vec<(f64, Vec3, Vec3)>,
    center_enu: Vec3,
    radius_m: f64,
    speed_mps: f64,
    phase: f64,
    direction: f64,
    heading: f64,
}

/// State of one aircraft at one instant, local frame.
#[derive(Debug, Clone, Copy)]
struct Kinematics {
    pos: Vec3,
    vel: Vec3,
    acc: Vec3,
}

#[derive(Debug, Clone)]
pub struct Fleet {
    style: Style,
    aircraft: Vec<Aircraft>,
    origin_ecef: Vec3,
    /// Rows: east, north, up unit vectors in ECEF.
    enu_axes: [Vec3; 3],
}

impl Fleet {
    pub fn new(o: &FleetOptions) -> Fleet {
        let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed);
        let aircraft = (0..o.count)
            .map(|i| {
                let speed = if o.max_speed_mps > o.min_speed_mps {
                    rng.random_range(o.min_speed_mps..=o.max_speed_mps)
                } else {
                    o.min_speed_mps
                };
                let (radius, alt) = match o.style {
                    Style::Normal => (
                        rng.random_range(2_000.0..10_000.0),
                        rng.random_range(1_000.0..9_000.0),
                    ),
                    // Loops tight enough to be a show, never above 9 g.
                    Style::Airshow => {
                        let min_r = speed * speed / (9.0 * G);
                        (
                            rng.random_range(min_r.max(150.0)..min_r.max(150.0) * 2.0),
                            rng.random_range(300.0..1_500.0),
                        )
                    }
                };
                Aircraft {
                    legs: Vec::new(),
                    sensor_id: o.sensor_base.wrapping_add(i),
                    spherical: match o.kind {
                        Kind::Geocentric => false,
                        Kind::Spherical => true,
                        Kind::Mixed => i % 2 == 1,
                    },
                    center_enu: [
                        rng.random_range(-20_000.0..20_000.0),
                        rng.random_range(-20_000.0..20_000.0),
                        alt,
                    ],
                    radius_m: radius,
                    speed_mps: speed,
                    phase: rng.random_range(0.0..std::f64::consts::TAU),
                    direction: if rng.random_bool(0.5) { 1.0 } else { -1.0 },
                    heading: rng.random_range(0.0..std::f64::consts::TAU),
                }
            })
            .collect();
        let (lat, lon) = (o.origin_lat_deg.to_radians(), o.origin_lon_deg.to_radians());
        Fleet {
            style: o.style,
            aircraft,
            origin_ecef: geodetic_to_ecef(o.origin_lat_deg, o.origin_lon_deg, o.origin_alt_m),
            enu_axes: [
                [-lon.sin(), lon.cos(), 0.0],
                [-lat.sin() * lon.cos(), -lat.sin() * lon.sin(), lat.cos()],
                [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()],
            ],
        }
    }

    /// A scripted fleet around the options' origin (their count, style and speeds unused).
    pub fn scripted(o: &FleetOptions, script: &Script) -> Fleet {
        let mut fleet = Fleet::new(&FleetOptions {
            count: 0,
            ..o.clone()
        });
        fleet.aircraft = script
            .aircraft
            .iter()
            .map(|a| {
                let mut legs = vec![(0.0, a.start, a.velocity)];
                for leg in &a.legs {
                    let (t0, p0, v0) = legs[legs.len() - 1];
                    legs.push((leg.at, add(p0, scale(v0, leg.at - t0)), leg.velocity));
                }
                Aircraft {
                    sensor_id: a.sensor,
                    spherical: a.kind.as_deref() == Some("spherical"),
                    legs,
                    center_enu: [0.0; 3],
                    radius_m: 1.0,
                    speed_mps: 0.0,
                    phase: 0.0,
                    direction: 1.0,
                    heading: 0.0,
                }
            })
            .collect();
        fleet
    }

    pub fn len(&self) -> usize {
        self.aircraft.len()
    }

    pub fn is_empty(&self) -> bool {
        self.aircraft.is_empty()
    }

    fn kinematics(&self, a: &Aircraft, t: f64) -> Kinematics {
        if let Some(&(t0, p0, v)) = a.legs.iter().rev().find(|l| l.0 <= t).or(a.legs.first()) {
            return Kinematics {
                pos: add(p0, scale(v, t - t0)),
                vel: v,
                acc: [0.0; 3],
            };
        }
        let w = a.speed_mps / a.radius_m;
        let th = a.phase + a.direction * w * t;
        let (s, c) = th.sin_cos();
        let v = a.speed_mps;
        match self.style {
            Style::Normal => Kinematics {
                pos: add(a.center_enu, [a.radius_m * c, a.radius_m * s, 0.0]),
                vel: scale([-s, c, 0.0], a.direction * v),
                acc: scale([c, s, 0.0], -v * w),
            },
            Style::Airshow => {
                // Loop in the vertical plane along the heading; θ = 0 is the bottom.
                let th = a.phase + w * t;
                let (s, c) = th.sin_cos();
                let u = [a.heading.cos(), a.heading.sin(), 0.0];
                let along = |k: f64, up: f64| add(scale(u, k), [0.0, 0.0, up]);
                Kinematics {
                    pos: add(a.center_enu, along(a.radius_m * s, a.radius_m * (1.0 - c))),
                    vel: along(v * c, v * s),
                    acc: along(-v * w * s, v * w * c),
                }
            }
        }
    }

    fn enu_to_ecef(&self, v: Vec3) -> Vec3 {
        let [e, n, u] = self.enu_axes;
        add(add(scale(e, v[0]), scale(n, v[1])), scale(u, v[2]))
    }

    /// The datagram aircraft `index` sends at time `t` (seconds since the run started).
    pub fn datagram(&self, index: usize, t: f64, day: u16, time_ticks: u32) -> Option<Datagram> {
        let a = self.aircraft.get(index)?;
        let k = self.kinematics(a, t);
        let payload = if a.spherical {
            let look = |t: f64| {
                let p = self.kinematics(a, t).pos;
                let horiz = p[0].hypot(p[1]);
                [
                    p[0].hypot(p[1]).hypot(p[2]),
                    p[0].atan2(p[1]).to_degrees(),
                    p[2].atan2(horiz).to_degrees(),
                ]
            };
            // Rates by central differences; angles unwrapped across ±180°.
            let h = 1e-2;
            let (m, z, p) = (look(t - h), look(t), look(t + h));
            let unwrap = |d: f64| (d + 540.0).rem_euclid(360.0) - 180.0;
            let rate = |i: usize| {
                if i == 1 {
                    unwrap(p[1] - m[1]) / (2.0 * h)
                } else {
                    (p[i] - m[i]) / (2.0 * h)
                }
            };
            let accel = |i: usize| {
                if i == 1 {
                    (unwrap(p[1] - z[1]) - unwrap(z[1] - m[1])) / (h * h)
                } else {
                    (p[i] - 2.0 * z[i] + m[i]) / (h * h)
                }
            };
            Payload::Spherical(SphericalRaw {
                range: to_wire_i32(z[0], 100.0),
                azimuth: to_wire_angle(z[1]),
                elevation: to_wire_angle(z[2]),
                azimuth_rate: to_wire_i16(rate(1), 100.0),
                elevation_rate: to_wire_i16(rate(2), 100.0),
                range_rate: to_wire_i16(rate(0), 100.0),
                azimuth_accel: to_wire_i16(accel(1), 100.0),
                elevation_accel: to_wire_i16(accel(2), 100.0),
                range_accel: to_wire_i16(accel(0), 100.0),
            })
        } else {
            let pos = add(self.origin_ecef, self.enu_to_ecef(k.pos));
            let vel = self.enu_to_ecef(k.vel);
            let acc = self.enu_to_ecef(k.acc);
            Payload::Geocentric(GeocentricRaw {
                x: to_wire_i32(pos[0], 100.0),
                y: to_wire_i32(pos[1], 100.0),
                z: to_wire_i32(pos[2], 100.0),
                vx: to_wire_i16(vel[0], 100.0),
                vy: to_wire_i16(vel[1], 100.0),
                vz: to_wire_i16(vel[2], 100.0),
                ax: to_wire_i16(acc[0], 100.0),
                ay: to_wire_i16(acc[1], 100.0),
                az: to_wire_i16(acc[2], 100.0),
            })
        };
        Some(Datagram {
            sensor_id: a.sensor_id,
            day,
            time_ticks,
            status: 0xFF,
            status_flags: 0x0001,
            payload,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn options(style: Style, kind: Kind) -> FleetOptions {
        FleetOptions {
            count: 8,
            sensor_base: 10_000,
            style,
            kind,
            min_speed_mps: 100.0,
            max_speed_mps: 250.0,
            origin_lat_deg: 34.9,
            origin_lon_deg: -117.9,
            origin_alt_m: 700.0,
            seed: 7,
        }
    }

    #[test]
    fn a_script_flies_its_legs() {
        let dir = tempfile_dir();
        let path = dir.join("s.toml");
        std::fs::write(
            &path,
            "[[aircraft]]\nsensor = 7\nstart = [0.0, 0.0, 1000.0]\nvelocity = [100.0, 0.0, 0.0]\nlegs = [{ at = 10.0, velocity = [0.0, 0.0, -50.0] }]\n",
        )
        .unwrap();
        let script = Script::load(&path).unwrap();
        let fleet = Fleet::scripted(&options(Style::Normal, Kind::Geocentric), &script);
        let a = &fleet.aircraft[0];
        let k = fleet.kinematics(a, 15.0);
        assert_eq!(k.pos, [1000.0, 0.0, 750.0]);
        assert_eq!(k.vel, [0.0, 0.0, -50.0]);
        assert_eq!(fleet.kinematics(a, 5.0).pos, [500.0, 0.0, 1000.0]);
        std::fs::write(
            &path,
            "[[aircraft]]\nsensor = 7\nstart = [0.0, 0.0]\nvelocity = [1.0, 0.0, 0.0]\n",
        )
        .unwrap();
        assert!(Script::load(&path).unwrap_err().contains(":3:"), "the line");
        std::fs::write(&path, "[[aircraft]]\nsensor = 7\nstart = [0.0, 0.0, 0.0]\nvelocity = [1.0, 0.0, 0.0]\nspeed = 3\n").unwrap();
        assert!(Script::load(&path).unwrap_err().contains("speed"));
        std::fs::remove_dir_all(&dir).ok();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tspi-script-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn ecef_reference_point() {
        // Equator/prime meridian at sea level is (a, 0, 0); the pole is (0, 0, b).
        let p = geodetic_to_ecef(0.0, 0.0, 0.0);
        assert!((p[0] - WGS84_A).abs() < 1e-6 && p[1].abs() < 1e-6 && p[2].abs() < 1e-6);
        let b = WGS84_A * (1.0 - WGS84_F);
        assert!((geodetic_to_ecef(90.0, 0.0, 0.0)[2] - b).abs() < 1e-6);
    }

    #[test]
    fn velocity_matches_position_change() {
        for style in [Style::Normal, Style::Airshow] {
            let fleet = Fleet::new(&options(style, Kind::Geocentric));
            for a in &fleet.aircraft {
                let (k0, k1) = (fleet.kinematics(a, 10.0), fleet.kinematics(a, 10.001));
                for i in 0..3 {
                    let numeric = (k1.pos[i] - k0.pos[i]) / 0.001;
                    assert!((numeric - k0.vel[i]).abs() < 0.5, "{style:?} axis {i}");
                    let numeric_acc = (k1.vel[i] - k0.vel[i]) / 0.001;
                    assert!((numeric_acc - k0.acc[i]).abs() < 0.5, "{style:?} axis {i}");
                }
                let g = k0.acc.iter().map(|x| x * x).sum::<f64>().sqrt() / G;
                assert!(g <= 9.0 + 1e-6 || style == Style::Normal);
            }
        }
    }

    #[test]
    fn datagrams_are_valid_and_distinct_per_sensor() {
        let fleet = Fleet::new(&options(Style::Airshow, Kind::Mixed));
        let mut ids = std::collections::HashSet::new();
        for i in 0..fleet.len() {
            let d = fleet.datagram(i, 3.0, 200, 30_000).unwrap();
            let bytes = d.encode();
            assert_eq!(tspi_core::decode(&bytes).unwrap(), d);
            assert!(ids.insert(d.sensor_id));
            assert_eq!(matches!(d.payload, Payload::Spherical(_)), i % 2 == 1);
        }
    }
}
