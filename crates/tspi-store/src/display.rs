//! What a display asks of the archive around a moment: the picture at that moment (every
//! track's last record and its trail), where the archive holds data (coverage), and the
//! tags of a span. Times are on the receive clock: the producer's stamp for telemetry.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::Client;

use crate::read::{query_archived, ArchivedMessage};
use crate::StoreError;

/// How far a record's bus time may be after its receive time (ingest lag) and still be
/// found by receive time; the bus time has the index.
pub const RECEIVE_MARGIN: Duration = Duration::from_secs(10);
/// How far the bus's clock may be behind the producer's.
pub const CLOCK_SKEW: Duration = Duration::from_secs(2);

/// The picture a display shows at a moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PictureSpec {
    pub at: OffsetDateTime,
    /// How far back a track's last record is looked for.
    pub lookback: Duration,
    /// The trail behind each track.
    pub trail: Duration,
    /// At most one trail record per this much time per track (the latest of each step).
    pub step: Duration,
}

fn span(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

/// Each track's last telemetry record received at or before `spec.at` (within the
/// lookback), and its trail: the latest record of each `step` of the trail span. Oldest
/// first, so a display draws trails in order and ends on the last position.
pub async fn picture_at(
    client: &Client,
    stream: &str,
    spec: &PictureSpec,
) -> Result<Vec<ArchivedMessage>, StoreError> {
    let lookback = spec.lookback.max(spec.trail);
    let step_s = spec.step.as_secs_f64().max(0.001);
    let earliest = spec.at - span(lookback);
    // Trail steps are bins counted back from the moment, each closed at its end: (at -
    // step, at] is the first, so a record exactly at the moment is in it (date_bin's bins
    // are closed at their start, hence t - 1 µs, the timestamps' resolution). Everything
    // older is one bin.
    let trail_floor = spec.at - span(spec.trail) - span(spec.step);
    let (from, to) = (earliest - span(CLOCK_SKEW), spec.at + span(RECEIVE_MARGIN));
    // The choice on narrow rows (sensor, time, key), then the chosen rows by their key:
    // sorting 10⁴-10⁵ full rows with their raw bytes was most of the cost.
    query_archived(
        client,
        "WITH w AS (
             SELECT m.sensor_id, m.stream_seq, m.stream_ts, coalesce(m.recv_ts, m.stream_ts) AS t
             FROM messages m
             WHERE m.stream = $1 AND m.kind = 'telemetry'
               AND m.stream_ts >= $2 AND m.stream_ts < $3
               AND coalesce(m.recv_ts, m.stream_ts) <= $4
               AND coalesce(m.recv_ts, m.stream_ts) > $5),
         picked AS (
             SELECT DISTINCT ON (w.sensor_id, b.bucket) w.stream_seq, w.stream_ts, w.t
             FROM w, LATERAL (SELECT greatest(date_bin(make_interval(secs => $6),
                                                       w.t - interval '1 microsecond', $4), $7) AS bucket) b
             ORDER BY w.sensor_id, b.bucket, w.t DESC, w.stream_seq DESC)
         SELECT m.stream_seq, m.stream_ts, m.recv_ts, m.subject, m.kind, m.msg_id, m.day,
                m.time_s, m.raw
         FROM picked p
         JOIN messages m ON m.stream = $1 AND m.stream_seq = p.stream_seq AND m.stream_ts = p.stream_ts
         ORDER BY p.t, p.stream_seq",
        &[&stream, &from, &to, &spec.at, &earliest, &step_s, &trail_floor],
    )
    .await
}

