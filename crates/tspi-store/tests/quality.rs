//! Sensor-quality history against real databases: the aggregate's SQL over raw rows on
//! plain PostgreSQL, and on TimescaleDB the continuous aggregate (real-time, then
//! materialized) giving exactly the rows the raw query gives; the skew helper across
//! New Year.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use bytes::Bytes;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use tokio_postgres::error::SqlState;
use tspi_store::{
    analyse_quality, migrate, quality_rows, write_batch, JsonText, MessageKind, MessageRow,
    QualitySource, RowDetail, SchemaOptions, SensorQuality, TimescaleMode,
};
use tspi_test_support::{wait_until, PgServer};

/// Refreshes the whole continuous aggregate by hand. The refresh policy's own job (every
/// minute) may be refreshing at that moment, and TimescaleDB refuses a second refresh of
/// the same window with 55P03 ("due to a concurrent refresh"): wait for it and ask again.
async fn refresh_by_hand(client: &tokio_postgres::Client) {
    let last_refusal = std::cell::RefCell::new(None);
    let refreshed = wait_until(std::time::Duration::from_secs(60), || {
        let attempt = client.batch_execute(
            "CALL refresh_continuous_aggregate('sensor_quality_minute', NULL, NULL)",
        );
        let last_refusal = &last_refusal;
        async move {
            match attempt.await {
                Ok(()) => true,
                Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                    *last_refusal.borrow_mut() = Some(e.to_string());
                    false
                }
                Err(e) => panic!("refreshing the aggregate: {e}"),
            }
        }
    })
    .await;
    assert!(
        refreshed.is_some(),
        "the aggregate was still being refreshed after 60 s: {last_refusal:?}"
    );
}

/// Where the traffic starts: 20 s into a minute, on day 335 of 2026.
const T0: OffsetDateTime = datetime!(2026-12-01 10:00:20 UTC);

/// Sensors 1 and 2 at 10 Hz for 210 s (sensor 2 silent from 70 s to 95 s), received
/// 5 ms after their TSPI time and stored on the bus 2 ms later; three undecodable
/// messages on sensor 1's subject and one command, which is no sensor's.
fn traffic() -> Vec<MessageRow> {
    let midnight = datetime!(2026-12-01 00:00 UTC);
    let mut rows = Vec::new();
    let mut seq = 0;
    let mut push = |rows: &mut Vec<MessageRow>, kind, sensor: i32, recv: OffsetDateTime| {
        seq += 1;
        let subject = match kind {
            MessageKind::Command => "tspi.cmd.display.units".to_owned(),
            _ => format!("tspi.geocentric.{sensor}"),
        };
        let telemetry = kind == MessageKind::Telemetry;
        rows.push(MessageRow {
            stream: "TSPI".into(),
            stream_seq: seq,
            stream_ts: recv + Duration::milliseconds(2),
            subject,
            kind,
            msg_id: Some(format!("id-{seq}")),
            recv_ts: telemetry.then_some(recv),
            sensor_id: telemetry.then_some(sensor),
            day: telemetry.then_some(335),
            time_s: telemetry.then(|| (recv - midnight).as_seconds_f64() - 0.005),
            record: telemetry.then(|| JsonText(b"{}".to_vec())),
            raw: Bytes::from_static(b"raw"),
            error: (!telemetry).then(|| "undecodable".to_owned()),
            detail: RowDetail::None,
        });
    };
    for frame in 0..2100i64 {
        let at = T0 + Duration::milliseconds(frame * 100 + 3);
        push(&mut rows, MessageKind::Telemetry, 1, at);
        if !(700..950).contains(&frame) {
            push(
                &mut rows,
                MessageKind::Telemetry,
                2,
                at + Duration::milliseconds(1),
            );
        }
        if frame % 500 == 250 && frame < 1500 {
            push(&mut rows, MessageKind::Invalid, 1, at);
        }
    }
    push(
        &mut rows,
        MessageKind::Command,
        0,
        T0 + Duration::seconds(5),
    );
    rows
}

async fn archive(pg: &PgServer, schema: &SchemaOptions) -> deadpool_postgres::Pool {
    let db = pg.create_database("quality");
    let pool = tspi_store::pool(&pg.url(&db), 2).unwrap();
    let mut client = pool.get().await.unwrap();
    migrate(&mut client, schema).await.unwrap();
    for batch in traffic().chunks(1000) {
        write_batch(&mut client, batch).await.unwrap();
    }
    pool
}

