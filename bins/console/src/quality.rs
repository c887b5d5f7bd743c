//! `console quality`: the archive's sensor-quality history as a table or JSON.

use std::fmt::Write as _;

use anyhow::Context as _;
use serde::Serialize;
use time::OffsetDateTime;
use tspi_store::{QualitySource, SensorQuality};

/// The start or end of a span: a moment, or a duration before now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Moment {
    At(OffsetDateTime),
    Ago(std::time::Duration),
}

impl Moment {
    /// `1h`, `90m`, `7d` (before now) or an RFC 3339 time.
    pub fn parse(text: &str) -> Result<Moment, String> {
        if let Some(ms) = tspi_core::rfc3339::parse_epoch_ms(text) {
            return OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .map(Moment::At)
                .map_err(|e| format!("{text:?}: {e}"));
        }
        tspi_runtime::parse_duration(text)
            .map(Moment::Ago)
            .map_err(|_| {
                format!("{text:?} is neither a duration (e.g. 1h, 7d) nor an RFC 3339 time")
            })
    }

    pub fn resolve(self, now: OffsetDateTime) -> OffsetDateTime {
        match self {
            Moment::At(t) => t,
            Moment::Ago(d) => now - d,
        }
    }
}

/// What `console quality` prints.
#[derive(Debug, Serialize)]
pub struct QualityReport {
    pub stream: String,
    pub since: String,
    pub until: String,
    pub source: QualitySource,
    pub sensors: Vec<SensorQuality>,
}

/// Reads and analyses the span `[since, until)` of `stream` from the archive.
pub async fn quality_report(
    database_url: &str,
    stream: &str,
    since: OffsetDateTime,
    until: OffsetDateTime,
    sensor: Option<u16>,
    raw: bool,
) -> anyhow::Result<QualityReport> {
    anyhow::ensure!(
        since < until,
        "the span is empty: --since must come before --until"
    );
    let pool = tspi_store::pool(database_url, 1)?;
    let client = pool
        .get()
        .await
        .context("cannot connect to the archive database")?;
    let (source, rows) = tspi_store::quality_rows(
        &client,
        stream,
        since,
        until,
        sensor.map(i32::from),
        raw.then_some(QualitySource::RawRows),
    )
    .await
    .context("reading the sensor-quality aggregate")?;
    Ok(QualityReport {
        stream: stream.to_owned(),
        since: iso(since),
        until: iso(until),
        source,
        sensors: tspi_store::analyse_quality(&rows),
    })
}

