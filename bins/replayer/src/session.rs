//! One playout session: read a window of the archive, emit the state in force at its
//! start, then publish every message at its original pace (divided by the speed) on
//! `player.<room>.playout.<original subject>`, obeying pause/resume/seek/speed/stop.
//!
//! The pacing loop runs on its own OS thread and waits with `recv_timeout` on its control
//! channel: a control request is handled the moment it arrives, and the wake-up for the
//! next message is as precise as the kernel's timers (tens of µs), not the async runtime's
//! 1 ms wheel. Database pages are fetched ahead on the runtime so a page boundary never
//! stalls the pace.

use std::collections::VecDeque;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::HeaderMap;
use deadpool_postgres::Pool;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::runtime::Handle;
use tspi_store::ArchivedMessage;

use tspi_core::playout::{self, Phase, SegmentKind, SegmentMarker};

use crate::control::{SnapshotPicture, SnapshotRequest};
use crate::pacing::Pacer;

/// Which time the original gaps are taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Clock {
    /// When the producer received each datagram (the bus's time for commands and tags).
    #[default]
    Receive,
    /// The TSPI time inside each datagram; commands and tags follow the frame before them.
    Tspi,
}

impl std::str::FromStr for Clock {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "receive" => Ok(Clock::Receive),
            "tspi" => Ok(Clock::Tspi),
            other => Err(format!("unknown clock {other:?}: expected receive or tspi")),
        }
    }
}

/// What one session plays.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub room: String,
    pub stream: String,
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    pub speed: f64,
    pub clock: Clock,
    /// Start paused (the picture at the start is shown, nothing plays).
    pub paused: bool,
    /// The first segment's number (1 when not given).
    pub segment: Option<u64>,
    /// The picture the first segment starts with.
    pub snapshot: Option<SnapshotRequest>,
}

/// Where a seek goes, and what the segment it starts carries.
#[derive(Debug, Clone, PartialEq)]
pub struct SeekTo {
    pub at: OffsetDateTime,
    /// The new segment's number (the previous one + 1 when not given).
    pub segment: Option<u64>,
    pub snapshot: Option<SnapshotRequest>,
}

impl SeekTo {
    pub fn at(at: OffsetDateTime) -> SeekTo {
        SeekTo {
            at,
            segment: None,
            snapshot: None,
        }
    }
}

/// Where sessions read and publish.
#[derive(Debug, Clone)]
pub struct ReplayContext {
    pub handle: Handle,
    pub pool: Pool,
    pub client: async_nats::Client,
}

/// Requests a running session obeys.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    Pause,
    Resume,
    Seek(SeekTo),
    Speed(f64),
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlayState {
    Playing,
    Paused,
    Finished,
    Stopped,
    Failed,
}

/// What a session reports (serve's replies, play's summary).
#[derive(Debug, Clone, Serialize)]
pub struct SessionStatus {
    pub room: String,
    pub state: PlayState,
    pub start: String,
    pub end: String,
    /// Stream time of the last message published.
    pub position: Option<String>,
    pub speed: f64,
    pub clock: Clock,
    /// Messages of the window in the archive.
    pub window_messages: i64,
    /// Window messages published.
    pub published: u64,
    /// Command-state and earlier-tag messages published before frames (after each seek too).
    pub state_published: u64,
    /// Snapshot records published (the picture at each segment's start).
    pub snapshot_published: u64,
    /// The segment playing (each play and seek starts one).
    pub segment: u64,
    pub error: Option<String>,
}

