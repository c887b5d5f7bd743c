//! Issue 5, acceptance 2 (user/password part): a server running the deploy/ accounts
//! file; each program's own code path works with its own user and inbox prefix, and each
//! user is held to its permissions — the producer cannot read telemetry or delete a
//! stream, the receiver and the console cannot publish telemetry, wrong credentials are
//! refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tspi_bus::{connect, ensure_stream, NatsArgs, StreamArgs, StreamSpec};
use tspi_core::units::UnitSystem;
use tspi_core::{Datagram, DisplaySetting, GeocentricRaw, Payload, StreamPrefix, TelemetryRecord};
use tspi_receiver::{Deliver, ReceiverMetrics, ReceiverOptions};
use tspi_test_support::{workspace_root, NatsServer};

const USERS: [&str; 8] = [
    "producer",
    "generator",
    "receiver",
    "archiver",
    "player",
    "console",
    "replayer",
    "admin",
];

fn args(url: &str, user: &str, password: &str) -> NatsArgs {
    let mut a = NatsArgs::for_urls(&[url]);
    a.user = Some(user.into());
    a.password = Some(password.into());
    a.inbox_prefix = format!("_INBOX_{user}");
    a.connect_timeout = Duration::from_secs(3);
    a
}

async fn as_user(url: &str, user: &str) -> async_nats::Client {
    connect(&args(url, user, &format!("pw-{user}")), user)
        .await
        .unwrap_or_else(|e| panic!("{user}: {e}"))
}

fn record(i: u32) -> (String, String, bytes::Bytes) {
    let d = Datagram {
        sensor_id: 5,
        day: 100,
        time_ticks: i * 200,
        status: 0xFF,
        status_flags: 0,
        payload: Payload::Geocentric(GeocentricRaw::default()),
    };
    let rec = TelemetryRecord::from_datagram(&d, tspi_runtime::now_epoch_ms());
    (
        StreamPrefix::default().subject(d.kind(), 5),
        tspi_core::msg_id(&d),
        rec.to_cbor().into(),
    )
}

/// A context that gives up quickly: a denied request never gets an answer.
fn impatient(client: &async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_millis(1500))
        .build(client.clone())
}

/// Whether publishing telemetry as this client is refused (no ack, nothing stored).
async fn telemetry_refused(client: &async_nats::Client, i: u32) -> bool {
    let (subject, id, payload) = record(i);
    let m = jetstream::message::PublishMessage::build()
        .payload(payload)
        .message_id(id);
    let js = impatient(client);
    let attempt = async {
        js.send_publish(subject, m)
            .await?
            .await
            .map_err(anyhow::Error::from)
    };
    !matches!(
        tokio::time::timeout(Duration::from_secs(6), attempt).await,
        Ok(Ok(_))
    )
}

