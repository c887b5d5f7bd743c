//! Issue 5, acceptance 2 (user/password and TLS): a three-node cluster made from the
//! deploy node config (`deploy/nats/node.conf`, its accounts include, `sync_interval:
//! always`) with mutual TLS from test-made certificates. Each program works with its own
//! user and inbox prefix — as a library and as its binary — and each user is held to its
//! permissions: the producer cannot read telemetry or delete a stream, the receiver and
//! the console cannot publish telemetry; wrong credentials, no client certificate and no
//! TLS are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tspi_bus::{connect, ensure_stream, NatsArgs, StreamArgs, StreamSpec};
use tspi_core::units::UnitSystem;
use tspi_core::{Datagram, DisplaySetting, GeocentricRaw, Payload, StreamPrefix, TelemetryRecord};
use tspi_receiver::{Deliver, ReceiverMetrics, ReceiverOptions};
use tspi_test_support::{workspace_root, NatsCluster};

/// The deploy cluster: three nodes from deploy/nats/node.conf, passwords `pw-<user>`
/// (through the environment, as deploy/ passes them), mutual TLS.
struct Deploy {
    _cluster: NatsCluster,
    urls: Vec<String>,
    pki: common::Pki,
    _certs: tempfile::TempDir,
}

impl Deploy {
    async fn start() -> (Deploy, async_nats::Client, jetstream::Context) {
        let certs = tempfile::tempdir().unwrap();
        let pki = common::pki(certs.path());
        let env: Vec<(String, String)> = common::deploy_users()
            .iter()
            .map(|u| {
                (
                    format!("{}_PASSWORD", u.name.to_uppercase().replace('-', "_")),
                    format!("pw-{}", u.name),
                )
            })
            .collect();
        let cluster = NatsCluster::start_from_template(
            3,
            &workspace_root().join("deploy/nats/node.conf"),
            &pki.server_block(),
            &env,
        );
        let deploy = Deploy {
            urls: cluster.urls(),
            _cluster: cluster,
            pki,
            _certs: certs,
        };
        let admin = deploy.as_user("admin").await;
        let admin_js = jetstream::new(admin.clone());
        let reached = tspi_test_support::wait_until(Duration::from_secs(60), || async {
            admin_js.query_account().await.is_ok()
        })
        .await;
        assert!(reached.is_some(), "JetStream not ready");
        (deploy, admin, admin_js)
    }

    /// Connection settings of `user` with `password`, over mutual TLS.
    fn args(&self, user: &str, password: &str) -> NatsArgs {
        let mut a = NatsArgs::for_urls(&self.urls);
        a.user = Some(user.into());
        a.password = Some(password.into());
        a.inbox_prefix = format!("_INBOX_{user}");
        a.connect_timeout = Duration::from_secs(3);
        self.pki.apply(&mut a);
        a
    }

    fn user_args(&self, user: &str) -> NatsArgs {
        self.args(user, &format!("pw-{user}"))
    }