fn iso(t: OffsetDateTime) -> String {
    tspi_core::rfc3339::format_utc_millis((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// The report as text: one line per sensor, then every gap, then the minutes that lost
/// something (all of them with `all_minutes`).
pub fn render_table(report: &QualityReport, all_minutes: bool) -> String {
    let mut out = String::new();
    let source = match report.source {
        QualitySource::ContinuousAggregate => "continuous aggregate",
        QualitySource::RawRows => "raw rows",
    };
    let _ = writeln!(
        out,
        "Sensor quality of {} from {} to {} ({source})",
        report.stream, report.since, report.until
    );
    if report.sensors.is_empty() {
        let _ = writeln!(out, "no telemetry archived in this span");
        return out;
    }
    let _ = writeln!(
        out,
        "{:>6} {:>8} {:>9} {:>9} {:>7} {:>9} {:>5} {:>9} {:>7} {:>8} {:>8}  {:<24}  {:<24}",
        "SENSOR",
        "RATE Hz",
        "MESSAGES",
        "EXPECTED",
        "MISSED",
        "COMPLETE",
        "GAPS",
        "LONGEST s",
        "INVALID",
        "SKEW p50",
        "SKEW p99",
        "FIRST HEARD",
        "LAST HEARD"
    );
    for s in &report.sensors {
        let complete = if s.expected > 0 {
            format!(
                "{:.2} %",
                100.0 * (s.expected - s.missed) as f64 / s.expected as f64
            )
        } else {
            "-".into()
        };
        let longest = s.gaps.iter().map(|g| g.length_s).fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "{:>6} {:>8} {:>9} {:>9} {:>7} {:>9} {:>5} {:>9.1} {:>7} {:>8} {:>8}  {:<24}  {:<24}",
            s.sensor_id,
            s.rate_hz.map_or_else(|| "-".into(), |r| format!("{r:.3}")),
            s.messages,
            s.expected,
            s.missed,
            complete,
            s.gaps.len(),
            longest,
            s.invalid,
            ms(s.skew_p50_ms),
            ms(s.skew_p99_ms),
            s.first_heard.map_or_else(|| "-".into(), iso),
            s.last_heard.map_or_else(|| "-".into(), iso),
        );
    }
    let gaps: Vec<_> = report
        .sensors
        .iter()
        .flat_map(|s| s.gaps.iter().map(move |g| (s.sensor_id, g)))
        .collect();
    let _ = writeln!(
        out,
        "\nGaps (silences longer than two periods): {}",
        gaps.len()
    );
    if !gaps.is_empty() {
        let _ = writeln!(out, "{:>6}  {:<24}  {:>8}", "SENSOR", "START", "LENGTH s");
        for (sensor, g) in gaps {
            let _ = writeln!(
                out,
                "{sensor:>6}  {:<24}  {:>8.1}",
                iso(g.start),
                g.length_s
            );
        }
    }
    let minutes: Vec<_> = report
        .sensors
        .iter()
        .flat_map(|s| s.minutes.iter().map(move |m| (s.sensor_id, m)))
        .filter(|(_, m)| all_minutes || m.missed > 0 || m.gaps > 0 || m.invalid > 0)
        .collect();
    let _ = writeln!(
        out,
        "\n{}: {}",
        if all_minutes {
            "Minutes"
        } else {
            "Minutes with losses (every minute: --minutes)"
        },
        minutes.len()
    );
    if !minutes.is_empty() {
        let _ = writeln!(
            out,
            "{:>6}  {:<24} {:>9} {:>9} {:>7} {:>5} {:>9} {:>7} {:>8} {:>8}",
            "SENSOR",
            "MINUTE",
            "MESSAGES",
            "EXPECTED",
            "MISSED",
            "GAPS",
            "LONGEST s",
            "INVALID",
            "SKEW p50",
            "SKEW p99"
        );
        for (sensor, m) in minutes {
            let _ = writeln!(
                out,
                "{sensor:>6}  {:<24} {:>9} {:>9} {:>7} {:>5} {:>9.1} {:>7} {:>8} {:>8}",
                iso(m.minute),
                m.messages,
                m.expected,
                m.missed,
                m.gaps,
                m.longest_gap_s,
                m.invalid,
                ms(m.skew_p50_ms),
                ms(m.skew_p99_ms)
            );
        }
    }
    let _ = writeln!(out, "(skew: receive time - TSPI time, ms; p50 is the median of the minutes' medians, p99 the largest minute's)");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_durations_before_now_or_times() {
        let now = OffsetDateTime::from_unix_timestamp(1_764_583_200).unwrap();
        assert_eq!(
            Moment::parse("1h").unwrap().resolve(now),
            now - time::Duration::hours(1)
        );
        assert_eq!(
            Moment::parse("2025-12-01T09:00:00Z").unwrap().resolve(now),
            OffsetDateTime::from_unix_timestamp(1_764_579_600).unwrap()
        );
        assert!(Moment::parse("yesterday").is_err());
        assert!(Moment::parse("").is_err());
    }

    #[test]
    fn an_empty_report_says_so() {
        let report = QualityReport {
            stream: "TSPI".into(),
            since: "a".into(),
            until: "b".into(),
            source: QualitySource::RawRows,
            sensors: Vec::new(),
        };
        assert!(render_table(&report, false).contains("no telemetry archived"));
    }
}
