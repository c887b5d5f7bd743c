//! One player session — a headless player process, or one browser tab of the web display
//! — as a pure state machine: [`Session::handle`] takes what happened (a message from the
//! feed, a group replay starting, an operator's request) and the wall time, and returns
//! what to do ([`Effect`]): open another feed, ask the replayer, show a frame, send a
//! heartbeat. The I/O loops around it only read, decode, and carry effects out.
//!
//! The rules it keeps (SPEC §5, player): display commands apply at once; a tag shows once,
//! and in a replay when the playhead reaches it; a livestream session joins a group replay
//! when it starts and returns when it stops, a session with the live override or its own
//! private replay stays put; a replay that restarts its timeline starts the tags over.

use serde_json::json;
use tspi_core::ops::{ClientState, Heartbeat, OpsControl, LIVESTREAM_SUBJECT};
use tspi_core::playout::{ControlRequest, Phase, SegmentKind, SegmentMarker, SnapshotRequest};
use tspi_core::rfc3339::{format_utc_millis, parse_epoch_ms, tspi_to_epoch_ms};
use tspi_core::{DisplayCommand, Tag, TelemetryRecord};

use crate::cursor::{check_speed, Cursor};
use crate::settings::DisplaySettings;
use crate::tags::TagGate;

/// Which time is the playhead: when frames were received, or the TSPI time inside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    #[default]
    Receive,
    Tspi,
}

/// Where a session starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The livestream; `stay_live`: the "back to live" override from the start.
    Live { stay_live: bool },
    /// A replayer room the operator steers (headless `--source historical`).
    Room(String),
}

/// What a replay picture includes besides the state in force (web displays ask for it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnapshotSpec {
    /// Trail behind each track, seconds.
    pub trail_s: f64,
    /// How far back a track's last record is looked for, seconds.
    pub lookback_s: f64,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub client_id: String,
    pub operator: Option<String>,
    pub start: Start,
    pub clock: Clock,
    /// The room this session replays into when it seeks away from live (web displays).
    pub replay_room: Option<String>,
    pub snapshot: Option<SnapshotSpec>,
}

/// What the session follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Live,
    Channel {
        channel_id: String,
        display_name: String,
    },
    Replay {
        room: String,
    },
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Channel { .. } => "channel",
            Mode::Replay { .. } => "replay",
        }
    }
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed<'a> {
    Live,
    Channel(&'a str),
    Room(&'a str),
}

/// A feed to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedSpec {
    /// The livestream; the loop reports the command state in force with
    /// [`Input::LiveHistory`].
    Live,
    Channel {
        channel_id: String,
        subject: String,
    },
    Room {
        room: String,
    },
}

/// Playout headers of a replayed message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Replayed {
    pub phase: Phase,
    /// When the original message reached the bus (`Tspi-Original-Time`).
    pub original_ms: Option<i64>,
    pub segment: Option<u64>,
}

