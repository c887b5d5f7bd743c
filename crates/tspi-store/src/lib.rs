//! The TSPI archive in PostgreSQL (TimescaleDB when present): versioned migrations,
//! idempotent batched writes, and the queries replay needs.
//!
//! Every message of the `TSPI` stream becomes one row of `messages`, keyed by
//! `(stream, stream_seq, stream_ts)`: a redelivered message hits the same key and is
//! skipped, so the archiver may acknowledge only after commit and still never store
//! anything twice. The time column is part of every key so the tables can become
//! TimescaleDB hypertables unchanged. `commands` holds every display command; `tags` the
//! latest state of each tag (its history is in `messages`).
//!
//! **Architecture Invariant:** no NATS here; rows in, rows out.

mod display;
mod export;
mod quality;
mod read;
mod schema;
mod write;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use thiserror::Error;
use tokio_postgres::NoTls;

pub use display::{
    coverage, picture_at, tags_between, PictureSpec, TagSummary, CLOCK_SKEW, RECEIVE_MARGIN,
};
pub use export::{
    copy_csv_baseline, export_rows, has_telemetry, sensor_in_window, sensors_in_window,
    telemetry_span, window_seqs, ExportQuery, ExportSource,
};
pub use quality::{
    analyse as analyse_quality, quality_rows, Gap, MinuteQuality, QualityRow, QualitySource,
    SensorQuality, BINS_PER_MINUTE, QUALITY_VIEW,
};
pub use read::{
    alarms_at, command_state_at, control_messages_between, tag_moment, tags_before, window_page,
    window_span, ArchivedMessage, WindowSpan,
};
pub use schema::{
    failed_jobs, known_version, migrate, run_job, FailedJob, SchemaOptions, SchemaState,
    TimescaleMode,
};
pub use write::{
    copy_messages, delete_older_than, summarize_time_index, write_batch, CommandRow, JsonText,
    MessageKind, MessageRow, RowDetail, TagRow, WriteOutcome,
};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("database URL: {0}")]
    BadUrl(tokio_postgres::Error),
    #[error("connection pool: {0}")]
    PoolBuild(String),
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(
        "schema version {found} is newer than this program knows ({known}); upgrade the archiver"
    )]
    SchemaTooNew { found: i32, known: i32 },
    #[error("--timescaledb require: the timescaledb extension is not available on this server")]
    TimescaleUnavailable,
    #[error("compression needs TimescaleDB, which this server does not have")]
    CompressionNeedsTimescale,
}

impl StoreError {
    /// PostgreSQL refused the data itself (SQLSTATE class 22, data exception: a value out
    /// of range, an invalid character; class 54, a limit exceeded), not the connection or
    /// the server: writing the same rows again would fail again.
    pub fn is_content_error(&self) -> bool {
        match self {
            StoreError::Db(e) => e
                .code()
                .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("54")),
            _ => false,
        }
    }

    /// The server's own words (SQLSTATE and message) when it refused something, which
    /// `tokio_postgres::Error`'s display ("db error") leaves out.
    pub fn database_message(&self) -> String {
        match self {
            StoreError::Db(e) => match e.as_db_error() {
                Some(db) => format!("{} {}", db.code().code(), db.message()),
                None => e.to_string(),
            },
            other => other.to_string(),
        }
    }
}

/// A connection pool for `url` (libpq URL or key=value; several hosts with
/// `target_session_attrs=read-write` follow the primary). Every checkout runs a test
/// query, so a connection that died with its server is replaced, not handed out.
pub fn pool(url: &str, max_size: usize) -> Result<Pool, StoreError> {
    let config: tokio_postgres::Config = url.parse().map_err(StoreError::BadUrl)?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Verified,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .create_timeout(Some(std::time::Duration::from_secs(10)))
        .wait_timeout(Some(std::time::Duration::from_secs(30)))
        .recycle_timeout(Some(std::time::Duration::from_secs(5)))
        .build()
        .map_err(|e| StoreError::PoolBuild(e.to_string()))
}