/// A server with the deploy accounts file (passwords `pw-<user>`), JetStream ready;
/// returns it with an admin client.
async fn deploy_server() -> (NatsServer, String, async_nats::Client, jetstream::Context) {
    let accounts = workspace_root().join("deploy/nats/accounts.conf");
    let mut extra = String::new();
    for u in USERS {
        extra.push_str(&format!("{}_PASSWORD: \"pw-{u}\"\n", u.to_uppercase()));
    }
    // nats-server resolves `include` relative to the including file: inline the file.
    extra.push_str(&std::fs::read_to_string(&accounts).unwrap());
    let nats = NatsServer::start_with_config(&extra);
    let url = nats.url();
    let admin = as_user(&url, "admin").await;
    let admin_js = jetstream::new(admin.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin_js.query_account().await.is_err() {
        assert!(Instant::now() < deadline, "JetStream not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (nats, url, admin, admin_js)
}

async fn count(js: &jetstream::Context) -> u64 {
    js.get_stream("TSPI")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_permissions_hold() {
    let (_nats, url, admin, admin_js) = deploy_server().await;

    // Wrong credentials are refused.
    let err = connect(&args(&url, "producer", "wrong"), "t")
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("authorization"),
        "{err}"
    );
    let err = connect(&NatsArgs::for_urls(&[url.as_str()]), "t")
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("authorization"),
        "{err}"
    );

    // Producer: creates TSPI and publishes telemetry (the publisher's own ack inbox).
    let producer = as_user(&url, "producer").await;
    let producer_js = jetstream::new(producer.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&producer, &producer_js, &spec).await.unwrap();
    for i in 0..10 {
        let (subject, id, payload) = record(i);
        let m = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(id);
        producer_js
            .send_publish(subject, m)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    assert_eq!(count(&admin_js).await, 10);
    // … but cannot read telemetry …
    let mut snoop = producer.subscribe("tspi.geocentric.>").await.unwrap();
    producer.flush().await.unwrap();
    admin
        .publish("tspi.geocentric.5", "x".into())
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), snoop.next())
            .await
            .is_err()
            || snoop.next().await.is_none(),
        "producer read telemetry"
    );
    // … nor delete the stream, nor publish commands.
    assert!(impatient(&producer).delete_stream("TSPI").await.is_err());
    assert!(
        admin_js.get_stream("TSPI").await.is_ok(),
        "stream still there"
    );
    let cmd = tspi_console::send_command(
        &impatient(&producer),
        "p",
        DisplaySetting::Units(UnitSystem::Imperial),
    )
    .await;
    assert!(cmd.is_err(), "producer sent a command");

    // Receiver: reads through its consumer; cannot publish telemetry.
    let receiver = as_user(&url, "receiver").await;
    let receiver_js = jetstream::new(receiver.clone());
    let mut out = Vec::new();
    let summary = tspi_receiver::run(
        ReceiverOptions {
            stream: "TSPI".into(),
            durable: Some("perm".into()),
            subjects: StreamPrefix::default().telemetry_wildcards().to_vec(),
            deliver: Deliver::All,
            json: true,
            count: Some(10),
            duration: Some(Duration::from_secs(20)),
            batch: 64,
            ack_wait: Duration::from_secs(30),
        },
        receiver_js.clone(),
        &mut out,
        ReceiverMetrics::new(&mut Registry::default()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(summary.written, 10);
    let before = count(&admin_js).await;
    assert!(
        telemetry_refused(&receiver, 100).await,
        "receiver published telemetry"
    );
    assert_eq!(
        count(&admin_js).await,
        before,
        "nothing stored for the receiver"
    );

    // Console: commands and tags; not telemetry.
    let console = as_user(&url, "console").await;
    let console_js = jetstream::new(console.clone());
    tspi_console::send_command(
        &console_js,
        "ops",
        DisplaySetting::Units(UnitSystem::Imperial),
    )
    .await
    .unwrap();
    tspi_console::send_tag(&console_js, "perm check", None, "ops", None)
        .await
        .unwrap();
    ensure_stream(&console, &console_js, &StreamSpec::ops(true))
        .await
        .unwrap();
    assert!(
        telemetry_refused(&console, 101).await,
        "console published telemetry"
    );
    assert_eq!(
        count(&admin_js).await,
        before + 3,
        "1 command + tag create/broadcast, no frame"
    );

    // Player: follows live and sends heartbeats with its own rights.
    let player = as_user(&url, "player").await;
    let stop = CancellationToken::new();
    let options = tspi_player::PlayerOptions {
        source: tspi_player::Source::Live,
        room: None,
        stream: "TSPI".into(),
        prefix: StreamPrefix::default(),
        rate_hz: 0.0,
        duration: Some(Duration::from_secs(3)),
        exit_on_idle: None,
        json: true,
        metrics_interval: Duration::from_secs(60),
        client_id: "perm-player".into(),
        operator: None,
        stay_live: false,
        control_stdin: false,
        rewind_window: Duration::ZERO,
        clock: tspi_player::Clock::Receive,
    };
    let player_task = tokio::spawn(tspi_player::run(
        options,
        player.clone(),
        Vec::new(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(800)).await;
    for i in 200..203 {
        let (subject, id, payload) = record(i);
        let m = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(id);
        producer_js
            .send_publish(subject, m)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let counts = player_task.await.unwrap().unwrap();
    assert_eq!(counts.frames_in, 3, "{counts:?}");
    let roster = tspi_console::roster(
        &console_js,
        Duration::from_secs(60),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(
        roster.iter().any(|r| r.client_id == "perm-player"),
        "player heartbeat stored: {roster:?}"
    );
    // A player cannot send commands.
    let player_js = impatient(&player);
    assert!(
        tspi_console::send_command(&player_js, "x", DisplaySetting::MarkerColor("red".into()))
            .await
            .is_err()
    );
}

/// The rest of the programs with their deploy users: the generator publishing straight to
/// JetStream, the archiver (durable consumer, acks) into PostgreSQL, the replayer serving a
/// room (its own PLAYOUT stream, replies to requests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generator_archiver_and_replayer_work_with_their_users() {
    let (_nats, url, _admin, admin_js) = deploy_server().await;

    // Generator: creates TSPI and publishes a small fleet for 1 s with its own user.
    let generator = as_user(&url, "generator").await;
    let gjs = jetstream::new(generator.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&generator, &gjs, &spec).await.unwrap();
    let options = tspi_generator::GeneratorOptions {
        fleet: tspi_generator::FleetOptions {
            count: 5,
            sensor_base: 10_000,
            style: tspi_generator::Style::Normal,
            kind: tspi_generator::Kind::Mixed,
            min_speed_mps: 100.0,
            max_speed_mps: 200.0,
            origin_lat_deg: 34.9,
            origin_lon_deg: -117.9,
            origin_alt_m: 700.0,
            seed: 1,
        },
        rate_hz: 20.0,
        duration: Some(Duration::from_secs(1)),
        day: Some(300),
        duplicate_every: None,
        garbage_every: None,
        metrics_interval: None,
        prefix: StreamPrefix::default(),
    };
    let sinks = tspi_generator::Sinks {
        udp: None,
        jetstream: Some((generator.clone(), tspi_bus::PublisherOptions::default())),
    };
    let summary = tspi_generator::run(options, sinks, |_| {}, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(count(&admin_js).await, summary.valid);

    // Archiver: its durable consumer and acks, into a real PostgreSQL.
    let pg = tspi_test_support::PgServer::start_primary();
    let db = pg.create_database("perm");
    let pool = tspi_store::pool(&pg.url(&db), 3).unwrap();
    tspi_store::migrate(&mut pool.get().await.unwrap(), &Default::default())
        .await
        .unwrap();
    let archiver = as_user(&url, "archiver").await;
    let stop = CancellationToken::new();
    let metrics = tspi_archiver::ArchiverMetrics::new(&mut Registry::default());
    let task = tokio::spawn(tspi_archiver::run(
        tspi_archiver::ArchiverOptions::default(),
        jetstream::new(archiver.clone()),
        pool.clone(),
        metrics.clone(),
        stop.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.rows_written.get() < summary.valid {
        assert!(Instant::now() < deadline, "archiver user could not archive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    let mut consumer = admin_js
        .get_stream("TSPI")
        .await
        .unwrap()
        .get_consumer::<jetstream::consumer::pull::Config>("archiver")
        .await
        .unwrap();
    assert_eq!(
        consumer.info().await.unwrap().num_ack_pending,
        0,
        "its acks were accepted"
    );

    // Replayer: creates PLAYOUT, answers a room's requests, plays into the room.
    let replayer = as_user(&url, "replayer").await;
    let rjs = jetstream::new(replayer.clone());
    ensure_stream(
        &replayer,
        &rjs,
        &StreamSpec::playout("PLAYOUT", Duration::from_secs(3600), true),
    )
    .await
    .unwrap();
    let ctx = tspi_replayer::session::ReplayContext {
        handle: tokio::runtime::Handle::current(),
        pool,
        client: replayer.clone(),
    };
    let stop = CancellationToken::new();
    let server = tokio::spawn(tspi_replayer::serve(ctx, "TSPI".into(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let player = as_user(&url, "player").await;
    let mut playout = player.subscribe("player.perm.playout.>").await.unwrap();
    player.flush().await.unwrap();
    let now = tspi_runtime::now_epoch_ms();
    let request = serde_json::json!({"op": "play", "speed": 100,
        "start": tspi_core::rfc3339::format_utc_millis(now - 60_000),
        "end": tspi_core::rfc3339::format_utc_millis(now + 60_000)});
    let reply = player
        .request(
            "player.perm.ctrl",
            serde_json::to_vec(&request).unwrap().into(),
        )
        .await
        .unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    let first = tokio::time::timeout(Duration::from_secs(10), playout.next())
        .await
        .unwrap()
        .unwrap();
    assert!(first
        .subject
        .as_str()
        .starts_with("player.perm.playout.tspi."));
    // The replayer cannot publish telemetry itself.
    assert!(
        telemetry_refused(&replayer, 7).await,
        "replayer published telemetry"
    );
    stop.cancel();
    server.await.unwrap().unwrap();
}
