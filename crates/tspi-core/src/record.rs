//! The telemetry record carried on the bus (SPEC §3), its CBOR wire form and its JSON form.
//!
//! Field names and nesting are the contract with every other client, so they are spelled
//! out here once. Decoding is lenient where CBOR encoders legitimately differ (an integer
//! where a float is expected, half-precision floats) and strict where it matters (unknown
//! fields, a payload that does not match `type`, non-finite numbers).

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use crate::datagram::{Datagram, MessageKind, Payload};
use crate::rfc3339;
use crate::validity::StatusFlags;

/// Why bytes from the bus are not a telemetry record.
#[derive(Debug, Error)]
pub enum RecordError {
    #[error("not a CBOR telemetry map: {0}")]
    Cbor(String),
    #[error("payload fields do not match type {kind}")]
    PayloadMismatch { kind: MessageKind },
    #[error("field {field} is not a finite number")]
    NotFinite { field: &'static str },
    /// Outside what a valid datagram can carry (SPEC §2) or a receive time no clock
    /// gives (before 1970 or after 9999).
    #[error("field {field} is out of range: {value}")]
    OutOfRange { field: &'static str, value: String },
}

/// 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write.
pub const MAX_EPOCH_MS: i64 = 253_402_300_799_999;

/// Geocentric (ECEF) payload in SI units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeocentricPayload {
    #[serde(deserialize_with = "number")]
    pub x_m: f64,
    #[serde(deserialize_with = "number")]
    pub y_m: f64,
    #[serde(deserialize_with = "number")]
    pub z_m: f64,
    #[serde(deserialize_with = "number")]
    pub vx_mps: f64,
    #[serde(deserialize_with = "number")]
    pub vy_mps: f64,
    #[serde(deserialize_with = "number")]
    pub vz_mps: f64,
    #[serde(deserialize_with = "number")]
    pub ax_mps2: f64,
    #[serde(deserialize_with = "number")]
    pub ay_mps2: f64,
    #[serde(deserialize_with = "number")]
    pub az_mps2: f64,
}

/// Spherical (sensor-relative) payload in SI units and degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SphericalPayload {
    #[serde(deserialize_with = "number")]
    pub range_m: f64,
    #[serde(deserialize_with = "number")]
    pub azimuth_deg: f64,
    #[serde(deserialize_with = "number")]
    pub elevation_deg: f64,
    #[serde(deserialize_with = "number")]
    pub azimuth_rate_dps: f64,
    #[serde(deserialize_with = "number")]
    pub elevation_rate_dps: f64,
    #[serde(deserialize_with = "number")]
    pub range_rate_mps: f64,
    #[serde(deserialize_with = "number")]
    pub azimuth_accel_dps2: f64,
    #[serde(deserialize_with = "number")]
    pub elevation_accel_dps2: f64,
    #[serde(deserialize_with = "number")]
    pub range_accel_mps2: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecordPayload {
    Geocentric(GeocentricPayload),
    Spherical(SphericalPayload),
}

impl RecordPayload {
    fn kind(&self) -> MessageKind {
        match self {
            RecordPayload::Geocentric(_) => MessageKind::Geocentric,
            RecordPayload::Spherical(_) => MessageKind::Spherical,
        }
    }

