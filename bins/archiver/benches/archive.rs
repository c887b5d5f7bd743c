//! Archiver throughput against the bare-`COPY` ceiling measured in the same run, and
//! archive lag (stream time → commit) at a steady 10,000 msg/s; the same throughput on a
//! TimescaleDB hypertable where the machine has it, and bytes per row (compressed there).
//! Not a test: a report.
//!
//! `cargo bench -p tspi-archiver --bench archive` (`TSPI_BENCH_QUICK=1` for a smoke run).
//! Writes `target/bench-archive.json`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic is the failure report

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tspi_archiver::{ArchiverMetrics, ArchiverOptions};
use tspi_bus::{ensure_stream, StreamArgs, StreamSpec};
use tspi_core::{Datagram, GeocentricRaw, Payload, StreamPrefix, TelemetryRecord};
use tspi_store::{
    copy_messages, JsonText, MessageKind, MessageRow, RowDetail, SchemaOptions, TimescaleMode,
};
use tspi_test_support::{NatsServer, PgServer};

fn quick() -> bool {
    std::env::var_os("TSPI_BENCH_QUICK").is_some()
}

/// The archiver's defaults; `TSPI_BENCH_WRITERS` / `TSPI_BENCH_BATCH` to explore.
fn options() -> ArchiverOptions {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
    let d = ArchiverOptions::default();
    ArchiverOptions {
        writers: env("TSPI_BENCH_WRITERS").unwrap_or(d.writers),
        batch_max: env("TSPI_BENCH_BATCH").unwrap_or(d.batch_max),
        ..d
    }
}

fn message(i: u64, day: u16) -> (String, String, Bytes) {
    let d = Datagram {
        sensor_id: (i % 500) as u16,
        day,
        time_ticks: (i / 500) as u32 * 200,
        status: 0xFF,
        status_flags: 1,
        payload: Payload::Geocentric(GeocentricRaw {
            x: -245_906_456 + i as i32,
            y: -463_541_412,
            z: 362_267_115,
            vx: 11_471,
            vy: 9_427,
            vz: 19_631,
            ax: -641,
            ay: 461,
            az: 154,
        }),
    };
    let rec = TelemetryRecord::from_datagram(&d, tspi_runtime::now_epoch_ms());
    (
        StreamPrefix::default().subject(d.kind(), d.sensor_id),
        tspi_core::msg_id(&d),
        rec.to_cbor().into(),
    )
}

