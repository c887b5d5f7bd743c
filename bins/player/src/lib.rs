//! The headless player (SPEC §5, issue 4): follows live telemetry with the display
//! commands and tags, or a room's playout, and prints what a display would show as JSON
//! lines: frames (converted to the operator's units), command changes, tags, periodic
//! metrics. Commands apply at once; stored data stays SI.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures::{Stream, StreamExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tspi_core::display::DisplayFrame;
use tspi_core::ops::{ClientState, Heartbeat, OpsControl};
use tspi_core::units::UnitSystem;
use tspi_core::{DisplayCommand, DisplaySetting, StreamPrefix, Tag, TelemetryRecord};

/// Which time is the playhead: when frames were received, or the TSPI time inside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Clock {
    Receive,
    Tspi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    Live,
    Historical,
}

#[derive(Debug, Clone)]
pub struct PlayerOptions {
    pub source: Source,
    /// Historical: the replayer room to follow.
    pub room: Option<String>,
    pub stream: String,
    pub prefix: StreamPrefix,
    /// Most frames per second printed per sensor (0 = every frame).
    pub rate_hz: f64,
    pub duration: Option<Duration>,
    pub exit_on_idle: Option<Duration>,
    pub json: bool,
    pub metrics_interval: Duration,
    pub client_id: String,
    pub operator: Option<String>,
    /// "Back to live" override: stay on the livestream when a group replay starts.
    pub stay_live: bool,
    /// Read control requests (JSON lines) from stdin. Historical: sent to the room's
    /// `player.<room>.ctrl` (play/pause/seek/speed/stop). Live: `live` (back to live,
    /// ignore group replays), `follow`, `rewind` (`{"op":"rewind","seconds":30}`).
    pub control_stdin: bool,
    /// The playhead clock (frames' `playhead`, when replayed tags show).
    pub clock: Clock,
    /// How much live telemetry is kept for `rewind` (zero: none).
    pub rewind_window: Duration,
}

/// Upper bound of the rewind buffer, whatever the window.
const REWIND_MAX: usize = 200_000;

/// What is applied to the display now.
#[derive(Debug, Clone, PartialEq)]
pub struct DisplayState {
    pub units: UnitSystem,
    pub marker_color: Option<String>,
    pub session: Option<(String, String)>,
}

impl Default for DisplayState {
    fn default() -> Self {
        DisplayState {
            units: UnitSystem::Metric,
            marker_color: None,
            session: None,
        }
    }
}

impl DisplayState {
    /// Apply a command; true when it changed something.
    pub fn apply(&mut self, setting: &DisplaySetting) -> bool {
        let before = self.clone();
        match setting {
            DisplaySetting::Units(u) => self.units = *u,
            DisplaySetting::MarkerColor(c) => self.marker_color = Some(c.clone()),
            DisplaySetting::SessionMetadata { name, id } => {
                self.session = Some((name.clone(), id.clone()))
            }
        }
        *self != before
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PlayerCounts {
    pub frames_in: u64,
    pub frames_out: u64,
    pub commands: u64,
    pub tags: u64,
    pub invalid: u64,
}

struct Output<W: Write> {
    out: W,
    json: bool,
}

impl<W: Write> Output<W> {
    fn event(&mut self, value: &serde_json::Value) -> std::io::Result<()> {
        if self.json {
            serde_json::to_writer(&mut self.out, value)?;
            self.out.write_all(b"\n")?;
            self.out.flush()?;
        }
        Ok(())
    }
}

/// One incoming message, live or replayed: its original subject and bytes.
struct Incoming {
    subject: String,
    payload: bytes::Bytes,
    /// Replayer playout phase (`state`, `skipped`, `window`); `None` live.
    phase: Option<String>,
    /// Replayed: when the original message reached the bus (`Tspi-Original-Time`).
    original_ms: Option<i64>,
}

async fn live_messages(
    js: &jetstream::Context,
    options: &PlayerOptions,
    state: &mut DisplayState,
) -> anyhow::Result<impl Stream<Item = Incoming>> {
    let mut stream = js
        .get_stream(&options.stream)
        .await
        .with_context(|| format!("stream {} not found", options.stream))?;
    // The display state in force: every command the stream still holds, in order (they
    // are few), so an invalid last message on a subject cannot hide the valid one before.
    let history = stream
        .create_consumer(jetstream::consumer::pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::None,
            filter_subject: format!("{}.>", tspi_core::command::DISPLAY_COMMAND_PREFIX),
            inactive_threshold: Duration::from_secs(10),
            ..Default::default()
        })
        .await?;
    let mut info = history.clone();
    let pending = info.info().await?.num_pending as usize;
    if pending > 0 {
        let mut batch = history.fetch().max_messages(pending).messages().await?;
        let mut read = 0;
        while read < pending {
            match tokio::time::timeout(Duration::from_secs(5), batch.next()).await {
                Ok(Some(Ok(m))) => {
                    read += 1;
                    if let Ok(cmd) = DisplayCommand::from_cbor(&m.payload) {
                        state.apply(&cmd.setting);
                    }
                }
                _ => break,
            }
        }
    }
    let mut filters: Vec<String> = options.prefix.telemetry_wildcards().to_vec();
    filters.push(format!("{}.>", tspi_core::command::DISPLAY_COMMAND_PREFIX));
    filters.push("tags.>".into());
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: DeliverPolicy::New,
            filter_subjects: filters,
            ..Default::default()
        })
        .await?;
    let _ = stream.info().await;
    let messages = consumer.messages().await?;
    Ok(messages.filter_map(|m| async move {
        match m {
            Ok(m) => Some(Incoming {
                subject: m.subject.to_string(),
                payload: m.payload.clone(),
                phase: None,
                original_ms: None,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "live consumer error; it recreates itself");
                None
            }
        }
    }))
}

