#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use tspi_core::units::UnitSystem;
use tspi_core::{Datagram, DisplaySetting, GeocentricRaw, Payload, TagStatus};

const T0: i64 = 1_759_057_200_000; // 2025-09-28T11:00:00Z

fn config(start: Start, replay_room: Option<&str>) -> SessionConfig {
    SessionConfig {
        client_id: "c1".into(),
        operator: Some("ops".into()),
        start,
        clock: Clock::Receive,
        replay_room: replay_room.map(str::to_owned),
        snapshot: Some(SnapshotSpec {
            trail_s: 60.0,
            lookback_s: 120.0,
        }),
    }
}

fn live() -> Session {
    Session::new(config(Start::Live { stay_live: false }, None))
}

fn web() -> Session {
    Session::new(config(Start::Live { stay_live: false }, Some("web-c1")))
}

fn record(sensor: u16, recv_ms: i64) -> TelemetryRecord {
    let d = Datagram {
        sensor_id: sensor,
        day: 271,
        time_ticks: 396_000_000,
        status: 0,
        status_flags: 0,
        payload: Payload::Geocentric(GeocentricRaw {
            x: 100_000_000,
            ..Default::default()
        }),
    };
    TelemetryRecord::from_datagram(&d, recv_ms)
}

fn command(setting: DisplaySetting) -> DisplayCommand {
    DisplayCommand::new("id".into(), format_utc_millis(T0), "t".into(), setting).unwrap()
}

fn tag(id: &str, at_ms: i64) -> Tag {
    Tag {
        id: id.into(),
        ts: format_utc_millis(at_ms),
        label: format!("tag {id}"),
        status: TagStatus::Active,
        creator: None,
        notes: None,
        updated_ts: format_utc_millis(at_ms),
        extra: None,
    }
}

fn marker(segment: u64, kind: SegmentKind, at_ms: i64, paused: bool) -> SegmentMarker {
    SegmentMarker {
        segment,
        kind,
        at: format_utc_millis(at_ms),
        end: format_utc_millis(at_ms + 600_000),
        speed: 1.0,
        paused,
        state: 0,
        snapshot: 0,
    }
}

fn replayed(phase: Phase, segment: Option<u64>) -> Option<Replayed> {
    Some(Replayed {
        phase,
        original_ms: None,
        segment,
    })
}

fn frame(
    s: &mut Session,
    feed: Feed<'_>,
    r: &TelemetryRecord,
    meta: Option<Replayed>,
    now: i64,
) -> Vec<Effect> {
    s.handle(
        Input::Message {
            feed,
            content: Content::Telemetry(r),
            replayed: meta,
        },
        now,
    )
}

fn mark(s: &mut Session, room: &str, m: &SegmentMarker, phase: Phase, now: i64) -> Vec<Effect> {
    s.handle(
        Input::Message {
            feed: Feed::Room(room),
            content: Content::Marker(m),
            replayed: replayed(phase, Some(m.segment)),
        },
        now,
    )
}

fn start_group(id: &str) -> OpsControl {
    OpsControl::GroupReplayStart {
        channel_id: id.into(),
        display_name: format!("Rerun {id}"),
        identifier: "x".into(),
        stream: "TSPI".into(),
    }
}

