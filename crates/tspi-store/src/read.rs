//! The queries replay needs: a time window in stream order, the command state in force at
//! a moment, the tags before it, and a tag by id.

use time::OffsetDateTime;
use tokio_postgres::{Client, Row};

use crate::StoreError;

/// An archived message as replay needs it: original bytes plus the times it is paced by.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedMessage {
    pub stream_seq: i64,
    pub stream_ts: OffsetDateTime,
    /// The producer's receive time (telemetry); `None` for commands and tags.
    pub recv_ts: Option<OffsetDateTime>,
    pub subject: String,
    pub kind: String,
    pub msg_id: Option<String>,
    pub day: Option<i16>,
    pub time_s: Option<f64>,
    /// The original payload (shared, not copied, when it is published again).
    pub raw: bytes::Bytes,
}

impl ArchivedMessage {
    /// The receive clock: the producer's stamp for telemetry, the bus's for the rest.
    pub fn receive_time(&self) -> OffsetDateTime {
        self.recv_ts.unwrap_or(self.stream_ts)
    }

    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(ArchivedMessage {
            stream_seq: row.try_get("stream_seq")?,
            stream_ts: row.try_get("stream_ts")?,
            recv_ts: row.try_get("recv_ts")?,
            subject: row.try_get("subject")?,
            kind: row.try_get("kind")?,
            msg_id: row.try_get("msg_id")?,
            day: row.try_get("day")?,
            time_s: row.try_get("time_s")?,
            raw: bytes::Bytes::from(row.try_get::<_, Vec<u8>>("raw")?),
        })
    }
}

pub(crate) async fn query_archived(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<ArchivedMessage>, StoreError> {
    let rows = client.query(sql, params).await?;
    rows.iter()
        .map(|r| ArchivedMessage::from_row(r).map_err(StoreError::from))
        .collect()
}

const COLUMNS: &str =
    "m.stream_seq, m.stream_ts, m.recv_ts, m.subject, m.kind, m.msg_id, m.day, m.time_s, m.raw";

/// The span of a window `[start, end)` of stream time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpan {
    pub first_seq: i64,
    pub last_seq: i64,
    pub count: i64,
}

/// First and last stream sequence in `[start, end)` (stream time) and the messages
/// between them (the sequence span, invalid rows included); `None` if none.
///
/// Found by probes that grow from each end of the window (a second, then eight times
/// more each time): each probe is a narrow range the time index answers at once, so the
/// span of a long window costs about what a short one does.
pub async fn window_span(
    client: &Client,
    stream: &str,
    start: OffsetDateTime,
    end: OffsetDateTime,
) -> Result<Option<WindowSpan>, StoreError> {
    let Some(first_seq) = edge_seq(client, stream, start, end, true).await? else {
        return Ok(None);
    };
    let last_seq = edge_seq(client, stream, start, end, false)
        .await?
        .unwrap_or(first_seq);
    Ok(Some(WindowSpan {
        first_seq,
        last_seq,
        count: last_seq - first_seq + 1,
    }))
}

/// The first (or last) sequence of a valid message in `[start, end)`.
async fn edge_seq(
    client: &Client,
    stream: &str,
    start: OffsetDateTime,
    end: OffsetDateTime,
    first: bool,
) -> Result<Option<i64>, StoreError> {
    let sql = if first {
        "SELECT min(stream_seq) FROM messages
         WHERE stream = $1 AND stream_ts >= $2 AND stream_ts < $3 AND kind <> 'invalid'"
    } else {
        "SELECT max(stream_seq) FROM messages
         WHERE stream = $1 AND stream_ts >= $2 AND stream_ts < $3 AND kind <> 'invalid'"
    };
    let mut width = time::Duration::SECOND;
    loop {
        let (lo, hi) = if first {
            (start, (start + width).min(end))
        } else {
            ((end - width).max(start), end)
        };
        let found: Option<i64> = client
            .query_one(sql, &[&stream, &lo, &hi])
            .await?
            .try_get(0)?;
        if found.is_some() || (lo <= start && hi >= end) {
            return Ok(found);
        }
        width = width.saturating_mul(8);
    }
}