/// Publish `n` messages as fast as acks allow (window of 2048), or at `rate` per second.
async fn publish(js: &jetstream::Context, from: u64, n: u64, day: u16, rate: Option<f64>) {
    let start = Instant::now();
    let mut acks = std::collections::VecDeque::new();
    for i in from..from + n {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64((i - from) as f64 / rate);
            if due > Instant::now() + Duration::from_millis(1) {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let (subject, id, payload) = message(i, day);
        let m = PublishMessage::build().payload(payload).message_id(id);
        acks.push_back(js.send_publish(subject, m).await.unwrap());
        if acks.len() >= 2048 {
            acks.pop_front().unwrap().await.unwrap();
        }
    }
    for a in acks {
        a.await.unwrap();
    }
}

async fn migrated(
    pg: &PgServer,
    name: &str,
    schema: &SchemaOptions,
) -> (String, deadpool_postgres::Pool) {
    let db = pg.create_database(name);
    let pool = tspi_store::pool(&pg.url(&db), options().writers + 1).unwrap();
    tspi_store::migrate(&mut pool.get().await.unwrap(), schema)
        .await
        .unwrap();
    (db, pool)
}

/// Best rows/s of each round kind.
#[derive(Debug, Clone, Copy, Default)]
struct Best {
    archiver: f64,
    /// Bare COPY in archiver-sized transactions.
    copy: f64,
    /// Bare COPY in one transaction.
    copy_one: f64,
    /// The unavoidable work together: bare COPY in archiver-sized transactions while a
    /// bare consumer pulls and acknowledges every message of the stream, concurrently.
    copy_with_bus: f64,
}

/// The best of two alternating rounds of archiver, bare COPY and bare COPY beside the
/// bus work into the same kind of database, and the last round's archiver database.
async fn rounds(
    pg: &PgServer,
    schema: &SchemaOptions,
    label: &str,
    js: &jetstream::Context,
    n: u64,
) -> (Best, deadpool_postgres::Pool) {
    let mut best = Best::default();
    let mut last = None;
    for round in 0..2 {
        let (_, pool) = migrated(pg, &format!("arch_{label}{round}"), schema).await;
        let a = archiver_run(js, &pool, &format!("bench_{label}{round}"), n).await;
        let rows = archived_rows(&pool).await;
        assert_eq!(rows.len() as u64, n);
        let (_, copy_pool) = migrated(pg, &format!("copy_{label}{round}"), schema).await;
        let c = copy_ceiling(&copy_pool, &rows, options().batch_max).await;
        let c1 = copy_ceiling(&copy_pool, &rows, rows.len()).await;
        let cb = copy_beside_bus(
            &copy_pool,
            &rows,
            options().batch_max,
            js,
            &format!("bare_{label}{round}"),
        )
        .await;
        eprintln!("{label} round {round}: archiver {a:.0} rows/s; bare COPY {c:.0} rows/s in archiver-sized transactions, {c1:.0} rows/s in one, {cb:.0} rows/s beside a bare consumer's pull and acks");
        best = Best {
            archiver: best.archiver.max(a),
            copy: best.copy.max(c),
            copy_one: best.copy_one.max(c1),
            copy_with_bus: best.copy_with_bus.max(cb),
        };
        last = Some(pool);
    }
    (best, last.unwrap())
}

/// Bytes per row of `messages` (table, indexes and TOAST): as written, and on
/// TimescaleDB after compressing every chunk.
async fn bytes_per_row(
    pool: &deadpool_postgres::Pool,
    n: u64,
    timescale: bool,
) -> (f64, Option<f64>) {
    let client = pool.get().await.unwrap();
    client
        .batch_execute("VACUUM ANALYZE messages")
        .await
        .unwrap();
    let total: i64 = if timescale {
        client
            .query_one(
                "SELECT sum(total_bytes)::int8 FROM chunks_detailed_size('messages')",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    } else {
        client
            .query_one("SELECT pg_total_relation_size('messages')", &[])
            .await
            .unwrap()
            .get(0)
    };
    if !timescale {
        return (total as f64 / n as f64, None);
    }
    client
        .batch_execute("SELECT count(compress_chunk(c)) FROM show_chunks('messages') c")
        .await
        .unwrap();
    let compressed: i64 = client
        .query_one(
            "SELECT sum(after_compression_total_bytes)::int8 FROM chunk_compression_stats('messages')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (total as f64 / n as f64, Some(compressed as f64 / n as f64))
}

/// Archive everything in the stream with a fresh durable; rows/s from first to last row.
async fn archiver_run(
    js: &jetstream::Context,
    pool: &deadpool_postgres::Pool,
    durable: &str,
    n: u64,
) -> f64 {
    let metrics = ArchiverMetrics::new(&mut Registry::default());
    let stop = CancellationToken::new();
    let options = ArchiverOptions {
        durable: durable.into(),
        ..options()
    };
    let started = Instant::now();
    let task = tokio::spawn(tspi_archiver::run(
        options,
        js.clone(),
        pool.clone(),
        metrics.clone(),
        stop.clone(),
    ));
    while metrics.rows_written.get() < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "archiver stalled"
        );
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    task.await.unwrap().unwrap();
    rate
}

/// The archived rows, read back, to COPY again: the very same rows the archiver wrote.
async fn archived_rows(pool: &deadpool_postgres::Pool) -> Vec<MessageRow> {
    let client = pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT stream, stream_seq, stream_ts, subject, msg_id, recv_ts, sensor_id, day, time_s,
                    record::text, raw FROM messages ORDER BY stream_seq",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| MessageRow {
            stream: r.get(0),
            stream_seq: r.get(1),
            stream_ts: r.get(2),
            subject: r.get(3),
            kind: MessageKind::Telemetry,
            msg_id: r.get(4),
            recv_ts: r.get(5),
            sensor_id: r.get(6),
            day: r.get(7),
            time_s: r.get(8),
            record: r
                .get::<_, Option<String>>(9)
                .map(|s| JsonText(s.into_bytes())),
            raw: Bytes::from(r.get::<_, Vec<u8>>(10)),
            error: None,
            detail: RowDetail::None,
        })
        .collect()
}

