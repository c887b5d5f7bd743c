//! Replay pacing accuracy: how far each message's arrival at a subscriber is from its
//! original gap (divided by the speed), at 1x and 10x, over a 10 s window of 25,000
//! archived messages (50 sensors at 50 Hz, jittered). Baseline in the same run: the plain
//! NATS publish → receive latency on the same connection pair. Not a test: a report.
//!
//! `cargo bench -p tspi-replayer --bench pacing`. Writes `target/bench-pacing.json`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic is the failure report

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tspi_core::{Datagram, GeocentricRaw, Payload, TelemetryRecord};
use tspi_replayer::session::{Clock, ReplayContext, SessionSpec};
use tspi_store::{JsonText, MessageKind, MessageRow, RowDetail};
use tspi_test_support::{NatsServer, PgServer};

const SENSORS: u16 = 50;
const RATE_HZ: u32 = 50;
const SECONDS: u32 = 10;

/// The archive: rows with µs receive times; returns seq → original µs.
fn rows(t0: OffsetDateTime) -> (Vec<MessageRow>, HashMap<i64, i64>) {
    let mut state = 0x9e37_79b9u32;
    let mut jitter = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        i64::from(state % 400) - 200 // ±200 µs
    };
    let mut raw = Vec::new();
    for frame in 0..RATE_HZ * SECONDS {
        for s in 0..SENSORS {
            let us = i64::from(frame) * 20_000 + i64::from(s) * 400 + jitter();
            raw.push((us.max(0), s, frame));
        }
    }
    raw.sort();
    let mut out = Vec::new();
    let mut original = HashMap::new();
    for (i, (us, sensor, frame)) in raw.into_iter().enumerate() {
        let seq = i as i64 + 1;
        let recv = t0 + time::Duration::microseconds(us);
        let d = Datagram {
            sensor_id: sensor,
            day: 300,
            time_ticks: frame * 200,
            status: 0xFF,
            status_flags: 0,
            payload: Payload::Geocentric(GeocentricRaw::default()),
        };
        let rec =
            TelemetryRecord::from_datagram(&d, (recv.unix_timestamp_nanos() / 1_000_000) as i64);
        let mut json = Vec::new();
        rec.write_json(&mut json);
        out.push(MessageRow {
            stream: "TSPI".into(),
            stream_seq: seq,
            stream_ts: recv + time::Duration::milliseconds(1),
            subject: format!("tspi.geocentric.{sensor}"),
            kind: MessageKind::Telemetry,
            msg_id: Some(tspi_core::msg_id(&d)),
            recv_ts: Some(recv),
            sensor_id: Some(i32::from(sensor)),
            day: Some(300),
            time_s: Some(rec.time_s),
            record: Some(JsonText(json)),
            raw: Bytes::from(rec.to_cbor()),
            error: None,
            detail: RowDetail::None,
        });
        original.insert(seq, us);
    }
    (out, original)
}

struct Run {
    speed: f64,
    gap: Histogram<u64>,
    wanted_s: f64,
    error: Histogram<u64>,
    internal: tspi_replayer::session::PacingReport,
    played_s: f64,
}