/// Pacing accuracy of a finished session: publish time minus due time.
#[derive(Debug, Clone, Serialize)]
pub struct PacingReport {
    pub samples: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlaySummary {
    #[serde(flatten)]
    pub status: SessionStatus,
    pub elapsed_s: f64,
    pub pacing_error: PacingReport,
}

/// A running session: its control channel, live status and thread.
#[derive(Debug)]
pub struct Session {
    control: mpsc::Sender<Control>,
    status: Arc<Mutex<SessionStatus>>,
    thread: Option<JoinHandle<PlaySummary>>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    tspi_core::rfc3339::format_utc_millis((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000) as i64
}

impl Session {
    /// Start playing `spec` on a new thread.
    pub fn start(ctx: ReplayContext, spec: SessionSpec) -> Session {
        let (control, rx) = mpsc::channel();
        let status = Arc::new(Mutex::new(SessionStatus {
            room: spec.room.clone(),
            state: PlayState::Playing,
            start: rfc3339(spec.start),
            end: rfc3339(spec.end),
            position: None,
            speed: spec.speed,
            clock: spec.clock,
            window_messages: 0,
            published: 0,
            state_published: 0,
            snapshot_published: 0,
            segment: spec.segment.unwrap_or(1),
            error: None,
        }));
        let shared = status.clone();
        let thread = std::thread::Builder::new()
            .name(format!("playout-{}", spec.room))
            .spawn(move || {
                let started = Instant::now();
                let mut player = Player::new(ctx, spec, shared.clone(), rx);
                let result = player.play();
                let final_state = match &result {
                    Ok(state) => *state,
                    Err(_) => PlayState::Failed,
                };
                player.update(|s| {
                    s.state = final_state;
                    if let Err(e) = &result {
                        s.error = Some(format!("{e:#}"));
                    }
                });
                PlaySummary {
                    status: player.snapshot(),
                    elapsed_s: started.elapsed().as_secs_f64(),
                    pacing_error: player.pacing_report(),
                }
            });
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                if let Ok(mut s) = status.lock() {
                    s.state = PlayState::Failed;
                    s.error = Some(format!("cannot start the playout thread: {e}"));
                }
                None
            }
        };
        Session {
            control,
            status,
            thread,
        }
    }

    /// A sender for control requests that outlives a move of the session.
    pub fn controller(&self) -> mpsc::Sender<Control> {
        self.control.clone()
    }

    /// Send a control request; false when the session has already ended.
    pub fn control(&self, c: Control) -> bool {
        self.control.send(c).is_ok()
    }

    pub fn status(&self) -> Option<SessionStatus> {
        self.status.lock().ok().map(|s| s.clone())
    }

    /// Wait for the session to end (blocking) and return its summary.
    pub fn join(mut self) -> Option<PlaySummary> {
        self.thread.take().and_then(|t| t.join().ok())
    }
}

/// Fetches a window page by page, one page ahead.
struct Cursor {
    ctx: ReplayContext,
    stream: String,
    start: OffsetDateTime,
    end: OffsetDateTime,
    first_seq: i64,
    last_seq: i64,
    fetched_to: i64,
    buffer: VecDeque<ArchivedMessage>,
    ahead: Option<tokio::task::JoinHandle<anyhow::Result<Vec<ArchivedMessage>>>>,
    exhausted: bool,
    count: i64,
}

const PAGE: i64 = 2_000;
const FIRST_PAGE: i64 = 200;

impl Cursor {
    fn open(
        ctx: &ReplayContext,
        stream: &str,
        start: OffsetDateTime,
        end: OffsetDateTime,
    ) -> anyhow::Result<Cursor> {
        let pool = ctx.pool.clone();
        let s = stream.to_owned();
        let span = ctx.handle.block_on(async move {
            let client = pool.get().await?;
            anyhow::Ok(tspi_store::window_span(&client, &s, start, end).await?)
        })?;
        let (first, last, count) = span.map_or((0, -1, 0), |w| (w.first_seq, w.last_seq, w.count));
        Ok(Cursor {
            ctx: ctx.clone(),
            stream: stream.to_owned(),
            start,
            end,
            first_seq: first,
            last_seq: last,
            fetched_to: first - 1,
            buffer: VecDeque::new(),
            ahead: None,
            exhausted: span.is_none(),
            count,
        })
    }

