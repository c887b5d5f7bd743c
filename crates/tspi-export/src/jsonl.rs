//! JSON lines: one object per message with the long CSV's columns as members (numbers,
//! `null` where a column does not apply, validity bits as booleans).

use std::io::{BufWriter, Write};

use crate::row::{payload_columns, ExportRow, PAYLOAD_COLUMNS, VALIDITY_COLUMNS};
use crate::text::{push_f64, push_i64, push_iso_us, push_json_f64};
use crate::{ExportError, ExportMeta, FormatWriter};

pub(crate) struct JsonLines<W: Write> {
    out: BufWriter<W>,
    line: Vec<u8>,
    with_enu: bool,
}

impl<W: Write> JsonLines<W> {
    pub fn new(meta: &ExportMeta, out: W) -> Self {
        JsonLines {
            out: BufWriter::with_capacity(1 << 16, out),
            line: Vec::with_capacity(1024),
            with_enu: meta.origin.is_some(),
        }
    }
}

impl<W: Write + Send> FormatWriter for JsonLines<W> {
    fn row(&mut self, r: &ExportRow) -> Result<(), ExportError> {
        let l = &mut self.line;
        l.clear();
        l.extend_from_slice(b"{\"stream_seq\":");
        push_i64(l, r.stream_seq);
        l.extend_from_slice(b",\"sensor_id\":");
        push_i64(l, i64::from(r.sensor_id));
        l.extend_from_slice(b",\"type\":\"");
        l.extend_from_slice(r.kind.as_str().as_bytes());
        l.extend_from_slice(b"\",\"day\":");
        push_i64(l, i64::from(r.day));
        l.extend_from_slice(b",\"time_s\":");
        push_f64(l, r.time_s);
        l.extend_from_slice(b",\"tspi_utc\":\"");
        push_iso_us(l, r.tspi_us);
        l.extend_from_slice(b"\",\"recv_utc\":\"");
        push_iso_us(l, r.recv_us);
        l.extend_from_slice(b"\",\"status\":");
        push_i64(l, i64::from(r.status));
        for (name, v) in VALIDITY_COLUMNS.iter().zip(r.valid) {
            l.extend_from_slice(b",\"");
            l.extend_from_slice(name.as_bytes());
            l.extend_from_slice(if v { b"\":true" } else { b"\":false" });
        }
        for (name, v) in PAYLOAD_COLUMNS.iter().zip(payload_columns(&r.payload)) {
            l.extend_from_slice(b",\"");
            l.extend_from_slice(name.as_bytes());
            l.extend_from_slice(b"\":");
            push_json_f64(l, v);
        }
        let p = r.position;
        for (name, v) in [
            ("lat_deg", p.map(|p| p.lat_deg)),
            ("lon_deg", p.map(|p| p.lon_deg)),
            ("alt_m", p.map(|p| p.alt_m)),
        ] {
            l.extend_from_slice(b",\"");
            l.extend_from_slice(name.as_bytes());
            l.extend_from_slice(b"\":");
            push_json_f64(l, v);
        }
        if self.with_enu {
            for (i, name) in ["east_m", "north_m", "up_m"].iter().enumerate() {
                l.extend_from_slice(b",\"");
                l.extend_from_slice(name.as_bytes());
                l.extend_from_slice(b"\":");
                push_json_f64(l, r.enu.map(|e| e[i]));
            }
        }
        l.extend_from_slice(b",\"speed_mps\":");
        push_json_f64(l, Some(r.speed_mps));
        l.extend_from_slice(b",\"heading_deg\":");
        push_json_f64(l, r.heading_deg);
        l.extend_from_slice(b"}\n");
        self.out.write_all(l)?;
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
    use crate::test_rows::{meta, rows, Shared};

    #[test]
    fn every_line_is_a_json_object_with_the_long_columns() {
        let buf = Shared::default();
        let mut w = crate::writer(crate::Format::Jsonl, &meta(), buf.clone()).unwrap();
        for r in rows() {
            w.row(&r).unwrap();
        }
        w.finish().unwrap();
        let text = buf.text();
        let mut columns = crate::csv::long_columns(true);
        columns.sort_unstable();
        for (line, row) in text.lines().zip(rows()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, columns);
            assert_eq!(v["stream_seq"], row.stream_seq);
            assert_eq!(v["lat_deg"].as_f64(), row.position.map(|p| p.lat_deg));
            assert_eq!(v["position_x_valid"], row.valid[0]);
        }
        assert_eq!(text.lines().count(), rows().len());
    }
}
