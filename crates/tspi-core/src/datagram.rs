//! The 37-byte BAPS TSPI v4 datagram (SPEC §2): check, then parse; and the inverse.
//!
//! Decoding keeps the raw integers so that `encode(decode(b)) == b` for every valid `b`;
//! scaled SI values are derived on demand. Every way a datagram can be wrong has its own
//! [`DatagramError`] variant so ingest can count invalid input by reason.

use std::fmt;

use thiserror::Error;

use crate::validity::StatusFlags;

/// Exact size of a TSPI v4 datagram on the wire.
pub const DATAGRAM_LEN: usize = 37;
/// The only supported protocol version.
pub const VERSION: u8 = 4;
/// `time_ticks` are 1e-4 s since midnight UTC.
pub const TICKS_PER_SECOND: u32 = 10_000;
/// Ticks in one day; valid ticks are strictly below this.
pub const TICKS_PER_DAY: u32 = 86_400 * TICKS_PER_SECOND;

const TYPE_GEOCENTRIC: u8 = 0xC1;
const TYPE_SPHERICAL: u8 = 0xC2;

/// Why a datagram was rejected. The `Display` text matches the reference vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DatagramError {
    #[error("TSPI datagram must be exactly 37 bytes; received {len}")]
    BadLength { len: usize },
    #[error("Unsupported message type byte: 0x{byte:02x}")]
    UnknownType { byte: u8 },
    #[error("Unsupported datagram version: {version}")]
    BadVersion { version: u8 },
    #[error("Day of year out of range (1..=366): {day}")]
    BadDay { day: u16 },
    #[error("Time ticks out of range (< 864000000): {ticks}")]
    BadTime { ticks: u32 },
}

impl DatagramError {
    /// Every reason label, in a fixed order, for pre-registering metrics.
    pub const REASONS: [&'static str; 5] = ["length", "type", "version", "day", "time"];

    /// A short, stable label for metrics (`invalid{reason="length"}`).
    pub fn reason(&self) -> &'static str {
        match self {
            DatagramError::BadLength { .. } => "length",
            DatagramError::UnknownType { .. } => "type",
            DatagramError::BadVersion { .. } => "version",
            DatagramError::BadDay { .. } => "day",
            DatagramError::BadTime { .. } => "time",
        }
    }

    /// Index of [`Self::reason`] in [`Self::REASONS`].
    pub fn reason_index(&self) -> usize {
        match self {
            DatagramError::BadLength { .. } => 0,
            DatagramError::UnknownType { .. } => 1,
            DatagramError::BadVersion { .. } => 2,
            DatagramError::BadDay { .. } => 3,
            DatagramError::BadTime { .. } => 4,
        }
    }
}

/// The two message types of TSPI v4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    Geocentric,
    Spherical,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Geocentric => "geocentric",
            MessageKind::Spherical => "spherical",
        }
    }

    fn type_byte(self) -> u8 {
        match self {
            MessageKind::Geocentric => TYPE_GEOCENTRIC,
            MessageKind::Spherical => TYPE_SPHERICAL,
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Geocentric (ECEF) payload as transmitted: centimetres, cm/s, cm/s².
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GeocentricRaw {
    pub x: i32,
    pub y: i32,
    pub z: i32,
    pub vx: i16,
    pub vy: i16,
    pub vz: i16,
    pub ax: i16,
    pub ay: i16,
    pub az: i16,
}

/// Spherical (sensor-relative) payload as transmitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SphericalRaw {
    /// centimetres
    pub range: i32,
    /// micro-degrees
    pub azimuth: u32,
    /// micro-degrees
    pub elevation: u32,
    /// all below: hundredths of the SI/degree unit
    pub azimuth_rate: i16,
    pub elevation_rate: i16,
    pub range_rate: i16,
    pub azimuth_accel: i16,
    pub elevation_accel: i16,
    pub range_accel: i16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    Geocentric(GeocentricRaw),
    Spherical(SphericalRaw),
}

/// A valid, decoded datagram with its raw wire values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    pub sensor_id: u16,
    /// Day of year, 1..=366.
    pub day: u16,
    /// 1e-4 s since midnight UTC, below [`TICKS_PER_DAY`].
    pub time_ticks: u32,
    pub status: u8,
    pub status_flags: u16,
    pub payload: Payload,
}