/// Bare COPY of `rows` into an empty `messages`, in `batch`-row transactions.
async fn copy_ceiling(pool: &deadpool_postgres::Pool, rows: &[MessageRow], batch: usize) -> f64 {
    let mut client = pool.get().await.unwrap();
    client.batch_execute("TRUNCATE messages").await.unwrap();
    let started = Instant::now();
    for chunk in rows.chunks(batch) {
        let tx = client.transaction().await.unwrap();
        copy_messages(&tx, "messages", chunk).await.unwrap();
        tx.commit().await.unwrap();
    }
    rows.len() as f64 / started.elapsed().as_secs_f64()
}

/// A pull durable on `TSPI` acknowledged message by message (as the archiver's), or with
/// `ack_policy` given.
async fn durable_on_tspi(
    js: &jetstream::Context,
    durable: &str,
    deliver_policy: jetstream::consumer::DeliverPolicy,
    ack_policy: jetstream::consumer::AckPolicy,
) -> jetstream::consumer::Consumer<jetstream::consumer::pull::Config> {
    js.get_stream("TSPI")
        .await
        .unwrap()
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some(durable.into()),
            deliver_policy,
            ack_policy,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await
        .unwrap()
}

/// The bus half of the archiver's work with nothing of its own: a fresh durable pulled to
/// the end, every message acknowledged one by one (as the archiver does), nothing
/// decoded or kept. Returns when all `n` are acknowledged.
async fn bare_consume(js: &jetstream::Context, durable: &str, n: u64, batch: usize) {
    // TSPI_BENCH_BARE_ACKS=none: the bare consumer acknowledges nothing (AckNone), to
    // split the bus's cost between delivering and per-message acks.
    let acks = std::env::var("TSPI_BENCH_BARE_ACKS").map_or(true, |v| v != "none");
    let policy = if acks {
        jetstream::consumer::AckPolicy::Explicit
    } else {
        jetstream::consumer::AckPolicy::None
    };
    let consumer =
        durable_on_tspi(js, durable, jetstream::consumer::DeliverPolicy::All, policy).await;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(batch.clamp(100, 10_000))
        .messages()
        .await
        .unwrap();
    let mut acked = 0u64;
    while acked < n {
        let msg = futures::StreamExt::next(&mut messages)
            .await
            .unwrap()
            .unwrap();
        if acks {
            msg.ack().await.unwrap();
        }
        acked += 1;
    }
}

