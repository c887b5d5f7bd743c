//! Versioned, re-runnable migrations and the optional TimescaleDB layer.

use std::time::Duration;

use tokio_postgres::Client;

use crate::StoreError;

/// Schema migrations, in order; each runs once, in the migration transaction.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE messages (
            stream      text             NOT NULL,
            stream_seq  bigint           NOT NULL,
            stream_ts   timestamptz      NOT NULL,
            subject     text             NOT NULL,
            kind        text             NOT NULL,
            msg_id      text,
            recv_ts     timestamptz,
            sensor_id   integer,
            day         smallint,
            time_s      double precision,
            record      jsonb,
            raw         bytea            NOT NULL,
            error       text,
            PRIMARY KEY (stream, stream_seq, stream_ts)
        );
        CREATE INDEX messages_stream_ts ON messages (stream_ts);
        CREATE INDEX messages_sensor_ts ON messages (sensor_id, stream_ts) WHERE sensor_id IS NOT NULL;
        CREATE INDEX messages_kind_ts ON messages (kind, stream_ts);",
    ),
    (
        2,
        // Commands: every command, keyed by its id (plus the time column, so the table can
        // be a hypertable). Tags: latest state per id; each state's history is in messages.
        "CREATE TABLE commands (
            cmd_id      text         NOT NULL,
            stream_ts   timestamptz  NOT NULL,
            ts          timestamptz  NOT NULL,
            name        text         NOT NULL,
            sender      text         NOT NULL,
            payload     jsonb        NOT NULL,
            stream      text         NOT NULL,
            stream_seq  bigint       NOT NULL,
            PRIMARY KEY (cmd_id, stream_ts)
        );
        CREATE INDEX commands_name_ts ON commands (stream, name, stream_ts DESC);
        CREATE TABLE tags (
            id          text         PRIMARY KEY,
            ts          timestamptz  NOT NULL,
            label       text         NOT NULL,
            status      text         NOT NULL,
            creator     text,
            notes       text,
            updated_ts  timestamptz  NOT NULL,
            extra       jsonb,
            subject     text         NOT NULL,
            stream      text         NOT NULL,
            stream_seq  bigint       NOT NULL,
            stream_ts   timestamptz  NOT NULL
        );
        CREATE INDEX tags_ts ON tags (ts);
        CREATE INDEX messages_tag_id ON messages ((record->>'id'), stream_seq) WHERE kind = 'tag';",
    ),
    (
        3,
        // Lean rows so the archiver keeps up with the bus (measured with binary COPY of
        // real telemetry rows here: jsonb + four b-trees ≈ 37k rows/s, json + primary key
        // + BRIN ≈ 110k rows/s). `record` keeps the decoded record as JSON text (the `->`
        // operators still work); time lookups use a BRIN index, which costs almost nothing
        // on an append-only table. A per-sensor b-tree costs ~40 % of ingest: add it only
        // if you query single sensors over long spans (docs/operations.md).
        "DROP INDEX messages_tag_id;
        DROP INDEX messages_kind_ts;
        DROP INDEX messages_sensor_ts;
        DROP INDEX messages_stream_ts;
        ALTER TABLE messages ALTER COLUMN record TYPE json USING record::json;
        CREATE INDEX messages_stream_ts_brin ON messages USING brin (stream_ts);
        CREATE INDEX messages_tag_id ON messages ((record->>'id'), stream_seq) WHERE kind = 'tag';",
    ),
    (
        4,
        // A finer time index: a display's picture at a moment reads a few minutes of rows,
        // and BRIN's default 128-page ranges made it visit three times as many as it kept
        // (measured: 55,870 rows visited for 18,002 wanted). 16-page ranges cost nothing
        // measurable on ingest. New ranges are summarized by the archiver every few
        // seconds (`summarize_time_index`) and by autovacuum: an unsummarized range is read
        // by every time query, whatever its time.
        "DROP INDEX messages_stream_ts_brin;
        CREATE INDEX messages_stream_ts_brin ON messages USING brin (stream_ts)
            WITH (pages_per_range = 16, autosummarize = on);",
    ),
    (
        5,
        // Sensor-quality history (crate::quality): per-row helpers of its per-minute
        // aggregate, IMMUTABLE plain-SQL expressions so PostgreSQL inlines them and a
        // TimescaleDB continuous aggregate may use them.
        crate::quality::FUNCTIONS,
    ),
    (
        6,
        // Alarm transitions (the alarmer's, kind 'alarm'): a replay's picture asks which
        // alarms were in force at a moment, the latest transition of each before it.
        // Indexed apart, so that question reads alarm rows only; telemetry rows are not
        // in the index, so ingest does not pay for it.
        "CREATE INDEX messages_alarm_ts ON messages (stream, stream_ts) WHERE kind = 'alarm';",
    ),
];

/// The newest schema version this build knows.
pub fn known_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Whether `messages` and `commands` become TimescaleDB hypertables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimescaleMode {
    /// Use TimescaleDB when the extension can be created, plain PostgreSQL otherwise.
    #[default]
    Auto,
    /// Fail when TimescaleDB is not available.
    Require,
    /// Never touch the extension.
    Off,
}

impl std::str::FromStr for TimescaleMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(TimescaleMode::Auto),
            "require" => Ok(TimescaleMode::Require),
            "off" => Ok(TimescaleMode::Off),
            other => Err(format!(
                "unknown mode {other:?}: expected auto, require or off"
            )),
        }
    }
}

