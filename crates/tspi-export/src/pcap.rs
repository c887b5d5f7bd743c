//! pcapng: the window's datagrams again, each in an Ethernet/IPv4/UDP frame to the
//! producer's port stamped with its receive time, so `replayer pcap` (or Wireshark, or
//! a producer fed by `tcpreplay`) takes them back. The section header's comment carries
//! the file's window, clock, kit version.
//!
//! The datagram is rebuilt from the archived record: every field the record holds goes
//! back to its wire integer exactly. The header's status-flag bits other than the ninth
//! validity bit are not in the record (SPEC §3) and come back as zero.

use std::io::{BufWriter, Write};

use tspi_core::datagram::{to_wire_angle, to_wire_i16, to_wire_i32, TICKS_PER_SECOND};
use tspi_core::{Datagram, GeocentricRaw, Payload, RecordPayload, SphericalRaw};

use crate::row::ExportRow;
use crate::{ExportError, ExportMeta, FormatWriter};

/// The datagram a row was decoded from (see the module's note on status flags).
pub fn datagram(r: &ExportRow) -> Datagram {
    let bits: u32 = r
        .valid
        .iter()
        .enumerate()
        .fold(0, |acc, (i, v)| acc | (u32::from(*v) << i));
    let payload = match r.payload {
        RecordPayload::Geocentric(g) => Payload::Geocentric(GeocentricRaw {
            x: to_wire_i32(g.x_m, 100.0),
            y: to_wire_i32(g.y_m, 100.0),
            z: to_wire_i32(g.z_m, 100.0),
            vx: to_wire_i16(g.vx_mps, 100.0),
            vy: to_wire_i16(g.vy_mps, 100.0),
            vz: to_wire_i16(g.vz_mps, 100.0),
            ax: to_wire_i16(g.ax_mps2, 100.0),
            ay: to_wire_i16(g.ay_mps2, 100.0),
            az: to_wire_i16(g.az_mps2, 100.0),
        }),
        RecordPayload::Spherical(s) => Payload::Spherical(SphericalRaw {
            range: to_wire_i32(s.range_m, 100.0),
            azimuth: to_wire_angle(s.azimuth_deg),
            elevation: to_wire_angle(s.elevation_deg),
            azimuth_rate: to_wire_i16(s.azimuth_rate_dps, 100.0),
            elevation_rate: to_wire_i16(s.elevation_rate_dps, 100.0),
            range_rate: to_wire_i16(s.range_rate_mps, 100.0),
            azimuth_accel: to_wire_i16(s.azimuth_accel_dps2, 100.0),
            elevation_accel: to_wire_i16(s.elevation_accel_dps2, 100.0),
            range_accel: to_wire_i16(s.range_accel_mps2, 100.0),
        }),
    };
    Datagram {
        sensor_id: r.sensor_id,
        day: r.day,
        time_ticks: (r.time_s * f64::from(TICKS_PER_SECOND)).round() as u32,
        status: r.status,
        status_flags: ((bits >> 8) & 1) as u16,
        payload,
    }
}

