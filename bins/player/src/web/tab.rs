//! One browser tab: its own [`Session`] (cursor, channel, client id, heartbeats), fed by
//! the hub's broadcast (livestream, group replays) or its own replayer room, and the
//! page's requests. What it shows goes to the page through two bounded queues:
//! control messages in order, track updates as the latest fix per track at most
//! `--web-rate` times a second. A tab that does not read is thinned (its tracks coalesce
//! to their latest fix), then closed after `--web-stall-timeout` and counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, Stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tspi_display::{
    Content, Effect, Feed, FeedSpec, Input, Mode, Request, Session, SessionConfig, SnapshotSpec,
    Start, TrackFix,
};

use crate::feed::{self, Decoded, Incoming};
use crate::web::hub::{Hub, HubEvent, Item};
use crate::web::protocol::{self, PageRequest};
use crate::web::WebContext;

/// Messages waiting for the socket at most (each a batch of track updates or one
/// control message). Small: what a slow tab misses is coalesced, not queued.
pub const OUTBOX: usize = 2;
/// Control messages (settings, mode, tags, replies) a tab may owe before it is closed.
pub const CONTROL_MAX: usize = 512;
/// How often track updates go out (the per-track rate decides which).
pub const FLUSH_EVERY: Duration = Duration::from_millis(40);
/// Track batches a page may have unacknowledged (`{"op":"ack","seq":N}`): a page slower
/// than the data gets fresher, thinner batches instead of a growing backlog in the
/// sockets' buffers (which showed 20 s old positions on a busy page).
pub const TRACK_WINDOW: u64 = 2;
/// Snapshot rows per message.
const ROWS_PER_MESSAGE: usize = 5_000;
/// Requests a tab may make: a burst, refilled per second.
const REQUEST_BURST: f64 = 50.0;
const REQUESTS_PER_S: f64 = 20.0;
/// Refused requests after which a tab is closed as a flood.
const FLOOD_REFUSALS: u32 = 500;

type RoomFeed = Pin<Box<dyn Stream<Item = Incoming> + Send>>;

/// Where a tab came from.
#[derive(Debug, Clone)]
pub struct TabSetup {
    pub client_id: String,
    pub operator: Option<String>,
    pub remote: SocketAddr,
    /// The page acknowledges track batches (`/ws?ack=0` turns that off for scripts:
    /// then only the socket's buffers hold a slow reader back).
    pub acks: bool,
}

/// Late results of work a tab started (a tag publish, an archive question, a replayer
/// request).
#[derive(Debug)]
enum Late {
    Send(Value),
    ReplayerFailed { segment: Option<u64>, error: String },
}

#[derive(Debug)]
struct Shown {
    fix: TrackFix,
    dirty: bool,
    last_sent: Instant,
}

struct Tab {
    ctx: Arc<WebContext>,
    hub: Arc<Hub>,
    session: Session,
    setup: TabSetup,
    /// Track batches (and pings): small, so what a slow tab misses is coalesced.
    outbox: mpsc::Sender<Message>,
    progress: Arc<AtomicI64>,
    /// Control messages in order (settings, mode, pictures, replies), sent first.
    control: mpsc::Sender<Message>,
    picture: HashMap<u16, Shown>,
    snapshot_rows: Vec<Value>,
    generation: u64,
    /// Livestream batches up to this one are in the picture copied from the hub.
    live_seq: u64,
    room: Option<RoomFeed>,
    /// A seek's request id and segment: answered when its picture is in.
    awaiting: Option<(Option<u64>, u64)>,
    request_id: Option<u64>,
    late_tx: mpsc::Sender<Late>,
    backlog: bool,
    mode_dirty: bool,
    fill_live: bool,
    /// A group replay was just joined: its picture starts empty and fills from its frames
    /// (a replay already under way sends no snapshot).
    channel_opened: bool,
    ping_ms: Option<f64>,
    bucket: f64,
    bucket_at: Instant,
    refusals: u32,
    closing: Option<&'static str>,
    acks: bool,
    track_seq: u64,
    acked: u64,
    acked_at: i64,
}

fn now_ms() -> i64 {
    tspi_runtime::now_epoch_ms()
}

fn text(v: &Value) -> Message {
    Message::Text(v.to_string().into())
}

