//! The headless face: one [`Session`] fed from NATS and stdin, its effects printed as
//! JSON lines (`state`, `frame`, `command`, `tag`, `channel`, `channel_available`,
//! `seek`, `ready`, `control_reply`, `metrics`, `end`).

use std::collections::VecDeque;
use std::io::Write;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use futures::{Stream, StreamExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tspi_core::display::DisplayFrame;
use tspi_core::ops::OpsControl;
use tspi_core::TelemetryRecord;
use tspi_display::{Effect, Feed, FeedSpec, Input, RateGate, Request, Session};

use crate::feed::{self, Decoded, Incoming};
use crate::replayer_client::{ask_replayer, send_heartbeat};
use crate::{session_config, PlayerCounts, PlayerOptions, Source};

/// Upper bound of the rewind buffer, whatever the window.
const REWIND_MAX: usize = 200_000;

type FeedStream = Pin<Box<dyn Stream<Item = Incoming> + Send>>;

struct Headless<'a, W: Write> {
    options: &'a PlayerOptions,
    client: async_nats::Client,
    js: jetstream::Context,
    session: Session,
    out: W,
    feed: FeedStream,
    gate: RateGate,
    clock_base: Instant,
    rewind: VecDeque<TelemetryRecord>,
    frames_out: u64,
    window_frames: u64,
    /// Malformed `tspi.ops.ctrl` messages (the session counts what comes from the feed).
    invalid_control: u64,
}

fn now_ms() -> i64 {
    tspi_runtime::now_epoch_ms()
}

