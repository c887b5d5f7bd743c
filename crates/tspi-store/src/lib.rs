//! The TSPI archive in PostgreSQL: versioned migrations and idempotent batched writes.
//!
//! Every message of the `TSPI` stream becomes one row of `messages`, keyed by
//! `(stream, stream_seq, stream_ts)`: a redelivered message hits the same key and
//! `ON CONFLICT DO NOTHING` makes the write a no-op, so the archiver may acknowledge only
//! after commit and still never store anything twice. The time column is part of the key
//! so the table can become a TimescaleDB hypertable unchanged.
//!
//! **Architecture Invariant:** no NATS here; rows in, rows out.

use thiserror::Error;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error(
        "schema version {found} is newer than this program knows ({known}); upgrade the archiver"
    )]
    SchemaTooNew { found: i32, known: i32 },
}

/// What a stored message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Telemetry,
    Command,
    Tag,
    /// Could not be decoded; stored raw with its error.
    Invalid,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Telemetry => "telemetry",
            MessageKind::Command => "command",
            MessageKind::Tag => "tag",
            MessageKind::Invalid => "invalid",
        }
    }
}

/// One row of `messages`.
#[derive(Debug, Clone)]
pub struct MessageRow {
    pub stream: String,
    pub stream_seq: i64,
    pub stream_ts: OffsetDateTime,
    pub subject: String,
    pub kind: MessageKind,
    pub msg_id: Option<String>,
    pub recv_ts: Option<OffsetDateTime>,
    pub sensor_id: Option<i32>,
    pub day: Option<i16>,
    pub time_s: Option<f64>,
    /// The decoded record (telemetry, command, tag) as JSON.
    pub record: Option<serde_json::Value>,
    /// The original payload bytes, unchanged.
    pub raw: Vec<u8>,
    pub error: Option<String>,
}

/// Schema migrations, in order; each runs once, in its own transaction.
const MIGRATIONS: &[(i32, &str)] = &[(
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
)];

/// Apply the migrations not yet applied. Safe to run concurrently and repeatedly: an
/// advisory lock serialises runners.
pub async fn migrate(client: &mut Client) -> Result<i32, StoreError> {
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
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
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
    Ok(known)
}

/// Insert a batch in one statement (arrays unnested server-side). Returns the rows that
/// were new; rows already stored (redelivery) are skipped.
pub async fn insert_messages(client: &Client, rows: &[MessageRow]) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let col = |f: &dyn Fn(&MessageRow) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
    let stream: Vec<&str> = rows.iter().map(|r| r.stream.as_str()).collect();
    let seq: Vec<i64> = rows.iter().map(|r| r.stream_seq).collect();
    let ts: Vec<OffsetDateTime> = rows.iter().map(|r| r.stream_ts).collect();
    let subject: Vec<&str> = rows.iter().map(|r| r.subject.as_str()).collect();
    let kind: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    let msg_id = col(&|r| r.msg_id.clone());
    let recv: Vec<Option<OffsetDateTime>> = rows.iter().map(|r| r.recv_ts).collect();
    let sensor: Vec<Option<i32>> = rows.iter().map(|r| r.sensor_id).collect();
    let day: Vec<Option<i16>> = rows.iter().map(|r| r.day).collect();
    let time_s: Vec<Option<f64>> = rows.iter().map(|r| r.time_s).collect();
    let record: Vec<Option<serde_json::Value>> = rows.iter().map(|r| r.record.clone()).collect();
    let raw: Vec<&[u8]> = rows.iter().map(|r| r.raw.as_slice()).collect();
    let error = col(&|r| r.error.clone());
    let params: [&(dyn ToSql + Sync); 13] = [
        &stream, &seq, &ts, &subject, &kind, &msg_id, &recv, &sensor, &day, &time_s, &record, &raw,
        &error,
    ];
    let n = client
        .execute(
            "INSERT INTO messages (stream, stream_seq, stream_ts, subject, kind, msg_id, recv_ts,
                                   sensor_id, day, time_s, record, raw, error)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::timestamptz[], $4::text[],
                                  $5::text[], $6::text[], $7::timestamptz[], $8::integer[],
                                  $9::smallint[], $10::double precision[], $11::jsonb[],
                                  $12::bytea[], $13::text[])
             ON CONFLICT DO NOTHING",
            &params,
        )
        .await?;
    Ok(n)
}
