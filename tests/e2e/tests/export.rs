//! `replayer export` and the web display's "Export window" (issue 24), on an archive the
//! real programs filled (generator → producer → NATS → archiver → PostgreSQL):
//! 1. every format read back by a reader the kit did not write (Python's csv and json,
//!    xml.etree, pyarrow) equals the archive row for row, positions within 1 mm of the
//!    kit's WGS-84; the pcapng goes back in through `replayer pcap` as the same records;
//! 2. tag windows, sensor filters and the TSPI clock select exactly the right rows;
//!    bad input is one line, a non-zero exit and no file;
//! 3. the page's export downloads a file in headless Chromium that reads back the same.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;
mod range;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use range::{block, screenshot_path, Range, RangeOptions, ORIGIN};
use serde_json::Value;
use tspi_core::geo::{geodetic_to_ecef, LocalFrame};
use tspi_core::TelemetryRecord;
use tspi_display::Placement;
use tspi_export::{ExportRow, RowBuilder};
use tspi_test_support::{workspace_bin, workspace_root, NatsServer};

/// The archive as the test knows it: each telemetry row's sequence and its record, read
/// from the decoded JSON the archiver stored (not through the export's own CBOR path).
struct Archive {
    rows: Vec<(i64, TelemetryRecord)>,
    url: String,
}

fn builder() -> RowBuilder {
    let p: Vec<f64> = ORIGIN.split(',').map(|x| x.parse().unwrap()).collect();
    RowBuilder::new(Placement::new(
        LocalFrame::new(p[0], p[1], p[2]),
        Default::default(),
    ))
}

impl Archive {
    fn read(range: &Range) -> Archive {
        let (pg, db) = range.pg.as_ref().unwrap();
        let text = pg.psql(
            db,
            "SELECT json_agg(json_build_array(stream_seq, record) ORDER BY stream_ts, stream_seq)
             FROM messages WHERE kind = 'telemetry'",
        );
        let all: Vec<(i64, Value)> = serde_json::from_str(&text).unwrap();
        Archive {
            rows: all
                .into_iter()
                .map(|(seq, r)| (seq, serde_json::from_value(r).unwrap()))
                .collect(),
            url: pg.url(db),
        }
    }

    /// The kit's rows (its WGS-84, the range origin's east/north/up).
    fn expected(&self) -> Vec<ExportRow> {
        let b = builder();
        self.rows.iter().map(|(seq, r)| b.build(r, *seq)).collect()
    }

    fn window(&self) -> (String, String) {
        let first = self
            .rows
            .iter()
            .map(|(_, r)| r.recv_epoch_ms)
            .min()
            .unwrap();
        let last = self
            .rows
            .iter()
            .map(|(_, r)| r.recv_epoch_ms)
            .max()
            .unwrap();
        (iso(first - 1000), iso(last + 1000))
    }
}

fn iso(ms: i64) -> String {
    tspi_core::rfc3339::format_utc_millis(ms)
}