/// Bare COPY of `rows` ([`copy_ceiling`]) while [`bare_consume`] runs on the same
/// machine: rows/s over the time both take.
async fn copy_beside_bus(
    pool: &deadpool_postgres::Pool,
    rows: &[MessageRow],
    batch: usize,
    js: &jetstream::Context,
    durable: &str,
) -> f64 {
    let started = Instant::now();
    let consume = bare_consume(js, durable, rows.len() as u64, batch);
    let copy = copy_ceiling(pool, rows, batch);
    tokio::join!(consume, copy);
    rows.len() as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists; nothing to list here
    }
    let n: u64 = if quick() { 20_000 } else { 200_000 };
    let nats = NatsServer::start().await;
    let pg = PgServer::start_primary();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let args = StreamArgs {
        max_age: Duration::ZERO,
        ..Default::default()
    };
    let spec = StreamSpec::tspi(&args, &StreamPrefix::default()).unwrap();
    ensure_stream(&client, &js, &spec).await.unwrap();

    eprintln!("filling the stream with {n} telemetry messages…");
    publish(&js, 0, n, 100, None).await;

    // Alternate archiver and ceiling twice; keep each one's best (noise only slows).
    let plain = SchemaOptions::default();
    let (plain_best, plain_pool) = rounds(&pg, &plain, "pg", &js, n).await;
    let Best {
        archiver: archiver_best,
        copy: ceiling_best,
        copy_one: ceiling_one_tx_best,
        copy_with_bus: floor_best,
    } = plain_best;
    let (plain_bytes, _) = bytes_per_row(&plain_pool, n, false).await;

    // The same on TimescaleDB (a hypertable with compression configured), where this
    // machine has it.
    let tsdb = PgServer::start_timescaledb("archive bench on TimescaleDB");
    let timescale = match &tsdb {
        Some(tsdb) => {
            let schema = SchemaOptions {
                timescale: TimescaleMode::Require,
                compress_after: Some(Duration::from_secs(7 * 86_400)),
                ..Default::default()
            };
            let (best, pool) = rounds(tsdb, &schema, "tsdb", &js, n).await;
            let (raw, compressed) = bytes_per_row(&pool, n, true).await;
            Some((best, raw, compressed.unwrap_or(f64::NAN)))
        }
        None => None,
    };

    // Archive lag at a steady 10,000 msg/s.
    let rate = 10_000.0;
    let seconds = if quick() { 3 } else { 10 };
    let (_, pool) = migrated(&pg, "lag", &plain).await;
    let metrics = ArchiverMetrics::new(&mut Registry::default());
    let stop = CancellationToken::new();
    // A durable that starts at the end: only the paced messages count.
    durable_on_tspi(
        &js,
        "lag",
        jetstream::consumer::DeliverPolicy::New,
        jetstream::consumer::AckPolicy::Explicit,
    )
    .await;
    let options = ArchiverOptions {
        durable: "lag".into(),
        ..options()
    };
    let task = tokio::spawn(tspi_archiver::run(
        options,
        js.clone(),
        pool.clone(),
        metrics.clone(),
        stop.clone(),
    ));
    let total = (rate * seconds as f64) as u64;
    publish(&js, n, total, 101, Some(rate)).await;
    while metrics.rows_written.get() < total {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    let lag = metrics.lag_detail.lock().unwrap().clone();
    let (p50, p99, max) = (
        lag.value_at_quantile(0.5),
        lag.value_at_quantile(0.99),
        lag.max(),
    );

    let ratio = archiver_best / ceiling_best;
    let ratio_one = archiver_best / ceiling_one_tx_best;
    let ratio_floor = archiver_best / floor_best;
    println!("archiver: {archiver_best:.0} rows/s (best of 2, {n} rows)");
    println!("bare COPY, archiver-sized transactions: {ceiling_best:.0} rows/s → archiver/ceiling {ratio:.2}");
    println!("bare COPY, one transaction: {ceiling_one_tx_best:.0} rows/s → archiver/ceiling {ratio_one:.2}");
    println!("bare COPY beside a bare consumer's pull and acks: {floor_best:.0} rows/s → archiver/floor {ratio_floor:.2}");
    println!("bytes per telemetry row on plain PostgreSQL: {plain_bytes:.0}");
    if let Some((b, raw, compressed)) = timescale {
        let (a, c, c1, cb) = (b.archiver, b.copy, b.copy_one, b.copy_with_bus);
        println!(
            "TimescaleDB: archiver {a:.0} rows/s; bare COPY into the hypertable {c:.0} rows/s in archiver-sized transactions → {:.2}, {c1:.0} in one → {:.2}, {cb:.0} beside a bare consumer → {:.2}",
            a / c,
            a / c1,
            a / cb
        );
        println!(
            "TimescaleDB bytes per telemetry row: {raw:.0} uncompressed, {compressed:.0} compressed ({:.1}x)",
            raw / compressed
        );
    } else {
        println!("TimescaleDB: not on this machine, skipped");
    }
    println!(
        "archive lag at {rate:.0} msg/s for {seconds} s ({} rows): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lag.len(),
        p50 as f64 / 1e3,
        p99 as f64 / 1e3,
        max as f64 / 1e3
    );
    let json = serde_json::json!({
        "rows": n,
        "archiver_rows_per_s": archiver_best,
        "copy_ceiling_rows_per_s": ceiling_best,
        "copy_one_tx_rows_per_s": ceiling_one_tx_best,
        "archiver_over_ceiling": ratio,
        "archiver_over_one_tx_ceiling": ratio_one,
        "copy_beside_bus_rows_per_s": floor_best,
        "archiver_over_copy_beside_bus": ratio_floor,
        "lag_rate_per_s": rate,
        "lag_p50_ms": p50 as f64 / 1e3,
        "lag_p99_ms": p99 as f64 / 1e3,
        "lag_max_ms": max as f64 / 1e3,
        "plain_bytes_per_row": plain_bytes,
        "timescaledb": timescale.map(|(b, raw, compressed)| serde_json::json!({
            "archiver_rows_per_s": b.archiver,
            "copy_ceiling_rows_per_s": b.copy,
            "copy_one_tx_rows_per_s": b.copy_one,
            "copy_beside_bus_rows_per_s": b.copy_with_bus,
            "archiver_over_ceiling": b.archiver / b.copy,
            "archiver_over_one_tx_ceiling": b.archiver / b.copy_one,
            "archiver_over_copy_beside_bus": b.archiver / b.copy_with_bus,
            "bytes_per_row_uncompressed": raw,
            "bytes_per_row_compressed": compressed,
        })),
    });
    let out = tspi_test_support::workspace_root().join("target/bench-archive.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    eprintln!("wrote {}", out.display());
}
