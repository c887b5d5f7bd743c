//! Where a track is: WGS-84 latitude, longitude and altitude for every record, with the
//! conversion in `tspi-core`. Geocentric records carry their own ECEF position; spherical
//! ones are placed from the site of the sensor that measured them (configured per sensor,
//! or the range origin).

use std::collections::HashMap;

use serde::Serialize;
use tspi_core::geo::{ecef_to_geodetic, Geodetic, LocalFrame};
use tspi_core::{RecordPayload, TelemetryRecord};

/// One track's position and motion at one record.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrackFix {
    pub sensor_id: u16,
    pub spherical: bool,
    pub day: u16,
    pub time_s: f64,
    /// When the producer received it (UTC ms): the display's time axis.
    pub recv_ms: i64,
    /// `None` when it cannot be placed (a spherical track without a site).
    pub position: Option<Geodetic>,
    /// Geocentric: |v|; spherical: |range rate| (what the headless player shows as speed).
    pub speed_mps: f64,
    /// Course over ground, degrees clockwise from true north (geocentric, when moving).
    pub heading_deg: Option<f64>,
    /// Where it would come down (vacuum impact point), for tracks an impact rule watches;
    /// filled by the caller that knows the rules.
    pub impact: Option<Geodetic>,
}

/// The sites tracks are placed from.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    origin: Option<LocalFrame>,
    sites: HashMap<u16, LocalFrame>,
}

impl Placement {
    /// `origin`: the range origin (also the site of any spherical sensor not in `sites`).
    pub fn new(origin: Option<LocalFrame>, sites: HashMap<u16, LocalFrame>) -> Self {
        Placement { origin, sites }
    }

    pub fn origin(&self) -> Option<&LocalFrame> {
        self.origin.as_ref()
    }

    pub fn sites(&self) -> &HashMap<u16, LocalFrame> {
        &self.sites
    }

    pub fn fix(&self, r: &TelemetryRecord) -> TrackFix {
        let (position, speed_mps, heading_deg, spherical) = match r.payload {
            RecordPayload::Geocentric(g) => {
                let position = ecef_to_geodetic(g.x_m, g.y_m, g.z_m);
                let speed = (g.vx_mps.powi(2) + g.vy_mps.powi(2) + g.vz_mps.powi(2)).sqrt();
                let heading = position.and_then(|p| {
                    let (lat, lon) = (p.lat_deg.to_radians(), p.lon_deg.to_radians());
                    let east = -lon.sin() * g.vx_mps + lon.cos() * g.vy_mps;
                    let north = -lat.sin() * lon.cos() * g.vx_mps
                        - lat.sin() * lon.sin() * g.vy_mps
                        + lat.cos() * g.vz_mps;
                    (east.hypot(north) >= 0.5)
                        .then(|| east.atan2(north).to_degrees().rem_euclid(360.0))
                });
                (position, speed, heading, false)
            }
            RecordPayload::Spherical(s) => {
                let site = self.sites.get(&r.sensor_id).or(self.origin.as_ref());
                let position = site.and_then(|site| {
                    site.aer_to_geodetic(s.azimuth_deg, s.elevation_deg, s.range_m)
                });
                (position, s.range_rate_mps.abs(), None, true)
            }
        };
        TrackFix {
            sensor_id: r.sensor_id,
            spherical,
            day: r.day,
            time_s: r.time_s,
            recv_ms: r.recv_epoch_ms,
            position,
            speed_mps,
            heading_deg,
            impact: None,
        }
    }
}

/// `LAT,LON[,ALT]` in degrees and metres (a flag's value: `--origin`).
pub fn parse_site(text: &str) -> Result<LocalFrame, String> {
    let parts: Vec<f64> = text
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{text:?} is not LAT,LON[,ALT] in degrees and metres"))?;
    let (lat, lon, alt) = match parts[..] {
        [lat, lon] => (lat, lon, 0.0),
        [lat, lon, alt] => (lat, lon, alt),
        _ => return Err(format!("{text:?} is not LAT,LON[,ALT]")),
    };
    if lat.abs() > 90.0 || lon.abs() > 180.0 {
        return Err(format!(
            "{text:?}: latitude within ±90, longitude within ±180"
        ));
    }
    LocalFrame::new(lat, lon, alt).ok_or_else(|| format!("{text:?} is not a position"))
}

