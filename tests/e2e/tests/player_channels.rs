//! Group replays (issue 4, acceptance 3): `console replay start <time>` switches players
//! on the livestream to the replay channel, paced by the server; a player in a private
//! replay and a player with the live override stay; `clients` shows each transition;
//! `channels` and the directory list the channel; `replay stop` brings players back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod player;

use std::time::{Duration, Instant};

use futures::StreamExt;
use player::{frame, Player};
use tspi_bus::{ensure_stream, StreamArgs, StreamSpec};
use tspi_core::ops::{ChannelInfo, ChannelKind, ClientState};
use tspi_core::StreamPrefix;
use tspi_test_support::NatsServer;

fn no_event(p: &Player, kind: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while let Ok(v) = p
        .lines
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        assert_ne!(v["event"], kind, "unexpected {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_replay_moves_livestream_players_and_back() {
    let nats = NatsServer::start().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&client, &js, &spec).await.unwrap();
    ensure_stream(&client, &js, &StreamSpec::ops(true))
        .await
        .unwrap();

    // Two seconds of history at 50 Hz.
    let start = tspi_console::now_rfc3339();
    let t0 = Instant::now();
    for i in 0..100u32 {
        tokio::time::sleep_until((t0 + Duration::from_millis(20 * u64::from(i))).into()).await;
        frame(&js, i).await;
    }
    let a = Player::start(&nats.url(), "live-a");
    let mut d = Player::start_with(&nats.url(), "toggle-d", &["--control-stdin"]);
    let b = Player::start_with(
        &nats.url(),
        "private-b",
        &["--source", "historical", "--room", "priv"],
    );
    let c = Player::start_with(&nats.url(), "override-c", &["--stay-live"]);
    // The state line: each player's feed and control subscription are in place.
    for p in [&a, &b, &c, &d] {
        p.next("state");
    }

    let channel = tspi_console::start_group_replay(
        &client,
        &js,
        &start,
        tspi_console::replay_start(&start, None).unwrap(),
        Some("Sortie 7 rerun"),
        "TSPI",
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    let ch = a.next("channel");
    assert_eq!(ch["state"], "FOLLOWING_GROUP_REPLAY");
    assert_eq!(ch["channel_id"], channel.channel_id);
    assert_eq!(
        ch["subject"],
        format!("tspi.channel.replay.{}", channel.channel_id)
    );
    // The server paces: 100 frames 20 ms apart take about 2 s.
    let first = a.next("frame");
    let started = Instant::now();
    let mut last = first;
    for _ in 1..100 {
        last = a.next("frame");
    }
    let took = started.elapsed().as_secs_f64();
    assert!(
        (1.6..=2.6).contains(&took),
        "replayed 2 s of frames in {took:.2} s"
    );
    assert!(last["time_s"].as_f64().unwrap() > 1.9);
    // D joined too, then goes back to live ("back to live" override) and stays there.
    assert_eq!(d.next("channel")["state"], "FOLLOWING_GROUP_REPLAY");
    d.send(&serde_json::json!({"op": "live"}));
    let back_live = d.next("channel");
    assert_eq!(back_live["state"], "LIVE_OVERRIDE");
    assert_eq!(back_live["channel_id"], "livestream");
    let avail = c.next("channel_available");
    assert_eq!(avail["channel_id"], channel.channel_id);
    no_event(&b, "channel", Duration::from_millis(300));

    let list = tspi_console::channels(&js, "TSPI").await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0], ChannelInfo::livestream(), "livestream first");
    assert_eq!(list[1].kind, ChannelKind::GroupReplay);
    assert_eq!(list[1].display_name, "Sortie 7 rerun");
    let stop_dir = tokio_util::sync::CancellationToken::new();
    let dir = tokio::spawn(tspi_console::serve_directory(
        client.clone(),
        js.clone(),
        "TSPI".into(),
        stop_dir.clone(),
    ));
    let answering = || {
        let asked = client.request(tspi_core::ops::CHANNEL_LIST_SUBJECT, "".into());
        async move { asked.await.is_ok() }
    };
    tspi_test_support::wait_until(Duration::from_secs(15), answering)
        .await
        .expect("the directory answers");
    let reply = client
        .request(tspi_core::ops::CHANNEL_LIST_SUBJECT, "".into())
        .await
        .unwrap();
    let from_dir: Vec<ChannelInfo> = tspi_core::ops::from_bytes(&reply.payload).unwrap();
    assert_eq!(from_dir, list, "directory answers with the same list");

    let roster = tspi_console::roster(&js, Duration::from_secs(600), Duration::from_secs(15))
        .await
        .unwrap();
    let row = |id: &str| {
        roster
            .iter()
            .find(|r| r.client_id == id)
            .unwrap_or_else(|| panic!("{id} in {roster:?}"))
            .clone()
    };
    assert_eq!(row("live-a").state, ClientState::FollowingGroupReplay);
    assert_eq!(
        row("live-a").transitions.len(),
        2,
        "{:?}",
        row("live-a").transitions
    );
    assert_eq!(row("private-b").state, ClientState::FollowingPrivateReplay);
    assert_eq!(row("override-c").state, ClientState::LiveOverride);
    assert_eq!(row("toggle-d").state, ClientState::LiveOverride);
    d.send(&serde_json::json!({"op": "follow"}));
    assert_eq!(d.next("channel")["state"], "FOLLOWING_LIVESTREAM");

    assert!(
        tspi_console::stop_group_replay(&client, &js, Some("nope"), "TSPI")
            .await
            .is_err()
    );
    let stopped = tspi_console::stop_group_replay(&client, &js, None, "TSPI")
        .await
        .unwrap();
    assert_eq!(stopped, vec![channel.channel_id.clone()]);
    let back = a.next("channel");
    // The channel line comes after the live feed is open again.
    assert_eq!(back["state"], "FOLLOWING_LIVESTREAM");
    frame(&js, 1000).await;
    let live = a.next("frame");
    assert!(
        live["time_s"].as_f64().unwrap() > 19.0,
        "a live frame again: {live}"
    );
    let roster = tspi_console::roster(&js, Duration::from_secs(600), Duration::from_secs(15))
        .await
        .unwrap();
    let a_row = roster.iter().find(|r| r.client_id == "live-a").unwrap();
    assert_eq!(a_row.state, ClientState::FollowingLivestream);
    assert_eq!(a_row.transitions.len(), 3, "{:?}", a_row.transitions);
    assert_eq!(tspi_console::channels(&js, "TSPI").await.unwrap().len(), 1);
    stop_dir.cancel();
    dir.await.unwrap().unwrap();
    let mut sub = client.subscribe("tspi.channel.replay.>").await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.next())
            .await
            .is_err(),
        "the consumer is gone"
    );
}
