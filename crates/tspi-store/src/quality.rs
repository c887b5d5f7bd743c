//! Sensor-quality history from the archive: for each sensor and each minute of receive
//! time, how many messages came, how many its cadence says should have, where it fell
//! silent, how many of its messages could not be decoded, and its receive-time skew.
//!
//! The database keeps one aggregate row per sensor and minute (on TimescaleDB a
//! continuous aggregate, `sensor_quality_minute`, kept up to date by a policy; on plain
//! PostgreSQL the same `SELECT` runs over the raw rows of the asked span). Each row carries
//! a 600-bit map of the tenths of a second in which the sensor was heard, so silences
//! can be found to 0.1 s without reading the rows again. [`analyse`] turns those rows
//! into rates, expected counts and gaps; it is pure.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_postgres::{Client, GenericClient};

use crate::StoreError;

/// The continuous aggregate's name (TimescaleDB only).
pub const QUALITY_VIEW: &str = "sensor_quality_minute";

/// Tenths of a second per minute: the resolution of the silence map.
pub const BINS_PER_MINUTE: usize = 600;
const BIN_S: f64 = 0.1;

/// Messages reach the bus after they were received; a receive minute is looked for in
/// bus minutes up to this much later (a producer's backlog after a link cut, a site's
/// catch-up).
const BUS_LAG_MARGIN: Duration = Duration::from_secs(600);

/// Migration 5: the per-row helpers of the aggregate. Skew takes the TSPI time's year
/// from the receive time, the neighbouring year near New Year when that lands closer
/// (as `tspi_core::rfc3339::tspi_to_epoch_ms` does): receive time less the day and seconds,
/// measured from the New Year nearest to it. The bodies call only built-in functions:
/// TimescaleDB refreshes with a search path of `pg_catalog` alone.
pub(crate) const FUNCTIONS: &str = "
    CREATE FUNCTION tspi_recv_skew_s(recv timestamptz, day smallint, time_s double precision)
        RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$ SELECT date_part('epoch',
                 ((recv AT TIME ZONE 'UTC') - make_interval(days => day - 1, secs => time_s))
                 - date_trunc('year', (recv AT TIME ZONE 'UTC')
                     - make_interval(days => day - 1, secs => time_s) + interval '183 days')) $$;
    CREATE FUNCTION tspi_quality_bit(recv timestamptz)
        RETURNS bit varying LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$ SELECT (B'1'::bit(600) >> (floor(date_part('epoch', recv AT TIME ZONE 'UTC') * 10)::bigint % 600)::int)::bit varying $$;";

/// The per-minute aggregate over `messages`, grouped by bus minute (`bucket`, which a
/// continuous aggregate needs), sensor and receive minute. Undecodable messages count
/// for the sensor their subject names.
fn aggregate_select(bucket: &str, extra_filter: &str) -> String {
    format!(
        r"SELECT stream, {bucket} AS bus_minute,
               coalesce(sensor_id, substring(subject FROM '\.(\d{{1,5}})$')::int) AS sensor_id,
               date_trunc('minute', coalesce(recv_ts, stream_ts) AT TIME ZONE 'UTC') AS minute,
               count(*) FILTER (WHERE kind = 'telemetry') AS messages,
               count(*) FILTER (WHERE kind = 'invalid') AS invalid,
               bit_or(tspi_quality_bit(recv_ts)) FILTER (WHERE kind = 'telemetry') AS seen,
               percentile_cont(ARRAY[0.5, 0.99]::double precision[])
                   WITHIN GROUP (ORDER BY tspi_recv_skew_s(recv_ts, day, time_s))
                   FILTER (WHERE kind = 'telemetry') AS skew_s
        FROM messages
        WHERE (kind = 'telemetry' OR (kind = 'invalid' AND subject ~ '\.\d{{1,5}}$')) {extra_filter}
        GROUP BY 1, 2, 3, 4"
    )
}

