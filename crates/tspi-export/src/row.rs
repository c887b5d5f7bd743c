//! One exported row: an archived telemetry record with what an analyst wants beside it —
//! its TSPI time as UTC, its WGS-84 position (the kit's own placement, the one every
//! display shows), east/north/up from the range origin, speed and heading.

use tspi_core::geo::{geodetic_to_ecef, Geodetic, LocalFrame};
use tspi_core::{MessageKind, RecordPayload, TelemetryRecord};
use tspi_display::placement::Placement;

/// A record as exported. Positions are `None` where the record cannot be placed (a
/// spherical sensor with no site).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRow {
    pub stream_seq: i64,
    pub sensor_id: u16,
    pub kind: MessageKind,
    pub day: u16,
    pub time_s: f64,
    /// The TSPI time as UTC (µs since the epoch), the year taken from the receive time.
    pub tspi_us: i64,
    /// When the producer received it (µs since the epoch; the record has ms).
    pub recv_us: i64,
    pub status: u8,
    /// The nine validity bits, SPEC §3 order (position x, y, z, velocity…, acceleration…).
    pub valid: [bool; 9],
    pub payload: RecordPayload,
    pub position: Option<Geodetic>,
    /// ECEF metres of the position (CZML, checks).
    pub ecef: Option<[f64; 3]>,
    /// East/north/up metres from the export's origin, when it has one.
    pub enu: Option<[f64; 3]>,
    /// Geocentric: |v|; spherical: |range rate| (as every display shows it).
    pub speed_mps: f64,
    /// Course over ground, degrees from true north (geocentric, when moving).
    pub heading_deg: Option<f64>,
}

impl ExportRow {
    /// The row's time on `clock`, µs since the epoch.
    pub fn time_us(&self, clock: Clock) -> i64 {
        match clock {
            Clock::Receive => self.recv_us,
            Clock::Tspi => self.tspi_us,
        }
    }
}

/// Which time selects and labels rows: the producer's receive time or the sensor's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    Receive,
    Tspi,
}

impl Clock {
    pub fn as_str(self) -> &'static str {
        match self {
            Clock::Receive => "receive",
            Clock::Tspi => "tspi",
        }
    }
}

/// Makes rows: placement of spherical records (their sensors' sites, else the origin) and
/// east/north/up from the origin.
#[derive(Debug, Clone, Default)]
pub struct RowBuilder {
    placement: Placement,
}

impl RowBuilder {
    pub fn new(placement: Placement) -> Self {
        RowBuilder { placement }
    }

    pub fn origin(&self) -> Option<&LocalFrame> {
        self.placement.origin()
    }

    pub fn build(&self, record: &TelemetryRecord, stream_seq: i64) -> ExportRow {
        let fix = self.placement.fix(record);
        let ecef = match (record.payload, fix.position) {
            (RecordPayload::Geocentric(g), _) => Some([g.x_m, g.y_m, g.z_m]),
            (RecordPayload::Spherical(_), Some(p)) => {
                Some(geodetic_to_ecef(p.lat_deg, p.lon_deg, p.alt_m))
            }
            (RecordPayload::Spherical(_), None) => None,
        };
        let enu = match (self.placement.origin(), ecef) {
            (Some(origin), Some(ecef)) => Some(origin.ecef_to_enu(ecef)),
            _ => None,
        };
        let bits = record.status_flags.bits();
        ExportRow {
            stream_seq,
            sensor_id: record.sensor_id,
            kind: record.kind,
            day: record.day,
            time_s: record.time_s,
            tspi_us: tspi_core::rfc3339::tspi_to_epoch_us(
                record.day,
                record.time_s,
                record.recv_epoch_ms,
            ),
            recv_us: record.recv_epoch_ms.saturating_mul(1000),
            status: record.status,
            valid: std::array::from_fn(|i| bits & (1 << i) != 0),
            payload: record.payload,
            position: fix.position,
            ecef,
            enu,
            speed_mps: fix.speed_mps,
            heading_deg: fix.heading_deg,
        }
    }
}

/// The nine validity bits' column names, in bit order.
pub const VALIDITY_COLUMNS: [&str; 9] = [
    "position_x_valid",
    "position_y_valid",
    "position_z_valid",
    "velocity_x_valid",
    "velocity_y_valid",
    "velocity_z_valid",
    "acceleration_x_valid",
    "acceleration_y_valid",
    "acceleration_z_valid",
];

/// The raw payload columns: geocentric first, then spherical; a row fills its own kind's.
pub const PAYLOAD_COLUMNS: [&str; 18] = [
    "x_m",
    "y_m",
    "z_m",
    "vx_mps",
    "vy_mps",
    "vz_mps",
    "ax_mps2",
    "ay_mps2",
    "az_mps2",
    "range_m",
    "azimuth_deg",
    "elevation_deg",
    "azimuth_rate_dps",
    "elevation_rate_dps",
    "range_rate_mps",
    "azimuth_accel_dps2",
    "elevation_accel_dps2",
    "range_accel_mps2",
];

