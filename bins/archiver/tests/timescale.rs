//! The archive on real TimescaleDB (built once by tests/install-deps.sh from the vendored
//! source): `--timescaledb require` makes hypertables with the chunk interval, compression
//! and retention the flags ask for, repeatably; `auto` picks TimescaleDB where it can be
//! created and plain tables where it cannot. Skipped, with the reason, on a machine whose
//! PostgreSQL has no TimescaleDB.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use tspi_test_support::{run_cli, PgServer};

const BIN: &str = env!("CARGO_BIN_EXE_archiver");
const T: Duration = Duration::from_secs(60);

fn migrate(url: &str, extra: &[&str]) {
    let mut args = vec!["migrate", "--database-url", url];
    args.extend_from_slice(extra);
    let out = run_cli(BIN, &args, T);
    assert_eq!(out.code, Some(0), "archiver {args:?}: {}", out.stderr);
}

#[test]
fn require_makes_hypertables_with_the_flags_policies_repeatably() {
    let Some(pg) = PgServer::start_timescaledb("require_makes_hypertables") else {
        return;
    };
    let db = pg.create_database("tsdb_require");
    let url = pg.url(&db);
    let flags = [
        "--timescaledb",
        "require",
        "--chunk-interval",
        "1h",
        "--compress-after",
        "2h",
        "--retain",
        "30d",
    ];
    // Twice: the second run finds everything in place and changes nothing.
    migrate(&url, &flags);
    // Policies by what they serve (a continuous aggregate by its view's name).
    let jobs = "SELECT coalesce(c.view_name, j.hypertable_name) || ' ' || j.proc_name || ' ' || \
                coalesce(config->>'compress_after', config->>'drop_after', \
                         (config->>'start_offset') || ' to ' || (config->>'end_offset')) \
                FROM timescaledb_information.jobs j \
                LEFT JOIN timescaledb_information.continuous_aggregates c \
                  ON c.materialization_hypertable_name = j.hypertable_name \
                WHERE j.hypertable_name IS NOT NULL ORDER BY 1";
    let jobs_first = pg.psql(&db, jobs);
    migrate(&url, &flags);
    assert_eq!(
        pg.psql(&db, jobs),
        jobs_first,
        "a second migrate changed the jobs"
    );

    assert_eq!(
        pg.psql(
            &db,
            "SELECT string_agg(hypertable_name, ',' ORDER BY hypertable_name) \
             FROM timescaledb_information.hypertables WHERE hypertable_schema = 'public'"
        ),
        "commands,messages"
    );
    assert_eq!(
        pg.psql(
            &db,
            "SELECT string_agg(hypertable_name || ' ' || column_name || ' ' || time_interval, ',' \
             ORDER BY hypertable_name) FROM timescaledb_information.dimensions \
             WHERE hypertable_schema = 'public'"
        ),
        "commands stream_ts 01:00:00,messages stream_ts 01:00:00"
    );
    // Sensor-quality history: a real-time continuous aggregate, refreshed each minute
    // no further back than the retention (so it outlives the raw rows).
    assert_eq!(
        pg.psql(
            &db,
            "SELECT view_name || ' ' || materialized_only \
             FROM timescaledb_information.continuous_aggregates"
        ),
        "sensor_quality_minute false"
    );
    assert_eq!(
        jobs_first,
        "commands policy_retention 720:00:00\n\
         messages policy_compression 02:00:00\n\
         messages policy_retention 720:00:00\n\
         sensor_quality_minute policy_refresh_continuous_aggregate 720:00:00 to 00:01:00"
    );
    // The policies run: each job once, now, without an error.
    for job in pg
        .psql(
            &db,
            "SELECT job_id FROM timescaledb_information.jobs \
             WHERE hypertable_name IS NOT NULL ORDER BY job_id",
        )
        .lines()
    {
        pg.psql(&db, &format!("CALL run_job({job})"));
    }
    assert_eq!(
        pg.psql(
            &db,
            "SELECT compression_enabled FROM timescaledb_information.hypertables \
             WHERE hypertable_name = 'messages'"
        ),
        "t"
    );
    // Air-gapped: the test instance runs with telemetry off, as deploy/ configures it.
    assert_eq!(pg.psql(&db, "SHOW timescaledb.telemetry_level"), "off");
}

