//! Batched, idempotent writes.
//!
//! The common case — a batch nobody stored before — is one binary `COPY` straight into
//! `messages`, which is as fast as PostgreSQL ingests. A batch that overlaps what is
//! already stored (JetStream redelivered it after a crash or a lost ack) makes that `COPY`
//! fail on the primary key; it is then written again through a staging table with
//! `INSERT … ON CONFLICT DO NOTHING`, which stores the new rows and skips the rest.
//! Commands and tags go in the same transaction, so a committed batch is complete.

use bytes::Bytes;
use std::collections::HashMap;
use time::OffsetDateTime;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, Transaction};

use crate::StoreError;

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

/// JSON already serialised (the hot path writes records without building a DOM).
#[derive(Debug, Clone)]
pub struct JsonText(pub Vec<u8>);

impl ToSql for JsonText {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.extend_from_slice(&[1]); // jsonb binary format version
        }
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }

    to_sql_checked!();
}

/// A display command's row in `commands`.
#[derive(Debug, Clone)]
pub struct CommandRow {
    pub cmd_id: String,
    pub ts: OffsetDateTime,
    pub name: String,
    pub sender: String,
    pub payload: serde_json::Value,
}

/// A tag state for `tags` (latest state per id).
#[derive(Debug, Clone)]
pub struct TagRow {
    pub id: String,
    pub ts: OffsetDateTime,
    pub label: String,
    pub status: String,
    pub creator: Option<String>,
    pub notes: Option<String>,
    pub updated_ts: OffsetDateTime,
    pub extra: Option<serde_json::Value>,
}

/// What a message adds beyond its `messages` row.
#[derive(Debug, Clone)]
pub enum RowDetail {
    None,
    Command(CommandRow),
    Tag(TagRow),
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
    /// The producer's receive time (telemetry).
    pub recv_ts: Option<OffsetDateTime>,
    pub sensor_id: Option<i32>,
    pub day: Option<i16>,
    pub time_s: Option<f64>,
    /// The decoded record (telemetry, command, tag) as JSON text.
    pub record: Option<JsonText>,
    /// The original payload bytes, unchanged.
    pub raw: Bytes,
    pub error: Option<String>,
    pub detail: RowDetail,
}

const MESSAGE_TYPES: [Type; 13] = [
    Type::TEXT,
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::INT4,
    Type::INT2,
    Type::FLOAT8,
    Type::JSON,
    Type::BYTEA,
    Type::TEXT,
];

const MESSAGE_COLUMNS: &str =
    "stream, stream_seq, stream_ts, subject, kind, msg_id, recv_ts, sensor_id, day, time_s, record, raw, error";

/// Binary `COPY` of `rows` into `table` (which has the `messages` columns). Also the
/// ceiling the archiver is benchmarked against.
pub async fn copy_messages(
    tx: &Transaction<'_>,
    table: &str,
    rows: &[MessageRow],
) -> Result<u64, tokio_postgres::Error> {
    let sink = tx
        .copy_in(&format!(
            "COPY {table} ({MESSAGE_COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &MESSAGE_TYPES);
    futures_util::pin_mut!(writer);
    for r in rows {
        let kind = r.kind.as_str();
        let raw: &[u8] = &r.raw;
        writer
            .as_mut()
            .write(&[
                &r.stream,
                &r.stream_seq,
                &r.stream_ts,
                &r.subject,
                &kind,
                &r.msg_id,
                &r.recv_ts,
                &r.sensor_id,
                &r.day,
                &r.time_s,
                &r.record,
                &raw,
                &r.error,
            ])
            .await?;
    }
    writer.finish().await
}

/// What one batch write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Rows new to `messages`.
    pub inserted: u64,
    /// Rows already stored (redelivery), skipped.
    pub skipped: u64,
    /// Whether the batch overlapped stored rows and went through the staging table.
    pub deduplicated: bool,
}

/// Write a batch in one transaction: messages, then commands and tag states.
/// Idempotent: writing the same rows again stores nothing twice.
pub async fn write_batch(
    client: &mut Client,
    rows: &[MessageRow],
) -> Result<WriteOutcome, StoreError> {
    if rows.is_empty() {
        return Ok(WriteOutcome::default());
    }
    let tx = client.transaction().await?;
    match copy_messages(&tx, "messages", rows).await {
        Ok(n) => {
            write_details(&tx, rows).await?;
            tx.commit().await?;
            return Ok(WriteOutcome {
                inserted: n,
                skipped: rows.len() as u64 - n,
                deduplicated: false,
            });
        }
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            tx.rollback().await?;
        }
        Err(e) => return Err(e.into()),
    }
    let tx = client.transaction().await?;
    tx.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS messages_stage
             (LIKE messages INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
    )
    .await?;
    copy_messages(&tx, "messages_stage", rows).await?;
    let n = tx
        .execute(
            &format!(
                "INSERT INTO messages ({MESSAGE_COLUMNS}) SELECT {MESSAGE_COLUMNS} FROM messages_stage
                 ON CONFLICT DO NOTHING"
            ),
            &[],
        )
        .await?;
    write_details(&tx, rows).await?;
    tx.commit().await?;
    Ok(WriteOutcome {
        inserted: n,
        skipped: rows.len() as u64 - n,
        deduplicated: true,
    })
}