#[test]
fn live_frames_commands_and_tags() {
    let mut s = live();
    let r = record(7, T0);
    assert_eq!(
        frame(&mut s, Feed::Live, &r, None, T0),
        vec![Effect::Frame {
            playhead_ms: T0,
            snapshot: false
        }]
    );
    let c = command(DisplaySetting::Units(UnitSystem::Imperial));
    let fx = s.handle(
        Input::Message {
            feed: Feed::Live,
            content: Content::Command(&c),
            replayed: None,
        },
        T0,
    );
    assert_eq!(
        fx,
        vec![
            Effect::Command {
                command: c.clone(),
                changed: true
            },
            Effect::Settings
        ]
    );
    assert_eq!(s.settings().units, UnitSystem::Imperial);
    let t = tag("a", T0);
    for subject in ["tags.create", "tags.broadcast"] {
        s.handle(
            Input::Message {
                feed: Feed::Live,
                content: Content::Tag { subject, tag: &t },
                replayed: None,
            },
            T0,
        );
    }
    s.handle(
        Input::Message {
            feed: Feed::Live,
            content: Content::Invalid,
            replayed: None,
        },
        T0,
    );
    let counts = s.counts();
    assert_eq!(
        (
            counts.frames_in,
            counts.commands,
            counts.tags,
            counts.invalid
        ),
        (1, 1, 1, 1)
    );
    // The command history of a reopened live feed applies on top.
    let fx = s.handle(
        Input::LiveHistory(&[command(DisplaySetting::MarkerColor("red".into()))]),
        T0,
    );
    assert_eq!(fx, vec![Effect::Settings]);
    assert_eq!(s.settings().marker_color.as_deref(), Some("red"));
    let hb = s.heartbeat(T0);
    assert_eq!(hb.state, ClientState::FollowingLivestream);
    assert_eq!(hb.channel_id, "livestream");
    assert_eq!(hb.operator.as_deref(), Some("ops"));
}

#[test]
fn a_livestream_session_follows_group_replays_and_comes_back() {
    let mut s = live();
    let fx = s.handle(Input::Ops(&start_group("g1")), T0);
    assert_eq!(
        fx[0],
        Effect::Open(FeedSpec::Channel {
            channel_id: "g1".into(),
            subject: "tspi.channel.replay.g1".into()
        })
    );
    assert!(fx.contains(&Effect::Clear) && fx.contains(&Effect::Heartbeat));
    assert_eq!(s.state(), ClientState::FollowingGroupReplay);
    assert_eq!(s.mode().name(), "channel");
    // Live messages still in flight are not shown; the channel's are.
    assert!(frame(&mut s, Feed::Live, &record(1, T0), None, T0).is_empty());
    assert!(frame(&mut s, Feed::Channel("other"), &record(1, T0), None, T0).is_empty());
    let old = T0 - 3_600_000;
    assert_eq!(
        frame(&mut s, Feed::Channel("g1"), &record(1, old), None, T0).len(),
        1
    );
    assert_eq!(
        s.cursor().at(T0 + 500),
        old + 500,
        "the cursor follows the frames"
    );
    // Another replay's stop changes nothing; its own brings the session back.
    assert!(s
        .handle(
            Input::Ops(&OpsControl::GroupReplayStop {
                channel_id: "zz".into()
            }),
            T0
        )
        .is_empty());
    let fx = s.handle(
        Input::Ops(&OpsControl::GroupReplayStop {
            channel_id: "g1".into(),
        }),
        T0,
    );
    assert_eq!(fx[0], Effect::Open(FeedSpec::Live));
    assert_eq!(s.state(), ClientState::FollowingLivestream);
    assert_eq!(s.channel_id(), "livestream");
    assert_eq!(s.cursor(), &Cursor::Live);
    assert!(s.groups().is_empty());
}

#[test]
fn the_override_and_a_private_replay_stay_put() {
    let mut s = Session::new(config(Start::Live { stay_live: true }, None));
    let fx = s.handle(Input::Ops(&start_group("g1")), T0);
    assert_eq!(
        fx,
        vec![Effect::ChannelAvailable {
            channel_id: "g1".into(),
            display_name: "Rerun g1".into()
        }]
    );
    assert_eq!(s.state(), ClientState::LiveOverride);
    let fx = s.handle(Input::Request(&Request::Follow), T0);
    assert!(fx.contains(&Effect::Channel));
    assert_eq!(s.state(), ClientState::FollowingLivestream);
    // Joining the running replay (the web page's "rejoin").
    let fx = s.handle(Input::Request(&Request::Join(None)), T0);
    assert!(
        matches!(&fx[0], Effect::Open(FeedSpec::Channel { channel_id, .. }) if channel_id == "g1")
    );
    // Leaving it is the override.
    let fx = s.handle(Input::Request(&Request::Override), T0);
    assert_eq!(fx[0], Effect::Open(FeedSpec::Live));
    assert_eq!(s.state(), ClientState::LiveOverride);
    let fx = s.handle(Input::Request(&Request::Join(Some("nope".into()))), T0);
    assert!(matches!(fx.last(), Some(Effect::Reply(Err(e))) if e.contains("nope")));

    let mut p = Session::new(config(Start::Room("r1".into()), None));
    assert_eq!(p.state(), ClientState::FollowingPrivateReplay);
    assert_eq!(p.channel_id(), "room-r1");
    let fx = p.handle(Input::Ops(&start_group("g2")), T0);
    assert!(matches!(fx[0], Effect::ChannelAvailable { .. }));
    assert_eq!(p.state(), ClientState::FollowingPrivateReplay);
}