#[test]
fn auto_uses_timescaledb_where_it_can_and_plain_tables_where_it_cannot() {
    let Some(tsdb) = PgServer::start_timescaledb("auto_uses_timescaledb") else {
        return;
    };
    let db = tsdb.create_database("tsdb_auto");
    migrate(&tsdb.url(&db), &["--timescaledb", "auto"]);
    assert_eq!(
        tsdb.psql(
            &db,
            "SELECT count(*) FROM timescaledb_information.hypertables \
             WHERE hypertable_schema = 'public'"
        ),
        "2"
    );
    // Default chunk interval: one day.
    assert_eq!(
        tsdb.psql(
            &db,
            "SELECT time_interval FROM timescaledb_information.dimensions \
             WHERE hypertable_name = 'messages'"
        ),
        "1 day"
    );

    // The same machine's PostgreSQL without the library preloaded: the extension is
    // installed but cannot be created, so auto keeps plain tables and require says why.
    let plain = PgServer::start_primary();
    let db = plain.create_database("plain_auto");
    migrate(&plain.url(&db), &["--timescaledb", "auto"]);
    assert_eq!(
        plain.psql(
            &db,
            "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
        ),
        "0"
    );
    assert_eq!(
        plain.psql(&db, "SELECT to_regclass('messages') IS NOT NULL"),
        "t"
    );
    run_cli(
        BIN,
        &[
            "migrate",
            "--database-url",
            &plain.url(&db),
            "--timescaledb",
            "require",
        ],
        T,
    )
    .assert_clean_failure("timescaledb extension is not available");
}

/// Where TimescaleDB's scheduler fails the jobs it starts (2.28.3 on PostgreSQL 15.20
/// does), the archiver runs its own jobs itself: the quality aggregate gets refreshed
/// and compression happens. Where the scheduler works, its own runs succeed instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archiver_runs_policies_the_scheduler_fails() {
    use prometheus_client::registry::Registry;
    use tokio_util::sync::CancellationToken;
    use tspi_archiver::{ArchiverMetrics, ArchiverOptions};
    use tspi_bus::{ensure_stream, StreamArgs, StreamSpec};

    let Some(pg) = PgServer::start_timescaledb("the_archiver_runs_policies_the_scheduler_fails")
    else {
        return;
    };
    let db = pg.create_database("tsdb_jobs");
    let pool = tspi_store::pool(&pg.url(&db), 4).unwrap();
    let schema = tspi_store::SchemaOptions {
        timescale: tspi_store::TimescaleMode::Require,
        chunk_interval: Some(Duration::from_secs(3600)),
        compress_after: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    tspi_store::migrate(&mut pool.get().await.unwrap(), &schema)
        .await
        .unwrap();
    // Telemetry from three hours ago: a chunk old enough to compress, minutes to refresh.
    pg.psql(
        &db,
        "INSERT INTO messages (stream, stream_seq, stream_ts, subject, kind, recv_ts, sensor_id,
                               day, time_s, raw)
         SELECT 'TSPI', i, now() - interval '3 hours' + i * interval '100 ms',
                'tspi.geocentric.7', 'telemetry', now() - interval '3 hours' + i * interval '100 ms',
                7, 335, 0, '\\x00'
         FROM generate_series(1, 3000) i",
    );
    let nats = tspi_test_support::NatsServer::start().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &Default::default()).unwrap();
    ensure_stream(&client, &js, &spec).await.unwrap();
    let metrics = ArchiverMetrics::new(&mut Registry::default());
    let stop = CancellationToken::new();
    let archiver = tokio::spawn(tspi_archiver::run(
        ArchiverOptions::default(),
        js,
        pool.clone(),
        metrics.clone(),
        stop.clone(),
    ));
    // Materialized, not computed on the fly: the aggregate's own hypertable holds them.
    let materialization = pg.psql(
        &db,
        "SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)
         FROM timescaledb_information.continuous_aggregates",
    );
    let materialized = || -> i64 {
        pg.psql(&db, &format!("SELECT count(*) FROM {materialization}"))
            .parse()
            .unwrap()
    };
    // Done: a chunk compressed and the aggregate refreshed (the scheduler's compression
    // can be visible while its refresh is still running), by the scheduler or, where it
    // failed, by the archiver.
    let jobs_done = || {
        let scheduler_failed: i64 = pg
            .psql(
                &db,
                "SELECT count(*) FROM timescaledb_information.job_stats s
                 JOIN timescaledb_information.jobs j USING (job_id)
                 WHERE j.hypertable_name IS NOT NULL AND s.last_run_status = 'Failed'",
            )
            .parse()
            .unwrap();
        let compressed: i64 = pg
            .psql(
                &db,
                "SELECT count(*) FROM timescaledb_information.chunks
                 WHERE hypertable_name = 'messages' AND is_compressed",
            )
            .parse()
            .unwrap();
        let refreshed = materialized() > 0;
        let runs = metrics.policy_runs.get();
        async move { (scheduler_failed == 0 || runs > 0) && compressed > 0 && refreshed }
    };
    let took = tspi_test_support::wait_until(Duration::from_secs(120), jobs_done).await;
    stop.cancel();
    archiver.await.unwrap().unwrap();
    assert!(
        took.is_some(),
        "the jobs did not finish: {} runs by the archiver, {} rows materialized",
        metrics.policy_runs.get(),
        materialized()
    );
    assert!(materialized() > 0, "the quality aggregate was refreshed");
    eprintln!(
        "jobs done in {took:?}: {} run by the archiver ({} failed there too)",
        metrics.policy_runs.get(),
        metrics.policy_run_errors.get()
    );
    assert_eq!(metrics.policy_run_errors.get(), 0);
}