/// The payload as the 18 columns of [`PAYLOAD_COLUMNS`] (the other kind's are `None`).
pub fn payload_columns(p: &RecordPayload) -> [Option<f64>; 18] {
    let mut out = [None; 18];
    match *p {
        RecordPayload::Geocentric(g) => {
            for (slot, v) in out.iter_mut().zip([
                g.x_m, g.y_m, g.z_m, g.vx_mps, g.vy_mps, g.vz_mps, g.ax_mps2, g.ay_mps2, g.az_mps2,
            ]) {
                *slot = Some(v);
            }
        }
        RecordPayload::Spherical(s) => {
            for (slot, v) in out[9..].iter_mut().zip([
                s.range_m,
                s.azimuth_deg,
                s.elevation_deg,
                s.azimuth_rate_dps,
                s.elevation_rate_dps,
                s.range_rate_mps,
                s.azimuth_accel_dps2,
                s.elevation_accel_dps2,
                s.range_accel_mps2,
            ]) {
                *slot = Some(v);
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tspi_core::geo::ecef_to_geodetic;
    use tspi_core::{Datagram, GeocentricRaw, Payload, SphericalRaw};

    fn record(payload: Payload, status: u8, flags: u16) -> TelemetryRecord {
        let d = Datagram {
            sensor_id: 7,
            day: 271,
            time_ticks: 396_001_234,
            status,
            status_flags: flags,
            payload,
        };
        TelemetryRecord::from_datagram(&d, 1_759_057_200_123)
    }

    #[test]
    fn a_geocentric_row_carries_its_own_position_and_the_origins_enu() {
        let [x, y, z] = geodetic_to_ecef(34.95, -117.85, 3000.0);
        let g = GeocentricRaw {
            x: (x * 100.0).round() as i32,
            y: (y * 100.0).round() as i32,
            z: (z * 100.0).round() as i32,
            ..Default::default()
        };
        let origin = LocalFrame::new(34.9, -117.9, 700.0).unwrap();
        let rows = RowBuilder::new(Placement::new(Some(origin), Default::default()));
        let row = rows.build(&record(Payload::Geocentric(g), 0b1010_0101, 1), 42);
        assert_eq!(row.stream_seq, 42);
        assert_eq!(row.tspi_us, 1_759_057_200_123_400);
        assert_eq!(row.recv_us, 1_759_057_200_123_000);
        assert_eq!(
            row.valid,
            [true, false, true, false, false, true, false, true, true]
        );
        let p = row.position.unwrap();
        assert!((p.lat_deg - 34.95).abs() < 1e-7 && (p.lon_deg + 117.85).abs() < 1e-7);
        assert!((p.alt_m - 3000.0).abs() < 0.01);
        let [e, n, u] = row.enu.unwrap();
        // 0.05° of longitude and latitude from the origin, 2.3 km up.
        assert!((e - 4_570.0).abs() < 20.0, "{e}");
        assert!((n - 5_547.0).abs() < 20.0, "{n}");
        assert!((u - 2_297.0).abs() < 5.0, "{u}");
        assert_eq!(
            row.ecef.unwrap(),
            [g.x as f64 / 100.0, g.y as f64 / 100.0, g.z as f64 / 100.0]
        );
        let cols = payload_columns(&row.payload);
        assert!(cols[..9].iter().all(Option::is_some) && cols[9..].iter().all(Option::is_none));
    }

    #[test]
    fn a_spherical_row_is_placed_from_its_site_or_not_at_all() {
        let s = SphericalRaw {
            range: 1_000_000,
            azimuth: 90_000_000,
            elevation: 0,
            range_rate: -1_500,
            ..Default::default()
        };
        let unplaced = RowBuilder::default().build(&record(Payload::Spherical(s), 0, 0), 1);
        assert_eq!(
            (unplaced.position, unplaced.ecef, unplaced.enu),
            (None, None, None)
        );
        assert_eq!(unplaced.speed_mps, 15.0);
        let origin = LocalFrame::new(34.9, -117.9, 700.0).unwrap();
        let placed = RowBuilder::new(Placement::new(Some(origin), Default::default()))
            .build(&record(Payload::Spherical(s), 0, 0), 1);
        let [e, n, u] = placed.enu.unwrap();
        // 10 km due east along the line of sight.
        assert!((e - 10_000.0).abs() < 1e-6 && n.abs() < 1e-6 && u.abs() < 1e-6);
        let [x, y, z] = placed.ecef.unwrap();
        let back = ecef_to_geodetic(x, y, z).unwrap();
        assert!((back.lat_deg - placed.position.unwrap().lat_deg).abs() < 1e-9);
        let cols = payload_columns(&placed.payload);
        assert_eq!(cols[9], Some(10_000.0));
        assert_eq!(cols[10], Some(90.0));
        assert!(cols[..9].iter().all(Option::is_none));
    }
}
