//! Batched, idempotent writes.
//!
//! The common case — a batch nobody stored before — is one binary `COPY` straight into
//! `messages`, which is as fast as PostgreSQL ingests. A batch that overlaps what is
//! already stored (JetStream redelivered it after a crash or a lost ack) makes that `COPY`
//! fail on the primary key; it is then written again through a staging table with
//! `INSERT … ON CONFLICT DO NOTHING`, which stores the new rows and skips the rest.
//! Commands and tags go in the same transaction, so a committed batch is complete.

use bytes::Bytes;
use std::borrow::Cow;
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
    /// An alarm transition (the alarmer's).
    Alarm,
    /// Could not be decoded; stored raw with its error.
    Invalid,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Telemetry => "telemetry",
            MessageKind::Command => "command",
            MessageKind::Tag => "tag",
            MessageKind::Alarm => "alarm",
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
        out.extend_from_slice(&scrub_json_text(&self.0));
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }

    to_sql_checked!();
}

/// PostgreSQL text cannot hold U+0000 (nor jsonb its `\u0000` escape): one such character
/// in a sender's string would fail the whole batch, again on every redelivery, and stall
/// the archive. Stored decoded forms get U+FFFD in its place; the `raw` column keeps the
/// original bytes.
const NUL_STANDIN: &str = "\u{FFFD}";

fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', NUL_STANDIN))
    } else {
        Cow::Borrowed(s)
    }
}

fn pg_opt_text(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(pg_text)
}