    fn values(&self) -> [(&'static str, f64); 9] {
        match *self {
            RecordPayload::Geocentric(g) => [
                ("x_m", g.x_m),
                ("y_m", g.y_m),
                ("z_m", g.z_m),
                ("vx_mps", g.vx_mps),
                ("vy_mps", g.vy_mps),
                ("vz_mps", g.vz_mps),
                ("ax_mps2", g.ax_mps2),
                ("ay_mps2", g.ay_mps2),
                ("az_mps2", g.az_mps2),
            ],
            RecordPayload::Spherical(s) => [
                ("range_m", s.range_m),
                ("azimuth_deg", s.azimuth_deg),
                ("elevation_deg", s.elevation_deg),
                ("azimuth_rate_dps", s.azimuth_rate_dps),
                ("elevation_rate_dps", s.elevation_rate_dps),
                ("range_rate_mps", s.range_rate_mps),
                ("azimuth_accel_dps2", s.azimuth_accel_dps2),
                ("elevation_accel_dps2", s.elevation_accel_dps2),
                ("range_accel_mps2", s.range_accel_mps2),
            ],
        }
    }
}

impl From<&Payload> for RecordPayload {
    fn from(p: &Payload) -> Self {
        let c = |v: i32| f64::from(v) / 100.0;
        let h = |v: i16| f64::from(v) / 100.0;
        match *p {
            Payload::Geocentric(g) => RecordPayload::Geocentric(GeocentricPayload {
                x_m: c(g.x),
                y_m: c(g.y),
                z_m: c(g.z),
                vx_mps: h(g.vx),
                vy_mps: h(g.vy),
                vz_mps: h(g.vz),
                ax_mps2: h(g.ax),
                ay_mps2: h(g.ay),
                az_mps2: h(g.az),
            }),
            Payload::Spherical(s) => RecordPayload::Spherical(SphericalPayload {
                range_m: c(s.range),
                azimuth_deg: f64::from(s.azimuth) / 1e6,
                elevation_deg: f64::from(s.elevation) / 1e6,
                azimuth_rate_dps: h(s.azimuth_rate),
                elevation_rate_dps: h(s.elevation_rate),
                range_rate_mps: h(s.range_rate),
                azimuth_accel_dps2: h(s.azimuth_accel),
                elevation_accel_dps2: h(s.elevation_accel),
                range_accel_mps2: h(s.range_accel),
            }),
        }
    }
}

/// One telemetry message as published on `<prefix>.<type>.<sensor_id>`.
/// Exactly these top-level fields, in this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryRecord {
    #[serde(rename = "type")]
    pub kind: MessageKind,
    #[serde(deserialize_with = "integral")]
    pub sensor_id: u16,
    #[serde(deserialize_with = "integral")]
    pub day: u16,
    #[serde(deserialize_with = "number")]
    pub time_s: f64,
    #[serde(deserialize_with = "integral")]
    pub status: u8,
    pub status_flags: StatusFlags,
    /// UTC milliseconds when the producer received the datagram.
    #[serde(deserialize_with = "integral")]
    pub recv_epoch_ms: i64,
    /// The same moment as RFC 3339 UTC.
    pub recv_iso: String,
    pub payload: RecordPayload,
}

impl TelemetryRecord {
    /// Build the bus record for a datagram received at `recv_epoch_ms`.
    pub fn from_datagram(d: &Datagram, recv_epoch_ms: i64) -> Self {
        TelemetryRecord {
            recv_iso: rfc3339::format_utc_millis(recv_epoch_ms),
            ..Self::without_iso(d, recv_epoch_ms)
        }
    }

    /// The record with an empty `recv_iso` (no allocation).
    fn without_iso(d: &Datagram, recv_epoch_ms: i64) -> Self {
        TelemetryRecord {
            kind: d.kind(),
            sensor_id: d.sensor_id,
            day: d.day,
            time_s: d.time_s(),
            status: d.status,
            status_flags: d.validity(),
            recv_epoch_ms,
            recv_iso: String::new(),
            payload: RecordPayload::from(&d.payload),
        }
    }

    /// Append the CBOR map to `out`: the same map serde would write, by hand, because
    /// this runs once per datagram.
    pub fn write_cbor(&self, out: &mut Vec<u8>) {
        self.write_cbor_with_iso(&self.recv_iso, out);
    }

    /// `TelemetryRecord::from_datagram(d, recv_epoch_ms).write_cbor(out)` without building
    /// the record's strings: the producer's per-datagram encoding.
    pub fn write_datagram_cbor(d: &Datagram, recv_epoch_ms: i64, out: &mut Vec<u8>) {
        let record = Self::without_iso(d, recv_epoch_ms);
        match rfc3339::utc_millis_fixed(recv_epoch_ms) {
            // ASCII only.
            Some(iso) => {
                record.write_cbor_with_iso(std::str::from_utf8(&iso).unwrap_or_default(), out)
            }
            None => record.write_cbor_with_iso(&rfc3339::format_utc_millis(recv_epoch_ms), out),
        }
    }

