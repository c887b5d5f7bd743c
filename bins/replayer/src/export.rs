//! `replayer export` and the `export` request of `replayer serve`: a window of the archive
//! as a file (tspi-export's formats), read in one streamed COPY and written as it comes,
//! so a day of a thousand sensors costs the memory a minute does.
//!
//! Before a file is started every question that could make it wrong is asked: does the
//! tag exist, is there telemetry in the window (and if not, what the archive holds), is
//! every requested sensor there. An empty result is an error, never an empty file.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::StreamExt;
use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tspi_core::TelemetryRecord;
use tspi_display::Placement;
use tspi_export::{Clock, ExportMeta, ExportTag, Format, FormatWriter, RowBuilder};
use tspi_store::{ExportQuery, CLOCK_SKEW, RECEIVE_MARGIN};

/// On the sensors' own clock, rows are looked for among messages received this close to
/// the window (a sensor whose clock is further off is broken, and shows in
/// `console quality`).
pub const TSPI_CLOCK_MARGIN: Duration = Duration::from_secs(60);
/// Rows between two calls of the caller's hook (progress, handing chunks on).
pub const HOOK_EVERY: u64 = 1024;

/// Which window.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportWindow {
    Range {
        start: OffsetDateTime,
        end: OffsetDateTime,
    },
    /// From `before` before the tagged moment to `after` after it.
    Tag {
        id: String,
        before: Duration,
        after: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub window: ExportWindow,
    pub clock: Clock,
    /// Only these sensors (every one of them must have telemetry in the window).
    pub sensors: Vec<u16>,
    pub placement: Placement,
    pub format: Format,
    /// The wide CSV's step.
    pub step: Duration,
    /// pcapng: the UDP port the datagrams go to.
    pub udp_port: u16,
    pub stream: String,
}

/// A window resolved and checked, ready to be written.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub query: ExportQuery,
    pub meta: ExportMeta,
    pub tags: Vec<ExportTag>,
    /// About how many messages the query will read (for progress).
    pub estimate: i64,
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
}

/// What an export did (printed as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub format: &'static str,
    pub start: String,
    pub end: String,
    pub clock: &'static str,
    pub sensors: usize,
    pub rows: u64,
    /// Rows a format could not hold: unplaced records on a map format, the wide CSV's
    /// records later than its reorder window.
    pub skipped: u64,
    /// Archived messages whose record did not decode (left out).
    pub undecodable: u64,
    pub tags: usize,
    pub elapsed_s: f64,
    pub rows_per_s: f64,
}

fn span(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

fn us(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1000) as i64
}

