//! CSV (RFC 4180, `\n` line ends, a header row): long — one row per message, every field
//! — and wide — one row per time step, a group of columns per sensor (its latest record
//! in the step), the layout a spreadsheet plots from.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};

use crate::row::{payload_columns, Clock, ExportRow, PAYLOAD_COLUMNS, VALIDITY_COLUMNS};
use crate::text::{push_f64, push_i64, push_iso_us};
use crate::{ExportError, ExportMeta, FormatWriter};

/// The long CSV's columns (`east_m`, `north_m`, `up_m` only with an origin).
pub fn long_columns(with_enu: bool) -> Vec<&'static str> {
    let mut c = vec![
        "stream_seq",
        "sensor_id",
        "type",
        "day",
        "time_s",
        "tspi_utc",
        "recv_utc",
        "status",
    ];
    c.extend(VALIDITY_COLUMNS);
    c.extend(PAYLOAD_COLUMNS);
    c.extend(["lat_deg", "lon_deg", "alt_m"]);
    if with_enu {
        c.extend(["east_m", "north_m", "up_m"]);
    }
    c.extend(["speed_mps", "heading_deg"]);
    c
}

pub(crate) struct LongCsv<W: Write> {
    out: BufWriter<W>,
    line: Vec<u8>,
    with_enu: bool,
}

impl<W: Write> LongCsv<W> {
    pub fn new(meta: &ExportMeta, out: W) -> Result<Self, ExportError> {
        let mut out = BufWriter::with_capacity(1 << 16, out);
        let with_enu = meta.origin.is_some();
        out.write_all(long_columns(with_enu).join(",").as_bytes())?;
        out.write_all(b"\n")?;
        Ok(LongCsv {
            out,
            line: Vec::with_capacity(512),
            with_enu,
        })
    }
}

fn push_opt(line: &mut Vec<u8>, v: Option<f64>) {
    if let Some(v) = v {
        push_f64(line, v);
    }
}

impl<W: Write + Send> FormatWriter for LongCsv<W> {
    fn row(&mut self, r: &ExportRow) -> Result<(), ExportError> {
        let l = &mut self.line;
        l.clear();
        push_i64(l, r.stream_seq);
        l.push(b',');
        push_i64(l, i64::from(r.sensor_id));
        l.push(b',');
        l.extend_from_slice(r.kind.as_str().as_bytes());
        l.push(b',');
        push_i64(l, i64::from(r.day));
        l.push(b',');
        push_f64(l, r.time_s);
        l.push(b',');
        push_iso_us(l, r.tspi_us);
        l.push(b',');
        push_iso_us(l, r.recv_us);
        l.push(b',');
        push_i64(l, i64::from(r.status));
        for v in r.valid {
            l.push(b',');
            l.push(if v { b'1' } else { b'0' });
        }
        for v in payload_columns(&r.payload) {
            l.push(b',');
            push_opt(l, v);
        }
        let p = r.position;
        for v in [
            p.map(|p| p.lat_deg),
            p.map(|p| p.lon_deg),
            p.map(|p| p.alt_m),
        ] {
            l.push(b',');
            push_opt(l, v);
        }
        if self.with_enu {
            for i in 0..3 {
                l.push(b',');
                push_opt(l, r.enu.map(|e| e[i]));
            }
        }
        l.push(b',');
        push_f64(l, r.speed_mps);
        l.push(b',');
        push_opt(l, r.heading_deg);
        l.push(b'\n');
        self.out.write_all(l)?;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        self.out.flush()?;
        Ok(())
    }
}

/// Each sensor's group of columns in the wide CSV.
const WIDE_FIELDS: [&str; 5] = ["lat_deg", "lon_deg", "alt_m", "speed_mps", "heading_deg"];
const WIDE_ENU: [&str; 3] = ["east_m", "north_m", "up_m"];
/// How long a step stays open for records that arrive out of time order (rows come in
/// stream order; their clock times may be a little earlier, or, on the sensor's own
/// clock, further off). Records later than this are counted, not written.
pub const WIDE_REORDER_US: i64 = 10_000_000;

/// One sensor's values in one step: position, speed, heading, east/north/up.
type Cells = [Option<f64>; 8];

pub(crate) struct WideCsv<W: Write> {
    out: BufWriter<W>,
    line: Vec<u8>,
    clock: Clock,
    step_us: i64,
    with_enu: bool,
    /// Column group of each sensor.
    index: std::collections::HashMap<u16, usize>,
    width: usize,
    /// Open steps by start time.
    steps: BTreeMap<i64, Vec<Option<(i64, Cells)>>>,
    /// Steps up to here are written.
    written_until: i64,
    newest: i64,
    skipped: u64,
}

impl<W: Write> WideCsv<W> {
    pub fn new(meta: &ExportMeta, out: W) -> Result<Self, ExportError> {
        if meta.sensors.is_empty() {
            return Err(ExportError::NoSensors);
        }
        let mut out = BufWriter::with_capacity(1 << 16, out);
        let with_enu = meta.origin.is_some();
        let mut header = String::from("time_utc");
        for s in &meta.sensors {
            for f in WIDE_FIELDS
                .iter()
                .chain(if with_enu { &WIDE_ENU[..] } else { &[] })
            {
                header.push_str(&format!(",{s}_{f}"));
            }
        }
        out.write_all(header.as_bytes())?;
        out.write_all(b"\n")?;
        Ok(WideCsv {
            out,
            line: Vec::with_capacity(64 * meta.sensors.len()),
            clock: meta.clock,
            step_us: meta.step_us.max(1),
            with_enu,
            index: meta
                .sensors
                .iter()
                .enumerate()
                .map(|(i, s)| (*s, i))
                .collect(),
            width: meta.sensors.len(),
            steps: BTreeMap::new(),
            written_until: i64::MIN,
            newest: i64::MIN,
            skipped: 0,
        })
    }