#[test]
fn a_followed_room_forwards_requests_and_tracks_its_segments() {
    let mut s = Session::new(config(Start::Room("h1".into()), None));
    let play: ControlRequest =
        serde_json::from_str(r#"{"op": "play", "start": "x", "end": "y"}"#).unwrap();
    assert_eq!(
        s.handle(Input::Request(&Request::Forward(play.clone())), T0),
        vec![Effect::Replayer {
            room: "h1".into(),
            request: play
        }]
    );
    // Segment 1: the first play starts the timeline (no seek event).
    let fx = mark(
        &mut s,
        "h1",
        &marker(1, SegmentKind::Restart, T0, false),
        Phase::Begin,
        T0,
    );
    assert_eq!(fx, vec![Effect::Clear, Effect::Mode]);
    let later = tag("late", T0 + 2_000);
    let fx = s.handle(
        Input::Message {
            feed: Feed::Room("h1"),
            content: Content::Tag {
                subject: "tags.create",
                tag: &later,
            },
            replayed: Some(Replayed {
                phase: Phase::Window,
                original_ms: Some(T0 + 1_000),
                segment: Some(1),
            }),
        },
        T0,
    );
    assert!(fx.is_empty(), "held until the playhead reaches 11:00:02");
    let fx = frame(
        &mut s,
        Feed::Room("h1"),
        &record(1, T0 + 2_500),
        replayed(Phase::Window, Some(1)),
        T0,
    );
    assert!(matches!(&fx[0], Effect::Tag { tag, .. } if tag.id == "late"));
    assert!(matches!(fx[1], Effect::Frame { playhead_ms, .. } if playhead_ms == T0 + 2_500));
    // Segment 2 goes forward: a seek event, no clearing.
    let fx = mark(
        &mut s,
        "h1",
        &marker(2, SegmentKind::Forward, T0 + 5_000, false),
        Phase::Begin,
        T0,
    );
    assert_eq!(
        fx,
        vec![
            Effect::Seek {
                phase: Phase::Skipped
            },
            Effect::Mode
        ]
    );
    let fx = mark(
        &mut s,
        "h1",
        &marker(2, SegmentKind::Forward, T0 + 5_000, false),
        Phase::Ready,
        T0 + 10,
    );
    assert_eq!(fx, vec![Effect::Ready { segment: 2 }, Effect::Mode]);
    // A window message of segment 1 still in flight is stale now.
    assert!(frame(
        &mut s,
        Feed::Room("h1"),
        &record(1, T0 + 2_600),
        replayed(Phase::Window, Some(1)),
        T0
    )
    .is_empty());
    assert_eq!(s.counts().stale, 1);
    // Segment 3 restarts: the tags start over.
    let fx = mark(
        &mut s,
        "h1",
        &marker(3, SegmentKind::Restart, T0, false),
        Phase::Begin,
        T0,
    );
    assert_eq!(
        fx[..2],
        [
            Effect::Clear,
            Effect::Seek {
                phase: Phase::State
            }
        ]
    );
    let fx = s.handle(
        Input::Message {
            feed: Feed::Room("h1"),
            content: Content::Tag {
                subject: "tags.create",
                tag: &later,
            },
            replayed: replayed(Phase::State, Some(3)),
        },
        T0,
    );
    assert_eq!(fx.len(), 1, "shown again after the restart: {fx:?}");
    // The live-only requests are refused.
    let fx = s.handle(Input::Request(&Request::Live), T0);
    assert!(matches!(fx.last(), Some(Effect::Reply(Err(_)))));
}

#[test]
fn old_style_playout_restarts_on_the_state_phase() {
    let mut s = Session::new(config(Start::Room("h1".into()), None));
    frame(
        &mut s,
        Feed::Room("h1"),
        &record(1, T0),
        replayed(Phase::Window, None),
        T0,
    );
    let c = command(DisplaySetting::MarkerColor("red".into()));
    let fx = s.handle(
        Input::Message {
            feed: Feed::Room("h1"),
            content: Content::Command(&c),
            replayed: replayed(Phase::State, None),
        },
        T0,
    );
    assert_eq!(
        fx[0],
        Effect::Seek {
            phase: Phase::State
        }
    );
}

#[test]
fn a_web_tab_seeks_into_a_private_replay_and_back() {
    let mut s = web();
    let now = T0 + 60_000;
    let fx = s.handle(Input::Request(&Request::Seek { at_ms: T0 }), now);
    assert_eq!(
        fx[0],
        Effect::Open(FeedSpec::Room {
            room: "web-c1".into()
        })
    );
    let Some(Effect::Replayer { room, request }) =
        fx.iter().find(|e| matches!(e, Effect::Replayer { .. }))
    else {
        panic!("{fx:?}")
    };
    assert_eq!(room, "web-c1");
    // As the replayer reads it.
    let request = serde_json::to_value(request).unwrap();
    assert_eq!(request["op"], "play");
    assert_eq!(request["segment"], 1);
    assert_eq!(request["start"], format_utc_millis(T0));
    assert_eq!(request["end"], format_utc_millis(now));
    assert_eq!(request["snapshot"]["trail"], 60.0);
    assert!(matches!(fx.last(), Some(Effect::Reply(Ok(v))) if v["segment"] == 1));
    assert_eq!(s.state(), ClientState::FollowingPrivateReplay);
    assert_eq!(s.mode().name(), "replay");
    assert_eq!(
        s.cursor().at(now + 5_000),
        T0,
        "held until the picture is in"
    );
    // Live messages are not shown any more.
    assert!(frame(&mut s, Feed::Live, &record(1, now), None, now).is_empty());
    mark(
        &mut s,
        "web-c1",
        &marker(1, SegmentKind::Restart, T0, false),
        Phase::Begin,
        now,
    );
    let fx = frame(
        &mut s,
        Feed::Room("web-c1"),
        &record(1, T0 - 10),
        replayed(Phase::Snapshot, Some(1)),
        now,
    );
    assert_eq!(
        fx,
        vec![Effect::Frame {
            playhead_ms: T0 - 10,
            snapshot: true
        }]
    );
    let fx = mark(
        &mut s,
        "web-c1",
        &marker(1, SegmentKind::Restart, T0, false),
        Phase::Ready,
        now + 50,
    );
    assert!(fx.contains(&Effect::Ready { segment: 1 }));
    assert_eq!(s.cursor().at(now + 1_050), T0 + 1_000);
    // 5×: five seconds a second.
    let fx = s.handle(Input::Request(&Request::Speed(5.0)), now + 1_050);
    assert!(fx.contains(&Effect::Replayer {
        room: "web-c1".into(),
        request: ControlRequest::Speed { speed: 5.0 }
    }));
    assert_eq!(s.cursor().at(now + 2_050), T0 + 6_000);
    let fx = s.handle(Input::Request(&Request::Speed(0.0)), now);
    assert!(matches!(fx.last(), Some(Effect::Reply(Err(_)))));
    // Pause, then seek again: the new replay starts paused, segment 2; segment 1 is stale.
    s.handle(Input::Request(&Request::Pause), now + 2_050);
    assert!(s.cursor().paused());
    let fx = s.handle(
        Input::Request(&Request::Seek { at_ms: T0 + 30_000 }),
        now + 3_000,
    );
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::Open(_))),
        "already in the room"
    );
    let play = fx.iter().find_map(|e| match e {
        Effect::Replayer { request, .. } => serde_json::to_value(request).ok(),
        _ => None,
    });
    assert_eq!(play.as_ref().unwrap()["paused"], true);
    assert_eq!(play.as_ref().unwrap()["segment"], 2);
    assert!(frame(
        &mut s,
        Feed::Room("web-c1"),
        &record(1, T0 + 7_000),
        replayed(Phase::Window, Some(1)),
        now
    )
    .is_empty());
    assert!(mark(
        &mut s,
        "web-c1",
        &marker(1, SegmentKind::Restart, T0, false),
        Phase::Begin,
        now
    )
    .is_empty());
    // Back to live: the room is stopped, the live feed reopened.
    let fx = s.handle(Input::Request(&Request::Live), now + 4_000);
    assert_eq!(
        fx[0],
        Effect::Replayer {
            room: "web-c1".into(),
            request: ControlRequest::Stop
        }
    );
    assert_eq!(fx[1], Effect::Open(FeedSpec::Live));
    assert_eq!(s.state(), ClientState::FollowingLivestream);
    assert_eq!(s.cursor(), &Cursor::Live);
}