async fn run(
    ctx: &ReplayContext,
    original: &HashMap<i64, i64>,
    t0: OffsetDateTime,
    speed: f64,
    room: &str,
) -> Run {
    let mut sub = ctx
        .client
        .subscribe(format!("player.{room}.playout.>"))
        .await
        .unwrap();
    ctx.client.flush().await.unwrap();
    let expected = original.len();
    let collector = tokio::spawn(async move {
        let mut got = Vec::with_capacity(expected);
        while got.len() < expected {
            let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(30), sub.next()).await
            else {
                break;
            };
            // Segment markers carry no original message.
            let Some(seq) = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Tspi-Original-Seq"))
                .and_then(|v| v.as_str().parse::<i64>().ok())
            else {
                continue;
            };
            got.push((Instant::now(), seq));
        }
        got
    });
    let summary = tspi_replayer::play(
        ctx.clone(),
        SessionSpec {
            room: room.into(),
            stream: "TSPI".into(),
            start: t0,
            end: t0 + time::Duration::seconds(i64::from(SECONDS) + 1),
            speed,
            clock: Clock::Receive,
            paused: false,
            segment: None,
            snapshot: None,
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let got = collector.await.unwrap();
    assert_eq!(got.len(), expected, "every message played");
    // Two views of the error, both in µs: each gap between consecutive arrivals against
    // its original gap / speed, and each arrival against the original schedule (aligned on
    // the median offset, so a constant delivery latency is not counted but drift is).
    let mut gap = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for w in got.windows(2) {
        let actual = w[1].0.duration_since(w[0].0).as_secs_f64() * 1e6;
        let wanted = (original[&w[1].1] - original[&w[0].1]) as f64 / speed;
        gap.record((actual - wanted).abs().max(1.0) as u64).unwrap();
    }
    let (a0, s0) = got[0];
    let o0 = original[&s0];
    let offsets: Vec<f64> = got
        .iter()
        .map(|(at, seq)| {
            at.duration_since(a0).as_secs_f64() * 1e6 - (original[seq] - o0) as f64 / speed
        })
        .collect();
    let mut sorted = offsets.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let mut error = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for o in offsets {
        error.record((o - median).abs().max(1.0) as u64).unwrap();
    }
    let wanted_s =
        (original.values().max().unwrap() - original.values().min().unwrap()) as f64 / 1e6 / speed;
    let played_s = got.last().unwrap().0.duration_since(a0).as_secs_f64();
    Run {
        speed,
        gap,
        error,
        internal: summary.pacing_error,
        played_s,
        wanted_s,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let nats = NatsServer::start().await;
    let pg = PgServer::start_primary();
    let db = pg.create_database("pacing");
    let pool = tspi_store::pool(&pg.url(&db), 4).unwrap();
    tspi_store::migrate(&mut pool.get().await.unwrap(), &Default::default())
        .await
        .unwrap();
    let t0 = OffsetDateTime::from_unix_timestamp(1_759_057_200).unwrap();
    let (archive, original) = rows(t0);
    for chunk in archive.chunks(5000) {
        tspi_store::write_batch(&mut pool.get().await.unwrap(), chunk)
            .await
            .unwrap();
    }
    let client = async_nats::connect(nats.url()).await.unwrap();

    // Baseline: publish → receive on the same server, 5,000 messages at ~2.5 kHz.
    let listener = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = listener.subscribe("bench.rtt").await.unwrap();
    listener.flush().await.unwrap();
    let mut baseline = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for _ in 0..5000 {
        let sent = Instant::now();
        client
            .publish("bench.rtt", Bytes::from_static(b"x"))
            .await
            .unwrap();
        sub.next().await.unwrap();
        baseline
            .record(sent.elapsed().as_micros().max(1) as u64)
            .unwrap();
        tokio::time::sleep(Duration::from_micros(400)).await;
    }

    let ctx = ReplayContext {
        handle: tokio::runtime::Handle::current(),
        pool,
        client,
    };
    let mut runs = Vec::new();
    for (speed, room) in [(1.0, "x1"), (10.0, "x10")] {
        runs.push(run(&ctx, &original, t0, speed, room).await);
    }
    println!(
        "baseline NATS publish→receive: p50 {} µs, p99 {} µs",
        baseline.value_at_quantile(0.5),
        baseline.value_at_quantile(0.99)
    );
    let mut json = serde_json::json!({
        "messages": original.len(),
        "baseline_p50_us": baseline.value_at_quantile(0.5),
        "baseline_p99_us": baseline.value_at_quantile(0.99),
    });
    for r in &runs {
        println!(
            "{}x: gap error p50 {} µs, p99 {} µs (p99/baseline p99 {:.2}); schedule error p50 {} µs, p99 {} µs, max {} µs; \
             first→last {:.4} s for {:.4} s original/speed ({:+.3} %); replayer due→publish p50 {} µs, p99 {} µs",
            r.speed,
            r.gap.value_at_quantile(0.5),
            r.gap.value_at_quantile(0.99),
            r.gap.value_at_quantile(0.99) as f64 / baseline.value_at_quantile(0.99) as f64,
            r.error.value_at_quantile(0.5),
            r.error.value_at_quantile(0.99),
            r.error.max(),
            r.played_s,
            r.wanted_s,
            (r.played_s / r.wanted_s - 1.0) * 100.0,
            r.internal.p50_us,
            r.internal.p99_us,
        );
        json[format!("x{}", r.speed)] = serde_json::json!({
            "gap_p50_us": r.gap.value_at_quantile(0.5),
            "gap_p99_us": r.gap.value_at_quantile(0.99),
            "schedule_p50_us": r.error.value_at_quantile(0.5),
            "schedule_p99_us": r.error.value_at_quantile(0.99),
            "schedule_max_us": r.error.max(),
            "played_s": r.played_s,
            "wanted_s": r.wanted_s,
            "internal_p50_us": r.internal.p50_us,
            "internal_p99_us": r.internal.p99_us,
        });
    }
    let out = tspi_test_support::workspace_root().join("target/bench-pacing.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    eprintln!("wrote {}", out.display());
}
