//! The display's one view of the bus, shared by every tab: one livestream (telemetry as
//! the bus carries it now, commands and tags from the stream: [`feed::live_latest`]), one
//! subscription to group replay control and one per running group replay. Each message
//! is decoded and placed once, kept in the live picture (every track's latest fix and a
//! thinned trail, the settings in force, the tags), and broadcast to the tabs in batches.
//! A tab that falls behind the broadcast is told so (it resynchronises from the picture);
//! it never holds the hub up.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tspi_alarms::geometry::{enu_velocity, impact_point};
use tspi_alarms::rules::Selector;
use tspi_core::alarm::AlarmEvent;
use tspi_core::ops::{ChannelInfo, ChannelKind, OpsControl};
use tspi_core::{RecordPayload, StreamPrefix, Tag, TelemetryRecord};
use tspi_display::session::GroupChannel;
use tspi_display::{DisplaySettings, Placement, TrackFix};

use crate::feed::{self, Decoded, Incoming};
use crate::web::metrics::WebMetrics;

/// Hub events a tab may be behind before it must resynchronise.
pub const EVENT_BACKLOG: usize = 256;
/// Messages broadcast together at most.
pub const BATCH_MAX: usize = 256;
/// Tags kept for the timeline (the most recent moments).
pub const TAGS_MAX: usize = 10_000;
/// Trail points kept per track in the live picture.
pub const TRAIL_POINTS: usize = 120;

/// One decoded message, placed when it is telemetry.
#[derive(Debug)]
pub struct Item {
    pub decoded: Decoded,
    pub fix: Option<TrackFix>,
}

#[derive(Debug)]
pub enum HubEvent {
    /// Livestream messages; `seq` numbers the batches.
    Live { seq: u64, items: Vec<Item> },
    /// Messages of a running group replay.
    Channel {
        channel_id: String,
        items: Vec<Item>,
    },
    /// Group replay control (`tspi.ops.ctrl`).
    Ops(OpsControl),
    /// The alarmer's rules changed (boundaries to draw): its `rules` answer.
    Overlays(serde_json::Value),
}

/// A track of the live picture.
#[derive(Debug, Clone)]
pub struct LiveTrack {
    pub fix: TrackFix,
    /// Older fixes, oldest first, at least the trail step apart.
    pub trail: VecDeque<TrackFix>,
}

#[derive(Debug, Default)]
struct HubState {
    seq: u64,
    settings: DisplaySettings,
    tags: BTreeMap<String, Tag>,
    picture: HashMap<u16, LiveTrack>,
    groups: Vec<GroupChannel>,
    /// Alarms active (or shelved) now, by id: each one's last transition.
    alarms: BTreeMap<String, AlarmEvent>,
    /// The alarmer's rules as it answers them (to draw), and what impact points need.
    overlays: Option<serde_json::Value>,
    impact: Option<ImpactRules>,
}

/// Which tracks get an impact point, and the ground it is found at.
#[derive(Debug, Clone)]
struct ImpactRules {
    sensors: Vec<Selector>,
    ground_alt_m: f64,
}

/// What a tab starts from.
#[derive(Debug)]
pub struct Joined {
    pub events: broadcast::Receiver<Arc<HubEvent>>,
    pub groups: Vec<GroupChannel>,
    pub tags: Vec<Tag>,
    pub alarms: Vec<AlarmEvent>,
    pub overlays: Option<serde_json::Value>,
}

/// The live picture at one batch.
#[derive(Debug)]
pub struct LivePicture {
    pub seq: u64,
    pub settings: DisplaySettings,
    pub tracks: Vec<LiveTrack>,
}

#[derive(Debug)]
pub struct Hub {
    state: Mutex<HubState>,
    events: broadcast::Sender<Arc<HubEvent>>,
    pub placement: Placement,
    pub metrics: WebMetrics,
    trail: Duration,
    track_timeout: Duration,
}