/// JSON text with every `\u0000` escape (the only way JSON carries U+0000) replaced.
fn scrub_json_text(json: &[u8]) -> Cow<'_, [u8]> {
    const NUL: &[u8] = b"\\u0000";
    // The hot path (telemetry records) has no escapes at all: one fast byte scan.
    if !json.contains(&b'\\') || !json.windows(NUL.len()).any(|w| w == NUL) {
        return Cow::Borrowed(json);
    }
    let mut out = Vec::with_capacity(json.len());
    let mut i = 0;
    while i < json.len() {
        if json[i] == b'\\' {
            if json[i..].starts_with(NUL) {
                out.extend_from_slice(b"\\ufffd");
                i += NUL.len();
            } else {
                // An escape pair (`\\\\` included) copied whole, so the scan stays in step.
                out.extend_from_slice(&json[i..json.len().min(i + 2)]);
                i += 2;
            }
        } else {
            out.push(json[i]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

fn pg_json(v: &serde_json::Value) -> Cow<'_, serde_json::Value> {
    fn has_nul(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(a) => a.iter().any(has_nul),
            serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    fn scrub(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::String(s) => serde_json::Value::String(pg_text(s).into_owned()),
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(scrub).collect()),
            serde_json::Value::Object(o) => serde_json::Value::Object(
                o.iter()
                    .map(|(k, v)| (pg_text(k).into_owned(), scrub(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    if has_nul(v) {
        Cow::Owned(scrub(v))
    } else {
        Cow::Borrowed(v)
    }
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
                &pg_text(&r.stream),
                &r.stream_seq,
                &r.stream_ts,
                &pg_text(&r.subject),
                &kind,
                &pg_opt_text(&r.msg_id),
                &r.recv_ts,
                &r.sensor_id,
                &r.day,
                &r.time_s,
                &r.record,
                &raw,
                &pg_opt_text(&r.error),
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
    /// Rows PostgreSQL refused for their content, stored as `invalid` with their raw
    /// bytes and the database's reason instead (see [`write_batch`]).
    pub refused: u64,
}

impl WriteOutcome {
    fn add(&mut self, other: WriteOutcome) {
        self.inserted += other.inserted;
        self.skipped += other.skipped;
        self.deduplicated |= other.deduplicated;
        self.refused += other.refused;
    }
}

/// Write a batch in one transaction: messages, then commands and tag states.
/// Idempotent: writing the same rows again stores nothing twice.
///
/// A batch PostgreSQL refuses for its content ([`StoreError::is_content_error`]: a
/// sender's time far out of range, say) would be refused again on every redelivery and
/// stall the archive behind it. It is split in halves until the refused rows are alone;
/// each of those is stored as `invalid` with its original bytes and the reason, and the
/// rest as usual. Only errors of the connection or the server are returned.
pub async fn write_batch(
    client: &mut Client,
    rows: &[MessageRow],
) -> Result<WriteOutcome, StoreError> {
    let refused = match write_batch_once(client, rows).await {
        Err(e) if e.is_content_error() => e,
        other => return other,
    };
    tracing::warn!(rows = rows.len(), error = %refused.database_message(), "the database refused a batch for its content; isolating the refused rows");
    let mut total = WriteOutcome::default();
    // Each part with the content error it was refused with, once tried.
    let mut parts: Vec<(&[MessageRow], Option<StoreError>)> = vec![(rows, Some(refused))];
    while let Some((part, refused)) = parts.pop() {
        let reason = match refused {
            Some(e) => e,
            None => match write_batch_once(client, part).await {
                Ok(out) => {
                    total.add(out);
                    continue;
                }
                Err(e) if e.is_content_error() => e,
                Err(e) => return Err(e),
            },
        };
        if let [row] = part {
            tracing::warn!(stream_seq = row.stream_seq, subject = %row.subject, error = %reason.database_message(), "row refused by the database; stored raw as invalid");
            let mut out = write_batch_once(client, &[refused_row(row, &reason)]).await?;
            out.refused = 1;
            total.add(out);
        } else {
            let (first, second) = part.split_at(part.len() / 2);
            // Popped first half first: rows go in in stream order.
            parts.push((second, None));
            parts.push((first, None));
        }
    }
    Ok(total)
}

/// What is kept of a row the database refused: where it was in the stream, its bytes,
/// and why.
fn refused_row(row: &MessageRow, reason: &StoreError) -> MessageRow {
    MessageRow {
        stream: row.stream.clone(),
        stream_seq: row.stream_seq,
        stream_ts: row.stream_ts,
        subject: row.subject.clone(),
        kind: MessageKind::Invalid,
        msg_id: row.msg_id.clone(),
        recv_ts: None,
        sensor_id: None,
        day: None,
        time_s: None,
        record: None,
        raw: row.raw.clone(),
        error: Some(format!(
            "refused by the database ({}); stored raw",
            reason.database_message()
        )),
        detail: RowDetail::None,
    }
}

async fn write_batch_once(
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
                refused: 0,
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
        refused: 0,
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
                &pg_text(&c.cmd_id),
                &r.stream_ts,
                &c.ts,
                &pg_text(&c.name),
                &pg_text(&c.sender),
                &*pg_json(&c.payload),
                &pg_text(&r.stream),
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
                &pg_text(&t.id),
                &t.ts,
                &pg_text(&t.label),
                &pg_text(&t.status),
                &pg_opt_text(&t.creator),
                &pg_opt_text(&t.notes),
                &t.updated_ts,
                &t.extra.as_ref().map(pg_json).as_deref(),
                &pg_text(&r.subject),
                &pg_text(&r.stream),
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

/// Summarize the time index's new block ranges (returns how many). Until a range is
/// summarized every time query reads it, so the archiver calls this every few seconds;
/// it only ever looks at ranges added since the last call.
pub async fn summarize_time_index(client: &Client) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            "SELECT coalesce(sum(brin_summarize_new_values(i.indexrelid)), 0)::bigint
             FROM pg_index i
             JOIN pg_class ic ON ic.oid = i.indexrelid
             JOIN pg_am am ON am.oid = ic.relam
             WHERE am.amname = 'brin' AND i.indisvalid AND i.indrelid = 'messages'::regclass",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn scrubbed(json: &serde_json::Value) -> serde_json::Value {
        let text = serde_json::to_vec(json).unwrap();
        serde_json::from_slice(&scrub_json_text(&text)).unwrap()
    }

    #[test]
    fn only_real_nul_escapes_are_replaced() {
        use serde_json::json;
        assert_eq!(
            scrubbed(&json!({"a\0": "x\0y"})),
            json!({"a\u{FFFD}": "x\u{FFFD}y"})
        );
        // A backslash followed by the text `u0000` is not U+0000.
        assert_eq!(
            scrubbed(&json!({"p": "C:\\u0000"})),
            json!({"p": "C:\\u0000"})
        );
        assert_eq!(
            scrubbed(&json!(["\\\0", "\\\\"])),
            json!(["\\\u{FFFD}", "\\\\"])
        );
        let plain = br#"{"sensor_id":7,"recv_iso":"2026-11-29T09:00:00.000Z"}"#;
        assert!(matches!(scrub_json_text(plain), Cow::Borrowed(_)));
        assert_eq!(pg_text("no nul"), Cow::Borrowed("no nul"));
        assert_eq!(pg_text("\0\0"), "\u{FFFD}\u{FFFD}");
        assert!(matches!(pg_json(&json!({"k": [1, "v"]})), Cow::Borrowed(_)));
    }
}