async fn playout_messages(
    client: &async_nats::Client,
    room: &str,
) -> anyhow::Result<impl Stream<Item = Incoming>> {
    let prefix = format!("player.{room}.playout.");
    let sub = client.subscribe(format!("{prefix}>")).await?;
    Ok(sub.map(move |m| Incoming {
        subject: m
            .subject
            .as_str()
            .strip_prefix(&prefix)
            .unwrap_or(m.subject.as_str())
            .to_owned(),
        phase: m
            .headers
            .as_ref()
            .and_then(|h| h.get("Tspi-Replay-Phase"))
            .map(|v| v.as_str().to_owned()),
        original_ms: m
            .headers
            .as_ref()
            .and_then(|h| h.get("Tspi-Original-Time"))
            .and_then(|v| tspi_core::rfc3339::parse_epoch_ms(v.as_str())),
        payload: m.payload,
    }))
}

/// Run until the duration, idle time or `shutdown`; frames and events go to `out`.
pub async fn run<W: Write + Send>(
    options: PlayerOptions,
    client: async_nats::Client,
    out: W,
    shutdown: CancellationToken,
) -> anyhow::Result<PlayerCounts> {
    let js = jetstream::new(client.clone());
    let mut state = DisplayState::default();
    let mut out = Output {
        out,
        json: options.json,
    };
    let (messages, mut channel_id, mut subject, mut client_state): (
        std::pin::Pin<Box<dyn Stream<Item = Incoming> + Send>>,
        String,
        String,
        ClientState,
    ) = match options.source {
        Source::Live => (
            Box::pin(live_messages(&js, &options, &mut state).await?),
            "livestream".into(),
            tspi_core::ops::LIVESTREAM_SUBJECT.into(),
            if options.stay_live {
                ClientState::LiveOverride
            } else {
                ClientState::FollowingLivestream
            },
        ),
        Source::Historical => {
            let room = options
                .room
                .clone()
                .context("--source historical needs --room (the replayer's room)")?;
            (
                Box::pin(playout_messages(&client, &room).await?),
                format!("room-{room}"),
                format!("player.{room}.playout"),
                ClientState::FollowingPrivateReplay,
            )
        }
    };
    let mut messages = messages;
    out.event(&json!({
        "event": "state", "units": state.units.as_str(), "marker_color": state.marker_color,
        "session": state.session.as_ref().map(|(n, i)| json!({"name": n, "id": i})),
        "source": match options.source { Source::Live => "live", Source::Historical => "historical" },
    }))?;
    let heartbeat = |state: ClientState, channel_id: &str, subject: &str| Heartbeat {
        client_id: options.client_id.clone(),
        state,
        channel_id: channel_id.to_owned(),
        subject: subject.to_owned(),
        live_override: state == ClientState::LiveOverride,
        ts: tspi_core::rfc3339::format_utc_millis(tspi_runtime::now_epoch_ms()),
        operator: options.operator.clone(),
        source_ip: None,
        ping_ms: None,
    };
    let send_heartbeat = |hb: Heartbeat| {
        let client = client.clone();
        async move {
            if let Err(e) = client
                .publish(
                    tspi_core::ops::STATUS_SUBJECT,
                    tspi_core::ops::to_cbor(&hb).into(),
                )
                .await
            {
                tracing::warn!(error = %e, "heartbeat not sent");
            }
        }
    };
    // Steering a replayer room from stdin (historical).
    let mut control_lines = match options.control_stdin {
        true => {
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
            Some(rx)
        }
        _ => None,
    };
    // Group replay control: only a live player follows it.
    let mut ctrl = match options.source {
        Source::Live => Some(client.subscribe(tspi_core::ops::CTRL_SUBJECT).await?),
        Source::Historical => None,
    };
    send_heartbeat(heartbeat(client_state, &channel_id, &subject)).await;
    let mut counts = PlayerCounts::default();
    let mut seen_tags: HashSet<(String, String)> = HashSet::new();
    let mut rewind: std::collections::VecDeque<(i64, TelemetryRecord)> =
        std::collections::VecDeque::new();
    let mut pending_tags: Vec<(i64, String, Tag)> = Vec::new();
    let mut playhead_ms: Option<i64> = None;
    let mut last_phase: Option<String> = None;
    let mut last_frame: HashMap<u16, Instant> = HashMap::new();
    let min_gap = (options.rate_hz > 0.0).then(|| Duration::from_secs_f64(1.0 / options.rate_hz));
    let started = Instant::now();
    let mut last_message = Instant::now();
    let mut beat = tokio::time::interval(Duration::from_secs(5));
    beat.tick().await;
    let mut metrics =
        tokio::time::interval(options.metrics_interval.max(Duration::from_millis(100)));
    metrics.tick().await;
    let (mut window_frames, mut window_start) = (0u64, Instant::now());
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
        let m = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = stop => break,
            _ = beat.tick() => {
                send_heartbeat(heartbeat(client_state, &channel_id, &subject)).await;
                continue;
            }
            line = async {
                match control_lines.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(line) = line else {
                    control_lines = None;
                    continue;
                };
                let request = serde_json::from_str::<serde_json::Value>(&line);
                let reply = match (&request, options.source) {
                    (Err(e), _) => json!({"ok": false, "error": format!("not JSON: {e}")}),
                    (Ok(_), Source::Historical) => {
                        let room = options.room.clone().unwrap_or_default();
                        match tokio::time::timeout(
                            Duration::from_secs(5),
                            client.request(format!("player.{room}.ctrl"), line.clone().into_bytes().into()),
                        )
                        .await
                        {
                            Ok(Ok(r)) => serde_json::from_slice(&r.payload)
                                .unwrap_or_else(|_| json!({"ok": false, "error": "reply is not JSON"})),
                            Ok(Err(e)) => json!({"ok": false, "error": format!("no replayer for room {room}: {e}")}),
                            Err(_) => json!({"ok": false, "error": "replayer did not answer within 5 s"}),
                        }
                    }
                    (Ok(req), Source::Live) => match req["op"].as_str() {
                        // "Back to live": leave a group replay and ignore the next ones.
                        Some("live") => {
                            if client_state == ClientState::FollowingGroupReplay {
                                messages = Box::pin(live_messages(&js, &options, &mut state).await?);
                            }
                            client_state = ClientState::LiveOverride;
                            channel_id = "livestream".into();
                            subject = tspi_core::ops::LIVESTREAM_SUBJECT.into();
                            out.event(&json!({"event": "channel", "state": client_state, "channel_id": &channel_id,
                                               "subject": &subject, "units": state.units.as_str()}))?;
                            send_heartbeat(heartbeat(client_state, &channel_id, &subject)).await;
                            json!({"ok": true, "state": client_state})
                        }
                        // Follow group replays again.
                        Some("follow") => {
                            if client_state == ClientState::LiveOverride {
                                client_state = ClientState::FollowingLivestream;
                                out.event(&json!({"event": "channel", "state": client_state, "channel_id": &channel_id,
                                                   "subject": &subject, "units": state.units.as_str()}))?;
                                send_heartbeat(heartbeat(client_state, &channel_id, &subject)).await;
                            }
                            json!({"ok": true, "state": client_state})
                        }
                        // Show the last S seconds again from the rolling window.
                        Some("rewind") => match req["seconds"].as_f64().filter(|s| s.is_finite() && *s > 0.0) {
                            Some(secs) => {
                                let newest = rewind.back().map_or(0, |(t, _)| *t);
                                let from = newest - (secs * 1000.0) as i64;
                                let mut shown = 0u64;
                                for (t, rec) in rewind.iter().filter(|(t, _)| *t >= from) {
                                    let mut v = serde_json::to_value(DisplayFrame::new(rec, state.units))?;
                                    v["event"] = json!("frame");
                                    v["rewind"] = json!(true);
                                    v["marker_color"] = json!(state.marker_color);
                                    let _ = t;
                                    out.event(&v)?;
                                    shown += 1;
                                }
                                json!({"ok": true, "frames": shown})
                            }
                            None => json!({"ok": false, "error": "rewind needs \"seconds\" > 0"}),
                        },
                        other => json!({"ok": false, "error": format!("unknown op {other:?} (live: live, follow, rewind)")}),
                    },
                };
                out.event(&json!({"event": "control_reply", "request": line, "reply": reply}))?;
                continue;
            }
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
                let Ok(control) = tspi_core::ops::from_bytes::<OpsControl>(&c.payload) else {
                    counts.invalid += 1;
                    continue;
                };
                match control {
                    OpsControl::GroupReplayStart { channel_id: id, display_name, .. } => {
                        if client_state != ClientState::FollowingLivestream {
                            // Live override (or already in a replay): stay, but say it exists.
                            out.event(&json!({"event": "channel_available", "channel_id": id,
                                               "display_name": display_name}))?;
                            continue;
                        }
                        let replay_subject = format!("tspi.channel.replay.{id}");
                        let sub = client.subscribe(replay_subject.clone()).await?;
                        messages = Box::pin(sub.map(|m| Incoming {
                            subject: m.subject.to_string(),
                            payload: m.payload,
                            phase: None,
                            original_ms: None,
                        }));
                        client_state = ClientState::FollowingGroupReplay;
                        channel_id = id;
                        subject = replay_subject;
                    }
                    OpsControl::GroupReplayStop { channel_id: id } => {
                        if client_state != ClientState::FollowingGroupReplay || id != channel_id {
                            continue;
                        }
                        messages = Box::pin(live_messages(&js, &options, &mut state).await?);
                        client_state = ClientState::FollowingLivestream;
                        channel_id = "livestream".into();
                        subject = tspi_core::ops::LIVESTREAM_SUBJECT.into();
                    }
                }
                out.event(&json!({"event": "channel", "state": client_state, "channel_id": &channel_id,
                                   "subject": &subject, "units": state.units.as_str()}))?;
                send_heartbeat(heartbeat(client_state, &channel_id, &subject)).await;
                continue;
            }
            _ = metrics.tick() => {
                let secs = window_start.elapsed().as_secs_f64().max(1e-3);
                out.event(&json!({"event": "metrics", "counts": &counts,
                                   "frames_per_s": window_frames as f64 / secs}))?;
                window_frames = 0;
                window_start = Instant::now();
                continue;
            }
            m = messages.next() => match m {
                Some(m) => m,
                None => break,
            },
        };
        last_message = Instant::now();
        // A new playout segment (play, or a seek): "state" restarts the timeline, so held
        // tags and the duplicate filter start over; "skipped" continues forward.
        let phase = m.phase.as_deref();
        if phase != last_phase.as_deref() && last_phase.as_deref() == Some("window") {
            if phase == Some("state") {
                pending_tags.clear();
                seen_tags.clear();
                playhead_ms = None;
            }
            out.event(&json!({"event": "seek", "phase": phase}))?;
        }
        last_phase = m.phase.clone();
        if m.subject
            .starts_with(tspi_core::command::DISPLAY_COMMAND_PREFIX)
        {
            match DisplayCommand::from_cbor(&m.payload) {
                Ok(cmd) => {
                    counts.commands += 1;
                    let changed = state.apply(&cmd.setting);
                    out.event(&json!({
                        "event": "command", "name": cmd.setting.name(), "payload": cmd.payload_json(),
                        "cmd_id": cmd.cmd_id, "ts": cmd.ts, "sender": cmd.sender, "changed": changed,
                    }))?;
                }
                Err(e) => {
                    counts.invalid += 1;
                    tracing::debug!(error = %e, subject = %m.subject, "invalid command skipped");
                }
            }
        } else if m.subject.starts_with("tags.") {
            match Tag::from_cbor(&m.payload) {
                Ok(tag) => {
                    // create + broadcast of one state arrive twice: show it once.
                    if seen_tags.insert((tag.id.clone(), tag.updated_ts.clone())) {
                        let at = tspi_core::rfc3339::parse_epoch_ms(&tag.ts);
                        // Replayed tags show when the playback reaches the tagged moment
                        // (tags from before the start point show at once). The tag's own
                        // arrival counts as reaching its bus time: a tag dropped after the
                        // last frame of a window must not wait for a frame that never comes.
                        let reached = match (playhead_ms, m.original_ms) {
                            (Some(p), Some(o)) => Some(p.max(o)),
                            (p, o) => p.or(o),
                        };
                        let hold = m.phase.as_deref().is_some_and(|p| p != "state")
                            && at.is_some_and(|t| reached.is_none_or(|r| t > r));
                        if hold {
                            pending_tags.push((at.unwrap_or_default(), m.subject.clone(), tag));
                        } else {
                            counts.tags += 1;
                            out.event(&json!({"event": "tag", "subject": m.subject, "tag": tag}))?;
                        }
                    }
                }
                Err(e) => {
                    counts.invalid += 1;
                    tracing::debug!(error = %e, subject = %m.subject, "invalid tag skipped");
                }
            }
        } else {
            match TelemetryRecord::from_cbor(&m.payload) {
                Ok(rec) => {
                    counts.frames_in += 1;
                    if options.source == Source::Live && !options.rewind_window.is_zero() {
                        let keep_from =
                            rec.recv_epoch_ms - options.rewind_window.as_millis() as i64;
                        while rewind.front().is_some_and(|(t, _)| *t < keep_from)
                            || rewind.len() >= REWIND_MAX
                        {
                            rewind.pop_front();
                        }
                        rewind.push_back((rec.recv_epoch_ms, rec.clone()));
                    }
                    let head = match options.clock {
                        Clock::Receive => rec.recv_epoch_ms,
                        Clock::Tspi => tspi_core::rfc3339::tspi_to_epoch_ms(
                            rec.day,
                            rec.time_s,
                            rec.recv_epoch_ms,
                        ),
                    };
                    if m.phase.is_some() {
                        playhead_ms = Some(head);
                        pending_tags.sort_by_key(|(t, _, _)| *t);
                        let due = pending_tags
                            .iter()
                            .take_while(|(t, _, _)| *t <= head)
                            .count();
                        for (_, subject, tag) in pending_tags.drain(..due) {
                            counts.tags += 1;
                            out.event(&json!({"event": "tag", "subject": subject, "tag": tag}))?;
                        }
                    }
                    let now = Instant::now();
                    if let Some(gap) = min_gap {
                        if last_frame
                            .get(&rec.sensor_id)
                            .is_some_and(|t| now.duration_since(*t) < gap)
                        {
                            continue;
                        }
                        last_frame.insert(rec.sensor_id, now);
                    }
                    counts.frames_out += 1;
                    window_frames += 1;
                    let frame = DisplayFrame::new(&rec, state.units);
                    let mut v = serde_json::to_value(&frame)?;
                    v["event"] = json!("frame");
                    v["playhead"] = json!(tspi_core::rfc3339::format_utc_millis(head));
                    v["marker_color"] = json!(state.marker_color);
                    if let Some((name, id)) = &state.session {
                        v["session"] = json!({"name": name, "id": id});
                    }
                    out.event(&v)?;
                }
                Err(e) => {
                    counts.invalid += 1;
                    tracing::debug!(error = %e, subject = %m.subject, "invalid frame skipped");
                }
            }
        }
    }
    out.event(&json!({"event": "end", "counts": &counts}))?;
    Ok(counts)
}
