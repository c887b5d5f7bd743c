//! Export throughput (issue 24): rows a second of each format, against PostgreSQL's own
//! `COPY (SELECT …) TO STDOUT WITH CSV` of the same window measured in the same run (the
//! stored columns an analyst would take: times, sensor, the decoded record as JSON), and
//! the resident memory of the `replayer export` binary writing the whole window.
//! Not a test: a report.
//!
//! `cargo bench -p tspi-replayer --bench export`; `TSPI_BENCH_ROWS` (default 2,000,000;
//! 200,000 with `TSPI_BENCH_QUICK=1`), a thousand sensors at 10 Hz, half of them
//! spherical. Writes `target/bench-export.json`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic is the failure report

use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tspi_core::geo::LocalFrame;
use tspi_core::{Datagram, GeocentricRaw, Payload, SphericalRaw, TelemetryRecord};
use tspi_display::Placement;
use tspi_export::{Clock, Format};
use tspi_replayer::export::{ExportOptions, ExportWindow};
use tspi_store::{copy_messages, JsonText, MessageKind, MessageRow, RowDetail};
use tspi_test_support::PgServer;

const SENSORS: i64 = 1000;
/// 2025-09-28T11:00:00Z.
const T0_MS: i64 = 1_759_057_200_000;

fn rows_wanted() -> i64 {
    std::env::var("TSPI_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if std::env::var_os("TSPI_BENCH_QUICK").is_some() {
            200_000
        } else {
            2_000_000
        })
}

fn time_of(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
}

/// Row `i`: sensor `i % 1000` at 10 Hz; odd sensors spherical.
fn row(i: i64) -> MessageRow {
    let sensor = (i % SENSORS) as u16;
    let frame = i / SENSORS;
    let recv_ms = T0_MS + frame * 100 + i64::from(sensor % 100);
    let (day, ticks) = tspi_core::rfc3339::day_and_ticks(recv_ms * 1000);
    let payload = if sensor % 2 == 0 {
        Payload::Geocentric(GeocentricRaw {
            x: -245_906_456 + (frame as i32 % 10_000) * 25,
            y: -463_541_412 + i32::from(sensor) * 100,
            z: 362_267_115,
            vx: 11_471,
            vy: 9_427,
            vz: 19_631,
            ax: -641,
            ay: 461,
            az: 154,
        })
    } else {
        Payload::Spherical(SphericalRaw {
            range: 2_000_000 + (frame as i32 % 10_000) * 10,
            azimuth: (u32::from(sensor) * 360_000) % 360_000_000,
            elevation: 5_000_000,
            azimuth_rate: 10,
            elevation_rate: 0,
            range_rate: 2_500,
            azimuth_accel: 0,
            elevation_accel: 0,
            range_accel: 0,
        })
    };
    let d = Datagram {
        sensor_id: sensor,
        day,
        time_ticks: ticks,
        status: 0xff,
        status_flags: 1,
        payload,
    };
    let rec = TelemetryRecord::from_datagram(&d, recv_ms);
    let mut json = Vec::with_capacity(420);
    rec.write_json(&mut json);
    MessageRow {
        stream: "TSPI".into(),
        stream_seq: i + 1,
        stream_ts: time_of(recv_ms + 2),
        subject: format!("tspi.{}.{sensor}", d.kind()),
        kind: MessageKind::Telemetry,
        msg_id: Some(tspi_core::msg_id(&d)),
        recv_ts: Some(time_of(recv_ms)),
        sensor_id: Some(i32::from(sensor)),
        day: Some(day as i16),
        time_s: Some(rec.time_s),
        record: Some(JsonText(json)),
        raw: rec.to_cbor().into(),
        error: None,
        detail: RowDetail::None,
    }
}

/// A `Write` that only counts.
#[derive(Clone, Default)]
struct Counting(Arc<AtomicU64>);

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn options(format: Format, start: OffsetDateTime, end: OffsetDateTime) -> ExportOptions {
    ExportOptions {
        window: ExportWindow::Range { start, end },
        clock: Clock::Receive,
        sensors: Vec::new(),
        placement: Placement::new(LocalFrame::new(34.9, -117.9, 700.0), Default::default()),
        format,
        step: Duration::from_millis(100),
        udp_port: 30_000,
        stream: "TSPI".into(),
    }
}