    fn fetch_ahead(&mut self) {
        if self.ahead.is_some() || self.exhausted {
            return;
        }
        let pool = self.ctx.pool.clone();
        let (stream, start, end, after, last) = (
            self.stream.clone(),
            self.start,
            self.end,
            self.fetched_to,
            self.last_seq,
        );
        // A small first page: the playout starts as soon as it is in.
        let limit = if self.fetched_to < self.first_seq {
            FIRST_PAGE
        } else {
            PAGE
        };
        self.ahead = Some(self.ctx.handle.spawn(async move {
            let client = pool.get().await?;
            Ok(tspi_store::window_page(&client, &stream, start, end, after, last, limit).await?)
        }));
    }

    /// Read the first page now (before the playout starts).
    fn fill(&mut self) -> anyhow::Result<()> {
        if let Some(first) = self.next()? {
            self.buffer.push_front(first);
        }
        Ok(())
    }

    fn next(&mut self) -> anyhow::Result<Option<ArchivedMessage>> {
        if (self.buffer.len() as i64) < PAGE / 2 {
            self.fetch_ahead();
        }
        if self.buffer.is_empty() {
            if let Some(ahead) = self.ahead.take() {
                let page = self
                    .ctx
                    .handle
                    .block_on(ahead)
                    .context("page fetch task")?
                    .context("reading the archive")?;
                match page.last() {
                    Some(m) => self.fetched_to = m.stream_seq,
                    None => self.exhausted = true,
                }
                if self.fetched_to >= self.last_seq {
                    self.exhausted = true;
                }
                self.buffer.extend(page);
                self.fetch_ahead();
            }
        }
        Ok(self.buffer.pop_front())
    }
}

/// The pacing loop's state.
struct Player {
    ctx: ReplayContext,
    spec: SessionSpec,
    status: Arc<Mutex<SessionStatus>>,
    control: mpsc::Receiver<Control>,
    controllable: bool,
    pacer: Pacer,
    session_id: String,
    errors: hdrhistogram::Histogram<u64>,
    last_tspi_us: Option<i64>,
    segment: u64,
}

enum Interrupt {
    Seek(SeekTo),
    Stop,
}