    fn write_cbor_with_iso(&self, recv_iso: &str, out: &mut Vec<u8>) {
        use crate::cbor;
        cbor::map(out, 9);
        cbor::text(out, "type");
        cbor::text(out, self.kind.as_str());
        cbor::text(out, "sensor_id");
        cbor::uint(out, u64::from(self.sensor_id));
        cbor::text(out, "day");
        cbor::uint(out, u64::from(self.day));
        cbor::text(out, "time_s");
        cbor::float(out, self.time_s);
        cbor::text(out, "status");
        cbor::uint(out, u64::from(self.status));
        cbor::text(out, "status_flags");
        let f = &self.status_flags;
        cbor::map(out, 9);
        for (name, v) in [
            ("position_x_valid", f.position_x_valid),
            ("position_y_valid", f.position_y_valid),
            ("position_z_valid", f.position_z_valid),
            ("velocity_x_valid", f.velocity_x_valid),
            ("velocity_y_valid", f.velocity_y_valid),
            ("velocity_z_valid", f.velocity_z_valid),
            ("acceleration_x_valid", f.acceleration_x_valid),
            ("acceleration_y_valid", f.acceleration_y_valid),
            ("acceleration_z_valid", f.acceleration_z_valid),
        ] {
            cbor::text(out, name);
            cbor::boolean(out, v);
        }
        cbor::text(out, "recv_epoch_ms");
        cbor::int(out, self.recv_epoch_ms);
        cbor::text(out, "recv_iso");
        cbor::text(out, recv_iso);
        cbor::text(out, "payload");
        cbor::map(out, 9);
        for (name, v) in self.payload.values() {
            cbor::text(out, name);
            cbor::float(out, v);
        }
    }

    /// The CBOR map as a fresh buffer.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.write_cbor(&mut out);
        out
    }

    /// Parse and check a record from untrusted bytes.
    ///
    /// A strict hand-written reader handles the usual encodings (≈ 10× faster than the
    /// general decoder; receivers and the archiver run this per message). Whatever it does
    /// not recognise goes to the general decoder, so results never depend on which path
    /// ran (property-tested).
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, RecordError> {
        match Self::from_cbor_fast(bytes) {
            Some(record) => {
                record.check()?;
                Ok(record)
            }
            None => Self::from_cbor_general(bytes),
        }
    }

    /// The general (serde/ciborium) decoder alone; `from_cbor` is the one to use.
    #[doc(hidden)]
    pub fn from_cbor_general(bytes: &[u8]) -> Result<Self, RecordError> {
        let record: TelemetryRecord =
            ciborium::from_reader(bytes).map_err(|e| RecordError::Cbor(e.to_string()))?;
        record.check()?;
        Ok(record)
    }