impl<W: Write> Headless<'_, W> {
    fn event(&mut self, value: &serde_json::Value) -> std::io::Result<()> {
        if self.options.json {
            serde_json::to_writer(&mut self.out, value)?;
            self.out.write_all(b"\n")?;
            self.out.flush()?;
        }
        Ok(())
    }

    fn counts(&self) -> PlayerCounts {
        let c = self.session.counts();
        PlayerCounts {
            frames_in: c.frames_in,
            frames_out: self.frames_out,
            commands: c.commands,
            tags: c.tags,
            invalid: c.invalid + self.invalid_control,
        }
    }

    async fn heartbeat(&mut self) {
        let hb = self.session.heartbeat(now_ms());
        send_heartbeat(&self.client, &hb).await;
    }

    fn frame_json(&self, record: &TelemetryRecord) -> anyhow::Result<serde_json::Value> {
        let settings = self.session.settings();
        let mut v = serde_json::to_value(DisplayFrame::new(record, settings.units))?;
        v["event"] = json!("frame");
        v["marker_color"] = json!(settings.marker_color);
        if let Some((name, id)) = &settings.session {
            v["session"] = json!({"name": name, "id": id});
        }
        Ok(v)
    }

    /// Carry out what the session decided. `record`: the telemetry the input carried.
    async fn apply(
        &mut self,
        effects: Vec<Effect>,
        record: Option<&TelemetryRecord>,
        request_line: Option<&str>,
    ) -> anyhow::Result<()> {
        for effect in effects {
            match effect {
                Effect::Open(spec) => self.open(spec).await?,
                Effect::Replayer { room, request } => {
                    let reply = ask_replayer(&self.client, &room, &request).await;
                    self.event(
                        &json!({"event": "control_reply", "request": request_line, "reply": reply}),
                    )?;
                }
                Effect::Frame { playhead_ms, .. } => {
                    let Some(record) = record else { continue };
                    if self.options.source == Source::Live && !self.options.rewind_window.is_zero()
                    {
                        let keep_from =
                            record.recv_epoch_ms - self.options.rewind_window.as_millis() as i64;
                        while self
                            .rewind
                            .front()
                            .is_some_and(|r| r.recv_epoch_ms < keep_from)
                            || self.rewind.len() >= REWIND_MAX
                        {
                            self.rewind.pop_front();
                        }
                        self.rewind.push_back(record.clone());
                    }
                    let now_us = self.clock_base.elapsed().as_micros() as i64;
                    if !self.gate.admit(record.sensor_id, now_us) {
                        continue;
                    }
                    self.frames_out += 1;
                    self.window_frames += 1;
                    let mut v = self.frame_json(record)?;
                    v["playhead"] = json!(tspi_core::rfc3339::format_utc_millis(playhead_ms));
                    self.event(&v)?;
                }
                Effect::Command { command, changed } => {
                    self.event(&json!({
                        "event": "command", "name": command.setting.name(),
                        "payload": command.payload_json(), "cmd_id": command.cmd_id,
                        "ts": command.ts, "sender": command.sender, "changed": changed,
                    }))?;
                }
                Effect::Tag { subject, tag } => {
                    self.event(&json!({"event": "tag", "subject": subject, "tag": tag}))?
                }
                Effect::Alarm(alarm) => self.event(&json!({"event": "alarm", "alarm": alarm}))?,
                Effect::Channel => {
                    let s = &self.session;
                    let v = json!({"event": "channel", "state": s.state(), "channel_id": s.channel_id(),
                                   "subject": s.subject(), "units": s.settings().units.as_str()});
                    self.event(&v)?;
                }
                Effect::ChannelAvailable {
                    channel_id,
                    display_name,
                } => self.event(
                    &json!({"event": "channel_available", "channel_id": channel_id,
                                        "display_name": display_name}),
                )?,
                Effect::Seek { phase } => {
                    self.event(&json!({"event": "seek", "phase": phase.as_str()}))?
                }
                Effect::Ready { segment } => {
                    self.event(&json!({"event": "ready", "segment": segment}))?
                }
                Effect::Heartbeat => self.heartbeat().await,
                Effect::Reply(result) => {
                    let reply = match result {
                        Ok(mut v) => {
                            v["ok"] = json!(true);
                            v
                        }
                        Err(e) => json!({"ok": false, "error": e}),
                    };
                    self.event(
                        &json!({"event": "control_reply", "request": request_line, "reply": reply}),
                    )?;
                }
                Effect::Clear | Effect::Settings | Effect::Mode => {}
            }
        }
        Ok(())
    }

    async fn open(&mut self, spec: FeedSpec) -> anyhow::Result<()> {
        self.feed = match spec {
            FeedSpec::Live => {
                let (stream, history) =
                    feed::live(&self.js, &self.options.stream, &self.options.prefix).await?;
                let fx = self.session.handle(Input::LiveHistory(&history), now_ms());
                drop(fx); // settings only; the channel event that follows shows the units
                Box::pin(stream)
            }
            FeedSpec::Channel { subject, .. } => {
                Box::pin(feed::channel(&self.client, &subject).await?)
            }
            FeedSpec::Room { room } => Box::pin(feed::room(&self.client, &room).await?),
        };
        Ok(())
    }

    /// A control line from stdin: live ops, or (historical) the replayer's.
    async fn control(&mut self, line: &str) -> anyhow::Result<()> {
        let request = serde_json::from_str::<serde_json::Value>(line);
        let request = match (request, self.options.source) {
            (Err(e), _) => {
                let reply = json!({"ok": false, "error": format!("not JSON: {e}")});
                return Ok(self
                    .event(&json!({"event": "control_reply", "request": line, "reply": reply}))?);
            }
            (Ok(v), Source::Historical) => {
                match serde_json::from_value::<tspi_core::playout::ControlRequest>(v) {
                    Ok(r) => Request::Forward(r),
                    Err(e) => {
                        let reply = json!({"ok": false, "error": format!("bad request: {e}")});
                        return Ok(self.event(
                            &json!({"event": "control_reply", "request": line, "reply": reply}),
                        )?);
                    }
                }
            }
            (Ok(v), Source::Live) => match v["op"].as_str() {
                Some("live") => Request::Override,
                Some("follow") => Request::Follow,
                Some("rewind") => {
                    let reply = self.rewind(v["seconds"].as_f64())?;
                    return Ok(self.event(
                        &json!({"event": "control_reply", "request": line, "reply": reply}),
                    )?);
                }
                other => {
                    let reply = json!({"ok": false, "error": format!("unknown op {other:?} (live: live, follow, rewind)")});
                    return Ok(self.event(
                        &json!({"event": "control_reply", "request": line, "reply": reply}),
                    )?);
                }
            },
        };
        let fx = self.session.handle(Input::Request(&request), now_ms());
        self.apply(fx, None, Some(line)).await
    }

    /// Show the last `seconds` of the livestream again from the rolling window.
    fn rewind(&mut self, seconds: Option<f64>) -> anyhow::Result<serde_json::Value> {
        let Some(secs) = seconds.filter(|s| s.is_finite() && *s > 0.0) else {
            return Ok(json!({"ok": false, "error": "rewind needs \"seconds\" > 0"}));
        };
        let newest = self.rewind.back().map_or(0, |r| r.recv_epoch_ms);
        let from = newest - (secs * 1000.0) as i64;
        let frames: Vec<serde_json::Value> = self
            .rewind
            .iter()
            .filter(|r| r.recv_epoch_ms >= from)
            .map(|r| self.frame_json(r))
            .collect::<anyhow::Result<_>>()?;
        for mut v in frames.iter().cloned() {
            v["rewind"] = json!(true);
            self.event(&v)?;
        }
        Ok(json!({"ok": true, "frames": frames.len()}))
    }
}