/// An Ethernet/IPv4/UDP frame, 127.0.0.1 to 127.0.0.1 (checksums zero: "not computed").
pub fn udp_frame(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total = (20 + 8 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
    f.extend_from_slice(&src_port.to_be_bytes());
    f.extend_from_slice(&dst_port.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// One pcapng block: type, length, body padded to 32 bits, length again.
fn block(out: &mut Vec<u8>, block_type: u32, body: &[u8]) {
    let padded = body.len().div_ceil(4) * 4;
    let len = (12 + padded) as u32;
    out.extend_from_slice(&block_type.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
    out.resize(out.len() + padded - body.len(), 0);
    out.extend_from_slice(&len.to_le_bytes());
}

/// An option: code, length, value padded to 32 bits.
fn option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + value.len().div_ceil(4) * 4 - value.len(), 0);
}

/// The source port the frames come from (any; the producer does not look).
const SOURCE_PORT: u16 = 40_000;

pub(crate) struct Pcapng<W: Write> {
    out: BufWriter<W>,
    dst_port: u16,
    buf: Vec<u8>,
}

impl<W: Write> Pcapng<W> {
    pub fn new(meta: &ExportMeta, out: W) -> Result<Self, ExportError> {
        let mut out = BufWriter::with_capacity(1 << 16, out);
        let mut head = Vec::new();
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        let comment: Vec<String> = meta
            .pairs()
            .into_iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        option(&mut shb, 1, comment.join("; ").as_bytes()); // opt_comment
        option(
            &mut shb,
            4,
            format!("tspi-stream-kit {}", crate::KIT_VERSION).as_bytes(),
        ); // shb_userappl
        option(&mut shb, 0, &[]);
        block(&mut head, 0x0a0d_0d0a, &shb);
        let mut idb = Vec::new();
        idb.extend_from_slice(&1u16.to_le_bytes()); // LINKTYPE_ETHERNET
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&0u32.to_le_bytes()); // no snap length
        option(&mut idb, 9, &[6]); // if_tsresol: microseconds
        option(&mut idb, 0, &[]);
        block(&mut head, 1, &idb);
        out.write_all(&head)?;
        Ok(Pcapng {
            out,
            dst_port: meta.udp_port,
            buf: Vec::with_capacity(128),
        })
    }
}

impl<W: Write + Send> FormatWriter for Pcapng<W> {
    fn row(&mut self, r: &ExportRow) -> Result<(), ExportError> {
        let frame = udp_frame(SOURCE_PORT, self.dst_port, &datagram(r).encode());
        let ts = r.recv_us as u64;
        let mut epb = Vec::with_capacity(20 + frame.len());
        epb.extend_from_slice(&0u32.to_le_bytes());
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts as u32).to_le_bytes());
        epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        epb.extend_from_slice(&frame);
        self.buf.clear();
        block(&mut self.buf, 6, &epb);
        self.out.write_all(&self.buf)?;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_rows::{records, rows};

    #[test]
    fn every_row_is_the_datagram_it_was_decoded_from() {
        for (record, row) in records().iter().zip(rows()) {
            let d = datagram(&row);
            let again = tspi_core::TelemetryRecord::from_datagram(&d, record.recv_epoch_ms);
            assert_eq!(&again, record);
            assert_eq!(tspi_core::decode(&d.encode()).unwrap(), d);
        }
    }

    fn any_datagram() -> impl proptest::strategy::Strategy<Value = Datagram> {
        use proptest::prelude::*;
        let geocentric = (any::<[i32; 3]>(), any::<[i16; 6]>()).prop_map(|(p, v)| {
            Payload::Geocentric(GeocentricRaw {
                x: p[0],
                y: p[1],
                z: p[2],
                vx: v[0],
                vy: v[1],
                vz: v[2],
                ax: v[3],
                ay: v[4],
                az: v[5],
            })
        });
        // Angles as a sensor sends them: [0, 360°) (the record keeps degrees; a wire
        // value past 360° would come back wrapped).
        let spherical = (
            any::<i32>(),
            0..360_000_000u32,
            0..360_000_000u32,
            any::<[i16; 6]>(),
        )
            .prop_map(|(range, azimuth, elevation, v)| {
                Payload::Spherical(SphericalRaw {
                    range,
                    azimuth,
                    elevation,
                    azimuth_rate: v[0],
                    elevation_rate: v[1],
                    range_rate: v[2],
                    azimuth_accel: v[3],
                    elevation_accel: v[4],
                    range_accel: v[5],
                })
            });
        (
            any::<u16>(),
            1..=366u16,
            0..tspi_core::datagram::TICKS_PER_DAY,
            any::<u8>(),
            0..=1u16,
            prop_oneof![geocentric, spherical],
        )
            .prop_map(
                |(sensor_id, day, time_ticks, status, status_flags, payload)| Datagram {
                    sensor_id,
                    day,
                    time_ticks,
                    status,
                    status_flags,
                    payload,
                },
            )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(10_000))]
        #[test]
        fn any_archived_datagram_comes_back_bit_for_bit(d in any_datagram()) {
            let record = tspi_core::TelemetryRecord::from_datagram(&d, 1_759_057_200_123);
            let row = crate::RowBuilder::default().build(&record, 1);
            proptest::prop_assert_eq!(datagram(&row).encode(), d.encode());
        }
    }
}