    fn write_step(
        &mut self,
        start: i64,
        cells: &[Option<(i64, Cells)>],
    ) -> Result<(), ExportError> {
        let l = &mut self.line;
        l.clear();
        push_iso_us(l, start);
        let n = if self.with_enu { 8 } else { 5 };
        for c in cells {
            for i in 0..n {
                l.push(b',');
                if let Some(v) = c.and_then(|(_, c)| c[i]) {
                    push_f64(l, v);
                }
            }
        }
        l.push(b'\n');
        self.out.write_all(l)?;
        Ok(())
    }

    /// Write every step that can no longer receive a record (or all of them).
    fn write_closed(&mut self, all: bool) -> Result<(), ExportError> {
        while let Some((&start, _)) = self.steps.first_key_value() {
            if !all && start + self.step_us + WIDE_REORDER_US > self.newest {
                break;
            }
            let Some((start, cells)) = self.steps.pop_first() else {
                break;
            };
            self.write_step(start, &cells)?;
            self.written_until = start + self.step_us;
        }
        Ok(())
    }
}

impl<W: Write + Send> FormatWriter for WideCsv<W> {
    fn row(&mut self, r: &ExportRow) -> Result<(), ExportError> {
        let t = r.time_us(self.clock);
        let Some(&column) = self.index.get(&r.sensor_id) else {
            self.skipped += 1;
            return Ok(());
        };
        let start = t - t.rem_euclid(self.step_us);
        if start < self.written_until {
            self.skipped += 1;
            return Ok(());
        }
        let p = r.position;
        let e = r.enu;
        let cells: Cells = [
            p.map(|p| p.lat_deg),
            p.map(|p| p.lon_deg),
            p.map(|p| p.alt_m),
            Some(r.speed_mps),
            r.heading_deg,
            e.map(|e| e[0]),
            e.map(|e| e[1]),
            e.map(|e| e[2]),
        ];
        let width = self.width;
        let step = self.steps.entry(start).or_insert_with(|| vec![None; width]);
        // The latest record of the step on the clock wins (on the sensor's own clock a
        // later message may be an earlier moment).
        if step[column].is_none_or(|(at, _)| at <= t) {
            step[column] = Some((t, cells));
        }
        self.newest = self.newest.max(t);
        self.write_closed(false)
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }

    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        self.write_closed(true)?;
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_rows::{meta, rows};

    #[test]
    fn long_rows_carry_every_field() {
        let buf = crate::test_rows::Shared::default();
        let mut w = crate::writer(crate::Format::Csv, &meta(), buf.clone()).unwrap();
        for r in rows() {
            w.row(&r).unwrap();
        }
        w.finish().unwrap();
        let text = buf.text();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(header, long_columns(true));
        let first: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(first.len(), header.len());
        let col = |name: &str| first[header.iter().position(|h| *h == name).unwrap()];
        assert_eq!(col("sensor_id"), "10");
        assert_eq!(col("type"), "geocentric");
        assert_eq!(col("tspi_utc"), "2025-09-28T11:00:00.100000Z");
        assert_eq!(col("position_x_valid"), "1");
        assert_eq!(col("range_m"), "");
        assert!(col("lat_deg").parse::<f64>().is_ok());
        assert_eq!(text.lines().count(), 1 + rows().len());
    }

    #[test]
    fn wide_rows_are_steps_with_a_group_per_sensor() {
        let buf = crate::test_rows::Shared::default();
        let mut m = meta();
        m.step_us = 1_000_000;
        let mut w = crate::writer(crate::Format::CsvWide, &m, buf.clone()).unwrap();
        for r in rows() {
            w.row(&r).unwrap();
        }
        assert_eq!(w.skipped(), 0);
        w.finish().unwrap();
        let text = buf.text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with(
            "time_utc,10_lat_deg,10_lon_deg,10_alt_m,10_speed_mps,10_heading_deg,10_east_m"
        ));
        // rows(): two sensors, 10 Hz for 3 s → three one-second steps.
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[1].starts_with("2025-09-28T11:00:00.000000Z,"));
        assert_eq!(lines[1].split(',').count(), 1 + 2 * 8);
    }

    #[test]
    fn a_record_later_than_the_reorder_window_is_counted() {
        let buf = crate::test_rows::Shared::default();
        let mut w = crate::writer(crate::Format::CsvWide, &meta(), buf.clone()).unwrap();
        let early = rows();
        let mut later = rows();
        for r in &mut later {
            r.recv_us += 20_000_000;
        }
        for r in early.iter().chain(&later) {
            w.row(r).unwrap();
        }
        assert_eq!(w.skipped(), 0);
        // The first second was written once the clock passed it by the reorder window.
        w.row(&early[0]).unwrap();
        assert_eq!(w.skipped(), 1);
        w.finish().unwrap();
        assert!(!buf.text().is_empty());
    }
}
