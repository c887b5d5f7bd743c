//! One browser tab: its own [`Session`] (cursor, channel, client id, heartbeats), fed by
//! the hub's broadcast (livestream, group replays) or its own replayer room, and the
//! page's requests. What it shows goes to the page through two bounded queues:
//! control messages in order, track updates as the latest fix per track at most
//! `--web-rate` times a second. A tab that does not read is thinned (its tracks coalesce
//! to their latest fix), then closed after `--web-stall-timeout` and counted.
//!
//! By job: this module runs the socket (the writer task, the loop) and applies the
//! session's effects; `requests` checks and serves the page's requests, within
//! `limits` (a request rate and a refusal count); `room` is the tab's replay room (its
//! replayer and what it plays out); `outbox` sends the picture and the track batches
//! under the page's acknowledgements.

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
    Effect, Feed, FeedSpec, Input, Mode, Session, SessionConfig, SnapshotSpec, Start, TrackFix,
};

use crate::feed::{self, Decoded, Incoming};
use crate::web::hub::{Hub, HubEvent, Item};
use crate::web::protocol::{self, ServerMessage};
use crate::web::WebContext;
use tspi_core::playout::ControlRequest;

mod limits;
mod outbox;
mod requests;
mod room;

use limits::RequestLimits;
use outbox::{AckWindow, Shown};

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
/// A track not updated for this long is drawn stale (the page applies it).
const STALE_S: f64 = 2.0;

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
    Send(ServerMessage<'static>),
    ReplayerFailed { segment: Option<u64>, error: String },
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
    limits: RequestLimits,
    closing: Option<&'static str>,
    batches: AckWindow,
}

fn now_ms() -> i64 {
    tspi_runtime::now_epoch_ms()
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
        limits: RequestLimits::new(Instant::now()),
        closing: None,
        batches: AckWindow::new(acks, now_ms()),
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
            _ = clock.tick() => tab.send_now(ServerMessage::Clock { server_ms: now_ms() }.frame()),
        }
        tab.after();
    }
    // Leave the room (the replayer frees it) and say why the tab is closed.
    if let Mode::Replay { room } = tab.session.mode().clone() {
        tab.replayer(room, ControlRequest::Stop, None);
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
    fn push(&mut self, m: ServerMessage<'_>) {
        if self.closing.is_some() {
            return;
        }
        if self.control.try_send(m.frame()).is_err() {
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
        let point = |f: &tspi_core::geo::LocalFrame| protocol::Point {
            lat: f.origin.lat_deg,
            lon: f.origin.lon_deg,
            alt: f.origin.alt_m,
        };
        let config = protocol::HelloConfig {
            trail_s: o.trail.as_secs_f64(),
            rate_hz: o.rate_hz,
            stale_s: STALE_S,
            track_timeout_s: o.track_timeout.as_secs_f64(),
            origin: self.hub.placement.origin().map(point),
            sites: self
                .hub
                .placement
                .sites()
                .iter()
                .map(|(id, f)| protocol::SitePoint {
                    sensor_id: *id,
                    at: point(f),
                })
                .collect(),
            units: unit_factors(),
        };
        self.push(ServerMessage::Hello {
            version: 1,
            client_id: self.setup.client_id.clone(),
            operator: self.setup.operator.clone().or_else(|| o.operator.clone()),
            server_ms: now_ms(),
            config,
        });
        self.push(ServerMessage::Groups {
            active: groups_json(groups),
        });
        self.push(ServerMessage::Tags {
            full: true,
            tags: tags.iter().map(tag_json).collect(),
        });
        if let Some(rules) = overlays {
            self.push(ServerMessage::Overlays { rules });
        }
        self.heartbeat().await;
    }

    async fn heartbeat(&mut self) {
        let mut hb = self.session.heartbeat(now_ms());
        hb.source_ip = Some(self.setup.remote.ip().to_string());
        hb.ping_ms = self.ping_ms;
        crate::replayer_client::send_heartbeat(&self.ctx.client, &hb).await;
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
                self.push(ServerMessage::Error { error });
                let fx = self.session.handle(Input::ReplayerFailed, now_ms());
                self.apply(fx, None).await;
            }
        }
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
                self.push(ServerMessage::Groups {
                    active: groups_json(self.session.groups()),
                });
            }
            HubEvent::Overlays(rules) => self.push(ServerMessage::Overlays { rules }),
        }
    }

    /// Every live tag reaches the timeline, whatever the tab is showing.
    fn timeline_tag(&mut self, item: &Item) {
        if let Decoded::Tag { tag, .. } = &item.decoded {
            self.push(ServerMessage::Tags {
                full: false,
                tags: vec![tag_json(tag)],
            });
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

    /// The hub's broadcast ran ahead of this tab: take the live picture again.
    async fn resync(&mut self) {
        if self.session.mode() == &Mode::Live {
            self.generation += 1;
            self.picture.clear();
            self.push(ServerMessage::Reset {
                gen: self.generation,
            });
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
                    let segment = request.segment();
                    self.replayer(room, request, segment);
                }
                Effect::Clear => {
                    self.generation += 1;
                    self.picture.clear();
                    self.snapshot_rows.clear();
                    self.push(ServerMessage::Reset {
                        gen: self.generation,
                    });
                    // The alarms of what comes next: the segment's state brings those in
                    // force at its start (live: the hub's, below).
                    self.push(ServerMessage::Alarms {
                        full: true,
                        alarms: Vec::new(),
                    });
                    if std::mem::take(&mut self.channel_opened) {
                        // Not the live picture under a group-replay banner until the
                        // replay's first segment is ready.
                        self.push(ServerMessage::Ready {
                            gen: self.generation,
                            segment: None,
                        });
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
                Effect::Tag { tag, .. } => self.push(ServerMessage::TagShown {
                    tag: tag_json(&tag),
                }),
                Effect::Alarm(alarm) => self.push(ServerMessage::Alarm { alarm }),
                Effect::ChannelAvailable { .. } => {
                    self.push(ServerMessage::Groups {
                        active: groups_json(self.session.groups()),
                    });
                }
                Effect::Ready { segment } => {
                    self.send_snapshot();
                    self.push(ServerMessage::Ready {
                        gen: self.generation,
                        segment: Some(segment),
                    });
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
}

fn groups_json(groups: &[tspi_display::session::GroupChannel]) -> Vec<protocol::GroupRef> {
    groups
        .iter()
        .map(|g| protocol::GroupRef {
            id: g.channel_id.clone(),
            name: g.display_name.clone(),
        })
        .collect()
}

fn tag_json(t: &tspi_core::Tag) -> protocol::PageTag {
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
