//! What an export reads: a window's telemetry as one streamed `COPY … TO STDOUT (FORMAT
//! binary)` — the fastest way PostgreSQL hands rows out, never held in memory — in
//! stream order or sensor by sensor, plus the questions asked before a file is started
//! (is there anything, which sensors, how many messages).

use futures_util::{pin_mut, Stream, StreamExt};
use time::OffsetDateTime;
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::StoreError;

/// Which telemetry an export reads.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportQuery {
    pub stream: String,
    /// Bus time bounds, `[from, to)`: where the rows are looked for (the time index).
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    /// Receive time bounds `[start, end)`, when the window is on the receive clock.
    pub received: Option<(OffsetDateTime, OffsetDateTime)>,
    /// Only these sensors (all when empty).
    pub sensors: Vec<u16>,
    /// Sensor by sensor (each in stream order) instead of stream order.
    pub by_sensor: bool,
    /// The stream sequences of the bounds, when known ([`window_seqs`]): the primary key
    /// then reads the window in order, on any server, without sorting it.
    pub seqs: Option<(i64, i64)>,
}

/// One archived telemetry message: its stream sequence and the record's CBOR.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSource {
    pub stream_seq: i64,
    pub raw: bytes::Bytes,
}

/// A literal for COPY, which takes no parameters: RFC 3339 with microseconds (every
/// character a digit or `-:.TZ`, so nothing needs escaping).
fn timestamp_literal(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "'{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z'::timestamptz",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// A text literal (single quotes doubled, standard_conforming_strings).
fn text_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn conditions(q: &ExportQuery) -> String {
    let mut sql = format!(
        "stream = {} AND kind = 'telemetry' AND stream_ts >= {} AND stream_ts < {}",
        text_literal(&q.stream),
        timestamp_literal(q.from),
        timestamp_literal(q.to)
    );
    if let Some((first, last)) = q.seqs {
        sql.push_str(&format!(
            " AND stream_seq >= {first} AND stream_seq <= {last}"
        ));
    }
    if let Some((start, end)) = q.received {
        sql.push_str(&format!(
            " AND recv_ts >= {} AND recv_ts < {}",
            timestamp_literal(start),
            timestamp_literal(end)
        ));
    }
    if !q.sensors.is_empty() {
        let ids: Vec<String> = q.sensors.iter().map(u16::to_string).collect();
        sql.push_str(&format!(" AND sensor_id IN ({})", ids.join(",")));
    }
    if q.by_sensor {
        // The partial index on (sensor_id, stream_ts) serves this order.
        sql.push_str(" AND sensor_id IS NOT NULL");
    }
    sql
}

/// The window's telemetry, streamed.
pub async fn export_rows(
    client: &Client,
    q: &ExportQuery,
) -> Result<impl Stream<Item = Result<ExportSource, StoreError>>, StoreError> {
    // Stream order is sequence order (the primary key's); sensor order is served by the
    // (sensor_id, stream_ts) index where there is one (TimescaleDB), sorted otherwise.
    let order = if q.by_sensor {
        "sensor_id, stream_ts, stream_seq"
    } else {
        "stream_seq"
    };
    let sql = format!(
        "COPY (SELECT stream_seq, raw FROM messages WHERE {} ORDER BY {order}) TO STDOUT (FORMAT binary)",
        conditions(q)
    );
    let copy = client.copy_out(sql.as_str()).await?;
    let rows = BinaryCopyOutStream::new(copy, &[Type::INT8, Type::BYTEA]);
    Ok(rows.map(|row| {
        let row = row?;
        Ok(ExportSource {
            stream_seq: row.try_get(0)?,
            raw: bytes::Bytes::copy_from_slice(row.try_get::<&[u8]>(1)?),
        })
    }))
}

/// The same rows as PostgreSQL's own CSV export (`COPY (SELECT …) TO STDOUT WITH CSV` of
/// the stored columns an analyst would take: time, sensor, the decoded record as JSON):
/// the baseline the export benchmark measures against. Returns the bytes it produced.
pub async fn copy_csv_baseline(client: &Client, q: &ExportQuery) -> Result<u64, StoreError> {
    let sql = format!(
        "COPY (SELECT stream_seq, stream_ts, recv_ts, subject, sensor_id, day, time_s, record
               FROM messages WHERE {} ORDER BY stream_seq) TO STDOUT WITH (FORMAT csv, HEADER)",
        conditions(q)
    );
    let copy = client.copy_out(sql.as_str()).await?;
    pin_mut!(copy);
    let mut bytes = 0u64;
    while let Some(chunk) = copy.next().await {
        bytes += chunk?.len() as u64;
    }
    Ok(bytes)
}

