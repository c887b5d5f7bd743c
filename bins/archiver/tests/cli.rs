//! The archiver binary refuses bad input with one line and a non-zero exit; `migrate`
//! applies the schema and exits 0, repeatably.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use tspi_test_support::{free_port, run_cli, PgServer};

const BIN: &str = env!("CARGO_BIN_EXE_archiver");
const T: Duration = Duration::from_secs(30);

#[test]
fn bad_input_is_refused() {
    run_cli(BIN, &[], T).assert_clean_failure("--database-url");
    run_cli(BIN, &["--batch-max", "0", "--database-url", "x"], T)
        .assert_clean_failure("--batch-max");
    let url = format!(
        "postgresql://tspi@127.0.0.1:{}/none?connect_timeout=2",
        free_port()
    );
    run_cli(BIN, &["migrate", "--database-url", &url], T)
        .assert_clean_failure("cannot connect to the database");
}

#[test]
fn migrate_is_repeatable() {
    let pg = PgServer::start_primary();
    let db = pg.create_database("cli");
    let url = pg.url(&db);
    for _ in 0..2 {
        let out = run_cli(BIN, &["migrate", "--database-url", &url], T);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }
    assert_eq!(
        pg.psql(&db, "SELECT max(version) FROM schema_migrations"),
        tspi_store::known_version().to_string()
    );
    // Plain PostgreSQL here: asking for TimescaleDB features is a clear error, not a
    // silently different archive.
    run_cli(
        BIN,
        &[
            "migrate",
            "--database-url",
            &url,
            "--timescaledb",
            "require",
        ],
        T,
    )
    .assert_clean_failure("timescaledb extension is not available");
    run_cli(
        BIN,
        &["migrate", "--database-url", &url, "--compress-after", "1d"],
        T,
    )
    .assert_clean_failure("compression needs TimescaleDB");
    run_cli(
        BIN,
        &["migrate", "--database-url", &url, "--timescaledb", "maybe"],
        T,
    )
    .assert_clean_failure("expected auto, require or off");
    let out = run_cli(
        BIN,
        &["migrate", "--database-url", &url, "--retain", "30d"],
        T,
    );
    assert_eq!(
        out.code,
        Some(0),
        "plain retention is the archiver's own: {}",
        out.stderr
    );
}