#[test]
fn pausing_live_freezes_the_moment_and_a_replay_catches_up_with_live() {
    let mut s = web();
    let fx = s.handle(Input::Request(&Request::Pause), T0);
    let play = fx.iter().find_map(|e| match e {
        Effect::Replayer { request, .. } => serde_json::to_value(request).ok(),
        _ => None,
    });
    let play = play.expect("a paused replay of the present");
    assert_eq!(play["paused"], true);
    assert_eq!(play["start"], format_utc_millis(T0 - 1));
    assert_eq!(s.mode().name(), "replay");
    assert!(s.cursor().paused());
    // Resuming at the live edge is live again.
    let fx = s.handle(Input::Request(&Request::Resume), T0 + 5_000);
    assert!(fx.contains(&Effect::Open(FeedSpec::Live)), "{fx:?}");
    assert_eq!(s.mode(), &Mode::Live);
    s.handle(Input::Request(&Request::Seek { at_ms: T0 - 1_000 }), T0);
    let m = SegmentMarker {
        end: format_utc_millis(T0),
        ..marker(2, SegmentKind::Restart, T0 - 1_000, false)
    };
    mark(&mut s, "web-c1", &m, Phase::Begin, T0);
    mark(&mut s, "web-c1", &m, Phase::Ready, T0);
    assert!(s.handle(Input::Tick, T0 + 500).is_empty());
    let fx = s.handle(Input::Tick, T0 + 1_000);
    assert!(fx.contains(&Effect::Open(FeedSpec::Live)), "{fx:?}");
    assert_eq!(s.mode(), &Mode::Live);
}