/// Whether the window holds any telemetry (one probe of the time index).
pub async fn has_telemetry(client: &Client, q: &ExportQuery) -> Result<bool, StoreError> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE {})",
        conditions(q)
    );
    Ok(client.query_one(sql.as_str(), &[]).await?.try_get(0)?)
}

/// The first and last bus time of `stream`'s telemetry (what the archive holds), if any.
pub async fn telemetry_span(
    client: &Client,
    stream: &str,
) -> Result<Option<(OffsetDateTime, OffsetDateTime)>, StoreError> {
    let row = client
        .query_one(
            "SELECT (SELECT min(stream_ts) FROM messages WHERE stream = $1 AND kind = 'telemetry'),
                    (SELECT max(stream_ts) FROM messages WHERE stream = $1 AND kind = 'telemetry')",
            &[&stream],
        )
        .await?;
    let first: Option<OffsetDateTime> = row.try_get(0)?;
    let last: Option<OffsetDateTime> = row.try_get(1)?;
    Ok(first.zip(last))
}

/// The sensors with telemetry in the query's window, ascending: one pass over the
/// window (TimescaleDB answers `DISTINCT` on its sensor index with a skip scan).
pub async fn sensors_in_window(client: &Client, q: &ExportQuery) -> Result<Vec<u16>, StoreError> {
    let all = ExportQuery {
        sensors: Vec::new(),
        by_sensor: false,
        ..q.clone()
    };
    let sql = format!(
        "SELECT DISTINCT sensor_id FROM messages WHERE {} AND sensor_id IS NOT NULL ORDER BY sensor_id",
        conditions(&all)
    );
    let rows = client.query(sql.as_str(), &[]).await?;
    rows.iter()
        .map(|r| {
            let id: i32 = r.try_get(0)?;
            Ok(u16::try_from(id).unwrap_or(u16::MAX))
        })
        .collect()
}

/// Whether `sensor` has telemetry in the query's window (a probe that stops at the first
/// row).
pub async fn sensor_in_window(
    client: &Client,
    q: &ExportQuery,
    sensor: u16,
) -> Result<bool, StoreError> {
    let one = ExportQuery {
        sensors: vec![sensor],
        by_sensor: false,
        ..q.clone()
    };
    has_telemetry(client, &one).await
}

/// The first and last stream sequence between the query's bus-time bounds, and how many
/// messages that spans (an estimate of the rows to come, for progress): two probes that
/// grow from each end of the window.
pub async fn window_seqs(
    client: &Client,
    q: &ExportQuery,
) -> Result<Option<(i64, i64, i64)>, StoreError> {
    Ok(crate::read::window_span(client, &q.stream, q.from, q.to)
        .await?
        .map(|s| (s.first_seq, s.last_seq, s.count)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_cannot_break_out_of_the_statement() {
        assert_eq!(text_literal("TSPI"), "'TSPI'");
        assert_eq!(
            text_literal("a'; DROP TABLE x; --"),
            "'a''; DROP TABLE x; --'"
        );
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_759_057_200_123_456_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(
            timestamp_literal(t),
            "'2025-09-28T11:00:00.123456Z'::timestamptz"
        );
    }
}