/// Creates the continuous aggregate and its refresh policy, if missing. Real-time: the
/// minutes not yet materialized are computed from the raw rows when asked. The policy
/// refreshes no further back than the retention, so the history outlives the raw rows.
pub(crate) async fn create_continuous_aggregate(
    tx: &impl GenericClient,
    retain: Option<Duration>,
) -> Result<(), StoreError> {
    tx.batch_execute(&format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {QUALITY_VIEW}
             WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS {}
             WITH NO DATA",
        aggregate_select("time_bucket('1 minute', stream_ts)", "")
    ))
    .await?;
    let start_offset = retain.map(crate::schema::interval);
    tx.execute(
        &format!(
            "SELECT add_continuous_aggregate_policy('{QUALITY_VIEW}',
                 start_offset => $1::text::interval, end_offset => interval '1 minute',
                 schedule_interval => interval '1 minute', if_not_exists => TRUE)"
        ),
        &[&start_offset],
    )
    .await?;
    Ok(())
}

/// Where [`quality_rows`] read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QualitySource {
    /// TimescaleDB's continuous aggregate (materialized minutes plus the newest raw rows).
    ContinuousAggregate,
    /// The same aggregate computed over the raw rows of the span.
    RawRows,
}

/// One sensor's receive minute as the database aggregates it.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityRow {
    pub sensor_id: i32,
    pub minute: OffsetDateTime,
    /// Decoded telemetry messages.
    pub messages: i64,
    /// Messages on the sensor's subjects that could not be decoded.
    pub invalid: i64,
    /// Bit i (most significant first) set when a message was received in the minute's
    /// i-th tenth of a second; empty when none was.
    pub seen: Vec<u8>,
    pub skew_p50_s: Option<f64>,
    pub skew_p99_s: Option<f64>,
}

impl QualityRow {
    fn heard(&self, bin: usize) -> bool {
        self.seen
            .get(bin / 8)
            .is_some_and(|b| b & (0x80 >> (bin % 8)) != 0)
    }
}

/// The aggregate rows of `stream` for receive minutes in `[since, until)` (since rounded
/// down to its minute), one sensor or all, in sensor and minute order. `source` forces
/// the raw rows (`Some(RawRows)`); by default the continuous aggregate is used when
/// there is one.
pub async fn quality_rows(
    client: &Client,
    stream: &str,
    since: OffsetDateTime,
    until: OffsetDateTime,
    sensor: Option<i32>,
    source: Option<QualitySource>,
) -> Result<(QualitySource, Vec<QualityRow>), StoreError> {
    let source = match source {
        Some(s) => s,
        None => {
            let cagg: bool = client
                .query_one(
                    "SELECT to_regclass($1) IS NOT NULL",
                    &[&QUALITY_VIEW.to_owned()],
                )
                .await?
                .get(0);
            if cagg {
                QualitySource::ContinuousAggregate
            } else {
                QualitySource::RawRows
            }
        }
    };
    let since = since
        .replace_second(0)
        .unwrap_or(since)
        .replace_nanosecond(0)
        .unwrap_or(since);
    let bus_from = since - time::Duration::minutes(1);
    let bus_to = until + BUS_LAG_MARGIN;
    let from = match source {
        QualitySource::ContinuousAggregate => QUALITY_VIEW.to_owned(),
        QualitySource::RawRows => format!(
            "({}) q",
            aggregate_select(
                "date_trunc('minute', stream_ts)",
                "AND stream = $1 AND stream_ts >= $2 AND stream_ts < $3"
            )
        ),
    };
    let rows = client
        .query(
            &format!(
                "SELECT sensor_id, minute AT TIME ZONE 'UTC', sum(messages)::int8, sum(invalid)::int8,
                        substring(varbit_send(bit_or(seen)) FROM 5),
                        (array_agg(skew_s[1] ORDER BY messages DESC))[1],
                        (array_agg(skew_s[2] ORDER BY messages DESC))[1]
                 FROM {from}
                 WHERE stream = $1 AND bus_minute >= $2 AND bus_minute < $3
                   AND minute >= ($4::timestamptz AT TIME ZONE 'UTC')
                   AND minute < ($5::timestamptz AT TIME ZONE 'UTC')
                   AND ($6::int4 IS NULL OR sensor_id = $6)
                 GROUP BY sensor_id, minute
                 ORDER BY sensor_id, minute"
            ),
            &[&stream, &bus_from, &bus_to, &since, &until, &sensor],
        )
        .await?;
    let rows = rows
        .iter()
        .map(|r| {
            Ok(QualityRow {
                sensor_id: r.try_get(0)?,
                minute: r.try_get(1)?,
                messages: r.try_get(2)?,
                invalid: r.try_get(3)?,
                seen: r.try_get::<_, Option<Vec<u8>>>(4)?.unwrap_or_default(),
                skew_p50_s: r.try_get(5)?,
                skew_p99_s: r.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    Ok((source, rows))
}

fn rfc3339<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.format(&Rfc3339).map_err(serde::ser::Error::custom)?)
}

fn rfc3339_opt<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

/// A silence longer than two of the sensor's periods.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gap {
    /// The first tenth of a second in which nothing was heard.
    #[serde(serialize_with = "rfc3339")]
    pub start: OffsetDateTime,
    /// Seconds of silence, to 0.1 s.
    pub length_s: f64,
}

/// One sensor's minute, analysed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinuteQuality {
    #[serde(serialize_with = "rfc3339")]
    pub minute: OffsetDateTime,
    pub messages: i64,
    /// What the sensor's rate promises over the part of the minute it was active in.
    pub expected: i64,
    /// `expected - messages`, never below 0.
    pub missed: i64,
    /// Gaps that start in this minute, and the longest of them (seconds).
    pub gaps: u32,
    pub longest_gap_s: f64,
    pub invalid: i64,
    pub skew_p50_ms: Option<f64>,
    pub skew_p99_ms: Option<f64>,
}

