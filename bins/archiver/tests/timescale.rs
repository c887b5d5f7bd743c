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