/// Messages per bucket of `[start, end)` (bus time), `buckets` equal buckets.
///
/// Counted by sequence, not by reading the rows: the stream sequence grows with the bus
/// time, so a bucket holds the messages between the first sequence at or after its start
/// and the next bucket's. Each of those is a narrow probe the time index answers (a
/// tenth of a second at a bucket's start, the whole bucket only when that is empty), so
/// a day of data costs what a minute does.
pub async fn coverage(
    client: &Client,
    stream: &str,
    start: OffsetDateTime,
    end: OffsetDateTime,
    buckets: u32,
) -> Result<Vec<i64>, StoreError> {
    let n = buckets.max(1);
    let mut counts = vec![0i64; n as usize];
    if end <= start {
        return Ok(counts);
    }
    let Some(span) = crate::read::window_span(client, stream, start, end).await? else {
        return Ok(counts);
    };
    let width = (end - start) / f64::from(n);
    let probe = width.min(time::Duration::milliseconds(100));
    let rows = client
        .query(
            "SELECT b.i, coalesce(
                 (SELECT min(stream_seq) FROM messages
                  WHERE stream = $1 AND stream_ts >= b.t AND stream_ts < b.t + $4::interval),
                 (SELECT min(stream_seq) FROM messages
                  WHERE stream = $1 AND stream_ts >= b.t AND stream_ts < b.t + $5::interval))
             FROM (SELECT i, $2::timestamptz + $5::interval * i AS t
                   FROM generate_series(0, $3::int4 - 1) i) b",
            &[
                &stream,
                &start,
                &(n as i32),
                &pg_interval(probe),
                &pg_interval(width),
            ],
        )
        .await?;
    // The first sequence at or after each bucket's start; an empty bucket's is its
    // successor's, and the end's is one past the window's last.
    let mut first: Vec<Option<i64>> = vec![None; n as usize + 1];
    for row in rows {
        let i: i32 = row.try_get(0)?;
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| first.get_mut(i)) {
            *slot = row.try_get(1)?;
        }
    }
    first[n as usize] = Some(span.last_seq + 1);
    for i in (0..n as usize).rev() {
        if first[i].is_none() {
            first[i] = first[i + 1];
        }
    }
    for (i, c) in counts.iter_mut().enumerate() {
        if let (Some(a), Some(b)) = (first[i], first[i + 1]) {
            *c = (b - a).max(0);
        }
    }
    Ok(counts)
}

/// A `time::Duration` as a PostgreSQL interval parameter (microseconds).
fn pg_interval(d: time::Duration) -> PgInterval {
    PgInterval(
        d.whole_microseconds()
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
    )
}

/// An interval of whole microseconds, as tokio-postgres has no interval type of its own.
#[derive(Debug, Clone, Copy)]
struct PgInterval(i64);

impl tokio_postgres::types::ToSql for PgInterval {
    fn to_sql(
        &self,
        _: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // Binary interval: microseconds, days, months.
        out.extend_from_slice(&self.0.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        *ty == tokio_postgres::types::Type::INTERVAL
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A tag as a display lists it (its latest state).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TagSummary {
    pub id: String,
    /// The tagged moment (RFC 3339).
    pub ts: String,
    pub label: String,
    pub status: String,
    pub creator: Option<String>,
    pub notes: Option<String>,
    pub updated_ts: String,
}

/// The tags (latest state, deleted ones too) whose moment is in `[start, end)`, in order
/// of their moments, at most `limit`.
pub async fn tags_between(
    client: &Client,
    start: OffsetDateTime,
    end: OffsetDateTime,
    limit: i64,
) -> Result<Vec<TagSummary>, StoreError> {
    let rows = client
        .query(
            "SELECT id, ts, label, status, creator, notes, updated_ts FROM tags
             WHERE ts >= $1 AND ts < $2 ORDER BY ts, id LIMIT $3",
            &[&start, &end, &limit],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(TagSummary {
                id: r.try_get(0)?,
                ts: iso_millis(r.try_get(1)?),
                label: r.try_get(2)?,
                status: r.try_get(3)?,
                creator: r.try_get(4)?,
                notes: r.try_get(5)?,
                updated_ts: iso_millis(r.try_get(6)?),
            })
        })
        .collect()
}

/// RFC 3339 UTC with milliseconds, the bus's form.
fn iso_millis(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}
