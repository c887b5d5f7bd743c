//! Rows for the writers' unit tests: two sensors near the range origin for 3 s at
//! 10 Hz — 10 geocentric, 11 spherical (placed from the origin).

use std::sync::{Arc, Mutex};

use tspi_core::geo::{geodetic_to_ecef, LocalFrame};
use tspi_core::{Datagram, GeocentricRaw, Payload, SphericalRaw, TelemetryRecord};
use tspi_display::Placement;

use crate::row::{Clock, ExportRow, RowBuilder};
use crate::ExportMeta;

/// 2025-09-28T11:00:00Z.
pub const T0_MS: i64 = 1_759_057_200_000;

pub fn origin() -> LocalFrame {
    LocalFrame::new(34.9, -117.9, 700.0).expect("a site")
}

pub fn meta() -> ExportMeta {
    ExportMeta {
        start_us: T0_MS * 1000,
        end_us: (T0_MS + 3_000) * 1000,
        clock: Clock::Receive,
        origin: Some(origin().origin),
        sensors: vec![10, 11],
        step_us: 1_000_000,
        udp_port: 30_000,
        stream: "TSPI".into(),
    }
}

pub fn records() -> Vec<TelemetryRecord> {
    let mut out = Vec::new();
    for k in 0..30i64 {
        let recv = T0_MS + 100 * k + 3;
        let ticks = (39_600 * 10_000 + 1_000 * (k + 1)) as u32;
        let [x, y, z] = geodetic_to_ecef(34.95, -117.85 + 0.001 * k as f64, 3_000.0);
        let geo = Datagram {
            sensor_id: 10,
            day: 271,
            time_ticks: ticks,
            status: 0xff,
            status_flags: 1,
            payload: Payload::Geocentric(GeocentricRaw {
                x: (x * 100.0).round() as i32,
                y: (y * 100.0).round() as i32,
                z: (z * 100.0).round() as i32,
                vx: 10_000,
                vy: -5_000,
                vz: 0,
                ..Default::default()
            }),
        };
        let sph = Datagram {
            sensor_id: 11,
            day: 271,
            time_ticks: ticks,
            status: 0x07,
            status_flags: 0,
            payload: Payload::Spherical(SphericalRaw {
                range: 2_000_000 + 1_000 * k as i32,
                azimuth: 45_000_000,
                elevation: 5_000_000,
                range_rate: 1_000,
                ..Default::default()
            }),
        };
        out.push(TelemetryRecord::from_datagram(&geo, recv));
        out.push(TelemetryRecord::from_datagram(&sph, recv + 1));
    }
    out
}

pub fn rows() -> Vec<ExportRow> {
    let builder = RowBuilder::new(Placement::new(Some(origin()), Default::default()));
    records()
        .iter()
        .enumerate()
        .map(|(i, r)| builder.build(r, i as i64 + 1))
        .collect()
}

/// A `Write` the test can read back after the writer has it.
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<Mutex<Vec<u8>>>);

impl Shared {
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().map(|b| b.clone()).unwrap_or_default()
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.bytes()).expect("UTF-8")
    }
}

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