/// One sensor over the asked span.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SensorQuality {
    pub sensor_id: i32,
    /// Nominal rate inferred from the data (messages per second over its complete
    /// minutes, silences excluded); `None` with fewer than two messages.
    pub rate_hz: Option<f64>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub first_heard: Option<OffsetDateTime>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_heard: Option<OffsetDateTime>,
    pub messages: i64,
    pub expected: i64,
    pub missed: i64,
    pub invalid: i64,
    pub gaps: Vec<Gap>,
    /// Median of the minutes' p50 skew, and the largest p99.
    pub skew_p50_ms: Option<f64>,
    pub skew_p99_ms: Option<f64>,
    pub minutes: Vec<MinuteQuality>,
}

/// Rates, expected counts and gaps per sensor from its minute rows (any order).
pub fn analyse(rows: &[QualityRow]) -> Vec<SensorQuality> {
    let mut by_sensor: BTreeMap<i32, Vec<&QualityRow>> = BTreeMap::new();
    for r in rows {
        by_sensor.entry(r.sensor_id).or_default().push(r);
    }
    by_sensor
        .into_iter()
        .map(|(sensor_id, mut rows)| {
            rows.sort_by_key(|r| r.minute);
            analyse_sensor(sensor_id, &rows)
        })
        .collect()
}

