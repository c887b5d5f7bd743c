//! Exports for `replayer serve`: a display asks for a window as a file
//! (`{"op":"export",…}` on `player.<room>.ctrl`), then pulls it chunk by chunk
//! (`{"op":"export_next","id":…}`, each reply one chunk of at most [`CHUNK`] bytes), so
//! the file never has to fit a NATS message and a slow downloader holds the export back
//! instead of piling it up: the writer runs ahead by at most [`AHEAD`] chunks.
//!
//! A chunk reply is the chunk's bytes with headers `Tspi-Export-State: more|done` and
//! `Tspi-Export-Rows`; an error is a control reply (`ok: false`) without them.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tspi_display::placement::{parse_sensor_site, parse_site};
use tspi_display::Placement;
use tspi_export::Format;

use crate::control::ExportRequest;
use crate::export::{ExportOptions, ExportWindow};
use crate::session::ReplayContext;

/// Most bytes in one chunk reply (NATS's default message limit is 1 MiB).
pub const CHUNK: usize = 256 * 1024;
/// Chunks the writer may run ahead of the downloader.
pub const AHEAD: usize = 4;
/// Exports running at once.
pub const MAX_EXPORTS: usize = 4;
/// An export nobody pulls for this long is abandoned.
pub const IDLE: Duration = Duration::from_secs(60);

pub const STATE_HEADER: &str = "Tspi-Export-State";
pub const ROWS_HEADER: &str = "Tspi-Export-Rows";

/// What the writer hands on: a chunk, the end (rows written), or why it stopped.
#[derive(Debug)]
pub enum Piece {
    Chunk(Vec<u8>),
    Done { rows: u64 },
    Failed(String),
}

/// What was started: the reply to `export`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Started {
    pub id: String,
    pub format: &'static str,
    pub content_type: &'static str,
    pub filename: String,
}

struct Running {
    pieces: Arc<tokio::sync::Mutex<mpsc::Receiver<Piece>>>,
    touched: Instant,
    cancel: CancellationToken,
}

/// The exports of one `replayer serve`.
#[derive(Clone, Default)]
pub struct Exports {
    running: Arc<Mutex<HashMap<String, Running>>>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Exports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exports").finish_non_exhaustive()
    }
}

/// A `Write` whose bytes the export task moves on in chunks.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("export buffer poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    /// Whole chunks (or everything, at the end).
    fn take(&self, all: bool) -> Vec<Vec<u8>> {
        let Ok(mut buf) = self.0.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while buf.len() >= CHUNK || (all && !buf.is_empty()) {
            let n = buf.len().min(CHUNK);
            out.push(buf.drain(..n).collect());
        }
        out
    }
}

fn options(r: &ExportRequest, stream: &str) -> Result<ExportOptions, String> {
    let time = |t: &Option<String>, what: &str| -> Result<time::OffsetDateTime, String> {
        crate::parse_time(t.as_deref().ok_or_else(|| format!("export needs {what}"))?)
    };
    let seconds = |v: Option<f64>, default: f64| -> Result<Duration, String> {
        Duration::try_from_secs_f64(v.unwrap_or(default))
            .map_err(|_| "before and after must be seconds, 0 or more".to_owned())
    };
    let window = match &r.tag {
        Some(id) => ExportWindow::Tag {
            id: id.clone(),
            before: seconds(r.before, 30.0)?,
            after: seconds(r.after, 30.0)?,
        },
        None => ExportWindow::Range {
            start: time(&r.start, "start (or tag)")?,
            end: time(&r.end, "end")?,
        },
    };
    let format =
        Format::parse(&r.format).ok_or_else(|| format!("unknown format {:?}", r.format))?;
    let origin = r.origin.as_deref().map(parse_site).transpose()?;
    let sites = r
        .sites
        .iter()
        .map(|s| parse_sensor_site(s))
        .collect::<Result<HashMap<_, _>, _>>()?;
    let step = seconds(r.step, 0.1)?;
    if step.is_zero() {
        return Err("step must be more than 0".into());
    }
    Ok(ExportOptions {
        window,
        clock: crate::control::parse_clock(r.clock.as_deref())?.into(),
        sensors: r.sensors.clone(),
        placement: Placement::new(origin, sites),
        format,
        step,
        udp_port: r.udp_port.unwrap_or(30_000),
        stream: stream.to_owned(),
    })
}