/// Serve one tab until it closes, is dropped, or `shutdown`.
pub async fn run(
    socket: WebSocket,
    ctx: Arc<WebContext>,
    hub: Arc<Hub>,
    setup: TabSetup,
    shutdown: CancellationToken,
) {
    let metrics = hub.metrics.clone();
    metrics.sessions.inc();
    metrics.sessions_opened.inc();
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (outbox, mut out_rx) = mpsc::channel::<Message>(OUTBOX);
    let (control, mut control_rx) = mpsc::channel::<Message>(CONTROL_MAX);
    let progress = Arc::new(AtomicI64::new(now_ms()));
    let writer_progress = progress.clone();
    let writer_metrics = metrics.clone();
    let writer = tokio::spawn(async move {
        loop {
            // Control first: a reset or a settings change never waits behind tracks.
            let msg = tokio::select! {
                biased;
                Some(m) = control_rx.recv() => m,
                Some(m) = out_rx.recv() => m,
                else => break,
            };
            let len = match &msg {
                Message::Text(t) => t.len(),
                Message::Binary(b) => b.len(),
                _ => 0,
            };
            let close = matches!(msg, Message::Close(_));
            if ws_tx.send(msg).await.is_err() {
                break;
            }
            writer_metrics.bytes_sent.inc_by(len as u64);
            writer_progress.store(now_ms(), Ordering::Relaxed);
            if close {
                break;
            }
        }
        let _ = ws_tx.close().await;
    });
    let joined = hub.join();
    let (late_tx, mut late_rx) = mpsc::channel::<Late>(64);
    let session = Session::new(SessionConfig {
        client_id: setup.client_id.clone(),
        operator: setup
            .operator
            .clone()
            .or_else(|| ctx.options.operator.clone()),
        start: Start::Live { stay_live: false },
        clock: tspi_display::Clock::Receive,
        replay_room: Some(format!("web-{}", setup.client_id)),
        snapshot: Some(SnapshotSpec {
            trail_s: ctx.options.trail.as_secs_f64(),
            lookback_s: ctx.options.track_timeout.as_secs_f64(),
        }),
    });
    let acks = setup.acks;
    let mut tab = Tab {
        ctx: ctx.clone(),
        hub: hub.clone(),
        session,
        setup,
        outbox,
        progress,
        control,
        picture: HashMap::new(),
        snapshot_rows: Vec::new(),
        generation: 0,
        live_seq: 0,
        room: None,
        awaiting: None,
        request_id: None,
        late_tx,
        backlog: false,
        mode_dirty: true,
        fill_live: true,
        channel_opened: false,
        ping_ms: None,
        bucket: REQUEST_BURST,
        bucket_at: Instant::now(),
        refusals: 0,
        closing: None,
        acks,
        track_seq: 0,
        acked: 0,
        acked_at: now_ms(),
    };
    let mut events = joined.events;
    tab.hello(&joined.groups, &joined.tags, joined.overlays.as_ref())
        .await;
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat = tokio::time::interval(Duration::from_secs(5));
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    // The page sets its clock by the server's stamps (the least delayed one wins).
    let mut clock = tokio::time::interval(Duration::from_secs(2));
    let started = Instant::now();
    while tab.closing.is_none() {
        tokio::select! {
            _ = shutdown.cancelled() => {
                tab.closing = Some("the display is shutting down");
            }
            m = ws_rx.next() => match m {
                Some(Ok(Message::Text(t))) => tab.request(t.as_str()).await,
                Some(Ok(Message::Binary(_))) => tab.refuse(None, "binary frames are not part of the protocol".into()),
                Some(Ok(Message::Pong(p))) => {
                    if let Ok(sent) = <[u8; 8]>::try_from(&p[..]) {
                        let rtt = started.elapsed().as_micros() as i64 - i64::from_be_bytes(sent);
                        if (0..60_000_000).contains(&rtt) {
                            tab.ping_ms = Some(rtt as f64 / 1000.0);
                        }
                    }
                }
                Some(Ok(Message::Ping(_))) => {}
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            },
            ev = events.recv() => match ev {
                Ok(ev) => tab.event(&ev).await,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    metrics.lagged.inc_by(n);
                    tab.resync().await;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            m = async {
                match tab.room.as_mut() {
                    Some(room) => room.next().await,
                    None => std::future::pending().await,
                }
            } => match m {
                Some(m) => tab.room_message(m).await,
                None => tab.room = None,
            },
            late = late_rx.recv() => if let Some(late) = late { tab.late(late).await },
            _ = flush.tick() => tab.flush(),
            _ = tick.tick() => {
                let fx = tab.session.handle(Input::Tick, now_ms());
                tab.apply(fx, None).await;
            }
            _ = beat.tick() => {
                tab.heartbeat().await;
                let stamp = (started.elapsed().as_micros() as i64).to_be_bytes();
                tab.send_now(Message::Ping(stamp.to_vec().into()));
            }
            _ = clock.tick() => tab.send_now(text(&json!({"t": "clock", "server_ms": now_ms()}))),
        }
        tab.after();
    }
    // Leave the room (the replayer frees it) and say why the tab is closed.
    if let Mode::Replay { room } = tab.session.mode().clone() {
        tab.replayer(room, json!({"op": "stop"}), None);
    }
    if let Some(reason) = tab.closing {
        let frame = CloseFrame {
            code: if reason.starts_with("the display") {
                1001
            } else {
                1008
            },
            reason: reason.into(),
        };
        let _ = tab.control.try_send(Message::Close(Some(frame)));
    }
    drop(tab);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    metrics.sessions.dec();
}

impl Tab {
    fn push(&mut self, v: Value) {
        if self.closing.is_some() {
            return;
        }
        if self.control.try_send(text(&v)).is_err() {
            self.hub.metrics.dropped_stalled.inc();
            self.closing = Some("not reading: closed (too far behind)");
        }
    }

    /// Straight to the outbox if it has room (pings); dropped otherwise.
    fn send_now(&mut self, m: Message) {
        let _ = self.outbox.try_send(m);
    }

    async fn hello(
        &mut self,
        groups: &[tspi_display::session::GroupChannel],
        tags: &[tspi_core::Tag],
        overlays: Option<&Value>,
    ) {
        let o = &self.ctx.options;
        let origin = self.hub.placement.origin().map(
            |f| json!({"lat": f.origin.lat_deg, "lon": f.origin.lon_deg, "alt": f.origin.alt_m}),
        );
        let sites: Vec<Value> = self
            .hub
            .placement
            .sites()
            .iter()
            .map(|(id, f)| json!({"sensor_id": id, "lat": f.origin.lat_deg, "lon": f.origin.lon_deg, "alt": f.origin.alt_m}))
            .collect();
        self.push(json!({
            "t": "hello", "version": 1, "client_id": self.setup.client_id,
            "operator": self.setup.operator.clone().or_else(|| o.operator.clone()),
            "server_ms": now_ms(),
            "config": {"trail_s": o.trail.as_secs_f64(), "rate_hz": o.rate_hz, "stale_s": 2.0,
                       "track_timeout_s": o.track_timeout.as_secs_f64(), "origin": origin, "sites": sites,
                       "units": unit_factors()},
        }));
        self.push(json!({"t": "groups", "active": groups_json(groups)}));
        let tags: Vec<Value> = tags.iter().map(tag_json).collect();
        self.push(json!({"t": "tags", "full": true, "tags": tags}));
        if let Some(rules) = overlays {
            self.push(json!({"t": "overlays", "rules": rules}));
        }
        self.heartbeat().await;
    }

    async fn heartbeat(&mut self) {
        let mut hb = self.session.heartbeat(now_ms());
        hb.source_ip = Some(self.setup.remote.ip().to_string());
        hb.ping_ms = self.ping_ms;
        crate::headless::send_heartbeat(&self.ctx.client, &hb).await;
    }

    /// Whether the page may make another request now (a token bucket).
    fn admit(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.bucket_at).as_secs_f64() * REQUESTS_PER_S;
        self.bucket = (self.bucket + refill).min(REQUEST_BURST);
        self.bucket_at = now;
        if self.bucket >= 1.0 {
            self.bucket -= 1.0;
            true
        } else {
            false
        }
    }

    fn refuse(&mut self, id: Option<u64>, error: String) {
        self.hub.metrics.bad_requests.inc();
        self.refusals += 1;
        if self.refusals > FLOOD_REFUSALS {
            self.hub.metrics.dropped_flood.inc();
            self.closing = Some("too many bad requests");
            return;
        }
        self.push(protocol::reply(id, Err(error)));
    }

    async fn request(&mut self, text: &str) {
        // Acknowledgements are flow control, not requests: not limited, not counted.
        let parsed = protocol::parse(text);
        if let Ok(PageRequest::Ack { seq }) = parsed {
            if seq <= self.track_seq && seq > self.acked {
                self.acked = seq;
                self.acked_at = now_ms();
            }
            return;
        }
        self.hub.metrics.requests.inc();
        if !self.admit() {
            let id = match &parsed {
                Ok(r) => r.id(),
                Err((id, _)) => *id,
            };
            return self.refuse(id, "too many requests: at most 20 a second".into());
        }
        let req = match parsed {
            Ok(r) => r,
            Err((id, e)) => return self.refuse(id, e),
        };
        let id = req.id();
        self.request_id = id;
        let now = now_ms();
        let request = match req {
            PageRequest::Seek { to, .. } => match tspi_core::rfc3339::parse_epoch_ms(&to) {
                Some(at_ms) => Request::Seek { at_ms },
                None => return self.refuse(id, format!("{to:?} is not an RFC 3339 time")),
            },
            PageRequest::Live { .. } => Request::Live,
            PageRequest::Pause { .. } => Request::Pause,
            PageRequest::Resume { .. } => Request::Resume,
            PageRequest::Speed { speed, .. } => Request::Speed(speed),
            PageRequest::Join { channel, .. } => Request::Join(channel),
            PageRequest::Tag {
                comment, at, notes, ..
            } => return self.tag(id, &comment, at, notes, now),
            PageRequest::Operator { name, .. } => {
                match protocol::clean_text(&name, protocol::MAX_OPERATOR) {
                    Ok(name) => {
                        self.session.set_operator(Some(name.clone()));
                        self.setup.operator = Some(name.clone());
                        self.heartbeat().await;
                        self.push(protocol::reply(id, Ok(json!({"operator": name}))));
                    }
                    Err(e) => self.refuse(id, format!("operator name {e}")),
                }
                return;
            }
            PageRequest::Trail { seconds, .. } => {
                if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
                    return self.refuse(id, "trail must be 0 to 3600 seconds".into());
                }
                let lookback = self.ctx.options.track_timeout.as_secs_f64().max(seconds);
                self.session.set_snapshot(Some(SnapshotSpec {
                    trail_s: seconds,
                    lookback_s: lookback,
                }));
                self.push(protocol::reply(id, Ok(json!({"trail_s": seconds}))));
                return;
            }
            PageRequest::Timeline {
                start,
                end,
                buckets,
                ..
            } => return self.timeline(id, start, end, buckets),
            PageRequest::Ack { .. } => return,
            PageRequest::Alarm {
                action,
                alarm,
                seconds,
                ..
            } => return self.alarm_request(id, &action, alarm, seconds),
        };
        let fx = self.session.handle(Input::Request(&request), now);
        self.apply(fx, None).await;
    }

    /// A tag at `at` (the cursor when absent), published as `console tag` publishes it.
    fn tag(
        &mut self,
        id: Option<u64>,
        comment: &str,
        at: Option<String>,
        notes: Option<String>,
        now: i64,
    ) {
        let comment = match protocol::clean_text(comment, protocol::MAX_TEXT) {
            Ok(c) => c,
            Err(e) => return self.refuse(id, format!("a tag's comment {e}")),
        };
        let notes = match notes.map(|n| protocol::clean_text(&n, protocol::MAX_TEXT)) {
            Some(Err(e)) => return self.refuse(id, format!("a tag's notes {e}")),
            Some(Ok(n)) => Some(n),
            None => None,
        };
        let at = at.unwrap_or_else(|| {
            tspi_core::rfc3339::format_utc_millis(self.session.cursor().at(now))
        });
        let creator = self
            .setup
            .operator
            .clone()
            .or_else(|| self.ctx.options.operator.clone())
            .unwrap_or_else(|| self.setup.client_id.clone());
        let js = async_nats::jetstream::new(self.ctx.client.clone());
        let late = self.late_tx.clone();
        tokio::spawn(async move {
            let sent = tokio::time::timeout(
                Duration::from_secs(10),
                tspi_bus::operator::send_tag(&js, &comment, Some(&at), &creator, notes),
            )
            .await;
            let reply = match sent {
                Ok(Ok((tag, _))) => Ok(json!({"tag": tag_json(&tag)})),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("the tag was not acknowledged within 10 s".into()),
            };
            let _ = late.send(Late::Send(protocol::reply(id, reply))).await;
        });
    }

    /// Acknowledge, shelve or unshelve an alarm as this tab's operator: the alarmer does it
    /// and publishes it, so every tab and the console see the same.
    fn alarm_request(
        &mut self,
        id: Option<u64>,
        action: &str,
        alarm: String,
        seconds: Option<f64>,
    ) {
        if !matches!(action, "ack" | "shelve" | "unshelve") {
            return self.refuse(
                id,
                format!("alarm action {action:?} is not ack, shelve or unshelve"),
            );
        }
        if alarm.is_empty() || alarm.len() > 200 {
            return self.refuse(id, "alarm: an alarm id is needed".into());
        }
        let Some(operator) = self
            .setup
            .operator
            .clone()
            .or_else(|| self.ctx.options.operator.clone())
        else {
            return self.refuse(
                id,
                "an operator name is needed to acknowledge or shelve (the Operator field)".into(),
            );
        };
        let mut body = json!({"op": action, "id": alarm, "operator": operator});
        if let Some(s) = seconds {
            body["seconds"] = json!(s);
        }
        let client = self.ctx.client.clone();
        let late = self.late_tx.clone();
        tokio::spawn(async move {
            let asked = tokio::time::timeout(
                Duration::from_secs(10),
                client.request(
                    tspi_core::alarm::CONTROL_SUBJECT,
                    serde_json::to_vec(&body).unwrap_or_default().into(),
                ),
            )
            .await;
            let reply = match asked {
                Ok(Ok(m)) => match serde_json::from_slice::<Value>(&m.payload) {
                    Ok(v) if v["ok"] == true => Ok(json!({"alarm": v["alarm"]})),
                    Ok(v) => Err(v["error"].as_str().unwrap_or("refused").to_owned()),
                    Err(_) => Err("the alarmer's reply is not JSON".into()),
                },
                Ok(Err(e)) => Err(format!("no alarmer answers: {e}")),
                Err(_) => Err("the alarmer did not answer within 10 s".into()),
            };
            let _ = late.send(Late::Send(protocol::reply(id, reply))).await;
        });
    }

    /// Coverage and tags of a span, from the archive (through the replayer).
    fn timeline(&mut self, id: Option<u64>, start: String, end: String, buckets: Option<u32>) {
        let (Some(s), Some(e)) = (
            tspi_core::rfc3339::parse_epoch_ms(&start),
            tspi_core::rfc3339::parse_epoch_ms(&end),
        ) else {
            return self.refuse(id, "timeline needs RFC 3339 start and end".into());
        };
        if e <= s {
            return self.refuse(id, "timeline end must be after its start".into());
        }
        let client = self.ctx.client.clone();
        let room = format!("web-{}", self.setup.client_id);
        let late = self.late_tx.clone();
        let buckets = buckets.unwrap_or(300).clamp(1, 2_000);
        tokio::spawn(async move {
            let cov = crate::headless::ask_replayer(
                &client,
                &room,
                &json!({"op": "coverage", "start": start, "end": end, "buckets": buckets}),
            )
            .await;
            let tags = crate::headless::ask_replayer(
                &client,
                &room,
                &json!({"op": "tags", "start": start, "end": end}),
            )
            .await;
            if cov["ok"] == true {
                let c = &cov["coverage"];
                let bucket_ms = c["bucket_s"].as_f64().unwrap_or(0.0) * 1000.0;
                let _ = late
                    .send(Late::Send(
                        json!({"t": "coverage", "start_ms": s, "end_ms": e,
                        "bucket_ms": bucket_ms, "counts": c["counts"]}),
                    ))
                    .await;
            }
            if let Some(list) = tags["tags"].as_array() {
                let tags: Vec<Value> = list
                    .iter()
                    .map(|t| {
                        protocol::tag(
                            t["id"].as_str().unwrap_or_default(),
                            t["label"].as_str().unwrap_or_default(),
                            t["ts"].as_str().unwrap_or_default(),
                            t["status"].as_str().unwrap_or_default(),
                            t["creator"].as_str(),
                        )
                    })
                    .collect();
                let _ = late
                    .send(Late::Send(
                        json!({"t": "tags", "full": false, "tags": tags}),
                    ))
                    .await;
            }
            let reply = if cov["ok"] == true {
                Ok(json!({}))
            } else {
                Err(format!(
                    "no archive answer: {}",
                    cov["error"].as_str().unwrap_or("unknown")
                ))
            };
            let _ = late.send(Late::Send(protocol::reply(id, reply))).await;
        });
    }

    async fn late(&mut self, late: Late) {
        match late {
            Late::Send(v) => self.push(v),
            Late::ReplayerFailed { segment, error } => {
                // Only the replay still wanted: an older request's failure is moot.
                let current = self.awaiting.map(|(_, s)| s);
                if segment.is_some() && segment != current {
                    return;
                }
                if let Some((id, _)) = self.awaiting.take() {
                    self.push(protocol::reply(id, Err(error.clone())));
                }
                self.push(json!({"t": "error", "error": error}));
                let fx = self.session.handle(Input::ReplayerFailed, now_ms());
                self.apply(fx, None).await;
            }
        }
    }

    fn replayer(&self, room: String, request: Value, segment: Option<u64>) {
        let client = self.ctx.client.clone();
        let late = self.late_tx.clone();
        let op = request["op"].as_str().unwrap_or_default().to_owned();
        tokio::spawn(async move {
            let reply = crate::headless::ask_replayer(&client, &room, &request).await;
            if reply["ok"] != true && op != "stop" {
                let error = format!(
                    "replay {op}: {}",
                    reply["error"].as_str().unwrap_or("no answer")
                );
                let _ = late.send(Late::ReplayerFailed { segment, error }).await;
            }
        });
    }

    async fn event(&mut self, ev: &HubEvent) {
        match ev {
            HubEvent::Live { seq, items } => {
                if *seq <= self.live_seq {
                    return;
                }
                self.live_seq = *seq;
                for item in items {
                    self.timeline_tag(item);
                    self.item(Feed::Live, item).await;
                }
            }
            HubEvent::Channel { channel_id, items } => {
                for item in items {
                    self.item(Feed::Channel(channel_id), item).await;
                }
            }
            HubEvent::Ops(control) => {
                let fx = self.session.handle(Input::Ops(control), now_ms());
                self.apply(fx, None).await;
                self.push(json!({"t": "groups", "active": groups_json(self.session.groups())}));
            }
            HubEvent::Overlays(rules) => self.push(json!({"t": "overlays", "rules": rules})),
        }
    }

    /// Every live tag reaches the timeline, whatever the tab is showing.
    fn timeline_tag(&mut self, item: &Item) {
        if let Decoded::Tag { tag, .. } = &item.decoded {
            self.push(json!({"t": "tags", "full": false, "tags": [tag_json(tag)]}));
        }
    }

    async fn item(&mut self, feed: Feed<'_>, item: &Item) {
        let fx = self.session.handle(
            Input::Message {
                feed,
                content: item.decoded.content(),
                replayed: None,
            },
            now_ms(),
        );
        if !fx.is_empty() {
            self.apply(fx, item.fix.as_ref()).await;
        }
    }

    async fn room_message(&mut self, m: Incoming) {
        let Mode::Replay { room } = self.session.mode().clone() else {
            return;
        };
        let decoded = Decoded::new(&m.subject, &m.payload);
        let fix = match &decoded {
            Decoded::Telemetry(r) => Some(self.hub.place(r)),
            _ => None,
        };
        let content: Content<'_> = decoded.content();
        let fx = self.session.handle(
            Input::Message {
                feed: Feed::Room(&room),
                content,
                replayed: m.replayed,
            },
            now_ms(),
        );
        self.apply(fx, fix.as_ref()).await;
    }

    /// The hub's broadcast ran ahead of this tab: take the live picture again.
    async fn resync(&mut self) {
        if self.session.mode() == &Mode::Live {
            self.generation += 1;
            self.picture.clear();
            self.push(json!({"t": "reset", "gen": self.generation}));
            self.fill_live = true;
        }
    }

    async fn apply(&mut self, effects: Vec<Effect>, fix: Option<&TrackFix>) {
        for effect in effects {
            match effect {
                Effect::Open(FeedSpec::Live) => {
                    self.room = None;
                    self.fill_live = true;
                }
                Effect::Open(FeedSpec::Channel { .. }) => {
                    self.room = None;
                    self.channel_opened = true;
                }
                Effect::Open(FeedSpec::Room { room }) => {
                    match feed::room(&self.ctx.client, &room).await {
                        Ok(f) => self.room = Some(Box::pin(f)),
                        Err(e) => {
                            let _ = self
                                .late_tx
                                .send(Late::ReplayerFailed {
                                    segment: None,
                                    error: format!("{e:#}"),
                                })
                                .await;
                        }
                    }
                }
                Effect::Replayer { room, request } => {
                    let segment = request["segment"].as_u64();
                    self.replayer(room, request, segment);
                }
                Effect::Clear => {
                    self.generation += 1;
                    self.picture.clear();
                    self.snapshot_rows.clear();
                    self.push(json!({"t": "reset", "gen": self.generation}));
                    // The alarms of what comes next: the segment's state brings those in
                    // force at its start (live: the hub's, below).
                    self.push(json!({"t": "alarms", "full": true, "alarms": []}));
                    if std::mem::take(&mut self.channel_opened) {
                        // Not the live picture under a group-replay banner until the
                        // replay's first segment is ready.
                        self.push(json!({"t": "ready", "gen": self.generation, "segment": null}));
                    }
                }
                Effect::Frame { snapshot, .. } => {
                    let Some(fix) = fix else { continue };
                    if snapshot {
                        self.snapshot_rows.push(protocol::track_row(fix));
                    } else {
                        self.show(*fix);
                    }
                }
                Effect::Settings => {
                    let v = protocol::settings(self.session.settings());
                    self.push(v);
                }
                Effect::Tag { tag, .. } => {
                    self.push(json!({"t": "tag_shown", "tag": tag_json(&tag)}))
                }
                Effect::Alarm(alarm) => self.push(json!({"t": "alarm", "alarm": alarm})),
                Effect::ChannelAvailable { .. } => {
                    self.push(json!({"t": "groups", "active": groups_json(self.session.groups())}));
                }
                Effect::Ready { segment } => {
                    self.send_snapshot();
                    self.push(json!({"t": "ready", "gen": self.generation, "segment": segment}));
                    if let Some((id, s)) = self.awaiting {
                        if s == segment {
                            self.awaiting = None;
                            self.push(protocol::reply(
                                id,
                                Ok(json!({"segment": segment, "gen": self.generation})),
                            ));
                        }
                    }
                }
                Effect::Mode | Effect::Channel => self.mode_dirty = true,
                Effect::Heartbeat => self.heartbeat().await,
                Effect::Reply(result) => {
                    let id = self.request_id.take();
                    match result {
                        Ok(v) if v.get("segment").is_some() => {
                            // A seek: answered when its picture is in.
                            if let Some((old, _)) = self.awaiting.take() {
                                self.push(protocol::reply(
                                    old,
                                    Err("superseded by a later seek".into()),
                                ));
                            }
                            self.awaiting = v["segment"].as_u64().map(|s| (id, s));
                        }
                        other => {
                            if other.is_err() {
                                self.hub.metrics.bad_requests.inc();
                            }
                            self.push(protocol::reply(id, other));
                        }
                    }
                }
                Effect::Command { .. } | Effect::Seek { .. } => {}
            }
        }
    }

    fn show(&mut self, fix: TrackFix) {
        match self.picture.get_mut(&fix.sensor_id) {
            Some(s) => {
                if s.dirty {
                    if self.backlog {
                        self.hub.metrics.thinned_backlog.inc();
                    } else {
                        self.hub.metrics.thinned_rate.inc();
                    }
                }
                s.fix = fix;
                s.dirty = true;
            }
            None => {
                self.picture.insert(
                    fix.sensor_id,
                    Shown {
                        fix,
                        dirty: true,
                        last_sent: Instant::now() - Duration::from_secs(3600),
                    },
                );
            }
        }
    }

    fn send_snapshot(&mut self) {
        let rows = std::mem::take(&mut self.snapshot_rows);
        for chunk in rows.chunks(ROWS_PER_MESSAGE) {
            self.push(json!({"t": "trail", "gen": self.generation, "u": chunk}));
        }
    }

    /// What every batch of effects leaves to do: the live picture when live was
    /// (re)entered, the mode when it changed.
    fn after(&mut self) {
        if self.fill_live && self.session.mode() == &Mode::Live {
            self.fill_live = false;
            let picture = self.hub.picture();
            self.live_seq = picture.seq;
            let fx = self
                .session
                .handle(Input::LiveSettings(&picture.settings), now_ms());
            if fx.contains(&Effect::Settings) || self.generation == 0 {
                let v = protocol::settings(self.session.settings());
                self.push(v);
            }
            let mut rows = Vec::new();
            for t in &picture.tracks {
                rows.extend(t.trail.iter().map(protocol::track_row));
                rows.push(protocol::track_row(&t.fix));
                self.picture.insert(
                    t.fix.sensor_id,
                    Shown {
                        fix: t.fix,
                        dirty: false,
                        last_sent: Instant::now(),
                    },
                );
            }
            self.snapshot_rows = rows;
            self.send_snapshot();
            self.push(json!({"t": "alarms", "full": true, "alarms": self.hub.alarms()}));
            self.push(json!({"t": "ready", "gen": self.generation, "segment": null}));
            if let Some((id, _)) = self.awaiting.take() {
                self.push(protocol::reply(id, Ok(json!({"mode": "live"}))));
            }
        }
        if self.mode_dirty {
            self.mode_dirty = false;
            let v = protocol::mode(&self.session, now_ms(), self.generation);
            self.push(v);
        }
    }

    /// Send what is due: control messages first, then the tracks whose latest fix is
    /// new and whose rate allows it. A full outbox means the tab is behind: nothing is
    /// built (fixes coalesce), and past the stall timeout the tab is closed.
    fn flush(&mut self) {
        let unacked = self.acks && self.track_seq - self.acked >= TRACK_WINDOW;
        if self.outbox.capacity() == 0 || unacked {
            self.backlog = true;
            // Taken nothing (socket full) or acknowledged nothing for the stall timeout.
            let progress = self.progress.load(Ordering::Relaxed).min(if unacked {
                self.acked_at
            } else {
                i64::MAX
            });
            if now_ms() - progress > self.ctx.options.stall_timeout.as_millis() as i64 {
                self.hub.metrics.dropped_stalled.inc();
                self.closing = Some("not reading: closed after the stall timeout");
            }
            return;
        }
        self.backlog = false;
        let now = Instant::now();
        // A little early is on time: flushes come every 40 ms.
        let gap = self.ctx.min_gap.mul_f64(0.8);
        let mut rows = Vec::new();
        for s in self.picture.values_mut() {
            if s.dirty && now.duration_since(s.last_sent) >= gap {
                s.dirty = false;
                s.last_sent = now;
                rows.push(protocol::track_row(&s.fix));
            }
        }
        if rows.is_empty() {
            return;
        }
        self.hub.metrics.updates_sent.inc_by(rows.len() as u64);
        self.track_seq += 1;
        let v = json!({"t": "tracks", "gen": self.generation, "seq": self.track_seq, "u": rows});
        let _ = self.outbox.try_send(text(&v));
    }
}

fn groups_json(groups: &[tspi_display::session::GroupChannel]) -> Vec<Value> {
    groups
        .iter()
        .map(|g| json!({"id": g.channel_id, "name": g.display_name}))
        .collect()
}

fn tag_json(t: &tspi_core::Tag) -> Value {
    protocol::tag(
        &t.id,
        &t.label,
        &t.ts,
        t.status.as_str(),
        t.creator.as_deref(),
    )
}

/// The page converts SI values with the kit's own factors (tspi-core's units).
fn unit_factors() -> Value {
    use tspi_core::units;
    json!({
        "metric": {"altitude": {"unit": "m", "per_si": 1.0}, "speed": {"unit": "m/s", "per_si": 1.0},
                   "range": {"unit": "km", "per_si": 0.001}},
        "imperial": {"altitude": {"unit": "ft", "per_si": units::metres_to_feet(1.0)},
                     "speed": {"unit": "kn", "per_si": units::mps_to_knots(1.0)},
                     "range": {"unit": "NM", "per_si": units::metres_to_nautical_miles(1.0)}},
    })
}
