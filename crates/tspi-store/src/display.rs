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
    // Trail steps are bins counted back from the moment; everything older is one bin.
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
             FROM w, LATERAL (SELECT greatest(date_bin(make_interval(secs => $6), w.t, $4), $7) AS bucket) b
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

/// Telemetry messages per bucket of `[start, end)` (bus time), `buckets` equal buckets.
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
    let (s, e) = (epoch_s(start), epoch_s(end));
    let rows = client
        .query(
            "SELECT width_bucket(extract(epoch FROM stream_ts)::float8, $2::float8, $3::float8, $4::int4) AS b, count(*)
             FROM messages
             WHERE stream = $1 AND kind = 'telemetry' AND stream_ts >= $5 AND stream_ts < $6
             GROUP BY b",
            &[&stream, &s, &e, &(n as i32), &start, &end],
        )
        .await?;
    for row in rows {
        let b: i32 = row.try_get(0)?;
        let c: i64 = row.try_get(1)?;
        if let Some(slot) = usize::try_from(b - 1).ok().and_then(|i| counts.get_mut(i)) {
            *slot += c;
        }
    }
    Ok(counts)
}

fn epoch_s(t: OffsetDateTime) -> f64 {
    t.unix_timestamp_nanos() as f64 / 1e9
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