/// Peak resident memory (VmHWM) of `replayer export` writing the window to a file, MiB.
fn binary_peak_rss(url: &str, format: &str, start: &str, end: &str) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("bench.{format}"));
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_replayer"))
        .args(["export", "--start", start, "--end", end, "--format", format])
        .args(["--origin", "34.9,-117.9,700", "--database-url", url, "-o"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Ok(text) = std::fs::read_to_string(&status) {
            if let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak_kb = peak_kb.max(kb);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (peak_kb as f64 / 1024.0, started.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = rows_wanted();
    let pg = PgServer::start_primary();
    let db = pg.create_database("export_bench");
    let url = pg.url(&db);
    let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    tspi_store::migrate(
        &mut client,
        &tspi_store::SchemaOptions {
            timescale: tspi_store::TimescaleMode::Off,
            chunk_interval: None,
            compress_after: None,
            retain: None,
        },
    )
    .await
    .unwrap();
    let filled = Instant::now();
    let mut i = 0;
    while i < n {
        let batch: Vec<MessageRow> = (i..(i + 20_000).min(n)).map(row).collect();
        let tx = client.transaction().await.unwrap();
        copy_messages(&tx, "messages", &batch).await.unwrap();
        tx.commit().await.unwrap();
        i += batch.len() as i64;
    }
    client
        .batch_execute("VACUUM ANALYZE messages")
        .await
        .unwrap();
    eprintln!(
        "{n} rows archived in {:.0} s",
        filled.elapsed().as_secs_f64()
    );

    let start = time_of(T0_MS - 1000);
    let end = time_of(T0_MS + (n / SENSORS + 1) * 100 + 1000);
    let (start_s, end_s) = (
        tspi_core::rfc3339::format_utc_millis(T0_MS - 1000),
        tspi_core::rfc3339::format_utc_millis(T0_MS + (n / SENSORS + 1) * 100 + 1000),
    );
    let never = CancellationToken::new();
    let mut results = Vec::new();
    let rounds = 2;
    let mut baseline = Vec::new();
    // TSPI_BENCH_FORMATS=csv,parquet: only those.
    let formats: Vec<Format> = match std::env::var("TSPI_BENCH_FORMATS") {
        Ok(list) => list.split(',').filter_map(Format::parse).collect(),
        Err(_) => Format::ALL.to_vec(),
    };
    for round in 0..rounds {
        for &format in &formats {
            // The baseline before each format: the machine is shared, so each ratio is
            // taken against the COPY measured next to it.
            let prepared =
                tspi_replayer::export::prepare(&client, &options(Format::Csv, start, end))
                    .await
                    .unwrap();
            let t = Instant::now();
            let bytes = tspi_store::copy_csv_baseline(&client, &prepared.query)
                .await
                .unwrap();
            let copy_rate = n as f64 / t.elapsed().as_secs_f64();
            baseline.push(copy_rate);

            let o = options(format, start, end);
            let prepared = tspi_replayer::export::prepare(&client, &o).await.unwrap();
            let sink = Counting::default();
            let writer = tspi_export::writer(format, &prepared.meta, sink.clone()).unwrap();
            let t = Instant::now();
            let summary = tspi_replayer::export::write(
                &client,
                &prepared,
                &o,
                writer,
                |_| std::future::ready(Ok(())),
                &never,
            )
            .await
            .unwrap();
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(summary.rows as i64, n);
            let rate = n as f64 / secs;
            eprintln!(
                "round {round} {:<9} {:>9.0} rows/s  ({:>6.1} MB)  COPY CSV {:>9.0} rows/s ({:>6.1} MB)  ratio {:.2}",
                format.name(),
                rate,
                sink.0.load(Ordering::Relaxed) as f64 / 1e6,
                copy_rate,
                bytes as f64 / 1e6,
                rate / copy_rate
            );
            results.push(json!({
                "round": round, "format": format.name(), "rows": n, "rows_per_s": rate,
                "bytes": sink.0.load(Ordering::Relaxed), "copy_csv_rows_per_s": copy_rate,
                "copy_csv_bytes": bytes, "ratio": rate / copy_rate,
            }));
        }
    }
    let mut memory = Vec::new();
    for format in ["csv", "parquet", "kml"] {
        let (mib, secs) = binary_peak_rss(&url, format, &start_s, &end_s);
        eprintln!(
            "replayer export --format {format}: {n} rows in {secs:.1} s, peak RSS {mib:.1} MiB"
        );
        memory.push(json!({"format": format, "rows": n, "seconds": secs, "peak_rss_mib": mib}));
    }
    let report = json!({"rows": n, "sensors": SENSORS, "formats": results, "memory": memory});
    let path = tspi_test_support::workspace_root().join("target/bench-export.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    eprintln!("report: {}", path.display());
}