fn iso(t: OffsetDateTime) -> String {
    tspi_core::rfc3339::format_utc_millis((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Resolve the window and ask the questions that must be answered before a file exists.
pub async fn prepare(client: &Client, o: &ExportOptions) -> anyhow::Result<Prepared> {
    let (start, end) = match &o.window {
        ExportWindow::Range { start, end } => (*start, *end),
        ExportWindow::Tag { id, before, after } => {
            match tspi_store::tag_moment(client, id).await? {
                Some((at, _)) => (at - span(*before), at + span(*after)),
                None => bail!("no tag with id {id:?} in the archive"),
            }
        }
    };
    if end <= start {
        bail!(
            "the window ends before it starts ({} to {})",
            iso(start),
            iso(end)
        );
    }
    let (from, to, received) = match o.clock {
        Clock::Receive => (
            start - span(CLOCK_SKEW),
            end + span(RECEIVE_MARGIN),
            Some((start, end)),
        ),
        Clock::Tspi => (
            start - span(TSPI_CLOCK_MARGIN),
            end + span(TSPI_CLOCK_MARGIN),
            None,
        ),
    };
    let mut query = ExportQuery {
        stream: o.stream.clone(),
        from,
        to,
        received,
        sensors: Vec::new(),
        by_sensor: o.format.order() == tspi_export::Order::Sensor,
        seqs: None,
    };
    if !tspi_store::has_telemetry(client, &query).await? {
        let held = match tspi_store::telemetry_span(client, &o.stream).await? {
            Some((first, last)) => format!(
                "the archive holds {} telemetry from {} to {}",
                o.stream,
                iso(first),
                iso(last)
            ),
            None => format!("the archive holds no {} telemetry", o.stream),
        };
        bail!(
            "no telemetry in the window {} to {} ({held})",
            iso(start),
            iso(end)
        );
    }
    let mut sensors = o.sensors.clone();
    sensors.sort_unstable();
    sensors.dedup();
    for &s in &sensors {
        if tspi_store::sensor_in_window(client, &query, s).await? {
            continue;
        }
        // The slow question (a pass over the window) only to say what is there instead.
        let present = tspi_store::sensors_in_window(client, &query).await?;
        let listed: Vec<String> = present.iter().take(20).map(u16::to_string).collect();
        bail!(
            "sensor {s} has no telemetry in the window {} to {} (sensors there: {}{})",
            iso(start),
            iso(end),
            listed.join(", "),
            if present.len() > 20 { ", …" } else { "" }
        );
    }
    query.sensors.clone_from(&sensors);
    let estimate = match tspi_store::window_seqs(client, &query).await? {
        Some((first, last, count)) => {
            query.seqs = Some((first, last));
            count
        }
        None => 0,
    };
    let tags = if o.format.has_tags() {
        tspi_store::tags_between(client, start, end, 10_000)
            .await?
            .into_iter()
            .filter(|t| t.status != "deleted")
            .map(|t| ExportTag {
                at_us: tspi_core::rfc3339::parse_epoch_ms(&t.ts).unwrap_or(0) * 1000,
                id: t.id,
                label: t.label,
                creator: t.creator,
                status: t.status,
                notes: t.notes,
            })
            .collect()
    } else {
        Vec::new()
    };
    let meta = ExportMeta {
        start_us: us(start),
        end_us: us(end),
        clock: o.clock,
        origin: o.placement.origin().map(|f| f.origin),
        // The wide CSV's header needs the sensors before the first row.
        sensors: if !sensors.is_empty() || o.format != Format::CsvWide {
            sensors
        } else {
            tspi_store::sensors_in_window(client, &query).await?
        },
        step_us: o.step.as_micros().clamp(1, i64::MAX as u128) as i64,
        udp_port: o.udp_port,
        stream: o.stream.clone(),
    };
    Ok(Prepared {
        query,
        meta,
        tags,
        estimate,
        start,
        end,
    })
}

/// Read the window and write every row into `writer`; `hook(rows)` is awaited every
/// [`HOOK_EVERY`] rows and at the end (progress; moving what was written on). Stops
/// with an error on `shutdown`.
pub async fn write<F, Fut>(
    client: &Client,
    prepared: &Prepared,
    o: &ExportOptions,
    mut writer: Box<dyn FormatWriter>,
    mut hook: F,
    shutdown: &CancellationToken,
) -> anyhow::Result<ExportSummary>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    let builder = RowBuilder::new(o.placement.clone());
    let (start_us, end_us) = (prepared.meta.start_us, prepared.meta.end_us);
    let rows = tspi_store::export_rows(client, &prepared.query)
        .await
        .context("reading the archive")?;
    futures::pin_mut!(rows);
    let (mut written, mut undecodable) = (0u64, 0u64);
    // Which sensors were written (one bit per id).
    let mut seen = vec![0u64; 1024];
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => bail!("interrupted"),
            next = rows.next() => next,
        };
        let Some(source) = next else { break };
        let source = source.context("reading the archive")?;
        let Ok(record) = TelemetryRecord::from_cbor(&source.raw) else {
            undecodable += 1;
            continue;
        };
        let row = builder.build(&record, source.stream_seq);
        if o.clock == Clock::Tspi && !(start_us..end_us).contains(&row.tspi_us) {
            continue;
        }
        writer.row(&row)?;
        seen[usize::from(row.sensor_id / 64)] |= 1 << (row.sensor_id % 64);
        written += 1;
        if written % HOOK_EVERY == 0 {
            hook(written).await?;
        }
    }
    if written == 0 {
        bail!(
            "no telemetry in the window {} to {} on the {} clock",
            iso(prepared.start),
            iso(prepared.end),
            o.clock.as_str()
        );
    }
    writer.tags(&prepared.tags)?;
    let skipped = writer.skipped();
    writer.finish()?;
    hook(written).await?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(ExportSummary {
        format: o.format.name(),
        start: iso(prepared.start),
        end: iso(prepared.end),
        clock: o.clock.as_str(),
        sensors: seen.iter().map(|w| w.count_ones() as usize).sum(),
        rows: written,
        skipped,
        undecodable,
        tags: prepared.tags.len(),
        elapsed_s: elapsed,
        rows_per_s: if elapsed > 0.0 {
            written as f64 / elapsed
        } else {
            0.0
        },
    })
}