/// Schema options beyond the tables themselves.
#[derive(Debug, Clone, Default)]
pub struct SchemaOptions {
    pub timescale: TimescaleMode,
    /// Chunk interval of the hypertables (TimescaleDB only).
    pub chunk_interval: Option<Duration>,
    /// Compress chunks older than this (TimescaleDB only).
    pub compress_after: Option<Duration>,
    /// Drop data older than this: a TimescaleDB retention policy, or on plain PostgreSQL the
    /// archiver's own periodic delete ([`crate::delete_older_than`]).
    pub retain: Option<Duration>,
}

/// What [`migrate`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaState {
    pub version: i32,
    pub timescaledb: bool,
}

pub(crate) fn interval(d: Duration) -> String {
    format!("{} milliseconds", d.as_millis())
}

/// Apply the migrations not yet applied, then the TimescaleDB layer if wanted. Safe to run
/// concurrently and repeatedly: an advisory lock serialises runners.
pub async fn migrate(
    client: &mut Client,
    options: &SchemaOptions,
) -> Result<SchemaState, StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(7355608)", &[])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    let known = known_version();
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await?;
        tracing::info!(version, "applied schema migration");
    }
    tx.commit().await?;
    let timescaledb = timescale(client, options).await?;
    Ok(SchemaState {
        version: known,
        timescaledb,
    })
}

async fn timescale(client: &mut Client, options: &SchemaOptions) -> Result<bool, StoreError> {
    if options.timescale == TimescaleMode::Off {
        return policies_need_timescale(options, false);
    }
    let available: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
            &[],
        )
        .await?
        .get(0);
    // Without the library in shared_preload_libraries, CREATE EXTENSION does not merely
    // fail: TimescaleDB 2.28 ends the session. So look first, at a setting only its
    // preloaded loader defines (shared_preload_libraries itself needs a superuser, or
    // pg_read_all_settings, to read).
    let preloaded: bool = client
        .query_one(
            "SELECT current_setting('timescaledb.disable_load', true) IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if available && !preloaded {
        tracing::warn!(
            "timescaledb is installed but not in shared_preload_libraries; using plain PostgreSQL \
             (to use it: shared_preload_libraries = 'timescaledb' in postgresql.conf, restart the server)"
        );
    }
    let created = if available && preloaded {
        match client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "timescaledb is installed but cannot be created; using plain PostgreSQL");
                false
            }
        }
    } else {
        false
    };
    if !created {
        if options.timescale == TimescaleMode::Require {
            return Err(StoreError::TimescaleUnavailable);
        }
        tracing::info!("timescaledb not available: plain PostgreSQL tables with time indexes");
        return policies_need_timescale(options, false);
    }
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(7355608)", &[])
        .await?;
    let chunk = interval(
        options
            .chunk_interval
            .unwrap_or(Duration::from_secs(86_400)),
    );
    for table in ["messages", "commands"] {
        // The classic signature works on every TimescaleDB 2.x.
        tx.execute(
            &format!(
                "SELECT create_hypertable('{table}', 'stream_ts', chunk_time_interval => $1::text::interval,
                                          if_not_exists => TRUE, migrate_data => TRUE)"
            ),
            &[&chunk],
        )
        .await?;
    }
    if let Some(after) = options.compress_after {
        tx.batch_execute(
            "ALTER TABLE messages SET (timescaledb.compress,
                 timescaledb.compress_segmentby = 'stream, kind',
                 timescaledb.compress_orderby = 'stream_seq')",
        )
        .await?;
        tx.execute(
            "SELECT add_compression_policy('messages', $1::text::interval, if_not_exists => TRUE)",
            &[&interval(after)],
        )
        .await?;
    }
    if let Some(retain) = options.retain {
        for table in ["messages", "commands"] {
            tx.execute(
                &format!("SELECT add_retention_policy('{table}', $1::text::interval, if_not_exists => TRUE)"),
                &[&interval(retain)],
            )
            .await?;
        }
    }
    crate::quality::create_continuous_aggregate(&tx, options.retain).await?;
    tx.commit().await?;
    tracing::info!("messages and commands are TimescaleDB hypertables");
    Ok(true)
}

fn policies_need_timescale(options: &SchemaOptions, timescale: bool) -> Result<bool, StoreError> {
    if options.compress_after.is_some() {
        return Err(StoreError::CompressionNeedsTimescale);
    }
    Ok(timescale)
}

/// A TimescaleDB job of this role whose last run by TimescaleDB's scheduler failed.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedJob {
    pub job_id: i32,
    pub proc_name: String,
    pub schedule_interval: Duration,
    /// The scheduler's latest error for it.
    pub error: Option<String>,
}

/// The current role's TimescaleDB jobs whose last scheduled run failed; none on plain
/// PostgreSQL.
pub async fn failed_jobs(client: &Client) -> Result<Vec<FailedJob>, StoreError> {
    let timescale: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
            &[],
        )
        .await?
        .get(0);
    if !timescale {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT j.job_id, j.proc_name::text,
                    date_part('epoch', j.schedule_interval)::float8,
                    (SELECT e.err_message FROM timescaledb_information.job_errors e
                     WHERE e.job_id = j.job_id ORDER BY e.finish_time DESC LIMIT 1)
             FROM timescaledb_information.jobs j
             JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
             WHERE j.owner = current_user::regrole AND s.last_run_status = 'Failed'
             ORDER BY j.job_id",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let seconds: f64 = r.try_get(2)?;
            Ok(FailedJob {
                job_id: r.try_get(0)?,
                proc_name: r.try_get(1)?,
                schedule_interval: Duration::try_from_secs_f64(seconds)
                    .unwrap_or(Duration::from_secs(60)),
                error: r.try_get(3)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(StoreError::from)
}

/// Runs a TimescaleDB job in this session (`CALL run_job`), as its owner.
pub async fn run_job(client: &Client, job_id: i32) -> Result<(), StoreError> {
    client.execute("CALL run_job($1)", &[&job_id]).await?;
    Ok(())
}