#[test]
fn a_failed_replay_goes_back_to_live_and_groups_do_not_take_a_replaying_tab() {
    let mut s = web();
    s.handle(Input::Request(&Request::Seek { at_ms: T0 - 10_000 }), T0);
    let fx = s.handle(Input::Ops(&start_group("g1")), T0);
    assert!(matches!(fx[0], Effect::ChannelAvailable { .. }));
    assert_eq!(s.mode().name(), "replay");
    let fx = s.handle(Input::Request(&Request::Join(None)), T0);
    assert_eq!(
        fx[0],
        Effect::Replayer {
            room: "web-c1".into(),
            request: ControlRequest::Stop
        }
    );
    assert_eq!(s.mode().name(), "channel");
    // Seeking from a group replay is a private replay.
    s.handle(Input::Request(&Request::Seek { at_ms: T0 - 10_000 }), T0);
    assert_eq!(s.state(), ClientState::FollowingPrivateReplay);
    let fx = s.handle(Input::ReplayerFailed, T0);
    assert!(fx.contains(&Effect::Open(FeedSpec::Live)));
    assert_eq!(s.state(), ClientState::FollowingLivestream);
    // A headless live player cannot seek.
    let mut h = live();
    let fx = h.handle(Input::Request(&Request::Seek { at_ms: T0 }), T0 + 1);
    assert!(matches!(fx.last(), Some(Effect::Reply(Err(_)))));
}