    /// The fast path: every field exactly once, nothing else, no trailing bytes.
    fn from_cbor_fast(bytes: &[u8]) -> Option<Self> {
        const GEO: [&str; 9] = [
            "x_m", "y_m", "z_m", "vx_mps", "vy_mps", "vz_mps", "ax_mps2", "ay_mps2", "az_mps2",
        ];
        const SPH: [&str; 9] = [
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
        const FLAGS: [&str; 9] = [
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
        let mut r = crate::cbor::Reader::new(bytes);
        if r.map_len()? != 9 {
            return None;
        }
        let (mut kind, mut sensor_id, mut day, mut time_s, mut status) =
            (None, None, None, None, None);
        let (mut flags, mut recv_ms, mut recv_iso, mut payload) = (None, None, None, None);
        fn once<T>(slot: &mut Option<T>, v: T) -> Option<()> {
            if slot.is_some() {
                return None;
            }
            *slot = Some(v);
            Some(())
        }
        for _ in 0..9 {
            match r.text()? {
                "type" => once(
                    &mut kind,
                    match r.text()? {
                        "geocentric" => MessageKind::Geocentric,
                        "spherical" => MessageKind::Spherical,
                        _ => return None,
                    },
                )?,
                "sensor_id" => once(&mut sensor_id, u16::try_from(r.uint()?).ok()?)?,
                "day" => once(&mut day, u16::try_from(r.uint()?).ok()?)?,
                "time_s" => once(&mut time_s, r.number()?)?,
                "status" => once(&mut status, u8::try_from(r.uint()?).ok()?)?,
                "status_flags" => {
                    if r.map_len()? != 9 {
                        return None;
                    }
                    let mut bits = [None; 9];
                    for _ in 0..9 {
                        let key = r.text()?;
                        let i = FLAGS.iter().position(|f| *f == key)?;
                        once(&mut bits[i], r.boolean()?)?;
                    }
                    let b = |i: usize| bits[i];
                    once(
                        &mut flags,
                        StatusFlags {
                            position_x_valid: b(0)?,
                            position_y_valid: b(1)?,
                            position_z_valid: b(2)?,
                            velocity_x_valid: b(3)?,
                            velocity_y_valid: b(4)?,
                            velocity_z_valid: b(5)?,
                            acceleration_x_valid: b(6)?,
                            acceleration_y_valid: b(7)?,
                            acceleration_z_valid: b(8)?,
                        },
                    )?
                }
                "recv_epoch_ms" => once(&mut recv_ms, r.int()?)?,
                "recv_iso" => once(&mut recv_iso, r.text()?.to_owned())?,
                "payload" => {
                    if r.map_len()? != 9 {
                        return None;
                    }
                    let mut values = [None; 9];
                    let mut names: Option<&[&str; 9]> = None;
                    for _ in 0..9 {
                        let key = r.text()?;
                        let set = match names {
                            Some(n) => n,
                            None if GEO.contains(&key) => &GEO,
                            None => &SPH,
                        };
                        names = Some(set);
                        let i = set.iter().position(|f| *f == key)?;
                        once(&mut values[i], r.number()?)?;
                    }
                    let v = |i: usize| values[i];
                    let p = if names? == &GEO {
                        RecordPayload::Geocentric(GeocentricPayload {
                            x_m: v(0)?,
                            y_m: v(1)?,
                            z_m: v(2)?,
                            vx_mps: v(3)?,
                            vy_mps: v(4)?,
                            vz_mps: v(5)?,
                            ax_mps2: v(6)?,
                            ay_mps2: v(7)?,
                            az_mps2: v(8)?,
                        })
                    } else {
                        RecordPayload::Spherical(SphericalPayload {
                            range_m: v(0)?,
                            azimuth_deg: v(1)?,
                            elevation_deg: v(2)?,
                            azimuth_rate_dps: v(3)?,
                            elevation_rate_dps: v(4)?,
                            range_rate_mps: v(5)?,
                            azimuth_accel_dps2: v(6)?,
                            elevation_accel_dps2: v(7)?,
                            range_accel_mps2: v(8)?,
                        })
                    };
                    once(&mut payload, p)?
                }
                _ => return None,
            }
        }
        if !r.at_end() {
            return None;
        }
        Some(TelemetryRecord {
            kind: kind?,
            sensor_id: sensor_id?,
            day: day?,
            time_s: time_s?,
            status: status?,
            status_flags: flags?,
            recv_epoch_ms: recv_ms?,
            recv_iso: recv_iso?,
            payload: payload?,
        })
    }

    /// Append the JSON form (one line, no newline) to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Every float was checked finite and every key is a string, so this cannot fail.
        let _ = serde_json::to_writer(out, self);
    }

    /// Consistency rules serde cannot express.
    pub fn check(&self) -> Result<(), RecordError> {
        if self.payload.kind() != self.kind {
            return Err(RecordError::PayloadMismatch { kind: self.kind });
        }
        if !self.time_s.is_finite() {
            return Err(RecordError::NotFinite { field: "time_s" });
        }
        let out_of_range = |field, value: String| Err(RecordError::OutOfRange { field, value });
        if !(1..=366).contains(&self.day) {
            return out_of_range("day", self.day.to_string());
        }
        if !(0.0..86_400.0).contains(&self.time_s) {
            return out_of_range("time_s", self.time_s.to_string());
        }
        if !(0..=MAX_EPOCH_MS).contains(&self.recv_epoch_ms) {
            return out_of_range("recv_epoch_ms", self.recv_epoch_ms.to_string());
        }
        for (field, v) in self.payload.values() {
            if !v.is_finite() {
                return Err(RecordError::NotFinite { field });
            }
        }
        Ok(())
    }
}

/// Accept any CBOR/JSON number for an `f64` field: other encoders write integral values
/// as integers (a JavaScript encoder always does: 12.0 is 12 there) and small ones as
/// half floats. ciborium alone refuses an integer where it expects a float.
fn number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    struct Num;
    impl serde::de::Visitor<'_> for Num {
        type Value = f64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a number")
        }
        fn visit_f64<E>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_i64<E>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_i128<E>(self, v: i128) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u128<E>(self, v: u128) -> Result<f64, E> {
            Ok(v as f64)
        }
    }
    d.deserialize_any(Num)
}