    async fn as_user(&self, user: &str) -> async_nats::Client {
        connect(&self.user_args(user), user)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"))
    }
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

/// Publish telemetry records `range` and wait for each ack (retried while the new
/// stream's interest spreads through the cluster).
async fn publish_records(js: &jetstream::Context, range: std::ops::Range<u32>) {
    for i in range {
        let (subject, id, payload) = record(i);
        let m = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(id);
        tspi_test_support::publish_acked(js, subject, m, Duration::from_secs(30)).await;
    }
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

async fn count(js: &jetstream::Context) -> u64 {
    tspi_test_support::stream_info(js, "TSPI")
        .await
        .state
        .messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_permissions_hold() {
    let (d, admin, admin_js) = Deploy::start().await;

    // Wrong credentials are refused.
    let err = connect(&d.args("producer", "wrong"), "t")
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("authorization"),
        "{err}"
    );
    let mut anonymous = NatsArgs::for_urls(&d.urls);
    d.pki.apply(&mut anonymous);
    let err = connect(&anonymous, "t").await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("authorization"),
        "{err}"
    );
    // Mutual TLS: no client certificate, or no TLS at all, is refused even with the
    // right password.
    let mut no_cert = d.user_args("producer");
    no_cert.tls_cert = None;
    no_cert.tls_key = None;
    assert!(
        connect(&no_cert, "t").await.is_err(),
        "no client certificate"
    );
    let mut plain = d.user_args("producer");
    plain.tls_ca = None;
    plain.tls_cert = None;
    plain.tls_key = None;
    assert!(connect(&plain, "t").await.is_err(), "no TLS");

    // Producer: creates TSPI and publishes telemetry (the publisher's own ack inbox).
    let producer = d.as_user("producer").await;
    let producer_js = jetstream::new(producer.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&producer, &producer_js, &spec).await.unwrap();
    publish_records(&producer_js, 0..10).await;
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
    let receiver = d.as_user("receiver").await;
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
    let console = d.as_user("console").await;
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
    let player = d.as_user("player").await;
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
    let out = tspi_test_support::Captured::default();
    let player_task = tokio::spawn(tspi_player::run(
        options,
        player.clone(),
        out.clone(),
        stop.clone(),
    ));
    // Its first line (state) says it is subscribed.
    let ready =
        tspi_test_support::wait_until(Duration::from_secs(30), || async { out.line_count() > 0 })
            .await;
    assert!(ready.is_some(), "the player printed no state line");
    publish_records(&producer_js, 200..203).await;
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
    // A player cannot send commands; it may tag (the web display's operators do), and
    // what it tags is stored.
    let player_js = impatient(&player);
    assert!(
        tspi_console::send_command(&player_js, "x", DisplaySetting::MarkerColor("red".into()))
            .await
            .is_err()
    );
    let (_, sent) = tspi_console::send_tag(
        &jetstream::new(player.clone()),
        "from a display",
        None,
        "ops",
        None,
    )
    .await
    .expect("the player's user may publish tags");
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|s| s.stream == "TSPI" && !s.duplicate));
}

/// The rest of the programs with their deploy users: the generator publishing straight to
/// JetStream, the archiver (durable consumer, acks) into PostgreSQL, the replayer serving a
/// room (its own PLAYOUT stream, replies to requests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generator_archiver_and_replayer_work_with_their_users() {
    let (d, _admin, admin_js) = Deploy::start().await;

    // Generator: creates TSPI and publishes a small fleet for 1 s with its own user.
    let generator = d.as_user("generator").await;
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
        faults: Default::default(),
        metrics_interval: None,
        script: None,
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
    let archiver = d.as_user("archiver").await;
    let stop = CancellationToken::new();
    let metrics = tspi_archiver::ArchiverMetrics::new(&mut Registry::default());
    let task = tokio::spawn(tspi_archiver::run(
        tspi_archiver::ArchiverOptions::default(),
        jetstream::new(archiver.clone()),
        pool.clone(),
        metrics.clone(),
        stop.clone(),
    ));
    let reached = tspi_test_support::wait_until(Duration::from_secs(30), || async {
        metrics.rows_written.get() >= summary.valid
    })
    .await;
    assert!(reached.is_some(), "archiver user could not archive");
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(
        tspi_test_support::consumer_info(&admin_js, "TSPI", "archiver")
            .await
            .num_ack_pending,
        0,
        "its acks were accepted"
    );

    // Replayer: creates PLAYOUT, answers a room's requests, plays into the room.
    let replayer = d.as_user("replayer").await;
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
    let player = d.as_user("player").await;
    let serving = tspi_test_support::wait_until(Duration::from_secs(30), || async {
        let asked = player.request("player.perm.ctrl", "{}".into());
        tokio::time::timeout(Duration::from_secs(2), asked)
            .await
            .is_ok_and(|r| r.is_ok())
    })
    .await;
    assert!(serving.is_some(), "replayer serve does not answer");
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
    // The segment's begin marker, then the archive's messages.
    let begin = tokio::time::timeout(Duration::from_secs(10), playout.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(begin.subject.as_str(), "player.perm.playout.replay.begin");
    let first = loop {
        let m = tokio::time::timeout(Duration::from_secs(10), playout.next())
            .await
            .unwrap()
            .unwrap();
        if !m
            .subject
            .as_str()
            .starts_with("player.perm.playout.replay.")
        {
            break m;
        }
    };
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

/// Every program's binary, each as its own deploy user over mutual TLS, end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_program_binary_runs_as_its_user_over_tls() {
    let (d, _admin, admin_js) = Deploy::start().await;
    let auth = |user: &str| d.user_args(user);
    let programs = common::Programs::new(&auth);
    common::every_program_end_to_end(&programs, &admin_js).await;
}