/// One connection for an export, to a standby when the URL names several hosts and one of
/// them is (the primary stays free for the archiver); to any host otherwise.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    use tokio_postgres::config::TargetSessionAttrs;
    let config: tokio_postgres::Config = url.parse().context("--database-url")?;
    let mut standby = None;
    if config.get_hosts().len() > 1 && config.get_target_session_attrs() == TargetSessionAttrs::Any
    {
        let mut read_only = config.clone();
        read_only.target_session_attrs(TargetSessionAttrs::ReadOnly);
        standby = read_only.connect(tokio_postgres::NoTls).await.ok();
    }
    let client = match standby {
        Some((client, connection)) => {
            tokio::spawn(connection);
            tracing::info!("reading the archive from a standby");
            client
        }
        None => {
            let (client, connection) = config
                .connect(tokio_postgres::NoTls)
                .await
                .context("cannot connect to the database")?;
            tokio::spawn(connection);
            client
        }
    };
    let ok: bool = client
        .query_one("SELECT to_regclass('messages') IS NOT NULL", &[])
        .await?
        .get(0);
    if !ok {
        bail!("the database has no archive (run `archiver migrate` and an archiver first)");
    }
    Ok(client)
}

impl From<crate::session::Clock> for Clock {
    fn from(c: crate::session::Clock) -> Self {
        match c {
            crate::session::Clock::Receive => Clock::Receive,
            crate::session::Clock::Tspi => Clock::Tspi,
        }
    }
}

/// A file written under a temporary name beside its final one and renamed only when it
/// is complete (synced first); dropped before that, the temporary file is removed, so an
/// error or Ctrl+C leaves nothing half-written under the name asked for.
#[derive(Debug)]
pub struct OutputFile {
    path: std::path::PathBuf,
    partial: std::path::PathBuf,
    file: Option<std::fs::File>,
}

impl OutputFile {
    pub fn create(path: &std::path::Path) -> anyhow::Result<OutputFile> {
        let name = path
            .file_name()
            .with_context(|| format!("{} is not a file name", path.display()))?;
        if path.is_dir() {
            bail!("{} is a directory", path.display());
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let partial = dir.join(format!(
            ".{}.partial-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(OutputFile {
            path: path.to_path_buf(),
            partial,
            file: Some(file),
        })
    }

    /// A handle to write through (the writer owns it; this keeps one to sync).
    pub fn writer(&self) -> anyhow::Result<std::fs::File> {
        self.file
            .as_ref()
            .context("the file is closed")?
            .try_clone()
            .context("cannot write the file")
    }

    /// Sync and move into place; the final path.
    pub fn commit(mut self) -> anyhow::Result<std::path::PathBuf> {
        if let Some(f) = self.file.take() {
            f.sync_all()
                .with_context(|| format!("cannot write {}", self.path.display()))?;
        }
        std::fs::rename(&self.partial, &self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok(std::mem::take(&mut self.path))
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// Progress on stderr when it is a terminal: rows, rows a second, time left (from the
/// estimate), at most twice a second.
#[derive(Debug)]
pub struct Progress {
    shown: bool,
    estimate: i64,
    started: Instant,
    last: Instant,
}

impl Progress {
    pub fn new(estimate: i64) -> Self {
        use std::io::IsTerminal as _;
        let now = Instant::now();
        Progress {
            shown: std::io::stderr().is_terminal(),
            estimate,
            started: now,
            last: now,
        }
    }

    pub fn show(&mut self, rows: u64) {
        if !self.shown || self.last.elapsed() < Duration::from_millis(500) {
            return;
        }
        self.last = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = rows as f64 / elapsed;
        let left = (self.estimate as f64 - rows as f64).max(0.0) / rate.max(1.0);
        eprint!("\rexport: {rows} rows, {rate:.0} rows/s, about {left:.0} s left   ");
    }

    pub fn done(&mut self) {
        if self.shown && self.last != self.started {
            eprintln!();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn an_unfinished_file_leaves_nothing_and_a_finished_one_appears_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let file = OutputFile::create(&path).unwrap();
        file.writer().unwrap().write_all(b"half a file").unwrap();
        assert_eq!(names(dir.path()).len(), 1, "only the temporary file");
        drop(file); // an error, or Ctrl+C
        assert!(names(dir.path()).is_empty());

        let file = OutputFile::create(&path).unwrap();
        file.writer().unwrap().write_all(b"a,b\n").unwrap();
        assert_eq!(file.commit().unwrap(), path);
        assert_eq!(names(dir.path()), ["out.csv"]);
        assert_eq!(std::fs::read(&path).unwrap(), b"a,b\n");
    }

    #[test]
    fn a_place_that_cannot_be_written_fails_at_once() {
        let e = OutputFile::create(std::path::Path::new("/nonexistent-dir/x.csv")).unwrap_err();
        assert!(
            format!("{e:#}").contains("cannot write /nonexistent-dir/x.csv"),
            "{e:#}"
        );
        let dir = tempfile::tempdir().unwrap();
        assert!(OutputFile::create(dir.path()).is_err(), "a directory");
    }
}