impl Player {
    fn new(
        ctx: ReplayContext,
        spec: SessionSpec,
        status: Arc<Mutex<SessionStatus>>,
        control: mpsc::Receiver<Control>,
    ) -> Self {
        let session_id = format!(
            "{}-{}",
            spec.room,
            OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000
        );
        Player {
            pacer: Pacer::new(spec.speed),
            ctx,
            spec,
            status,
            control,
            controllable: true,
            session_id,
            errors: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)
                .unwrap_or_else(|_| unreachable!("static bounds are valid")),
            last_tspi_us: None,
            segment: 1,
        }
    }

    fn update(&self, f: impl FnOnce(&mut SessionStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    fn snapshot(&self) -> SessionStatus {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn pacing_report(&self) -> PacingReport {
        PacingReport {
            samples: self.errors.len(),
            p50_us: self.errors.value_at_quantile(0.5),
            p99_us: self.errors.value_at_quantile(0.99),
            max_us: self.errors.max(),
        }
    }

    /// Original time of a message on the chosen clock; `None` = no time of its own
    /// (a command before any frame on the TSPI clock): sent without waiting.
    fn original_us(&mut self, m: &ArchivedMessage) -> Option<i64> {
        match self.spec.clock {
            Clock::Receive => Some(micros(m.receive_time())),
            Clock::Tspi => {
                if let (Some(day), Some(t)) = (m.day, m.time_s) {
                    let us = (i64::from(day) * 86_400_000_000) + (t * 1e6) as i64;
                    self.last_tspi_us = Some(us);
                }
                self.last_tspi_us
            }
        }
    }

    fn headers(&self, phase: Phase) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(playout::HEADER_REPLAY, "1");
        headers.insert(playout::HEADER_ROOM, self.spec.room.as_str());
        headers.insert(playout::HEADER_SESSION, self.session_id.as_str());
        headers.insert(playout::HEADER_PHASE, phase.as_str());
        headers.insert(playout::HEADER_SEGMENT, self.segment.to_string().as_str());
        headers
    }

    fn send(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: bytes::Bytes,
    ) -> anyhow::Result<()> {
        // The publish only queues into the client's channel: a plain executor is enough
        // and much cheaper per message than entering the runtime.
        futures::executor::block_on(
            self.ctx
                .client
                .publish_with_headers(subject, headers, payload),
        )
        .context("publishing playout")?;
        Ok(())
    }

    fn publish(&self, m: &ArchivedMessage, phase: Phase) -> anyhow::Result<()> {
        let subject = format!("{}{}", playout::playout_prefix(&self.spec.room), m.subject);
        let mut headers = self.headers(phase);
        headers.insert(playout::HEADER_ORIGINAL_SUBJECT, m.subject.as_str());
        headers.insert(
            playout::HEADER_ORIGINAL_SEQ,
            m.stream_seq.to_string().as_str(),
        );
        headers.insert(playout::HEADER_ORIGINAL_TIME, rfc3339(m.stream_ts).as_str());
        if let Some(id) = &m.msg_id {
            // Not as Nats-Msg-Id: the playout stream would drop a second replay of it.
            headers.insert(playout::HEADER_ORIGINAL_MSG_ID, id.as_str());
        }
        self.send(subject, headers, m.raw.clone())
    }

    /// A segment's `begin` or `ready` marker.
    fn marker(&self, phase: Phase, marker: &SegmentMarker) -> anyhow::Result<()> {
        let token = match phase {
            Phase::Begin => playout::BEGIN_SUBJECT,
            _ => playout::READY_SUBJECT,
        };
        let subject = format!("{}{token}", playout::playout_prefix(&self.spec.room));
        self.send(subject, self.headers(phase), marker.to_cbor().into())
    }

    /// The picture at `at`: each track's last record and its trail, oldest first.
    fn emit_snapshot(&self, request: &SnapshotRequest, at: OffsetDateTime) -> anyhow::Result<u64> {
        let spec = request.picture(at).map_err(anyhow::Error::msg)?;
        let pool = self.ctx.pool.clone();
        let stream = self.spec.stream.clone();
        let records = self.ctx.handle.block_on(async move {
            let client = pool.get().await?;
            anyhow::Ok(tspi_store::picture_at(&client, &stream, &spec).await?)
        })?;
        for m in &records {
            self.publish(m, Phase::Snapshot)?;
        }
        let n = records.len() as u64;
        self.update(|s| s.snapshot_published += n);
        Ok(n)
    }

    /// Command state in force at `at`, then the tags before it, then the alarms in force.
    fn emit_state(&self, at: OffsetDateTime) -> anyhow::Result<u64> {
        let pool = self.ctx.pool.clone();
        let stream = self.spec.stream.clone();
        let (commands, tags, alarms) = self.ctx.handle.block_on(async move {
            let client = pool.get().await?;
            let commands = tspi_store::command_state_at(&client, &stream, at).await?;
            let tags = tspi_store::tags_before(&client, &stream, at).await?;
            let alarms = tspi_store::alarms_at(&client, &stream, at).await?;
            anyhow::Ok((commands, tags, alarms))
        })?;
        for m in commands.iter().chain(tags.iter()).chain(alarms.iter()) {
            self.publish(m, Phase::State)?;
        }
        let n = (commands.len() + tags.len() + alarms.len()) as u64;
        self.update(|s| s.state_published += n);
        Ok(n)
    }

    fn next_control(&mut self, timeout: Option<Duration>) -> Option<Control> {
        if !self.controllable {
            if let Some(t) = timeout {
                std::thread::sleep(t);
            }
            return None;
        }
        let got = match timeout {
            Some(t) => self.control.recv_timeout(t),
            None => self
                .control
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(c) => Some(c),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // Nobody can steer this session (play without serve): just keep time.
                self.controllable = false;
                if let Some(t) = timeout {
                    std::thread::sleep(t);
                }
                None
            }
        }
    }

    /// Handle one control request; `Some` when it ends the current message's wait.
    fn apply(&mut self, c: Control) -> Option<Interrupt> {
        match c {
            Control::Stop => Some(Interrupt::Stop),
            Control::Seek(t) => Some(Interrupt::Seek(t)),
            Control::Speed(x) => {
                self.pacer.set_speed(x, Instant::now());
                self.update(|s| s.speed = x);
                None
            }
            Control::Resume => None,
            Control::Pause => {
                let now = Instant::now();
                let position = self.pacer.position(now);
                self.update(|s| s.state = PlayState::Paused);
                loop {
                    match self.next_control(None) {
                        Some(Control::Resume) => break,
                        Some(Control::Pause) => {}
                        Some(Control::Speed(x)) => {
                            self.pacer.set_speed(x, Instant::now());
                            self.update(|s| s.speed = x);
                        }
                        Some(Control::Stop) => return Some(Interrupt::Stop),
                        // A seek while paused lands there and stays paused.
                        Some(Control::Seek(t)) => {
                            self.update(|s| s.state = PlayState::Paused);
                            return Some(Interrupt::Seek(t));
                        }
                        None if !self.controllable => break,
                        None => {}
                    }
                }
                if let Some(p) = position {
                    self.pacer.resume_at(p, Instant::now());
                }
                self.update(|s| s.state = PlayState::Playing);
                None
            }
        }
    }

    /// After a forward seek: every command and tag skipped over, in stream order, so a
    /// display ends in the same state as if it had played through.
    fn emit_skipped(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        after_seq: i64,
    ) -> anyhow::Result<u64> {
        let pool = self.ctx.pool.clone();
        let stream = self.spec.stream.clone();
        let skipped = self.ctx.handle.block_on(async move {
            let client = pool.get().await?;
            anyhow::Ok(
                tspi_store::control_messages_between(&client, &stream, from, to, after_seq).await?,
            )
        })?;
        for m in &skipped {
            self.publish(m, Phase::Skipped)?;
        }
        let n = skipped.len() as u64;
        self.update(|s| s.state_published += n);
        Ok(n)
    }

    /// The preface of a segment: `begin`, the state in force (or what a forward seek
    /// skipped), the picture at the start when asked for, then the window opened (its
    /// first page read), then `ready`, flushed: a display has its picture, and the window
    /// plays from the moment it says ready, so its cursor and the playout agree.
    fn begin_segment(
        &mut self,
        from: OffsetDateTime,
        paused: bool,
        snapshot: Option<&SnapshotRequest>,
        played: Option<(OffsetDateTime, OffsetDateTime, i64)>,
    ) -> anyhow::Result<Cursor> {
        let forward = matches!(played, Some((_, head, _)) if from > head);
        let segment = self.segment;
        self.update(|s| s.segment = segment);
        let mut marker = SegmentMarker {
            segment,
            kind: if forward {
                SegmentKind::Forward
            } else {
                SegmentKind::Restart
            },
            at: rfc3339(from),
            end: rfc3339(self.spec.end),
            speed: self.pacer.speed(),
            paused,
            state: 0,
            snapshot: 0,
        };
        let t0 = Instant::now();
        self.marker(Phase::Begin, &marker)?;
        marker.state = match played {
            Some((segment_start, head, last_seq)) if from > head => {
                self.emit_skipped(segment_start, from, last_seq)?
            }
            _ => self.emit_state(from)?,
        };
        let t1 = t0.elapsed();
        if let Some(request) = snapshot {
            marker.snapshot = self.emit_snapshot(request, from)?;
        }
        let t2 = t0.elapsed();
        let mut cursor = Cursor::open(&self.ctx, &self.spec.stream, from, self.spec.end)?;
        let t3 = t0.elapsed();
        cursor.fill()?;
        let t4 = t0.elapsed();
        self.marker(Phase::Ready, &marker)?;
        self.ctx.handle.block_on(self.ctx.client.flush()).ok();
        tracing::debug!(
            room = %self.spec.room, segment, state_ms = t1.as_secs_f64() * 1e3,
            snapshot_ms = (t2 - t1).as_secs_f64() * 1e3, open_ms = (t3 - t2).as_secs_f64() * 1e3,
            first_page_ms = (t4 - t3).as_secs_f64() * 1e3, total_ms = t0.elapsed().as_secs_f64() * 1e3,
            "segment ready"
        );
        Ok(cursor)
    }

    fn play(&mut self) -> anyhow::Result<PlayState> {
        let mut from = self.spec.start;
        self.segment = self.spec.segment.unwrap_or(1);
        let mut snapshot = self.spec.snapshot;
        let mut paused_after_seek = self.spec.paused;
        // Where the playhead stood before a seek: the segment start and the last message
        // published in it.
        let mut played: Option<(OffsetDateTime, OffsetDateTime, i64)> = None;
        'seek: loop {
            let mut cursor =
                self.begin_segment(from, paused_after_seek, snapshot.as_ref(), played)?;
            let count = cursor.count;
            let position = rfc3339(from);
            self.update(|s| {
                s.window_messages = s.window_messages.max(count);
                s.position = Some(position);
            });
            played = Some((from, from, 0));
            self.pacer.reset();
            self.last_tspi_us = None;
            // Where the next seek goes: its segment number and picture.
            let mut seek_to = |to: SeekTo, segment: &mut u64| {
                *segment = to.segment.unwrap_or(*segment + 1);
                snapshot = to.snapshot;
                to.at
            };
            if paused_after_seek {
                match self.apply(Control::Pause) {
                    Some(Interrupt::Stop) => return Ok(PlayState::Stopped),
                    Some(Interrupt::Seek(to)) => {
                        from = seek_to(to, &mut self.segment);
                        paused_after_seek = true;
                        continue 'seek;
                    }
                    None => {}
                }
            }
            while let Some(m) = cursor.next()? {
                let orig = self.original_us(&m);
                loop {
                    let now = Instant::now();
                    let due = match orig {
                        Some(o) => self.pacer.due(o, now),
                        None => now,
                    };
                    let wait = due.saturating_duration_since(now);
                    let control = if wait.is_zero() {
                        if self.controllable {
                            self.control.try_recv().ok()
                        } else {
                            None
                        }
                    } else {
                        self.next_control(Some(wait))
                    };
                    match control.and_then(|c| self.apply(c)) {
                        Some(Interrupt::Stop) => return Ok(PlayState::Stopped),
                        Some(Interrupt::Seek(to)) => {
                            paused_after_seek = self
                                .status
                                .lock()
                                .is_ok_and(|s| s.state == PlayState::Paused);
                            from = seek_to(to, &mut self.segment);
                            continue 'seek;
                        }
                        None => {}
                    }
                    let now = Instant::now();
                    if now >= due {
                        let _ = self
                            .errors
                            .record(now.duration_since(due).as_micros() as u64);
                        break;
                    }
                    // Woken early by a control request: compute the (possibly new) due again.
                }
                self.publish(&m, Phase::Window)?;
                if let Some((_, head, last_seq)) = played.as_mut() {
                    *head = m.stream_ts;
                    *last_seq = m.stream_seq;
                }
                let position = rfc3339(m.stream_ts);
                self.update(|s| {
                    s.published += 1;
                    s.position = Some(position);
                });
            }
            self.ctx.handle.block_on(self.ctx.client.flush()).ok();
            return Ok(PlayState::Finished);
        }
    }
}