impl Datagram {
    pub fn kind(&self) -> MessageKind {
        match self.payload {
            Payload::Geocentric(_) => MessageKind::Geocentric,
            Payload::Spherical(_) => MessageKind::Spherical,
        }
    }

    /// Seconds since midnight UTC.
    pub fn time_s(&self) -> f64 {
        f64::from(self.time_ticks) / f64::from(TICKS_PER_SECOND)
    }

    /// The nine validity bits (SPEC §2).
    pub fn validity(&self) -> StatusFlags {
        StatusFlags::from_status(self.status, self.status_flags)
    }

    /// Encode back to the 37 wire bytes. Infallible: every field is in range by type,
    /// except day/ticks, which a caller building a datagram must keep valid (see
    /// [`Datagram::check`]).
    pub fn encode(&self) -> [u8; DATAGRAM_LEN] {
        let mut out = [0u8; DATAGRAM_LEN];
        out[0] = self.kind().type_byte();
        out[1] = VERSION;
        out[2..4].copy_from_slice(&self.sensor_id.to_be_bytes());
        out[4..6].copy_from_slice(&self.day.to_be_bytes());
        out[6..10].copy_from_slice(&self.time_ticks.to_be_bytes());
        out[10] = self.status;
        out[11..13].copy_from_slice(&self.status_flags.to_be_bytes());
        let mut w = Writer {
            buf: &mut out,
            pos: 13,
        };
        match self.payload {
            Payload::Geocentric(g) => {
                w.i32(g.x);
                w.i32(g.y);
                w.i32(g.z);
                for v in [g.vx, g.vy, g.vz, g.ax, g.ay, g.az] {
                    w.i16(v);
                }
            }
            Payload::Spherical(s) => {
                w.i32(s.range);
                w.u32(s.azimuth);
                w.u32(s.elevation);
                for v in [
                    s.azimuth_rate,
                    s.elevation_rate,
                    s.range_rate,
                    s.azimuth_accel,
                    s.elevation_accel,
                    s.range_accel,
                ] {
                    w.i16(v);
                }
            }
        }
        out
    }

    /// Whether the header fields a caller set by hand are within the protocol's ranges.
    pub fn check(&self) -> Result<(), DatagramError> {
        check_day_time(self.day, self.time_ticks)
    }
}

fn check_day_time(day: u16, ticks: u32) -> Result<(), DatagramError> {
    if !(1..=366).contains(&day) {
        return Err(DatagramError::BadDay { day });
    }
    if ticks >= TICKS_PER_DAY {
        return Err(DatagramError::BadTime { ticks });
    }
    Ok(())
}

/// Decode one datagram. Never panics, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Result<Datagram, DatagramError> {
    let b: &[u8; DATAGRAM_LEN] = bytes
        .try_into()
        .map_err(|_| DatagramError::BadLength { len: bytes.len() })?;
    let kind = match b[0] {
        TYPE_GEOCENTRIC => MessageKind::Geocentric,
        TYPE_SPHERICAL => MessageKind::Spherical,
        byte => return Err(DatagramError::UnknownType { byte }),
    };
    if b[1] != VERSION {
        return Err(DatagramError::BadVersion { version: b[1] });
    }
    let sensor_id = u16::from_be_bytes([b[2], b[3]]);
    let day = u16::from_be_bytes([b[4], b[5]]);
    let time_ticks = u32::from_be_bytes([b[6], b[7], b[8], b[9]]);
    check_day_time(day, time_ticks)?;
    let status = b[10];
    let status_flags = u16::from_be_bytes([b[11], b[12]]);
    let mut r = Reader { buf: b, pos: 13 };
    let payload = match kind {
        MessageKind::Geocentric => Payload::Geocentric(GeocentricRaw {
            x: r.i32(),
            y: r.i32(),
            z: r.i32(),
            vx: r.i16(),
            vy: r.i16(),
            vz: r.i16(),
            ax: r.i16(),
            ay: r.i16(),
            az: r.i16(),
        }),
        MessageKind::Spherical => Payload::Spherical(SphericalRaw {
            range: r.i32(),
            azimuth: r.u32(),
            elevation: r.u32(),
            azimuth_rate: r.i16(),
            elevation_rate: r.i16(),
            range_rate: r.i16(),
            azimuth_accel: r.i16(),
            elevation_accel: r.i16(),
            range_accel: r.i16(),
        }),
    };
    Ok(Datagram {
        sensor_id,
        day,
        time_ticks,
        status,
        status_flags,
        payload,
    })
}