/// Up to `limit` messages of the window after `after_seq`, in stream order (keyset paging,
/// so a long window is never held in memory at once). Undecodable messages are left out.
pub async fn window_page(
    client: &Client,
    stream: &str,
    start: OffsetDateTime,
    end: OffsetDateTime,
    after_seq: i64,
    last_seq: i64,
    limit: i64,
) -> Result<Vec<ArchivedMessage>, StoreError> {
    query_archived(
        client,
        &format!(
            "SELECT {COLUMNS} FROM messages m
                 WHERE m.stream = $1 AND m.stream_seq > $2 AND m.stream_seq <= $3
                   AND m.stream_ts >= $4 AND m.stream_ts < $5 AND m.kind <> 'invalid'
                 ORDER BY m.stream_seq LIMIT $6"
        ),
        &[&stream, &after_seq, &last_seq, &start, &end, &limit],
    )
    .await
}

/// The last command of each name before `at`: the display state in force at that moment,
/// oldest first.
pub async fn command_state_at(
    client: &Client,
    stream: &str,
    at: OffsetDateTime,
) -> Result<Vec<ArchivedMessage>, StoreError> {
    query_archived(
        client,
        &format!(
            "SELECT * FROM (
                     SELECT DISTINCT ON (c.name) {COLUMNS}
                     FROM commands c
                     JOIN messages m ON m.stream = c.stream AND m.stream_seq = c.stream_seq
                                    AND m.stream_ts = c.stream_ts
                     WHERE c.stream = $1 AND c.stream_ts < $2
                     ORDER BY c.name, c.stream_seq DESC) s
                 ORDER BY s.stream_seq"
        ),
        &[&stream, &at],
    )
    .await
}

/// Each tag's latest state as of `at` (only states the bus had by then), when that state
/// is active and tags a moment before `at`; in order of the tagged moment.
pub async fn tags_before(
    client: &Client,
    stream: &str,
    at: OffsetDateTime,
) -> Result<Vec<ArchivedMessage>, StoreError> {
    query_archived(
        client,
        &format!(
            "SELECT * FROM (
                     SELECT DISTINCT ON (m.record->>'id') {COLUMNS}, m.record->>'status' AS status,
                            (m.record->>'ts')::timestamptz AS tagged
                     FROM messages m
                     WHERE m.stream = $1 AND m.kind = 'tag' AND m.stream_ts < $2
                     ORDER BY m.record->>'id', m.stream_seq DESC) s
                 WHERE s.status = 'active' AND s.tagged < $2
                 ORDER BY s.tagged, s.stream_seq"
        ),
        &[&stream, &at],
    )
    .await
}

/// The alarms in force at `at`: each alarm's latest transition on the bus before `at`
/// (by its id), when it left the alarm active; in stream order.
pub async fn alarms_at(
    client: &Client,
    stream: &str,
    at: OffsetDateTime,
) -> Result<Vec<ArchivedMessage>, StoreError> {
    query_archived(
        client,
        &format!(
            "SELECT * FROM (
                     SELECT DISTINCT ON (m.record->>'id') {COLUMNS}, (m.record->>'active')::boolean AS active
                     FROM messages m
                     WHERE m.stream = $1 AND m.kind = 'alarm' AND m.stream_ts < $2
                     ORDER BY m.record->>'id', m.stream_seq DESC) s
                 WHERE s.active
                 ORDER BY s.stream_seq"
        ),
        &[&stream, &at],
    )
    .await
}

/// Every command and tag message from `from` up to `to` (stream time) after stream
/// sequence `after_seq`, in stream order: what a forward seek skips over.
pub async fn control_messages_between(
    client: &Client,
    stream: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    after_seq: i64,
) -> Result<Vec<ArchivedMessage>, StoreError> {
    query_archived(
        client,
        &format!(
            "SELECT {COLUMNS} FROM messages m
                 WHERE m.stream = $1 AND m.kind IN ('command', 'tag', 'alarm')
                   AND m.stream_ts >= $2 AND m.stream_ts < $3 AND m.stream_seq > $4
                 ORDER BY m.stream_seq"
        ),
        &[&stream, &from, &to, &after_seq],
    )
    .await
}

/// A tag's tagged moment and status from `tags` (latest state).
pub async fn tag_moment(
    client: &Client,
    id: &str,
) -> Result<Option<(OffsetDateTime, String)>, StoreError> {
    let row = client
        .query_opt("SELECT ts, status FROM tags WHERE id = $1", &[&id])
        .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
}