/// A decoded message.
#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    Telemetry(&'a TelemetryRecord),
    Command(&'a DisplayCommand),
    Tag {
        subject: &'a str,
        tag: &'a Tag,
    },
    /// An alarm transition (the alarmer's).
    Alarm(&'a tspi_core::alarm::AlarmEvent),
    /// Not what SPEC says: counted and skipped.
    Invalid,
    /// A replay segment's `begin` or `ready` marker.
    Marker(&'a SegmentMarker),
}

/// An operator's request (stdin of the headless player, the web page).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Back to live: leave a private replay (to the livestream) or a group replay (with
    /// the override, so the next one does not take the session away again).
    Live,
    /// The headless "back to live" override: stay on (or return to) the livestream and
    /// ignore group replays until [`Request::Follow`].
    Override,
    /// Follow group replays again.
    Follow,
    /// Join a running group replay (the newest when `None`).
    Join(Option<String>),
    /// Show the moment `at_ms` (a private replay into the session's room).
    Seek {
        at_ms: i64,
    },
    Pause,
    Resume,
    Speed(f64),
    /// For the room's replayer as it is (headless `--source historical`).
    Forward(ControlRequest),
}

#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Message {
        feed: Feed<'a>,
        content: Content<'a>,
        replayed: Option<Replayed>,
    },
    Ops(&'a OpsControl),
    Request(&'a Request),
    /// The live feed was (re)opened: the commands the stream holds, oldest first.
    LiveHistory(&'a [DisplayCommand]),
    /// The live feed was (re)opened: these settings are in force (a web display's hub
    /// keeps them for every tab).
    LiveSettings(&'a DisplaySettings),
    /// The room's replayer refused a request this session made, or did not answer.
    ReplayerFailed,
    /// Time passes (checked about once a second).
    Tick,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Read this feed from now on, instead of the one before (before any request below).
    Open(FeedSpec),
    /// Send to the room's replayer (`player.<room>.ctrl`).
    Replayer {
        room: String,
        request: ControlRequest,
    },
    /// Forget the picture: a new feed or a replay that restarts.
    Clear,
    /// Show the input's telemetry record. `snapshot`: part of a replay picture (shown
    /// whole, never thinned).
    Frame {
        playhead_ms: i64,
        snapshot: bool,
    },
    Command {
        command: DisplayCommand,
        changed: bool,
    },
    /// The settings in force changed.
    Settings,
    Tag {
        subject: String,
        tag: Tag,
    },
    /// An alarm transition of the feed followed (live, a replay, a group replay).
    Alarm(tspi_core::alarm::AlarmEvent),
    /// The channel (state, channel id, subject) changed.
    Channel,
    /// A group replay started that this session does not join.
    ChannelAvailable {
        channel_id: String,
        display_name: String,
    },
    /// A replay segment after an earlier one began: `State` when the timeline restarts,
    /// `Skipped` when it goes forward.
    Seek {
        phase: Phase,
    },
    /// The picture at the segment's start is complete.
    Ready {
        segment: u64,
    },
    /// Mode, cursor, speed or pause changed.
    Mode,
    Heartbeat,
    /// The answer to a request (`Seek` answers with its segment; `Ready` follows).
    Reply(Result<serde_json::Value, String>),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub frames_in: u64,
    pub commands: u64,
    pub tags: u64,
    pub invalid: u64,
    /// Replayed messages of a segment the session had already left.
    pub stale: u64,
}

/// A group replay that is running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupChannel {
    pub channel_id: String,
    pub display_name: String,
}

/// A replay this close to where it ends is at the live edge.
const LIVE_EDGE_MS: i64 = 1_000;

/// Group replays remembered as running; the oldest are forgotten first.
const GROUPS_MAX: usize = 64;

#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    settings: DisplaySettings,
    state: ClientState,
    channel_id: String,
    subject: String,
    groups: Vec<GroupChannel>,
    mode: Mode,
    cursor: Cursor,
    tags: TagGate,
    /// The replay segment being shown, and the one asked for (messages of others are stale).
    segment: Option<u64>,
    wanted: Option<u64>,
    last_segment: u64,
    /// Old-style playout without segment markers: the last phase seen.
    last_phase: Option<Phase>,
    playhead_ms: Option<i64>,
    speed: f64,
    paused: bool,
    counts: Counts,
}

fn room_channel(room: &str) -> (String, String) {
    (format!("room-{room}"), format!("player.{room}.playout"))
}

impl Session {
    pub fn new(config: SessionConfig) -> Session {
        let (state, channel_id, subject, mode) = match &config.start {
            Start::Live { stay_live } => (
                if *stay_live {
                    ClientState::LiveOverride
                } else {
                    ClientState::FollowingLivestream
                },
                "livestream".to_owned(),
                LIVESTREAM_SUBJECT.to_owned(),
                Mode::Live,
            ),
            Start::Room(room) => {
                let (id, subject) = room_channel(room);
                (
                    ClientState::FollowingPrivateReplay,
                    id,
                    subject,
                    Mode::Replay { room: room.clone() },
                )
            }
        };
        let cursor = match mode {
            Mode::Live => Cursor::Live,
            _ => Cursor::Following {
                playhead_ms: None,
                at_wall_ms: 0,
            },
        };
        Session {
            config,
            settings: DisplaySettings::default(),
            state,
            channel_id,
            subject,
            groups: Vec::new(),
            mode,
            cursor,
            tags: TagGate::default(),
            segment: None,
            wanted: None,
            last_segment: 0,
            last_phase: None,
            playhead_ms: None,
            speed: 1.0,
            paused: false,
            counts: Counts::default(),
        }
    }

    pub fn settings(&self) -> &DisplaySettings {
        &self.settings
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    pub fn channel_id(&self) -> &str {
        &self.channel_id
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn groups(&self) -> &[GroupChannel] {
        &self.groups
    }

    /// The replay segment being shown.
    pub fn segment(&self) -> Option<u64> {
        self.segment
    }

    pub fn client_id(&self) -> &str {
        &self.config.client_id
    }

    pub fn set_operator(&mut self, operator: Option<String>) {
        self.config.operator = operator;
    }

    /// What the next replay pictures include.
    pub fn set_snapshot(&mut self, snapshot: Option<SnapshotSpec>) {
        self.config.snapshot = snapshot;
    }

    /// The heartbeat this session sends now (SPEC §3, `tspi.ops.status`).
    pub fn heartbeat(&self, now_ms: i64) -> Heartbeat {
        Heartbeat {
            client_id: self.config.client_id.clone(),
            state: self.state,
            channel_id: self.channel_id.clone(),
            subject: self.subject.clone(),
            live_override: self.state == ClientState::LiveOverride,
            ts: format_utc_millis(now_ms),
            operator: self.config.operator.clone(),
            source_ip: None,
            ping_ms: None,
        }
    }

    pub fn handle(&mut self, input: Input<'_>, now_ms: i64) -> Vec<Effect> {
        let mut fx = Vec::new();
        match input {
            Input::Message {
                feed,
                content,
                replayed,
            } => self.message(feed, content, replayed, now_ms, &mut fx),
            Input::Ops(control) => self.ops(control, now_ms, &mut fx),
            Input::Request(request) => self.request(request, now_ms, &mut fx),
            Input::LiveHistory(commands) => {
                let mut changed = false;
                for c in commands {
                    changed |= self.settings.apply(&c.setting);
                }
                if changed {
                    fx.push(Effect::Settings);
                }
            }
            Input::LiveSettings(settings) => {
                if self.settings != *settings {
                    self.settings = settings.clone();
                    fx.push(Effect::Settings);
                }
            }
            Input::ReplayerFailed => {
                if matches!(self.mode, Mode::Replay { .. })
                    && matches!(self.config.start, Start::Live { .. })
                {
                    self.go_live(ClientState::FollowingLivestream, &mut fx);
                }
            }
            Input::Tick => {
                // A replay that has caught up with the live edge continues live.
                if self.cursor.at_end(now_ms) && matches!(self.config.start, Start::Live { .. }) {
                    if let Mode::Replay { room } = &self.mode {
                        fx.push(Effect::Replayer {
                            room: room.clone(),
                            request: ControlRequest::Stop,
                        });
                        self.go_live(ClientState::FollowingLivestream, &mut fx);
                    }
                }
            }
        }
        fx
    }

    fn following(&self, feed: Feed<'_>) -> bool {
        match (&self.mode, feed) {
            (Mode::Live, Feed::Live) => true,
            (Mode::Channel { channel_id, .. }, Feed::Channel(id)) => id == channel_id,
            (Mode::Replay { room }, Feed::Room(r)) => r == room,
            _ => false,
        }
    }

    fn message(
        &mut self,
        feed: Feed<'_>,
        content: Content<'_>,
        replayed: Option<Replayed>,
        now_ms: i64,
        fx: &mut Vec<Effect>,
    ) {
        if !self.following(feed) {
            return;
        }
        if let Content::Marker(marker) = content {
            self.marker(marker, replayed.map(|r| r.phase), now_ms, fx);
            return;
        }
        if let Some(r) = replayed {
            match (r.segment, self.wanted.or(self.segment)) {
                (Some(s), Some(current)) if s != current => {
                    self.counts.stale += 1;
                    return;
                }
                (None, _) => self.legacy_phase(r.phase, fx),
                _ => {}
            }
        }
        match content {
            Content::Telemetry(record) => {
                self.counts.frames_in += 1;
                let head = match self.config.clock {
                    Clock::Receive => record.recv_epoch_ms,
                    Clock::Tspi => {
                        tspi_to_epoch_ms(record.day, record.time_s, record.recv_epoch_ms)
                    }
                };
                if replayed.is_some() {
                    self.playhead_ms = Some(head);
                    for (subject, tag) in self.tags.release(head) {
                        self.counts.tags += 1;
                        fx.push(Effect::Tag { subject, tag });
                    }
                }
                if matches!(self.mode, Mode::Channel { .. }) {
                    self.cursor.frame(head, now_ms);
                }
                fx.push(Effect::Frame {
                    playhead_ms: head,
                    snapshot: replayed.is_some_and(|r| r.phase == Phase::Snapshot),
                });
            }
            Content::Command(command) => {
                self.counts.commands += 1;
                let changed = self.settings.apply(&command.setting);
                fx.push(Effect::Command {
                    command: command.clone(),
                    changed,
                });
                if changed {
                    fx.push(Effect::Settings);
                }
            }
            Content::Tag { subject, tag } => {
                let replay = replayed.map(|r| (r.phase, r.original_ms));
                if let Some((subject, tag)) =
                    self.tags.offer(subject, tag, replay, self.playhead_ms)
                {
                    self.counts.tags += 1;
                    fx.push(Effect::Tag { subject, tag });
                }
            }
            Content::Alarm(alarm) => fx.push(Effect::Alarm(alarm.clone())),
            Content::Invalid => self.counts.invalid += 1,
            Content::Marker(_) => {}
        }
    }

    /// Playout without segment markers: a `state` phase after `window` restarts the
    /// timeline, `skipped` continues it.
    fn legacy_phase(&mut self, phase: Phase, fx: &mut Vec<Effect>) {
        if Some(phase) != self.last_phase && self.last_phase == Some(Phase::Window) {
            if phase == Phase::State {
                self.tags.restart();
                self.playhead_ms = None;
            }
            fx.push(Effect::Seek { phase });
        }
        self.last_phase = Some(phase);
    }

    fn marker(
        &mut self,
        m: &SegmentMarker,
        phase: Option<Phase>,
        now_ms: i64,
        fx: &mut Vec<Effect>,
    ) {
        match phase {
            Some(Phase::Begin) => {
                if self.wanted.is_some_and(|w| w != m.segment) {
                    self.counts.stale += 1;
                    return;
                }
                let earlier = self.segment.is_some();
                self.segment = Some(m.segment);
                if m.kind == SegmentKind::Restart {
                    self.tags.restart();
                    self.playhead_ms = None;
                    fx.push(Effect::Clear);
                }
                if earlier {
                    fx.push(Effect::Seek {
                        phase: match m.kind {
                            SegmentKind::Restart => Phase::State,
                            SegmentKind::Forward => Phase::Skipped,
                        },
                    });
                }
                if let (Some(at), Some(end)) = (parse_epoch_ms(&m.at), parse_epoch_ms(&m.end)) {
                    let speed = check_speed(m.speed).unwrap_or(1.0);
                    self.cursor = Cursor::replay(at, now_ms, speed, m.paused, end);
                    fx.push(Effect::Mode);
                }
            }
            Some(Phase::Ready) => {
                if self.segment == Some(m.segment) {
                    self.cursor.start(now_ms);
                    fx.push(Effect::Ready { segment: m.segment });
                    fx.push(Effect::Mode);
                }
            }
            _ => self.counts.invalid += 1,
        }
    }

    fn ops(&mut self, control: &OpsControl, now_ms: i64, fx: &mut Vec<Effect>) {
        match control {
            OpsControl::GroupReplayStart {
                channel_id,
                display_name,
                ..
            } => {
                self.groups.retain(|g| g.channel_id != *channel_id);
                if self.groups.len() >= GROUPS_MAX {
                    self.groups.remove(0);
                }
                self.groups.push(GroupChannel {
                    channel_id: channel_id.clone(),
                    display_name: display_name.clone(),
                });
                if self.state == ClientState::FollowingLivestream && self.mode == Mode::Live {
                    self.join_channel(channel_id, display_name, now_ms, fx);
                } else {
                    fx.push(Effect::ChannelAvailable {
                        channel_id: channel_id.clone(),
                        display_name: display_name.clone(),
                    });
                }
            }
            OpsControl::GroupReplayStop { channel_id } => {
                self.groups.retain(|g| g.channel_id != *channel_id);
                if self.state == ClientState::FollowingGroupReplay && *channel_id == self.channel_id
                {
                    self.go_live(ClientState::FollowingLivestream, fx);
                }
            }
        }
    }

    fn join_channel(
        &mut self,
        channel_id: &str,
        display_name: &str,
        now_ms: i64,
        fx: &mut Vec<Effect>,
    ) {
        let subject = format!("tspi.channel.replay.{channel_id}");
        fx.push(Effect::Open(FeedSpec::Channel {
            channel_id: channel_id.to_owned(),
            subject: subject.clone(),
        }));
        fx.push(Effect::Clear);
        self.mode = Mode::Channel {
            channel_id: channel_id.to_owned(),
            display_name: display_name.to_owned(),
        };
        self.state = ClientState::FollowingGroupReplay;
        self.channel_id = channel_id.to_owned();
        self.subject = subject;
        self.cursor = Cursor::Following {
            playhead_ms: None,
            at_wall_ms: now_ms,
        };
        self.leave_segments();
        fx.extend([Effect::Channel, Effect::Heartbeat, Effect::Mode]);
    }

    fn go_live(&mut self, state: ClientState, fx: &mut Vec<Effect>) {
        if self.mode != Mode::Live {
            fx.push(Effect::Open(FeedSpec::Live));
            fx.push(Effect::Clear);
        }
        self.mode = Mode::Live;
        self.cursor = Cursor::Live;
        self.state = state;
        self.channel_id = "livestream".to_owned();
        self.subject = LIVESTREAM_SUBJECT.to_owned();
        self.leave_segments();
        fx.extend([Effect::Channel, Effect::Heartbeat, Effect::Mode]);
    }

    fn leave_segments(&mut self) {
        self.segment = None;
        self.wanted = None;
        self.last_phase = None;
        self.playhead_ms = None;
        self.tags.restart();
    }

    fn state_reply(&self) -> Result<serde_json::Value, String> {
        Ok(json!({"state": self.state, "mode": self.mode.name()}))
    }

    fn request(&mut self, request: &Request, now_ms: i64, fx: &mut Vec<Effect>) {
        let reply = match request {
            Request::Live => {
                match self.mode.clone() {
                    Mode::Replay { room } => {
                        if matches!(self.config.start, Start::Room(_)) {
                            fx.push(Effect::Reply(Err(
                                "this player follows a replayer room; it has no live feed".into(),
                            )));
                            return;
                        }
                        fx.push(Effect::Replayer {
                            room,
                            request: ControlRequest::Stop,
                        });
                        self.go_live(ClientState::FollowingLivestream, fx);
                    }
                    Mode::Channel { .. } => self.go_live(ClientState::LiveOverride, fx),
                    Mode::Live => {}
                }
                self.state_reply()
            }
            Request::Override => match self.mode {
                Mode::Replay { .. } => {
                    Err("back to live needs a live player (this one follows a room)".into())
                }
                _ => {
                    if self.state != ClientState::LiveOverride {
                        self.go_live(ClientState::LiveOverride, fx);
                    }
                    self.state_reply()
                }
            },
            Request::Follow => {
                if self.state == ClientState::LiveOverride {
                    self.state = ClientState::FollowingLivestream;
                    fx.extend([Effect::Channel, Effect::Heartbeat]);
                }
                self.state_reply()
            }
            Request::Join(id) => {
                let group = match id {
                    Some(id) => self.groups.iter().find(|g| g.channel_id == *id),
                    None => self.groups.last(),
                }
                .cloned();
                match group {
                    None => Err(match id {
                        Some(id) => format!("no group replay {id:?} is running"),
                        None => "no group replay is running".to_owned(),
                    }),
                    Some(g) => {
                        if let Mode::Replay { room } = &self.mode {
                            if matches!(self.config.start, Start::Room(_)) {
                                fx.push(Effect::Reply(Err(
                                    "this player follows a replayer room".into()
                                )));
                                return;
                            }
                            fx.push(Effect::Replayer {
                                room: room.clone(),
                                request: ControlRequest::Stop,
                            });
                        }
                        if self.channel_id != g.channel_id {
                            self.join_channel(&g.channel_id, &g.display_name, now_ms, fx);
                        }
                        self.state_reply()
                    }
                }
            }
            Request::Seek { at_ms } => self.seek(*at_ms, now_ms, fx),
            Request::Pause => {
                self.paused = true;
                match &self.mode {
                    Mode::Replay { room } if self.config.replay_room.is_some() => {
                        if !self.cursor.paused() {
                            self.cursor.pause(now_ms);
                            fx.push(Effect::Replayer {
                                room: room.clone(),
                                request: ControlRequest::Pause,
                            });
                            fx.push(Effect::Mode);
                        }
                        self.state_reply()
                    }
                    // Pausing live freezes the moment: a paused replay of it (resuming
                    // goes back to live, like Open MCT's real-time mode).
                    Mode::Live | Mode::Channel { .. } => {
                        let at = self.cursor.at(now_ms).min(now_ms - 1);
                        self.seek(at, now_ms, fx)
                    }
                    Mode::Replay { .. } => Err("send pause to the replayer".into()),
                }
            }
            Request::Resume => {
                self.paused = false;
                if let (Mode::Replay { room }, Cursor::Replay { end_ms, .. }) =
                    (self.mode.clone(), self.cursor.clone())
                {
                    if self.cursor.at(now_ms) >= end_ms - LIVE_EDGE_MS
                        && matches!(self.config.start, Start::Live { .. })
                    {
                        // Paused at the live edge (pausing live does that): resuming is
                        // live again.
                        fx.push(Effect::Replayer {
                            room,
                            request: ControlRequest::Stop,
                        });
                        self.go_live(ClientState::FollowingLivestream, fx);
                    }
                }
                if let Mode::Replay { room } = &self.mode {
                    if self.cursor.paused() {
                        self.cursor.resume(now_ms);
                        fx.push(Effect::Replayer {
                            room: room.clone(),
                            request: ControlRequest::Resume,
                        });
                        fx.push(Effect::Mode);
                    }
                }
                self.state_reply()
            }
            Request::Speed(x) => match check_speed(*x) {
                Err(e) => Err(e),
                Ok(x) => {
                    self.speed = x;
                    if let Mode::Replay { room } = &self.mode {
                        self.cursor.set_speed(x, now_ms);
                        fx.push(Effect::Replayer {
                            room: room.clone(),
                            request: ControlRequest::Speed { speed: x },
                        });
                        fx.push(Effect::Mode);
                    }
                    self.state_reply()
                }
            },
            Request::Forward(request) => match &self.config.start {
                Start::Room(room) => {
                    fx.push(Effect::Replayer {
                        room: room.clone(),
                        request: request.clone(),
                    });
                    return;
                }
                Start::Live { .. } => {
                    Err("only a player following a room forwards requests".into())
                }
            },
        };
        fx.push(Effect::Reply(reply));
    }

    /// A private replay at `at_ms`: every seek is a fresh `play` from there to the live
    /// edge, with its own segment, so messages still in flight from before are told apart.
    fn seek(
        &mut self,
        at_ms: i64,
        now_ms: i64,
        fx: &mut Vec<Effect>,
    ) -> Result<serde_json::Value, String> {
        let Some(room) = self.config.replay_room.clone() else {
            return Err(match &self.config.start {
                Start::Room(_) => "send seek to the replayer (it is forwarded as it is)".into(),
                Start::Live { .. } => "this player has no replay room".into(),
            });
        };
        if at_ms >= now_ms {
            // The present is live.
            if let Mode::Replay { room } = self.mode.clone() {
                fx.push(Effect::Replayer {
                    room,
                    request: ControlRequest::Stop,
                });
                self.go_live(ClientState::FollowingLivestream, fx);
            }
            return self.state_reply();
        }
        self.last_segment += 1;
        let segment = self.last_segment;
        if self.mode != (Mode::Replay { room: room.clone() }) {
            fx.push(Effect::Open(FeedSpec::Room { room: room.clone() }));
            let (id, subject) = room_channel(&room);
            self.mode = Mode::Replay { room: room.clone() };
            self.state = ClientState::FollowingPrivateReplay;
            self.channel_id = id;
            self.subject = subject;
            fx.extend([Effect::Channel, Effect::Heartbeat]);
        }
        self.segment = None;
        self.wanted = Some(segment);
        self.cursor = Cursor::replay(at_ms, now_ms, self.speed, self.paused, now_ms);
        let play = ControlRequest::Play {
            start: Some(format_utc_millis(at_ms)),
            end: Some(format_utc_millis(now_ms)),
            tag: None,
            window: None,
            speed: Some(self.speed),
            clock: None,
            paused: Some(self.paused),
            segment: Some(segment),
            snapshot: self.config.snapshot.map(|s| SnapshotRequest {
                trail: s.trail_s,
                lookback: Some(s.lookback_s),
            }),
        };
        fx.push(Effect::Replayer {
            room,
            request: play,
        });
        fx.push(Effect::Mode);
        Ok(json!({"state": self.state, "mode": "replay", "segment": segment}))
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