async fn write_details(tx: &Transaction<'_>, rows: &[MessageRow]) -> Result<(), StoreError> {
    let mut commands: Vec<(&MessageRow, &CommandRow)> = Vec::new();
    // Several states of one tag in a batch: only the last (in stream order) is written,
    // because one upsert statement may not touch a row twice.
    let mut tags: HashMap<&str, (&MessageRow, &TagRow)> = HashMap::new();
    for r in rows {
        match &r.detail {
            RowDetail::None => {}
            RowDetail::Command(c) => commands.push((r, c)),
            RowDetail::Tag(t) => {
                let newer = tags
                    .get(t.id.as_str())
                    .is_none_or(|(prev, _)| prev.stream_seq < r.stream_seq);
                if newer {
                    tags.insert(t.id.as_str(), (r, t));
                }
            }
        }
    }
    for (r, c) in commands {
        tx.execute(
            "INSERT INTO commands (cmd_id, stream_ts, ts, name, sender, payload, stream, stream_seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            &[
                &c.cmd_id,
                &r.stream_ts,
                &c.ts,
                &c.name,
                &c.sender,
                &c.payload,
                &r.stream,
                &r.stream_seq,
            ],
        )
        .await?;
    }
    // Upserts in id order: concurrent batches lock tag rows in the same order, so two
    // writers can never deadlock on them.
    let mut tags: Vec<(&MessageRow, &TagRow)> = tags.into_values().collect();
    tags.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    for (r, t) in tags {
        // Stream order decides which state is the latest, so a redelivered older state
        // never overwrites a newer one.
        tx.execute(
            "INSERT INTO tags (id, ts, label, status, creator, notes, updated_ts, extra, subject,
                               stream, stream_seq, stream_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (id) DO UPDATE SET
                 ts = EXCLUDED.ts, label = EXCLUDED.label, status = EXCLUDED.status,
                 creator = EXCLUDED.creator, notes = EXCLUDED.notes,
                 updated_ts = EXCLUDED.updated_ts, extra = EXCLUDED.extra,
                 subject = EXCLUDED.subject, stream = EXCLUDED.stream,
                 stream_seq = EXCLUDED.stream_seq, stream_ts = EXCLUDED.stream_ts
             WHERE tags.stream_seq < EXCLUDED.stream_seq",
            &[
                &t.id,
                &t.ts,
                &t.label,
                &t.status,
                &t.creator,
                &t.notes,
                &t.updated_ts,
                &t.extra,
                &r.subject,
                &r.stream,
                &r.stream_seq,
                &r.stream_ts,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Plain-PostgreSQL retention: delete what is older than `retain`. Returns rows deleted.
pub async fn delete_older_than(
    client: &Client,
    retain: std::time::Duration,
) -> Result<u64, StoreError> {
    let interval = format!("{} milliseconds", retain.as_millis());
    let mut n = 0;
    for sql in [
        "DELETE FROM messages WHERE stream_ts < now() - $1::text::interval",
        "DELETE FROM commands WHERE stream_ts < now() - $1::text::interval",
        "DELETE FROM tags WHERE stream_ts < now() - $1::text::interval",
    ] {
        n += client.execute(sql, &[&interval]).await?;
    }
    Ok(n)
}
