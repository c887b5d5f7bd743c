//! Parquet: the long CSV's columns, typed — times as `timestamp[us, UTC]`, numbers as
//! float64 (null where a column does not apply), validity bits as booleans, ids as
//! unsigned integers — in row groups of at most [`ROW_GROUP`] rows (what the writer holds
//! in memory), with the file's window, clock, origin, units and kit version in its
//! key/value metadata (`tspi.*`), Snappy-compressed.

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
    UInt16Builder, UInt8Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::row::{payload_columns, ExportRow, PAYLOAD_COLUMNS, VALIDITY_COLUMNS};
use crate::{ExportError, ExportMeta, FormatWriter};

/// Rows per row group: what the writer keeps before it writes (about 20 MB at most).
pub const ROW_GROUP: usize = 65_536;
/// Rows per Arrow batch handed to the Parquet writer.
const BATCH: usize = 8_192;

fn parquet_error(e: impl std::fmt::Display) -> ExportError {
    ExportError::Parquet(e.to_string())
}

/// The file's schema (east/north/up only with an origin).
pub fn schema(with_enu: bool) -> SchemaRef {
    let utc = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let mut fields = vec![
        Field::new("stream_seq", DataType::Int64, false),
        Field::new("sensor_id", DataType::UInt16, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("day", DataType::UInt16, false),
        Field::new("time_s", DataType::Float64, false),
        Field::new("tspi_utc", utc(), false),
        Field::new("recv_utc", utc(), false),
        Field::new("status", DataType::UInt8, false),
    ];
    fields.extend(
        VALIDITY_COLUMNS
            .iter()
            .map(|n| Field::new(*n, DataType::Boolean, false)),
    );
    let mut floats: Vec<&str> = PAYLOAD_COLUMNS.to_vec();
    floats.extend(["lat_deg", "lon_deg", "alt_m"]);
    if with_enu {
        floats.extend(["east_m", "north_m", "up_m"]);
    }
    floats.extend(["speed_mps", "heading_deg"]);
    fields.extend(
        floats
            .iter()
            .map(|n| Field::new(*n, DataType::Float64, true)),
    );
    Arc::new(Schema::new(fields))
}

struct Columns {
    seq: Int64Builder,
    sensor: UInt16Builder,
    kind: StringBuilder,
    day: UInt16Builder,
    time_s: Float64Builder,
    tspi: TimestampMicrosecondBuilder,
    recv: TimestampMicrosecondBuilder,
    status: UInt8Builder,
    valid: Vec<BooleanBuilder>,
    floats: Vec<Float64Builder>,
    rows: usize,
}

impl Columns {
    fn new(floats: usize) -> Self {
        let utc = || TimestampMicrosecondBuilder::with_capacity(BATCH).with_timezone("UTC");
        Columns {
            seq: Int64Builder::with_capacity(BATCH),
            sensor: UInt16Builder::with_capacity(BATCH),
            kind: StringBuilder::with_capacity(BATCH, BATCH * 10),
            day: UInt16Builder::with_capacity(BATCH),
            time_s: Float64Builder::with_capacity(BATCH),
            tspi: utc(),
            recv: utc(),
            status: UInt8Builder::with_capacity(BATCH),
            valid: (0..9)
                .map(|_| BooleanBuilder::with_capacity(BATCH))
                .collect(),
            floats: (0..floats)
                .map(|_| Float64Builder::with_capacity(BATCH))
                .collect(),
            rows: 0,
        }
    }

    fn batch(&mut self, schema: &SchemaRef) -> Result<RecordBatch, ExportError> {
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(self.seq.finish()),
            Arc::new(self.sensor.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.day.finish()),
            Arc::new(self.time_s.finish()),
            Arc::new(self.tspi.finish()),
            Arc::new(self.recv.finish()),
            Arc::new(self.status.finish()),
        ];
        arrays.extend(
            self.valid
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        arrays.extend(
            self.floats
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        self.rows = 0;
        RecordBatch::try_new(schema.clone(), arrays).map_err(parquet_error)
    }
}

pub(crate) struct ParquetFile<W: Write + Send> {
    writer: ArrowWriter<W>,
    schema: SchemaRef,
    columns: Columns,
    with_enu: bool,
}

impl<W: Write + Send> ParquetFile<W> {
    pub fn new(meta: &ExportMeta, out: W) -> Result<Self, ExportError> {
        let with_enu = meta.origin.is_some();
        let schema = schema(with_enu);
        let props = WriterProperties::builder()
            .set_max_row_group_size(ROW_GROUP)
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("tspi-stream-kit {}", crate::KIT_VERSION))
            .set_key_value_metadata(Some(
                meta.pairs()
                    .into_iter()
                    .map(|(k, v)| KeyValue::new(format!("tspi.{k}"), v))
                    .collect(),
            ))
            .build();
        let writer =
            ArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(parquet_error)?;
        let floats = schema.fields().len() - 17;
        Ok(ParquetFile {
            writer,
            schema,
            columns: Columns::new(floats),
            with_enu,
        })
    }

    fn flush_batch(&mut self) -> Result<(), ExportError> {
        if self.columns.rows == 0 {
            return Ok(());
        }
        let batch = self.columns.batch(&self.schema)?;
        self.writer.write(&batch).map_err(parquet_error)
    }
}

impl<W: Write + Send> FormatWriter for ParquetFile<W> {
    fn row(&mut self, r: &ExportRow) -> Result<(), ExportError> {
        let c = &mut self.columns;
        c.seq.append_value(r.stream_seq);
        c.sensor.append_value(r.sensor_id);
        c.kind.append_value(r.kind.as_str());
        c.day.append_value(r.day);
        c.time_s.append_value(r.time_s);
        c.tspi.append_value(r.tspi_us);
        c.recv.append_value(r.recv_us);
        c.status.append_value(r.status);
        for (b, v) in c.valid.iter_mut().zip(r.valid) {
            b.append_value(v);
        }
        let p = r.position;
        let mut values: Vec<Option<f64>> = payload_columns(&r.payload).to_vec();
        values.extend([
            p.map(|p| p.lat_deg),
            p.map(|p| p.lon_deg),
            p.map(|p| p.alt_m),
        ]);
        if self.with_enu {
            values.extend((0..3).map(|i| r.enu.map(|e| e[i])));
        }
        values.extend([Some(r.speed_mps), r.heading_deg]);
        for (b, v) in c.floats.iter_mut().zip(values) {
            b.append_option(v);
        }
        c.rows += 1;
        if c.rows >= BATCH {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        self.flush_batch()?;
        let mut out = self.writer.into_inner().map_err(parquet_error)?;
        out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_rows::{meta, rows, Shared};
    use arrow_array::Array as _;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    #[test]
    fn a_file_the_parquet_reader_reads_back_row_for_row() {
        let buf = Shared::default();
        let mut w = crate::writer(crate::Format::Parquet, &meta(), buf.clone()).unwrap();
        for r in rows() {
            w.row(&r).unwrap();
        }
        w.finish().unwrap();
        let bytes = bytes::Bytes::from(buf.bytes());
        let reader = SerializedFileReader::new(bytes.clone()).unwrap();
        let md = reader.metadata().file_metadata();
        assert_eq!(md.num_rows(), rows().len() as i64);
        let kv = md.key_value_metadata().unwrap();
        assert!(kv
            .iter()
            .any(|k| k.key == "tspi.clock" && k.value.as_deref() == Some("receive")));
        assert!(kv.iter().any(|k| k.key == "tspi.origin"));
        let batches: Vec<RecordBatch> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                .unwrap()
                .build()
                .unwrap()
                .map(|b| b.unwrap())
                .collect();
        let batch = &batches[0];
        assert_eq!(batch.schema().fields(), schema(true).fields());
        let lat = batch
            .column_by_name("lat_deg")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::Float64Array>()
            .unwrap();
        let range = batch
            .column_by_name("range_m")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::Float64Array>()
            .unwrap();
        for (i, r) in rows().iter().enumerate() {
            assert_eq!(lat.value(i), r.position.unwrap().lat_deg);
            assert_eq!(range.is_null(i), r.sensor_id == 10);
        }
    }
}