fn check(report: &[SensorQuality]) {
    assert_eq!(
        report.iter().map(|s| s.sensor_id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let (one, two) = (&report[0], &report[1]);
    assert!((one.rate_hz.unwrap() - 10.0).abs() < 1e-6, "{one:?}");
    assert_eq!((one.messages, one.missed, one.invalid), (2100, 0, 3));
    assert!(one.gaps.is_empty(), "{:?}", one.gaps);
    assert_eq!((two.messages, two.missed, two.invalid), (1850, 250, 0));
    assert_eq!(two.gaps.len(), 1, "{:?}", two.gaps);
    let gap = &two.gaps[0];
    let start = (gap.start - T0).as_seconds_f64();
    assert!((start - 70.0).abs() <= 0.1, "gap starts {start} s in");
    assert!((gap.length_s - 25.0).abs() <= 0.1, "{gap:?}");
    // Receive minutes 10:00 (40 s), 10:01, 10:02, 10:03 (50 s).
    let expected: Vec<i64> = one.minutes.iter().map(|m| m.expected).collect();
    assert_eq!(expected, vec![400, 600, 600, 500]);
    let missed: Vec<i64> = two.minutes.iter().map(|m| m.missed).collect();
    assert_eq!(missed, vec![0, 250, 0, 0]);
    for s in report {
        let (p50, p99) = (s.skew_p50_ms.unwrap(), s.skew_p99_ms.unwrap());
        assert!(
            (p50 - 5.0).abs() < 0.01 && (p99 - 5.0).abs() < 0.01,
            "{p50} {p99}"
        );
    }
}

async fn report(
    pool: &deadpool_postgres::Pool,
    source: Option<QualitySource>,
) -> (QualitySource, Vec<tspi_store::QualityRow>) {
    let client = pool.get().await.unwrap();
    quality_rows(
        &client,
        "TSPI",
        T0 - Duration::minutes(5),
        T0 + Duration::minutes(10),
        None,
        source,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn quality_over_raw_rows_on_plain_postgresql() {
    let pg = PgServer::start_primary();
    let pool = archive(&pg, &SchemaOptions::default()).await;
    let (source, rows) = report(&pool, None).await;
    assert_eq!(source, QualitySource::RawRows);
    check(&analyse_quality(&rows));

    // One sensor, and a span that starts mid-minute (rounded down to its minute).
    let client = pool.get().await.unwrap();
    let (_, only_two) = quality_rows(
        &client,
        "TSPI",
        T0 + Duration::seconds(50),
        T0 + Duration::seconds(100),
        Some(2),
        None,
    )
    .await
    .unwrap();
    let minutes: Vec<String> = only_two.iter().map(|r| r.minute.to_string()).collect();
    assert_eq!(
        minutes,
        vec!["2026-12-01 10:01:00.0 +00:00:00"],
        "receive minutes from 10:01 (T0 + 50 s rounded down) to before 10:02"
    );

    // Skew across New Year: the neighbouring year when it lands closer.
    for (recv, day, time_s, skew) in [
        ("2027-01-01 00:00:01+00", 365i16, 86_399.0f64, 2.0f64),
        ("2026-12-31 23:59:59+00", 1, 1.0, -2.0),
        ("2025-01-01 00:00:01+00", 366, 86_399.0, 2.0),
        ("2026-07-01 12:00:00.25+00", 182, 43_200.0, 0.25),
    ] {
        let got: f64 = client
            .query_one(
                "SELECT tspi_recv_skew_s($1::text::timestamptz, $2, $3)",
                &[&recv, &day, &time_s],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            (got - skew).abs() < 1e-6,
            "{recv} day {day} {time_s}: {got}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_continuous_aggregate_agrees_with_the_raw_rows() {
    let Some(pg) = PgServer::start_timescaledb("the_continuous_aggregate_agrees_with_the_raw_rows")
    else {
        return;
    };
    let schema = SchemaOptions {
        timescale: TimescaleMode::Require,
        chunk_interval: Some(std::time::Duration::from_secs(3600)),
        ..Default::default()
    };
    let pool = archive(&pg, &schema).await;
    let (_, raw) = report(&pool, Some(QualitySource::RawRows)).await;
    check(&analyse_quality(&raw));
    let mut client = pool.get().await.unwrap();
    refresh_by_hand(&client).await;
    let (source, stored) = report(&pool, None).await;
    assert_eq!(source, QualitySource::ContinuousAggregate);
    assert_eq!(
        stored, raw,
        "materialized minutes are the raw rows' minutes"
    );

    // A sensor heard later, in one transaction (the refresh policy may run at any time
    // and sees all of it or none): real-time or refreshed, the same rows as raw.
    let later: Vec<MessageRow> = (0..300i64)
        .map(|frame| {
            let mut r = traffic()[0].clone();
            r.stream_seq = 100_000 + frame;
            r.sensor_id = Some(3);
            r.subject = "tspi.geocentric.3".into();
            let shift = Duration::seconds(240) + Duration::milliseconds(frame * 100);
            r.recv_ts = r.recv_ts.map(|t| t + shift);
            r.stream_ts += shift;
            r.time_s = r.time_s.map(|t| t + shift.as_seconds_f64());
            r
        })
        .collect();
    write_batch(&mut client, &later).await.unwrap();
    let (_, raw) = report(&pool, Some(QualitySource::RawRows)).await;
    let (_, live) = report(&pool, None).await;
    assert_eq!(live, raw);
    assert_eq!(analyse_quality(&raw)[2].messages, 300);

    // Materialized alone (no real-time part): the same rows.
    refresh_by_hand(&client).await;
    client
        .batch_execute(
            "ALTER MATERIALIZED VIEW sensor_quality_minute SET (timescaledb.materialized_only = true)",
        )
        .await
        .unwrap();
    let (_, stored) = report(&pool, None).await;
    assert_eq!(stored, raw);
}