/// Reads big-endian fields from a buffer whose length was already checked, so the
/// fixed offsets below can never go out of bounds.
struct Reader<'a> {
    buf: &'a [u8; DATAGRAM_LEN],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        out
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take())
    }
}

struct Writer<'a> {
    buf: &'a mut [u8; DATAGRAM_LEN],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }
    fn i32(&mut self, v: i32) {
        self.put(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }
    fn i16(&mut self, v: i16) {
        self.put(&v.to_be_bytes());
    }
}

/// Scale an SI value to a wire integer, saturating at the type's range so a simulated
/// value out of range is clamped rather than wrapped.
pub fn to_wire_i32(value: f64, scale: f64) -> i32 {
    let v = (value * scale).round();
    if v.is_nan() {
        0
    } else {
        v.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
    }
}

/// See [`to_wire_i32`].
pub fn to_wire_i16(value: f64, scale: f64) -> i16 {
    let v = (value * scale).round();
    if v.is_nan() {
        0
    } else {
        v.clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
    }
}

/// See [`to_wire_i32`]; angles are wrapped into `[0, 360)` degrees first.
pub fn to_wire_angle(deg: f64) -> u32 {
    let wrapped = deg.rem_euclid(360.0);
    let v = (wrapped * 1e6).round();
    if v.is_nan() {
        0
    } else {
        v.clamp(0.0, f64::from(u32::MAX)) as u32
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sample() -> Datagram {
        Datagram {
            sensor_id: 101,
            day: 200,
            time_ticks: 10_000,
            status: 0xFF,
            status_flags: 1,
            payload: Payload::Geocentric(GeocentricRaw {
                x: 123_456,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn every_error_has_a_distinct_reason() {
        let errors = [
            DatagramError::BadLength { len: 0 },
            DatagramError::UnknownType { byte: 0 },
            DatagramError::BadVersion { version: 0 },
            DatagramError::BadDay { day: 0 },
            DatagramError::BadTime { ticks: 0 },
        ];
        for e in errors {
            assert_eq!(DatagramError::REASONS[e.reason_index()], e.reason());
        }
    }

    #[test]
    fn day_and_time_bounds() {
        let mut b = sample().encode();
        b[4..6].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(decode(&b), Err(DatagramError::BadDay { day: 0 }));
        b[4..6].copy_from_slice(&367u16.to_be_bytes());
        assert_eq!(decode(&b), Err(DatagramError::BadDay { day: 367 }));
        b[4..6].copy_from_slice(&366u16.to_be_bytes());
        b[6..10].copy_from_slice(&TICKS_PER_DAY.to_be_bytes());
        assert_eq!(
            decode(&b),
            Err(DatagramError::BadTime {
                ticks: TICKS_PER_DAY
            })
        );
        b[6..10].copy_from_slice(&(TICKS_PER_DAY - 1).to_be_bytes());
        assert!(decode(&b).is_ok());
    }

    #[test]
    fn length_is_checked_before_anything_else() {
        assert_eq!(decode(&[0xC1]), Err(DatagramError::BadLength { len: 1 }));
        let mut long = sample().encode().to_vec();
        long.push(0);
        assert_eq!(decode(&long), Err(DatagramError::BadLength { len: 38 }));
    }

    #[test]
    fn wire_scaling_saturates_and_rounds() {
        assert_eq!(to_wire_i16(1e9, 100.0), i16::MAX);
        assert_eq!(to_wire_i16(-1e9, 100.0), i16::MIN);
        assert_eq!(to_wire_i16(f64::NAN, 100.0), 0);
        assert_eq!(to_wire_i32(0.015, 100.0), 2);
        assert_eq!(to_wire_angle(-90.0), 270_000_000);
        assert_eq!(to_wire_angle(360.0), 0);
    }
}