/// `replayer export ARGS`: (exit code, stdout, stderr).
fn export(archive: &Archive, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(workspace_bin("replayer"))
        .arg("export")
        .args(args)
        .args(["--database-url", &archive.url])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn export_ok(archive: &Archive, args: &[&str]) -> Value {
    let (code, out, err) = export(archive, args);
    assert_eq!(code, 0, "export {args:?}: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// What the reader the kit did not write sees in `file`.
fn read_back(format: &str, file: &Path) -> Value {
    let out = Command::new("python3")
        .env("PYTHONPATH", workspace_root().join(".tools/pyarrow"))
        .arg(workspace_root().join("tests/e2e/interop/export_read.py"))
        .arg(format)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{format} reader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Metres between two WGS-84 positions (through ECEF).
fn metres(a: [f64; 3], b: [f64; 3]) -> f64 {
    let (p, q) = (
        geodetic_to_ecef(a[0], a[1], a[2]),
        geodetic_to_ecef(b[0], b[1], b[2]),
    );
    ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2)).sqrt()
}

fn number(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        v => v.as_f64().unwrap(),
    }
}

/// A long-form row (CSV, JSON lines, Parquet) against the archive's.
fn check_row(
    got: &BTreeMap<String, Value>,
    want: &ExportRow,
    record: &TelemetryRecord,
    what: &str,
) {
    let field = |k: &str| got.get(k).unwrap_or_else(|| panic!("{what}: no {k}"));
    assert_eq!(
        number(field("stream_seq")) as i64,
        want.stream_seq,
        "{what}"
    );
    assert_eq!(
        number(field("sensor_id")) as u16,
        record.sensor_id,
        "{what}"
    );
    assert_eq!(number(field("day")) as u16, record.day, "{what}");
    assert_eq!(number(field("time_s")), record.time_s, "{what}");
    assert_eq!(number(field("status")) as u8, record.status, "{what}");
    let recv = field("recv_utc");
    let recv_us = match recv {
        Value::String(s) => tspi_core::rfc3339::parse_epoch_ms(s).unwrap() * 1000,
        v => v.as_i64().unwrap(),
    };
    assert_eq!(
        recv_us,
        record.recv_epoch_ms * 1000,
        "{what}: recv_utc {recv}"
    );
    let payload = serde_json::to_value(record.payload).unwrap();
    for (k, v) in payload.as_object().unwrap() {
        assert_eq!(number(field(k)), v.as_f64().unwrap(), "{what}: {k}");
    }
    let flags = serde_json::to_value(record.status_flags).unwrap();
    for (k, v) in flags.as_object().unwrap() {
        let got = match field(k) {
            Value::String(s) => s == "1",
            v => v.as_bool().unwrap(),
        };
        assert_eq!(got, v.as_bool().unwrap(), "{what}: {k}");
    }
    match want.position {
        Some(p) => {
            let at = [
                number(field("lat_deg")),
                number(field("lon_deg")),
                number(field("alt_m")),
            ];
            assert!(
                metres(at, [p.lat_deg, p.lon_deg, p.alt_m]) < 0.001,
                "{what}: {at:?} vs {p:?}"
            );
        }
        None => assert!(
            matches!(field("lat_deg"), Value::Null) || field("lat_deg") == "",
            "{what}"
        ),
    }
}

fn rows_of(doc: &Value) -> Vec<BTreeMap<String, Value>> {
    doc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::from_value(r.clone()).unwrap())
        .collect()
}