fn now_ms() -> i64 {
    tspi_runtime::now_epoch_ms()
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribe to the events and take the groups and tags known, in one step (nothing
    /// falls between the two).
    pub fn join(&self) -> Joined {
        let st = self.lock();
        Joined {
            events: self.events.subscribe(),
            groups: st.groups.clone(),
            tags: st.tags.values().cloned().collect(),
            alarms: st.alarms.values().cloned().collect(),
            overlays: st.overlays.clone(),
        }
    }

    /// The alarms in force live now.
    pub fn alarms(&self) -> Vec<AlarmEvent> {
        self.lock().alarms.values().cloned().collect()
    }

    /// A record placed, with its impact point when an impact rule watches it.
    pub fn place(&self, r: &TelemetryRecord) -> TrackFix {
        let mut fix = self.placement.fix(r);
        let impact = self.lock().impact.clone();
        if let (Some(rules), RecordPayload::Geocentric(g), Some(p)) =
            (impact, r.payload, fix.position)
        {
            if rules.sensors.iter().any(|s| s.matches(r.sensor_id)) {
                let v = enu_velocity(&p, [g.vx_mps, g.vy_mps, g.vz_mps]);
                fix.impact = impact_point(p, v, rules.ground_alt_m);
            }
        }
        fix
    }

    /// The live picture and settings as of the newest batch.
    pub fn picture(&self) -> LivePicture {
        let st = self.lock();
        LivePicture {
            seq: st.seq,
            settings: st.settings.clone(),
            tracks: st.picture.values().cloned().collect(),
        }
    }

    pub fn trail(&self) -> Duration {
        self.trail
    }

    fn take_in(&self, st: &mut HubState, item: &Item) {
        match &item.decoded {
            Decoded::Command(c) => {
                st.settings.apply(&c.setting);
            }
            Decoded::Tag { tag, .. } => {
                let newer = st
                    .tags
                    .get(&tag.id)
                    .is_none_or(|old| old.updated_ts <= tag.updated_ts);
                if newer {
                    st.tags.insert(tag.id.clone(), tag.clone());
                }
                if st.tags.len() > TAGS_MAX {
                    if let Some(oldest) = st
                        .tags
                        .values()
                        .min_by(|a, b| a.ts.cmp(&b.ts))
                        .map(|t| t.id.clone())
                    {
                        st.tags.remove(&oldest);
                    }
                }
            }
            Decoded::Alarm(a) => {
                if a.active || a.shelved_until_ms.is_some() {
                    st.alarms.insert(a.id.clone(), a.clone());
                } else {
                    st.alarms.remove(&a.id);
                }
            }
            Decoded::Invalid(_) => {
                self.metrics.invalid_messages.inc();
            }
            _ => {}
        }
        if let Some(fix) = item.fix {
            let step_ms = (self.trail.as_millis() as i64 / TRAIL_POINTS as i64).max(100);
            match st.picture.get_mut(&fix.sensor_id) {
                Some(track) => {
                    let due = track
                        .trail
                        .back()
                        .is_none_or(|f| track.fix.recv_ms.saturating_sub(f.recv_ms) >= step_ms);
                    if due {
                        track.trail.push_back(track.fix);
                    }
                    track.fix = fix;
                    while track.trail.len() > TRAIL_POINTS {
                        track.trail.pop_front();
                    }
                }
                None => {
                    st.picture.insert(
                        fix.sensor_id,
                        LiveTrack {
                            fix,
                            trail: VecDeque::new(),
                        },
                    );
                }
            }
        }
    }

    /// Forget trail points older than the trail and tracks silent for the track timeout.
    fn prune(&self, now_ms: i64) {
        let mut st = self.lock();
        let trail_from = now_ms - self.trail.as_millis() as i64;
        let keep_from = now_ms - self.track_timeout.as_millis() as i64;
        st.picture.retain(|_, t| t.fix.recv_ms >= keep_from);
        for t in st.picture.values_mut() {
            while t.trail.front().is_some_and(|f| f.recv_ms < trail_from) {
                t.trail.pop_front();
            }
        }
    }

    fn publish(&self, event: HubEvent) {
        // No receivers is fine: no tab is open.
        let _ = self.events.send(Arc::new(event));
    }
}

/// What the hub is configured with.
#[derive(Debug, Clone)]
pub struct HubOptions {
    pub stream: String,
    pub prefix: StreamPrefix,
    pub placement: Placement,
    pub trail: Duration,
    pub track_timeout: Duration,
}

fn item(hub: &Hub, m: &Incoming) -> Item {
    let decoded = Decoded::new(&m.subject, &m.payload);
    let fix = match &decoded {
        Decoded::Telemetry(r) => Some(hub.place(r)),
        _ => None,
    };
    Item { decoded, fix }
}

/// Up to [`BATCH_MAX`] messages: the next one, and those already waiting behind it.
async fn next_batch<S: Stream<Item = Incoming> + Unpin>(
    feed: &mut S,
    hub: &Hub,
) -> Option<Vec<Item>> {
    let first = feed.next().await?;
    let mut items = vec![item(hub, &first)];
    while items.len() < BATCH_MAX {
        match feed.next().now_or_never() {
            Some(Some(m)) => items.push(item(hub, &m)),
            _ => break,
        }
    }
    Some(items)
}

/// Start the hub: read the command state and tags the stream holds, then follow the
/// livestream and group replays until `shutdown`.
pub async fn start(
    client: async_nats::Client,
    options: HubOptions,
    metrics: WebMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<Arc<Hub>> {
    let js = jetstream::new(client.clone());
    let (live, history) = feed::live_latest(&client, &js, &options.stream, &options.prefix).await?;
    let mut stream = js.get_stream(&options.stream).await?;
    let tags = feed::tag_history(&mut stream).await?;
    let alarms = feed::alarm_history(&mut stream).await?;
    let (events, _) = broadcast::channel(EVENT_BACKLOG);
    let mut state = HubState {
        settings: DisplaySettings::from_commands(&history),
        ..Default::default()
    };
    for tag in tags {
        state.tags.insert(tag.id.clone(), tag);
    }
    for a in alarms {
        if a.active || a.shelved_until_ms.is_some() {
            state.alarms.insert(a.id.clone(), a);
        }
    }
    state.groups = running_groups(&client).await;
    let hub = Arc::new(Hub {
        state: Mutex::new(state),
        events,
        placement: options.placement.clone(),
        metrics,
        trail: options.trail,
        track_timeout: options.track_timeout.max(options.trail),
    });
    let ctrl = client
        .subscribe(tspi_core::ops::CTRL_SUBJECT)
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to {}: {e}", tspi_core::ops::CTRL_SUBJECT))?;
    tokio::spawn(follow_live(hub.clone(), Box::pin(live), shutdown.clone()));
    tokio::spawn(follow_rules(hub.clone(), client.clone(), shutdown.clone()));
    tokio::spawn(follow_ops(hub.clone(), client, ctrl, shutdown.clone()));
    let pruner = hub.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => pruner.prune(now_ms()),
            }
        }
    });
    Ok(hub)
}