fn analyse_sensor(sensor_id: i32, rows: &[&QualityRow]) -> SensorQuality {
    let first_minute = rows
        .first()
        .map_or(OffsetDateTime::UNIX_EPOCH, |r| r.minute);
    let minute_index = |r: &QualityRow| ((r.minute - first_minute).whole_seconds() / 60) as usize;
    let n_minutes = rows.last().map_or(0, |r| minute_index(r) + 1);
    // The silence map of the whole span, minute after minute.
    let mut heard = vec![false; n_minutes * BINS_PER_MINUTE];
    let mut messages = vec![0i64; n_minutes];
    for r in rows {
        let base = minute_index(r) * BINS_PER_MINUTE;
        messages[minute_index(r)] += r.messages;
        for (bin, slot) in heard[base..base + BINS_PER_MINUTE].iter_mut().enumerate() {
            *slot |= r.heard(bin);
        }
    }
    let first_bin = heard.iter().position(|h| *h);
    let last_bin = heard.iter().rposition(|h| *h);
    let at_bin = |bin: usize| first_minute + time::Duration::milliseconds(bin as i64 * 100);
    let total: i64 = messages.iter().sum();

    let (rate, gaps) = match (first_bin, last_bin) {
        (Some(first), Some(last)) => {
            // Complete minutes: heard before they began and after they ended.
            let complete: Vec<usize> = (0..n_minutes)
                .filter(|&k| first < k * BINS_PER_MINUTE && last >= (k + 1) * BINS_PER_MINUTE)
                .collect();
            let rough = if complete.is_empty() {
                (total >= 2 && last > first)
                    .then(|| (total - 1) as f64 / ((last - first) as f64 * BIN_S))
            } else {
                let mut per_minute: Vec<f64> = complete
                    .iter()
                    .map(|&k| messages[k] as f64 / 60.0)
                    .collect();
                per_minute.sort_by(f64::total_cmp);
                Some(per_minute[per_minute.len() / 2]).filter(|r| *r > 0.0)
            };
            // Refined over the complete minutes with their silences left out, which a
            // median of minutes with dropouts in half of them would not survive.
            let rate = rough.map(|rough| {
                if complete.is_empty() {
                    // A short span: its intervals over its time less the silences.
                    let silent: usize = silences(&heard, first, last, rough)
                        .iter()
                        .map(|&(_, len)| len)
                        .sum();
                    let span = last - first;
                    return if span > silent {
                        (total - 1) as f64 / ((span - silent) as f64 * BIN_S)
                    } else {
                        rough
                    };
                }
                let silent_bins: usize = silences(&heard, first, last, rough)
                    .iter()
                    .map(|&(start, len)| {
                        complete
                            .iter()
                            .map(|&k| overlap(start, len, k * BINS_PER_MINUTE, BINS_PER_MINUTE))
                            .sum::<usize>()
                    })
                    .sum();
                let active_s = (complete.len() * BINS_PER_MINUTE - silent_bins) as f64 * BIN_S;
                let n: i64 = complete.iter().map(|&k| messages[k]).sum();
                if active_s > 0.0 && n > 0 {
                    n as f64 / active_s
                } else {
                    rough
                }
            });
            let gaps = rate.map_or_else(Vec::new, |rate| silences(&heard, first, last, rate));
            (rate, gaps)
        }
        _ => (None, Vec::new()),
    };

    let mut minutes = Vec::with_capacity(n_minutes);
    let mut invalid = vec![0i64; n_minutes];
    let mut skew: Vec<(Option<f64>, Option<f64>)> = vec![(None, None); n_minutes];
    for r in rows {
        invalid[minute_index(r)] += r.invalid;
        skew[minute_index(r)] = (r.skew_p50_s, r.skew_p99_s);
    }
    for k in 0..n_minutes {
        let start = k * BINS_PER_MINUTE;
        // Active from the first message to one period after the last.
        let active_bins = match (first_bin, last_bin, rate) {
            (Some(f), Some(l), Some(r)) => {
                let period_bins = ((1.0 / (r * BIN_S)).round() as usize).max(1);
                overlap(f, l + period_bins - f, start, BINS_PER_MINUTE)
            }
            _ => 0,
        };
        let expected = rate.map_or(0, |r| (active_bins as f64 * BIN_S * r).round() as i64);
        let starting: Vec<&(usize, usize)> = gaps
            .iter()
            .filter(|(s, _)| (start..start + BINS_PER_MINUTE).contains(s))
            .collect();
        minutes.push(MinuteQuality {
            minute: at_bin(start),
            messages: messages[k],
            expected,
            missed: (expected - messages[k]).max(0),
            gaps: starting.len() as u32,
            longest_gap_s: starting
                .iter()
                .map(|(_, len)| *len as f64 * BIN_S)
                .fold(0.0, f64::max),
            invalid: invalid[k],
            skew_p50_ms: skew[k].0.map(|s| s * 1e3),
            skew_p99_ms: skew[k].1.map(|s| s * 1e3),
        });
    }
    let mut p50s: Vec<f64> = minutes.iter().filter_map(|m| m.skew_p50_ms).collect();
    p50s.sort_by(f64::total_cmp);
    SensorQuality {
        sensor_id,
        rate_hz: rate,
        first_heard: first_bin.map(at_bin),
        last_heard: last_bin.map(|b| at_bin(b + 1)),
        messages: total,
        expected: minutes.iter().map(|m| m.expected).sum(),
        missed: minutes.iter().map(|m| m.missed).sum(),
        invalid: invalid.iter().sum(),
        gaps: gaps
            .iter()
            .map(|&(start, len)| Gap {
                start: at_bin(start),
                length_s: len as f64 * BIN_S,
            })
            .collect(),
        skew_p50_ms: p50s.get(p50s.len() / 2).copied(),
        skew_p99_ms: minutes
            .iter()
            .filter_map(|m| m.skew_p99_ms)
            .reduce(f64::max),
        minutes,
    }
}