/// Run until the duration, idle time or `shutdown`; frames and events go to `out`.
pub async fn run<W: Write + Send>(
    options: PlayerOptions,
    client: async_nats::Client,
    out: W,
    shutdown: CancellationToken,
) -> anyhow::Result<PlayerCounts> {
    let js = jetstream::new(client.clone());
    let mut session = Session::new(session_config(&options)?);
    let feed: FeedStream = match options.source {
        Source::Live => {
            let (stream, history) = feed::live(&js, &options.stream, &options.prefix).await?;
            session.handle(Input::LiveHistory(&history), now_ms());
            Box::pin(stream)
        }
        Source::Historical => {
            let room = options
                .room
                .clone()
                .context("--source historical needs --room (the replayer's room)")?;
            Box::pin(feed::room(&client, &room).await?)
        }
    };
    let mut h = Headless {
        options: &options,
        client: client.clone(),
        js,
        session,
        out,
        feed,
        gate: RateGate::new(options.rate_hz),
        clock_base: Instant::now(),
        rewind: VecDeque::new(),
        frames_out: 0,
        window_frames: 0,
        invalid_control: 0,
    };
    // Group replay control: only a live player follows it.
    let mut ctrl = match options.source {
        Source::Live => Some(client.subscribe(tspi_core::ops::CTRL_SUBJECT).await?),
        Source::Historical => None,
    };
    // The state line is the player's readiness: its feed and its control subscription are
    // in place at the server by then (the flush's PONG comes after the SUB).
    client.flush().await?;
    let s = h.session.settings().clone();
    h.event(&json!({
        "event": "state", "units": s.units.as_str(), "marker_color": s.marker_color,
        "session": s.session.as_ref().map(|(n, i)| json!({"name": n, "id": i})),
        "source": match options.source { Source::Live => "live", Source::Historical => "historical" },
    }))?;
    // Requests from stdin, one JSON object a line.
    let mut control_lines = options.control_stdin.then(|| {
        let (tx, rx) = tokio::sync::mpsc::channel::<String>(16);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if !line.trim().is_empty() && tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        rx
    });
    h.heartbeat().await;
    let started = Instant::now();
    let mut last_message = Instant::now();
    let mut beat = tokio::time::interval(Duration::from_secs(5));
    beat.tick().await;
    let mut metrics =
        tokio::time::interval(options.metrics_interval.max(Duration::from_millis(100)));
    metrics.tick().await;
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let mut window_start = Instant::now();
    loop {
        let deadline = options.duration.map(|d| started + d);
        let idle_deadline = options.exit_on_idle.map(|d| last_message + d);
        let stop_at = match (deadline, idle_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let stop = async {
            match stop_at {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = stop => break,
            _ = beat.tick() => h.heartbeat().await,
            _ = ticks.tick() => {
                let fx = h.session.handle(Input::Tick, now_ms());
                h.apply(fx, None, None).await?;
            }
            line = async {
                match control_lines.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => match line {
                Some(line) => h.control(&line).await?,
                None => control_lines = None,
            },
            c = async {
                match ctrl.as_mut() {
                    Some(sub) => sub.next().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(c) = c else {
                    ctrl = None;
                    continue;
                };
                match tspi_core::ops::from_bytes::<OpsControl>(&c.payload) {
                    Ok(control) => {
                        let fx = h.session.handle(Input::Ops(&control), now_ms());
                        h.apply(fx, None, None).await?;
                    }
                    Err(e) => {
                        h.invalid_control += 1;
                        tracing::debug!(error = %e, "invalid tspi.ops.ctrl message skipped");
                    }
                }
            }
            _ = metrics.tick() => {
                let secs = window_start.elapsed().as_secs_f64().max(1e-3);
                let v = json!({"event": "metrics", "counts": h.counts(),
                               "frames_per_s": h.window_frames as f64 / secs});
                h.event(&v)?;
                h.window_frames = 0;
                window_start = Instant::now();
            }
            m = h.feed.next() => {
                let Some(m) = m else { break };
                last_message = Instant::now();
                let decoded = Decoded::new(&m.subject, &m.payload);
                if let Decoded::Invalid(e) = &decoded {
                    tracing::debug!(error = %e, subject = %m.subject, "invalid message skipped");
                }
                let channel;
                let room;
                let feed = match h.session.mode() {
                    tspi_display::Mode::Live => Feed::Live,
                    tspi_display::Mode::Channel { channel_id, .. } => {
                        channel = channel_id.clone();
                        Feed::Channel(&channel)
                    }
                    tspi_display::Mode::Replay { room: r } => {
                        room = r.clone();
                        Feed::Room(&room)
                    }
                };
                let fx = h.session.handle(
                    Input::Message { feed, content: decoded.content(), replayed: m.replayed },
                    now_ms(),
                );
                let record = match &decoded {
                    Decoded::Telemetry(r) => Some(r),
                    _ => None,
                };
                h.apply(fx, record, None).await?;
            }
        }
    }
    let counts = h.counts();
    h.event(&json!({"event": "end", "counts": &counts}))?;
    Ok(counts)
}