/// Accept an integer, or a float with an integral value, for an integer field: a
/// JavaScript encoder writes any number beyond 32 bits (`Date.now()`) as a double.
fn integral<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    use serde::de::{Error, Unexpected};
    struct Int<T>(std::marker::PhantomData<T>);
    impl<T: TryFrom<i64> + TryFrom<u64>> serde::de::Visitor<'_> for Int<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer in range")
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<T, E> {
            // Exactly integral and inside i64 (2^63 itself is not): converts without loss.
            if v.fract() == 0.0
                && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&v)
            {
                self.visit_i64(v as i64)
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &self))
            }
        }
    }
    d.deserialize_any(Int(std::marker::PhantomData))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::datagram::{decode, GeocentricRaw};

    fn record() -> TelemetryRecord {
        let d = Datagram {
            sensor_id: 101,
            day: 200,
            time_ticks: 10_000,
            status: 0xFF,
            status_flags: 1,
            payload: Payload::Geocentric(GeocentricRaw {
                x: 123_456,
                vz: -5,
                ..Default::default()
            }),
        };
        TelemetryRecord::from_datagram(&d, 1_759_057_200_123)
    }

    #[test]
    fn fast_path_reads_our_encoding_and_serdes() {
        let rec = record();
        assert_eq!(
            TelemetryRecord::from_cbor_fast(&rec.to_cbor()),
            Some(rec.clone())
        );
        let mut serde_form = Vec::new();
        ciborium::into_writer(&rec, &mut serde_form).unwrap();
        assert_eq!(
            TelemetryRecord::from_cbor_fast(&serde_form),
            Some(rec.clone())
        );
        // Half floats and integers where floats are expected, keys in another order.
        let mut v: ciborium::Value = ciborium::from_reader(&serde_form[..]).unwrap();
        if let ciborium::Value::Map(m) = &mut v {
            m.reverse();
        }
        let mut reordered = Vec::new();
        ciborium::into_writer(&v, &mut reordered).unwrap();
        assert_eq!(
            TelemetryRecord::from_cbor_fast(&reordered),
            Some(rec.clone())
        );
        let mut half = rec.to_cbor();
        // time_s = 1.0 as f32 (0xfa 3f800000) → as f16 (0xf9 3c00) keeps the value.
        if let Some(at) = half
            .windows(5)
            .position(|w| w == [0xfa, 0x3f, 0x80, 0x00, 0x00])
        {
            half.splice(at..at + 5, [0xf9, 0x3c, 0x00]);
            assert_eq!(
                TelemetryRecord::from_cbor_fast(&half).map(|r| r.time_s),
                Some(1.0)
            );
        } else {
            panic!("time_s 1.0 not written as f32");
        }
    }

    #[test]
    fn cbor_round_trip() {
        let r = record();
        let back = TelemetryRecord::from_cbor(&r.to_cbor()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn json_has_exactly_the_spec_fields() {
        let mut out = Vec::new();
        record().write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        let mut want = [
            "type",
            "sensor_id",
            "day",
            "time_s",
            "status",
            "status_flags",
            "recv_epoch_ms",
            "recv_iso",
            "payload",
        ];
        want.sort();
        assert_eq!(keys, want);
        // The wire order follows the SPEC, which keeps lines readable.
        assert!(String::from_utf8(out).unwrap().starts_with("{\"type\":"));
        assert_eq!(v["recv_iso"], "2025-09-28T11:00:00.123Z");
        assert_eq!(v["payload"]["x_m"], 1234.56);
    }

    #[test]
    fn integers_and_half_floats_are_accepted_as_numbers() {
        // What another encoder may produce: time_s as an integer, x_m as a half float.
        let mut v: ciborium::Value = ciborium::Value::serialized(&record()).unwrap();
        let map = v.as_map_mut().unwrap();
        for (k, val) in map.iter_mut() {
            if k.as_text() == Some("time_s") {
                *val = ciborium::Value::Integer(1.into());
            }
        }
        let mut bytes = Vec::new();
        ciborium::into_writer(&v, &mut bytes).unwrap();
        let back = TelemetryRecord::from_cbor(&bytes).unwrap();
        assert_eq!(back.time_s, 1.0);
        // Half floats, as other encoders (ciborium, cbor2) write 0.0 or 0.5.
        let mut bytes = Vec::new();
        ciborium::into_writer(&record(), &mut bytes).unwrap();
        assert!(bytes.windows(3).any(|w| w == [0xf9, 0, 0]));
        assert_eq!(TelemetryRecord::from_cbor(&bytes).unwrap(), record());
    }

    #[test]
    fn integral_floats_are_accepted_for_integers() {
        // cbor-x (JavaScript) writes Date.now() as a double: every number beyond 32 bits is.
        let with = |field: &str, value: ciborium::Value| {
            let mut v: ciborium::Value = ciborium::Value::serialized(&record()).unwrap();
            for (k, val) in v.as_map_mut().unwrap().iter_mut() {
                if k.as_text() == Some(field) {
                    *val = value.clone();
                }
            }
            let mut bytes = Vec::new();
            ciborium::into_writer(&v, &mut bytes).unwrap();
            TelemetryRecord::from_cbor(&bytes)
        };
        let float = ciborium::Value::Float;
        let r = with("recv_epoch_ms", float(1_795_945_182_958.0)).unwrap();
        assert_eq!(r.recv_epoch_ms, 1_795_945_182_958);
        assert_eq!(with("sensor_id", float(888.0)).unwrap().sensor_id, 888);
        assert_eq!(with("status", float(255.0)).unwrap().status, 255);
        for (field, bad) in [
            ("recv_epoch_ms", 1.5),
            ("recv_epoch_ms", 9.223_372_036_854_776e18),
            ("recv_epoch_ms", f64::NAN),
            ("sensor_id", 65_536.0),
            ("status", -1.0),
            ("day", f64::INFINITY),
        ] {
            assert!(with(field, float(bad)).is_err(), "{field} = {bad}");
        }
        assert!(with("sensor_id", ciborium::Value::Text("7".into())).is_err());
    }

    #[test]
    fn values_no_datagram_or_clock_gives_are_out_of_range() {
        type Spoil = fn(&mut TelemetryRecord);
        let cases: [(&str, Spoil); 6] = [
            ("day", |r| r.day = 0),
            ("day", |r| r.day = 367),
            ("time_s", |r| r.time_s = -0.0001),
            ("time_s", |r| r.time_s = 86_400.0),
            ("recv_epoch_ms", |r| r.recv_epoch_ms = -1),
            ("recv_epoch_ms", |r| r.recv_epoch_ms = MAX_EPOCH_MS + 1),
        ];
        for (field, spoil) in cases {
            let mut r = record();
            spoil(&mut r);
            let bytes = r.to_cbor();
            for result in [
                TelemetryRecord::from_cbor(&bytes),
                TelemetryRecord::from_cbor_general(&bytes),
            ] {
                assert!(
                    matches!(&result, Err(RecordError::OutOfRange { field: f, .. }) if *f == field),
                    "{field}: {result:?}"
                );
            }
        }
        // The edges themselves are valid.
        let mut r = record();
        (r.day, r.time_s, r.recv_epoch_ms) = (366, 86_399.999_9, MAX_EPOCH_MS);
        assert_eq!(TelemetryRecord::from_cbor(&r.to_cbor()).unwrap(), r);
        (r.day, r.time_s, r.recv_epoch_ms) = (1, 0.0, 0);
        assert_eq!(TelemetryRecord::from_cbor(&r.to_cbor()).unwrap(), r);
    }

    #[test]
    fn mismatched_payload_and_garbage_are_errors_not_panics() {
        let mut r = record();
        r.kind = MessageKind::Spherical;
        assert!(matches!(
            TelemetryRecord::from_cbor(&r.to_cbor()),
            Err(RecordError::PayloadMismatch { .. })
        ));
        assert!(TelemetryRecord::from_cbor(b"\xff\x00garbage").is_err());
        assert!(TelemetryRecord::from_cbor(&[]).is_err());
        assert!(decode(&[]).is_err());
    }
}