impl Exports {
    /// Check the request, prepare the export (the questions a file needs answered) and
    /// start writing it.
    pub async fn start(
        &self,
        ctx: &ReplayContext,
        stream: &str,
        request: &ExportRequest,
        shutdown: &CancellationToken,
    ) -> Result<Started, String> {
        let options = options(request, stream)?;
        self.forget_idle();
        if self.running.lock().map(|r| r.len()).unwrap_or(MAX_EXPORTS) >= MAX_EXPORTS {
            return Err(format!(
                "{MAX_EXPORTS} exports are running; try again shortly"
            ));
        }
        let client = ctx
            .pool
            .get()
            .await
            .map_err(|e| format!("cannot connect to the database: {e}"))?;
        let prepared = crate::export::prepare(&client, &options)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let filename = format!(
            "tspi-{}-{}.{}",
            prepared.start.unix_timestamp(),
            prepared.end.unix_timestamp(),
            options.format.extension()
        );
        if request.check == Some(true) {
            return Ok(Started {
                id: String::new(),
                format: options.format.name(),
                content_type: options.format.content_type(),
                filename,
            });
        }
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("x{}-{n}", std::process::id());
        let (tx, rx) = mpsc::channel(AHEAD);
        let cancel = shutdown.child_token();
        if let Ok(mut running) = self.running.lock() {
            running.insert(
                id.clone(),
                Running {
                    pieces: Arc::new(tokio::sync::Mutex::new(rx)),
                    touched: Instant::now(),
                    cancel: cancel.clone(),
                },
            );
        }
        let started = Started {
            id,
            format: options.format.name(),
            content_type: options.format.content_type(),
            filename,
        };
        tokio::spawn(async move {
            let shared = Shared::default();
            let result = async {
                let writer = tspi_export::writer(options.format, &prepared.meta, shared.clone())?;
                let send = |all: bool| {
                    let (tx, chunks) = (tx.clone(), shared.take(all));
                    async move {
                        for c in chunks {
                            tx.send(Piece::Chunk(c))
                                .await
                                .map_err(|_| anyhow::anyhow!("the download was abandoned"))?;
                        }
                        anyhow::Ok(())
                    }
                };
                let summary = crate::export::write(
                    &client,
                    &prepared,
                    &options,
                    writer,
                    |_| send(false),
                    &cancel,
                )
                .await?;
                send(true).await?;
                anyhow::Ok(summary.rows)
            }
            .await;
            let last = match result {
                Ok(rows) => Piece::Done { rows },
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "export failed");
                    Piece::Failed(format!("{e:#}"))
                }
            };
            let _ = tx.send(last).await;
        });
        Ok(started)
    }

    /// The next piece of export `id`; waits for the writer (at most `IDLE`).
    pub async fn next(&self, id: &str) -> Result<Piece, String> {
        self.forget_idle();
        let pieces = {
            let mut running = self
                .running
                .lock()
                .map_err(|_| "exports poisoned".to_owned())?;
            let entry = running.get_mut(id).ok_or_else(|| {
                format!("no export {id:?} (finished, abandoned, or never started)")
            })?;
            entry.touched = Instant::now();
            entry.pieces.clone()
        };
        let piece = {
            let mut rx = pieces.lock().await;
            tokio::time::timeout(IDLE, rx.recv()).await
        };
        let piece = match piece {
            Ok(Some(p)) => p,
            Ok(None) => Piece::Failed("the export ended without finishing".into()),
            Err(_) => Piece::Failed("the export made no progress for a minute".into()),
        };
        if !matches!(piece, Piece::Chunk(_)) {
            if let Ok(mut running) = self.running.lock() {
                running.remove(id);
            }
        }
        Ok(piece)
    }

    fn forget_idle(&self) {
        if let Ok(mut running) = self.running.lock() {
            running.retain(|_, r| {
                let keep = r.touched.elapsed() < IDLE;
                if !keep {
                    r.cancel.cancel();
                }
                keep
            });
        }
    }
}

/// The NATS reply for a piece.
pub fn reply(
    piece: Piece,
    encoding: crate::control::Encoding,
) -> (async_nats::HeaderMap, bytes::Bytes) {
    let mut headers = async_nats::HeaderMap::new();
    match piece {
        Piece::Chunk(data) => {
            headers.insert(STATE_HEADER, "more");
            (headers, data.into())
        }
        Piece::Done { rows } => {
            headers.insert(STATE_HEADER, "done");
            headers.insert(ROWS_HEADER, rows.to_string().as_str());
            (headers, bytes::Bytes::new())
        }
        Piece::Failed(e) => (
            headers,
            crate::control::Reply::error(e).encode(encoding).into(),
        ),
    }
}
