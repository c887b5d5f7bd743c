//! A window of the archive as the files analysts take away: CSV (long, one row per
//! message, and wide, one row per time step), JSON lines, Parquet, KML, CZML, GeoJSON and
//! pcapng (the datagrams again, for `replayer pcap`).
//!
//! Every writer streams: rows go in one at a time, in the order the format asks for
//! ([`Format::order`]), and out to any `Write`; what a writer keeps is bounded by one
//! Parquet row group or one track of a per-track format.
//!
//! **Architecture Invariant:** no I/O but the `Write` it is handed: the archive is read
//! by the caller (`replayer export`, `replayer serve`), so these writers are tested on
//! rows made in memory.

pub mod csv;
pub mod geo_formats;
pub mod jsonl;
pub mod parquet;
pub mod pcap;
pub mod row;
#[cfg(test)]
mod test_rows;
mod text;

use std::io::Write;

use thiserror::Error;

pub use row::{Clock, ExportRow, RowBuilder};

/// The kit's version, written into every file whose format has a place for it.
pub const KIT_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("parquet: {0}")]
    Parquet(String),
    #[error("the wide CSV needs the window's sensors for its header")]
    NoSensors,
}

/// The formats, by `--format` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    CsvWide,
    Jsonl,
    Parquet,
    Kml,
    Czml,
    GeoJson,
    Pcap,
}

/// The order rows must come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Stream order (the receive order).
    Stream,
    /// Sensor by sensor, each in stream order: one track after the other.
    Sensor,
}

impl Format {
    pub const ALL: [Format; 8] = [
        Format::Csv,
        Format::CsvWide,
        Format::Jsonl,
        Format::Parquet,
        Format::Kml,
        Format::Czml,
        Format::GeoJson,
        Format::Pcap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::CsvWide => "csv-wide",
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
            Format::Kml => "kml",
            Format::Czml => "czml",
            Format::GeoJson => "geojson",
            Format::Pcap => "pcap",
        }
    }

    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv | Format::CsvWide => "csv",
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
            Format::Kml => "kml",
            Format::Czml => "czml",
            Format::GeoJson => "geojson",
            Format::Pcap => "pcapng",
        }
    }

    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv | Format::CsvWide => "text/csv; charset=utf-8",
            Format::Jsonl => "application/x-ndjson",
            Format::Parquet => "application/vnd.apache.parquet",
            Format::Kml => "application/vnd.google-earth.kml+xml",
            Format::Czml => "application/json",
            Format::GeoJson => "application/geo+json",
            Format::Pcap => "application/x-pcapng",
        }
    }

    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The format a file name's extension says (`.pcap` and `.pcapng` are pcapng; `.ndjson`
    /// is JSON lines; `.json` CZML is named `.czml`).
    pub fn from_path(path: &str) -> Option<Format> {
        let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            "parquet" => Some(Format::Parquet),
            "kml" => Some(Format::Kml),
            "czml" => Some(Format::Czml),
            "geojson" => Some(Format::GeoJson),
            "pcap" | "pcapng" => Some(Format::Pcap),
            _ => None,
        }
    }

    pub fn order(self) -> Order {
        match self {
            Format::Kml | Format::Czml | Format::GeoJson => Order::Sensor,
            _ => Order::Stream,
        }
    }

    /// Whether the format shows the window's tags.
    pub fn has_tags(self) -> bool {
        matches!(self, Format::Kml | Format::Czml | Format::GeoJson)
    }
}

/// What a file says about itself where its format has room for it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportMeta {
    /// The window, µs since the epoch: `[start, end)` on `clock`.
    pub start_us: i64,
    pub end_us: i64,
    pub clock: Clock,
    /// The range origin (east/north/up columns), as given.
    pub origin: Option<tspi_core::geo::Geodetic>,
    /// The sensors of the window, ascending (the wide CSV's columns).
    pub sensors: Vec<u16>,
    /// The wide CSV's time step, µs.
    pub step_us: i64,
    /// UDP destination port of the datagrams in a pcapng.
    pub udp_port: u16,
    pub stream: String,
}

impl ExportMeta {
    /// Key/value pairs every format that has room for them carries.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            ("kit", format!("tspi-stream-kit {KIT_VERSION}")),
            ("stream", self.stream.clone()),
            (
                "window",
                format!(
                    "{}/{}",
                    text::iso_us(self.start_us),
                    text::iso_us(self.end_us)
                ),
            ),
            ("clock", self.clock.as_str().to_owned()),
            (
                "units",
                "SI: metres, m/s, m/s²; angles in degrees, deg/s, deg/s²; times UTC".to_owned(),
            ),
            (
                "crs",
                "WGS-84 (EPSG:4979): latitude, longitude, ellipsoidal height".to_owned(),
            ),
        ];
        if let Some(o) = &self.origin {
            pairs.push(("origin", format!("{},{},{}", o.lat_deg, o.lon_deg, o.alt_m)));
        }
        pairs
    }
}

/// A tag of the window.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportTag {
    pub id: String,
    pub at_us: i64,
    pub label: String,
    pub creator: Option<String>,
    pub status: String,
    pub notes: Option<String>,
}

/// A file being written.
pub trait FormatWriter: Send {
    /// The next row, in [`Format::order`].
    fn row(&mut self, row: &ExportRow) -> Result<(), ExportError>;
    /// The window's tags, after the rows (formats without tags ignore them).
    fn tags(&mut self, _tags: &[ExportTag]) -> Result<(), ExportError> {
        Ok(())
    }
    /// Rows a format had to leave out (the wide CSV's rows later than its reorder
    /// window); counted, never silent.
    fn skipped(&self) -> u64 {
        0
    }
    /// Write what is left and flush.
    fn finish(self: Box<Self>) -> Result<(), ExportError>;
}

/// A writer of `format` onto `out`.
pub fn writer<W: Write + Send + 'static>(
    format: Format,
    meta: &ExportMeta,
    out: W,
) -> Result<Box<dyn FormatWriter>, ExportError> {
    Ok(match format {
        Format::Csv => Box::new(csv::LongCsv::new(meta, out)?),
        Format::CsvWide => Box::new(csv::WideCsv::new(meta, out)?),
        Format::Jsonl => Box::new(jsonl::JsonLines::new(meta, out)),
        Format::Parquet => Box::new(parquet::ParquetFile::new(meta, out)?),
        Format::Kml => Box::new(geo_formats::Kml::new(meta, out)?),
        Format::Czml => Box::new(geo_formats::Czml::new(meta, out)?),
        Format::GeoJson => Box::new(geo_formats::GeoJson::new(meta, out)?),
        Format::Pcap => Box::new(pcap::Pcapng::new(meta, out)?),
    })
}