/// `ID=LAT,LON[,ALT]`: a sensor's own site (a flag's value: `--sensor-site`).
pub fn parse_sensor_site(text: &str) -> Result<(u16, LocalFrame), String> {
    let (id, site) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not ID=LAT,LON[,ALT]"))?;
    let id = id
        .trim()
        .parse::<u16>()
        .map_err(|_| format!("{id:?} is not a sensor id (0-65535)"))?;
    Ok((id, parse_site(site)?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tspi_core::geo::geodetic_to_ecef;
    use tspi_core::{Datagram, GeocentricRaw, Payload, SphericalRaw};

    fn record(payload: Payload) -> TelemetryRecord {
        let d = Datagram {
            sensor_id: 9,
            day: 1,
            time_ticks: 0,
            status: 0,
            status_flags: 0,
            payload,
        };
        TelemetryRecord::from_datagram(&d, 1_000)
    }

    #[test]
    fn geocentric_tracks_place_themselves_and_head_where_they_fly() {
        let [x, y, z] = geodetic_to_ecef(34.9, -117.9, 3048.0);
        // 100 m/s due east at that point, in ECEF.
        let lon = (-117.9f64).to_radians();
        let r = record(Payload::Geocentric(GeocentricRaw {
            x: (x * 100.0) as i32,
            y: (y * 100.0) as i32,
            z: (z * 100.0) as i32,
            vx: (-lon.sin() * 10_000.0) as i16,
            vy: (lon.cos() * 10_000.0) as i16,
            ..Default::default()
        }));
        let f = Placement::default().fix(&r);
        let p = f.position.unwrap();
        let expected = ecef_to_geodetic(r_x(&r), r_y(&r), r_z(&r)).unwrap();
        assert_eq!(p, expected, "exactly tspi-core's conversion");
        assert!((p.lat_deg - 34.9).abs() < 1e-6);
        assert!((f.speed_mps - 100.0).abs() < 0.02);
        assert!((f.heading_deg.unwrap() - 90.0).abs() < 0.05, "{f:?}");
        assert!(!f.spherical);
        assert_eq!(f.recv_ms, 1_000);
    }

    fn r_x(r: &TelemetryRecord) -> f64 {
        match r.payload {
            RecordPayload::Geocentric(g) => g.x_m,
            _ => f64::NAN,
        }
    }
    fn r_y(r: &TelemetryRecord) -> f64 {
        match r.payload {
            RecordPayload::Geocentric(g) => g.y_m,
            _ => f64::NAN,
        }
    }
    fn r_z(r: &TelemetryRecord) -> f64 {
        match r.payload {
            RecordPayload::Geocentric(g) => g.z_m,
            _ => f64::NAN,
        }
    }

    #[test]
    fn spherical_tracks_need_a_site() {
        let r = record(Payload::Spherical(SphericalRaw {
            range: 1_000_000, // 10 km
            azimuth: 0,
            elevation: 0,
            range_rate: -5_000,
            ..Default::default()
        }));
        assert!(Placement::default().fix(&r).position.is_none());
        let origin = LocalFrame::new(34.9, -117.9, 700.0).unwrap();
        let placed = Placement::new(Some(origin), HashMap::new()).fix(&r);
        let p = placed.position.unwrap();
        assert_eq!(p, origin.aer_to_geodetic(0.0, 0.0, 10_000.0).unwrap());
        assert!(p.lat_deg > 34.9, "due north of the origin");
        assert_eq!(placed.speed_mps, 50.0);
        // A sensor with a site of its own is placed from there.
        let site = LocalFrame::new(35.5, -117.0, 0.0).unwrap();
        let sites = HashMap::from([(9u16, site)]);
        let p = Placement::new(Some(origin), sites)
            .fix(&r)
            .position
            .unwrap();
        assert!((p.lon_deg + 117.0).abs() < 1e-9 && p.lat_deg > 35.5);
    }
}