/// The alarmer's rules (boundaries to draw, which tracks get an impact point): asked at
/// start and again every 30 s, so a restarted alarmer's new file reaches the tabs.
async fn follow_rules(hub: Arc<Hub>, client: async_nats::Client, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let asked = tokio::time::timeout(
            Duration::from_secs(2),
            client.request(
                tspi_core::alarm::CONTROL_SUBJECT,
                serde_json::to_vec(&tspi_core::alarm::AlarmRequest::Rules)
                    .unwrap_or_default()
                    .into(),
            ),
        )
        .await;
        let Ok(Ok(reply)) = asked else { continue };
        let Ok(mut rules) = serde_json::from_slice::<serde_json::Value>(&reply.payload) else {
            continue;
        };
        if rules["ok"] != true {
            continue;
        }
        if let Some(o) = rules.as_object_mut() {
            o.remove("ok");
        }
        let impact = impact_rules(&rules);
        let changed = {
            let mut st = hub.lock();
            let changed = st.overlays.as_ref() != Some(&rules);
            st.overlays = Some(rules.clone());
            st.impact = impact;
            changed
        };
        if changed {
            hub.publish(HubEvent::Overlays(rules));
        }
    }
}

fn impact_rules(rules: &serde_json::Value) -> Option<ImpactRules> {
    let sensors: Vec<Selector> = rules["rules"]
        .as_array()?
        .iter()
        .filter(|r| r["kind"] == "impact")
        .filter_map(|r| {
            let patterns: Vec<String> = serde_json::from_value(r["sensors"].clone()).ok()?;
            Selector::parse(&patterns).ok()
        })
        .collect();
    (!sensors.is_empty()).then(|| ImpactRules {
        sensors,
        ground_alt_m: rules["ground_alt_m"].as_f64().unwrap_or(0.0),
    })
}

/// Group replays running now, from the channel directory (when a console answers it).
async fn running_groups(client: &async_nats::Client) -> Vec<GroupChannel> {
    let asked = tokio::time::timeout(
        Duration::from_millis(500),
        client.request(tspi_core::ops::CHANNEL_LIST_SUBJECT, "".into()),
    )
    .await;
    let Ok(Ok(reply)) = asked else {
        return Vec::new();
    };
    tspi_core::ops::from_bytes::<Vec<ChannelInfo>>(&reply.payload)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.kind == ChannelKind::GroupReplay)
        .map(|c| GroupChannel {
            channel_id: c.channel_id,
            display_name: c.display_name,
        })
        .collect()
}