async fn filled_range() -> (Range, Archive, String) {
    let range = Range::start(RangeOptions {
        archive: true,
        alarm_rules: None,
        player_args: &[],
    })
    .await;
    // Six aircraft at 10 Hz for 8 s, half geocentric, half spherical (placed from the
    // origin), and a tag in the middle.
    let mut generator = range.generator("generator", 6, 10, "8s");
    generator.wait(Duration::from_secs(60)).await;
    let sent = generator.json_lines().last().unwrap()["valid"]
        .as_i64()
        .unwrap();
    let reached = tspi_test_support::wait_until(Duration::from_secs(60), || async {
        range.psql("SELECT count(*) FROM messages WHERE kind = 'telemetry'") == sent.to_string()
    })
    .await;
    assert!(reached.is_some(), "the archive did not get all {sent}");
    let archive = Archive::read(&range);
    let mid = archive.rows[archive.rows.len() / 2].1.recv_epoch_ms;
    range
        .console("tag", &["tag", "mid-run pass", "--at", &iso(mid)])
        .await;
    let tag_id = || range.psql("SELECT id FROM tags WHERE label = 'mid-run pass'");
    let archived =
        tspi_test_support::wait_until(Duration::from_secs(20), || async { !tag_id().is_empty() })
            .await;
    assert!(archived.is_some(), "the tag is not archived");
    let tag = tag_id();
    (range, archive, tag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_reads_back_as_the_archive() {
    let (range, archive, _tag) = filled_range().await;
    let dir = tempfile::tempdir().unwrap();
    let (start, end) = archive.window();
    let expected = archive.expected();
    let n = expected.len();
    let window = [
        "--start",
        start.as_str(),
        "--end",
        end.as_str(),
        "--origin",
        ORIGIN,
    ];
    let file = |name: &str| dir.path().join(name);
    let path = |p: &PathBuf| p.display().to_string();

    // Long forms: CSV (Python's csv), JSON lines (json), Parquet (pyarrow).
    for (format, name) in [
        ("csv", "w.csv"),
        ("jsonl", "w.jsonl"),
        ("parquet", "w.parquet"),
    ] {
        let f = file(name);
        let mut args = window.to_vec();
        let out = path(&f);
        args.extend(["-o", out.as_str()]);
        let summary = export_ok(&archive, &args);
        assert_eq!(summary["rows"], n, "{format}: {summary}");
        assert_eq!(summary["output"], out.as_str());
        let doc = read_back(format, &f);
        let rows = rows_of(&doc);
        assert_eq!(rows.len(), n, "{format}: row for row");
        for ((got, want), (_, record)) in rows.iter().zip(&expected).zip(&archive.rows) {
            check_row(got, want, record, format);
        }
        if format == "parquet" {
            let types: BTreeMap<String, String> = serde_json::from_value(Value::Object(
                doc["schema"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| (p[0].as_str().unwrap().to_owned(), p[1].clone()))
                    .collect(),
            ))
            .unwrap();
            assert_eq!(types["recv_utc"], "timestamp[us, tz=UTC]");
            assert_eq!(types["tspi_utc"], "timestamp[us, tz=UTC]");
            assert_eq!(types["lat_deg"], "double");
            assert_eq!(types["position_x_valid"], "bool");
            assert_eq!(types["sensor_id"], "uint16");
            assert_eq!(doc["metadata"]["tspi.clock"], "receive");
            assert!(doc["metadata"]["tspi.origin"]
                .as_str()
                .unwrap()
                .starts_with("34.9,"));
            assert!(doc["metadata"]["tspi.kit"]
                .as_str()
                .unwrap()
                .starts_with("tspi-stream-kit"));
            // TSPI time as UTC, to the 0.1 ms tick.
            for (got, want) in rows.iter().zip(&expected) {
                assert_eq!(got["tspi_utc"].as_i64().unwrap(), want.tspi_us);
            }
        }
        if format == "csv" {
            assert!(doc["columns"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "east_m"));
        }
    }

    // Per track: KML (xml.etree), CZML and GeoJSON (json), within 1 mm of the kit.
    let mut by_sensor: BTreeMap<u16, Vec<&ExportRow>> = BTreeMap::new();
    for r in &expected {
        by_sensor.entry(r.sensor_id).or_default().push(r);
    }
    for format in ["kml", "czml", "geojson"] {
        let f = file(&format!("w.{format}"));
        let mut args = window.to_vec();
        let out = path(&f);
        args.extend(["-o", out.as_str()]);
        let summary = export_ok(&archive, &args);
        assert_eq!(summary["rows"], n, "{format}: {summary}");
        assert_eq!(summary["tags"], 1, "{format}: the tag");
        let doc = read_back(format, &f);
        let mut seen = 0;
        for (sensor, rows) in &by_sensor {
            let (times, coords): (Vec<i64>, Vec<[f64; 3]>) = match format {
                "kml" => {
                    let t = doc["tracks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|t| t["name"].as_str() == Some(sensor.to_string().as_str()))
                        .unwrap_or_else(|| panic!("kml: no track {sensor}"));
                    (
                        t["when"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|w| {
                                tspi_core::rfc3339::parse_epoch_ms(w.as_str().unwrap()).unwrap()
                            })
                            .collect(),
                        t["coord"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|c| [number(&c[1]), number(&c[0]), number(&c[2])])
                            .collect(),
                    )
                }
                "czml" => {
                    let p = doc
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|p| p["id"] == format!("sensor-{sensor}"))
                        .unwrap_or_else(|| panic!("czml: no packet {sensor}"));
                    let epoch = tspi_core::rfc3339::parse_epoch_ms(
                        p["position"]["epoch"].as_str().unwrap(),
                    )
                    .unwrap();
                    let s = p["position"]["cartesian"].as_array().unwrap();
                    s.chunks(4)
                        .map(|c| {
                            let g = tspi_core::geo::ecef_to_geodetic(
                                number(&c[1]),
                                number(&c[2]),
                                number(&c[3]),
                            )
                            .unwrap();
                            (
                                epoch + (number(&c[0]) * 1000.0).round() as i64,
                                [g.lat_deg, g.lon_deg, g.alt_m],
                            )
                        })
                        .unzip()
                }
                _ => {
                    let f = doc["features"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|f| f["id"] == format!("sensor-{sensor}"))
                        .unwrap_or_else(|| panic!("geojson: no feature {sensor}"));
                    (
                        f["properties"]["times"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|w| {
                                tspi_core::rfc3339::parse_epoch_ms(w.as_str().unwrap()).unwrap()
                            })
                            .collect(),
                        f["geometry"]["coordinates"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|c| [number(&c[1]), number(&c[0]), number(&c[2])])
                            .collect(),
                    )
                }
            };
            assert_eq!(coords.len(), rows.len(), "{format}: sensor {sensor}");
            for ((t, c), want) in times.iter().zip(&coords).zip(rows) {
                let p = want.position.unwrap();
                assert_eq!(*t * 1000, want.recv_us, "{format}: time");
                let off = metres(*c, [p.lat_deg, p.lon_deg, p.alt_m]);
                assert!(off < 0.001, "{format}: sensor {sensor} {off} m off");
            }
            seen += rows.len();
        }
        assert_eq!(seen, n);
    }

    // The wide CSV: a row per 100 ms step, a group of columns per sensor.
    let wide = file("wide.csv");
    let mut args = window.to_vec();
    let out = path(&wide);
    args.extend(["-o", out.as_str(), "--format", "csv-wide", "--step", "1s"]);
    let summary = export_ok(&archive, &args);
    assert_eq!(summary["skipped"], 0);
    let doc = read_back("csv", &wide);
    let columns = doc["columns"].as_array().unwrap();
    for s in by_sensor.keys() {
        assert!(columns.iter().any(|c| c == &format!("{s}_lat_deg")), "{s}");
    }
    let rows = rows_of(&doc);
    // Each step shows each sensor's latest record of that second.
    for row in &rows {
        let step =
            tspi_core::rfc3339::parse_epoch_ms(row["time_utc"].as_str().unwrap()).unwrap() * 1000;
        for (s, track) in &by_sensor {
            let latest = track
                .iter()
                .filter(|r| r.recv_us >= step && r.recv_us < step + 1_000_000)
                .max_by_key(|r| r.recv_us);
            let cell = row[&format!("{s}_lat_deg")].as_str().unwrap();
            match latest {
                Some(r) => assert_eq!(cell.parse::<f64>().unwrap(), r.position.unwrap().lat_deg),
                None => assert_eq!(cell, ""),
            }
        }
    }

    // pcapng: `replayer pcap` takes the datagrams back into another stream as the same
    // records.
    let pcap = file("w.pcapng");
    let mut args = window.to_vec();
    let out = path(&pcap);
    args.extend(["-o", out.as_str()]);
    export_ok(&archive, &args);
    let other = NatsServer::start().await;
    let replay = Command::new(workspace_bin("replayer"))
        .args([
            "pcap",
            &out,
            "--jetstream",
            "--as-fast-as-possible",
            "--nats-server",
            &other.url(),
        ])
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let client = async_nats::connect(other.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let consumer = js
        .get_stream("TSPI")
        .await
        .unwrap()
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut msgs = consumer.messages().await.unwrap();
    let mut again = Vec::new();
    while again.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(10), msgs.next())
            .await
            .expect("the re-ingested records")
            .unwrap()
            .unwrap();
        again.push(TelemetryRecord::from_cbor(&m.payload).unwrap());
    }
    let original: Vec<&TelemetryRecord> = archive.rows.iter().map(|(_, r)| r).collect();
    assert_eq!(
        again.iter().collect::<Vec<_>>(),
        original,
        "pcap round trip"
    );
    eprintln!("{n} rows: csv, jsonl, parquet, kml, czml, geojson, csv-wide and pcapng read back as archived");
    drop(range);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_filters_and_bad_input() {
    let (range, archive, tag) = filled_range().await;
    let dir = tempfile::tempdir().unwrap();
    let seqs = |file: &Path| -> BTreeSet<i64> {
        rows_of(&read_back("csv", file))
            .iter()
            .map(|r| number(&r["stream_seq"]) as i64)
            .collect()
    };
    let (start, end) = archive.window();

    // Two sensors of six: exactly their rows.
    let sensors: Vec<u16> = archive
        .rows
        .iter()
        .map(|(_, r)| r.sensor_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .take(2)
        .collect();
    let f = dir.path().join("two.csv");
    let (a, b) = (sensors[0].to_string(), sensors[1].to_string());
    export_ok(
        &archive,
        &[
            "--start",
            &start,
            "--end",
            &end,
            "--sensor",
            &a,
            "--sensor",
            &b,
            "-o",
            &f.display().to_string(),
        ],
    );
    let want: BTreeSet<i64> = archive
        .rows
        .iter()
        .filter(|(_, r)| sensors.contains(&r.sensor_id))
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(seqs(&f), want, "sensor filter");

    // Around the tag: receive times in [moment - 1.5 s, moment + 2 s).
    let moment = tspi_core::rfc3339::parse_epoch_ms(&range.psql(&format!(
        "SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM tags WHERE id = '{tag}'"
    )))
    .unwrap();
    let f = dir.path().join("tag.csv");
    export_ok(
        &archive,
        &[
            "--tag",
            &tag,
            "--before",
            "1500ms",
            "--after",
            "2s",
            "-o",
            &f.display().to_string(),
        ],
    );
    let want: BTreeSet<i64> = archive
        .rows
        .iter()
        .filter(|(_, r)| (moment - 1500..moment + 2000).contains(&r.recv_epoch_ms))
        .map(|(s, _)| *s)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(seqs(&f), want, "tag window");

    // On the TSPI clock: the rows whose TSPI time is in the window.
    let b = builder();
    let mid = archive.rows[archive.rows.len() / 3].1.clone();
    let t0 = b.build(&mid, 0).tspi_us / 1000;
    let f = dir.path().join("tspi.csv");
    export_ok(
        &archive,
        &[
            "--start",
            &iso(t0),
            "--end",
            &iso(t0 + 2000),
            "--clock",
            "tspi",
            "-o",
            &f.display().to_string(),
        ],
    );
    let want: BTreeSet<i64> = archive
        .rows
        .iter()
        .filter(|(s, r)| (t0 * 1000..(t0 + 2000) * 1000).contains(&b.build(r, *s).tspi_us))
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(seqs(&f), want, "TSPI clock window");

    // Bad input: one line, non-zero, no file and no partial file.
    let bad = |args: &[&str], says: &str| {
        let target = dir.path().join("bad.csv");
        let mut all = args.to_vec();
        let out = target.display().to_string();
        all.extend(["-o", out.as_str()]);
        let (code, _, err) = export(&archive, &all);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".bad") || n == "bad.csv")
            .collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    };
    bad(
        &[
            "--start",
            "2001-01-01T00:00:00Z",
            "--end",
            "2001-01-01T00:01:00Z",
        ],
        "no telemetry in the window",
    );
    bad(
        &[
            "--start",
            "2001-01-01T00:00:00Z",
            "--end",
            "2001-01-01T00:01:00Z",
        ],
        "the archive holds TSPI telemetry from",
    );
    bad(
        &["--start", &start, "--end", &end, "--sensor", "4242"],
        "sensor 4242 has no telemetry in the window",
    );
    bad(&["--tag", "no-such-tag"], "no tag with id");
    bad(
        &["--start", &end, "--end", &start],
        "the window ends before it starts",
    );
    let (code, _, err) = export(
        &archive,
        &[
            "--start",
            &start,
            "--end",
            &end,
            "-o",
            "/nonexistent-dir/x.csv",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("cannot write /nonexistent-dir/x.csv"), "{err}");
    let (code, _, err) = export(
        &archive,
        &["--start", &start, "--end", &end, "-o", "x.unknown"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("give --format"), "{err}");
    // To standard output, closed early: exit 0, nothing to clean up.
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} export --start {start} --end {end} --format jsonl -o - --database-url '{}' | head -n 3",
            workspace_bin("replayer").display(),
            archive.url
        ))
        .output()
        .unwrap();
    assert!(child.status.success());
    assert_eq!(String::from_utf8_lossy(&child.stdout).lines().count(), 3);
    drop(range);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_downloads_the_chosen_window() {
    let (range, archive, _tag) = filled_range().await;
    let (start, end) = archive.window();
    let tab = block(|| range.tab("?view=map"));
    let state =
        block(|| tab.wait(&format!("tspiDisplay.selectRange('{start}', '{end}')"))).unwrap();
    assert_eq!(state["selection"]["start"], start.as_str());
    block(|| tab.screenshot(&screenshot_path("export-selection.png")));
    // An unknown sensor is said in a line; nothing downloads.
    let refused =
        block(|| tab.wait("tspiDisplay.exportWindow('csv', {sensors: [4242]})")).unwrap_err();
    assert!(
        refused.contains("sensor 4242 has no telemetry"),
        "{refused}"
    );
    let url = block(|| tab.wait("tspiDisplay.exportWindow('parquet')")).unwrap();
    assert!(url.as_str().unwrap().starts_with("/export?"), "{url}");
    let file = block(|| tab.downloaded(Duration::from_secs(60))).expect("a download");
    assert!(
        file.extension().is_some_and(|e| e == "parquet"),
        "{}",
        file.display()
    );
    let doc = read_back("parquet", &file);
    let rows = rows_of(&doc);
    let expected = archive.expected();
    assert_eq!(rows.len(), expected.len());
    for ((got, want), (_, record)) in rows.iter().zip(&expected).zip(&archive.rows) {
        check_row(got, want, record, "web parquet");
    }
    // The display's own origin went with the request: east/north/up columns.
    assert!(doc["schema"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c[0] == "east_m"));
    eprintln!(
        "the page downloaded {} ({} rows)",
        file.display(),
        rows.len()
    );
    drop(range);
}