/// Runs of unheard tenths between `first` and `last` longer than two periods at `rate`
/// (plus one tenth, the map's own resolution): `(start bin, length in bins)`.
fn silences(heard: &[bool], first: usize, last: usize, rate: f64) -> Vec<(usize, usize)> {
    // (less a hair, so that 2 periods of exactly k tenths are k, not k + 1)
    let threshold = (2.0 / (rate * BIN_S) - 1e-6).ceil() as usize + 1;
    let mut out = Vec::new();
    let mut run_start = None;
    for (bin, h) in heard.iter().enumerate().take(last + 1).skip(first) {
        match (h, run_start) {
            (false, None) => run_start = Some(bin),
            (true, Some(s)) => {
                if bin - s >= threshold {
                    out.push((s, bin - s));
                }
                run_start = None;
            }
            _ => {}
        }
    }
    out
}

/// Bins shared by `[a, a + a_len)` and `[b, b + b_len)`.
fn overlap(a: usize, a_len: usize, b: usize, b_len: usize) -> usize {
    (a + a_len).min(b + b_len).saturating_sub(a.max(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &Rfc3339).unwrap()
    }

    /// Rows for a sensor heard at `rate` Hz from `from_s` to `to_s` seconds after
    /// `start` (a minute boundary), silent in `silent` (seconds, half-open).
    fn sensor(
        id: i32,
        start: &str,
        rate: f64,
        from_s: f64,
        to_s: f64,
        silent: &[(f64, f64)],
    ) -> Vec<QualityRow> {
        let start = t(start);
        let mut rows: BTreeMap<i64, QualityRow> = BTreeMap::new();
        let mut k = 0u64;
        loop {
            let at = from_s + k as f64 / rate;
            k += 1;
            if at >= to_s {
                break;
            }
            if silent.iter().any(|(a, b)| at >= *a && at < *b) {
                continue;
            }
            let minute = (at / 60.0).floor() as i64;
            let row = rows.entry(minute).or_insert_with(|| QualityRow {
                sensor_id: id,
                minute: start + time::Duration::minutes(minute),
                messages: 0,
                invalid: 0,
                seen: vec![0; BINS_PER_MINUTE / 8],
                skew_p50_s: Some(0.002),
                skew_p99_s: Some(0.004),
            });
            row.messages += 1;
            // A receive time a few milliseconds after the sensor's own, as on a bus.
            let bin = (((at + 0.003) - minute as f64 * 60.0) * 10.0).floor() as usize;
            if bin < BINS_PER_MINUTE {
                row.seen[bin / 8] |= 0x80 >> (bin % 8);
            }
        }
        rows.into_values().collect()
    }

    #[test]
    fn a_steady_sensor_has_no_gaps_and_expects_what_it_sent() {
        let rows = sensor(7, "2026-12-01T10:00:00Z", 10.0, 0.0, 180.0, &[]);
        let q = analyse(&rows);
        assert_eq!(q.len(), 1);
        let s = &q[0];
        assert!((s.rate_hz.unwrap() - 10.0).abs() < 1e-9, "{:?}", s.rate_hz);
        assert_eq!((s.messages, s.expected, s.missed), (1800, 1800, 0));
        assert!(s.gaps.is_empty(), "{:?}", s.gaps);
        assert_eq!(s.minutes.len(), 3);
        assert!(s.minutes.iter().all(|m| m.expected == 600 && m.gaps == 0));
        assert_eq!(s.first_heard, Some(t("2026-12-01T10:00:00Z")));
        assert_eq!(s.skew_p99_ms, Some(4.0));
    }

    #[test]
    fn dropouts_are_found_with_their_start_and_length_even_across_minutes() {
        // 20 Hz for 5 minutes; silent 30.0-37.5 s, 110-140 s (across a minute), and
        // 245.0-245.5 s (ten frames).
        let silent = [(30.0, 37.5), (110.0, 140.0), (245.0, 245.5)];
        let rows = sensor(3, "2026-12-01T10:00:00Z", 20.0, 0.0, 300.0, &silent);
        let s = &analyse(&rows)[0];
        assert!((s.rate_hz.unwrap() - 20.0).abs() < 1e-6, "{:?}", s.rate_hz);
        assert_eq!(s.gaps.len(), 3, "{:?}", s.gaps);
        for (gap, (a, b)) in s.gaps.iter().zip(silent) {
            let start = (gap.start - t("2026-12-01T10:00:00Z")).as_seconds_f64();
            assert!((start - a).abs() <= 0.1, "{gap:?} vs {a}");
            assert!(
                (gap.length_s - (b - a)).abs() <= 0.1 + 1e-9,
                "{gap:?} vs {a}..{b}"
            );
        }
        let missed: i64 = silent.iter().map(|(a, b)| ((b - a) * 20.0) as i64).sum();
        assert_eq!(s.missed, missed);
        assert_eq!(s.expected, 6000);
        // Minute 1 holds the start of the 30 s gap; minute 2 is silent until 140 s.
        assert_eq!(s.minutes[1].gaps, 1);
        assert!((s.minutes[1].longest_gap_s - 30.0).abs() <= 0.1);
        assert_eq!(s.minutes[2].gaps, 0);
        assert_eq!(s.minutes[2].missed, 400);
        assert_eq!(s.minutes[4].missed, 10);
    }

    #[test]
    fn a_silent_minute_between_heard_ones_expects_a_full_minute() {
        let rows = sensor(1, "2026-12-01T10:00:00Z", 5.0, 0.0, 240.0, &[(60.0, 120.0)]);
        let s = &analyse(&rows)[0];
        assert_eq!(rows.len(), 3, "no row for the silent minute");
        assert_eq!(s.minutes.len(), 4);
        assert_eq!((s.minutes[1].messages, s.minutes[1].expected), (0, 300));
        assert!((s.rate_hz.unwrap() - 5.0).abs() < 1e-6);
        assert_eq!(s.gaps.len(), 1);
    }

    #[test]
    fn a_slow_sensor_is_not_a_string_of_gaps() {
        // 1 Hz: nine silent tenths between messages are its cadence, not a gap; one
        // missed frame is not a gap either (two periods), three are.
        let rows = sensor(
            9,
            "2026-12-01T10:00:00Z",
            1.0,
            0.0,
            600.0,
            &[(100.0, 101.0), (150.0, 153.0)],
        );
        let s = &analyse(&rows)[0];
        assert!((s.rate_hz.unwrap() - 1.0).abs() < 0.001, "{:?}", s.rate_hz);
        assert_eq!(s.gaps.len(), 1, "{:?}", s.gaps);
        assert_eq!(s.missed, 4);
    }

    #[test]
    fn a_short_span_with_a_dropout_still_knows_the_rate() {
        // 40 s inside one minute, silent for 6 of them: no complete minute to go by.
        let rows = sensor(4, "2026-12-01T10:00:00Z", 10.0, 10.0, 50.0, &[(15.0, 21.0)]);
        let s = &analyse(&rows)[0];
        assert!((s.rate_hz.unwrap() - 10.0).abs() < 0.05, "{:?}", s.rate_hz);
        assert_eq!(s.gaps.len(), 1);
        assert!((s.missed - 60).abs() <= 1, "{}", s.missed);
    }

    #[test]
    fn partial_first_and_last_minutes_expect_only_their_active_part() {
        let rows = sensor(2, "2026-12-01T10:00:00Z", 10.0, 45.0, 135.0, &[]);
        let s = &analyse(&rows)[0];
        let expected: Vec<i64> = s.minutes.iter().map(|m| m.expected).collect();
        assert_eq!(expected, vec![150, 600, 150]);
        assert_eq!(s.missed, 0);
    }

    #[test]
    fn sensors_are_analysed_apart_and_invalid_ones_count() {
        let mut rows = sensor(1, "2026-12-01T10:00:00Z", 10.0, 0.0, 60.0, &[]);
        rows.extend(sensor(
            2,
            "2026-12-01T10:00:00Z",
            10.0,
            0.0,
            60.0,
            &[(10.0, 20.0)],
        ));
        rows.push(QualityRow {
            sensor_id: 5,
            minute: t("2026-12-01T10:00:00Z"),
            messages: 0,
            invalid: 4,
            seen: Vec::new(),
            skew_p50_s: None,
            skew_p99_s: None,
        });
        let q = analyse(&rows);
        assert_eq!(
            q.iter().map(|s| s.sensor_id).collect::<Vec<_>>(),
            vec![1, 2, 5]
        );
        assert!(q[0].gaps.is_empty());
        assert_eq!(q[1].gaps.len(), 1);
        assert_eq!((q[2].invalid, q[2].rate_hz, q[2].expected), (4, None, 0));
    }
}