async fn follow_live(
    hub: Arc<Hub>,
    mut live: std::pin::Pin<Box<dyn Stream<Item = Incoming> + Send>>,
    shutdown: CancellationToken,
) {
    loop {
        let batch = tokio::select! {
            _ = shutdown.cancelled() => break,
            b = next_batch(&mut live, &hub) => b,
        };
        let Some(items) = batch else { break };
        hub.metrics.live_messages.inc_by(items.len() as u64);
        let mut st = hub.lock();
        for i in &items {
            hub.take_in(&mut st, i);
        }
        st.seq += 1;
        let seq = st.seq;
        // Under the lock: a tab copying the picture sees it up to exactly this batch.
        hub.publish(HubEvent::Live { seq, items });
    }
}

async fn follow_ops(
    hub: Arc<Hub>,
    client: async_nats::Client,
    mut ctrl: async_nats::Subscriber,
    shutdown: CancellationToken,
) {
    let mut channels: HashMap<String, CancellationToken> = HashMap::new();
    for g in hub.lock().groups.clone() {
        let stop = shutdown.child_token();
        channels.insert(g.channel_id.clone(), stop.clone());
        tokio::spawn(follow_channel(
            hub.clone(),
            client.clone(),
            g.channel_id,
            stop,
        ));
    }
    loop {
        let m = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = ctrl.next() => m,
        };
        let Some(m) = m else { break };
        let Ok(control) = tspi_core::ops::from_bytes::<OpsControl>(&m.payload) else {
            hub.metrics.invalid_messages.inc();
            tracing::debug!("invalid tspi.ops.ctrl message skipped");
            continue;
        };
        match &control {
            OpsControl::GroupReplayStart {
                channel_id,
                display_name,
                ..
            } => {
                {
                    let mut st = hub.lock();
                    st.groups.retain(|g| g.channel_id != *channel_id);
                    st.groups.push(GroupChannel {
                        channel_id: channel_id.clone(),
                        display_name: display_name.clone(),
                    });
                    if st.groups.len() > 64 {
                        st.groups.remove(0);
                    }
                }
                if !channels.contains_key(channel_id) {
                    let stop = shutdown.child_token();
                    channels.insert(channel_id.clone(), stop.clone());
                    // Subscribed before the tabs hear of it: the console waits its join
                    // delay before the server starts delivering.
                    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
                    tokio::spawn(follow_channel_then(
                        hub.clone(),
                        client.clone(),
                        channel_id.clone(),
                        stop,
                        ready_tx,
                    ));
                    let _ = ready_rx.await;
                }
            }
            OpsControl::GroupReplayStop { channel_id } => {
                hub.lock().groups.retain(|g| g.channel_id != *channel_id);
                if let Some(stop) = channels.remove(channel_id) {
                    stop.cancel();
                }
            }
        }
        hub.publish(HubEvent::Ops(control));
    }
}

async fn follow_channel(
    hub: Arc<Hub>,
    client: async_nats::Client,
    channel_id: String,
    stop: CancellationToken,
) {
    let (tx, _rx) = tokio::sync::oneshot::channel();
    follow_channel_then(hub, client, channel_id, stop, tx).await;
}

async fn follow_channel_then(
    hub: Arc<Hub>,
    client: async_nats::Client,
    channel_id: String,
    stop: CancellationToken,
    subscribed: tokio::sync::oneshot::Sender<()>,
) {
    let subject = format!("tspi.channel.replay.{channel_id}");
    let feed = feed::channel(&client, &subject).await;
    client.flush().await.ok();
    let _ = subscribed.send(());
    let mut feed = match feed {
        Ok(f) => Box::pin(f),
        Err(e) => {
            tracing::warn!(error = %e, channel_id, "cannot follow the group replay");
            return;
        }
    };
    loop {
        let batch = tokio::select! {
            _ = stop.cancelled() => break,
            b = next_batch(&mut feed, &hub) => b,
        };
        let Some(items) = batch else { break };
        hub.publish(HubEvent::Channel {
            channel_id: channel_id.clone(),
            items,
        });
    }
}
