//! 1 MiB of hostile bytes on every subject the kit reads: telemetry, display commands,
//! tags (all in `TSPI`), operations control and heartbeats, the live channel, a room's
//! playout and the replayer's control requests. Four kinds each: random bytes, CBOR
//! nested a million levels deep, a CBOR byte string claiming 2^64-1 bytes, and a
//! well-formed CBOR map of the wrong shape holding a 1 MiB text. Every reader counts a
//! skip (or answers an error), none dies, none keeps the memory, and a normal datagram
//! sent afterwards goes through everything.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(clippy::await_holding_lock)] // the serial guard is held across awaits on purpose

mod chaos;
mod common;

use std::time::Duration;

use async_nats::jetstream;
use chaos::{metric, peak_rss_kb, scrape, Rig, RigOptions};
use tspi_core::{Datagram, GeocentricRaw, Payload};
use tspi_test_support::{free_port, wait_until, NatsServer};

const MIB: usize = 1 << 20;

/// The four hostile payloads, each exactly 1 MiB.
fn hostile() -> Vec<(&'static str, Vec<u8>)> {
    let mut random = Vec::with_capacity(MIB);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while random.len() < MIB {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        random.extend_from_slice(&x.to_le_bytes());
    }
    random.truncate(MIB);
    // Arrays of one element, a million deep.
    let mut deep = vec![0x81u8; MIB - 1];
    deep.push(0x00);
    // A byte string whose length prefix says 2^64-1 bytes.
    let mut huge_prefix = vec![0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    huge_prefix.resize(MIB, 0);
    // {"x": <text>}: well-formed, the wrong shape for every subject.
    let text_len = MIB - 8;
    let mut wrong_shape = vec![0xa1, 0x61, b'x', 0x7a];
    wrong_shape.extend_from_slice(&(text_len as u32).to_be_bytes());
    wrong_shape.resize(MIB, b'a');
    vec![
        ("random bytes", random),
        ("nested 1 M deep", deep),
        ("length 2^64-1", huge_prefix),
        ("wrong shape, 1 MiB text", wrong_shape),
    ]
}

/// Subjects of `TSPI`, published through JetStream.
const STREAM_SUBJECTS: [&str; 8] = [
    "tspi.geocentric.7",
    "tspi.spherical.7",
    "tspi.cmd.display.units",
    "tspi.cmd.display.marker_color",
    "tags.create",
    "tags.update",
    "tags.delete",
    "tags.broadcast",
];

/// Core NATS subjects the kit subscribes to.
const CORE_SUBJECTS: [&str; 6] = [
    "tspi.ops.ctrl",
    "tspi.ops.status",
    "tspi.channel.livestream",
    "player.big.playout.tspi.geocentric.7",
    "player.big.playout.replay.begin",
    "tspi.channel.list.req",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_of_hostile_bytes_on_every_subject_is_a_counted_skip() {
    chaos::init_logging();
    let _serial = chaos::serial();
    // The server's default max_payload is 1 MB: raise it so that 1 MiB plus headers fits.
    let nats = NatsServer::start_with_config("max_payload: 4MB\n");
    tspi_test_support::wait_jetstream(&nats.url(), Duration::from_secs(20)).await;
    let urls = vec![nats.url()];
    let mut rig = Rig::start(&urls, RigOptions::default()).await;

    // A headless live player, a web display and the replayer's service.
    let mut player = rig.programs.start(
        "player",
        "player",
        &[
            "--no-create-stream",
            "--client-id",
            "big",
            "--metrics-interval",
            "200ms",
        ],
    );
    player.first_line(Duration::from_secs(30)).await;
    let web_metrics = free_port();
    let web_metrics_addr = format!("127.0.0.1:{web_metrics}");
    let mut web = rig.programs.start(
        "player-web",
        "player",
        &[
            "--web",
            "127.0.0.1:0",
            "--no-create-stream",
            "--metrics-addr",
            &web_metrics_addr,
        ],
    );
    web.first_line(Duration::from_secs(30)).await;
    let db_url = rig.pg.url(&rig.db);
    let mut replayer_cmd = rig
        .programs
        .command("replayer", "replayer", &["serve"], &[]);
    replayer_cmd.args(["--database-url", &db_url]);
    let mut replayer = rig.programs.spawn("replayer", replayer_cmd);
    let client = tspi_e2e::client(&urls).await;
    let answered = wait_until(Duration::from_secs(30), || async {
        tokio::time::timeout(
            Duration::from_secs(1),
            client.request("player.probe.ctrl", r#"{"op":"status"}"#.into()),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    })
    .await;
    assert!(answered.is_some(), "replayer up: {}", replayer.stderr());

    let js = jetstream::new(client.clone());
    let payloads = hostile();
    for subject in STREAM_SUBJECTS {
        for (i, (_, body)) in payloads.iter().enumerate() {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("big-{subject}-{i}").as_str());
            js.publish_with_headers(subject, headers, body.clone().into())
                .await
                .unwrap()
                .await
                .unwrap_or_else(|e| panic!("{subject}: 1 MiB stored: {e}"));
        }
    }
    for subject in CORE_SUBJECTS {
        for (_, body) in &payloads {
            client.publish(subject, body.clone().into()).await.unwrap();
        }
    }
    // The replayer answers every hostile request with an error, not silence.
    for (kind, body) in &payloads {
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            client.request(
                tspi_core::playout::control_subject("big"),
                body.clone().into(),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("replayer answers a 1 MiB request ({kind})"))
        .unwrap();
        let answer = serde_json::from_slice::<serde_json::Value>(&reply.payload)
            .ok()
            .or_else(|| tspi_core::json::cbor_to_json(&reply.payload).ok())
            .unwrap_or_else(|| panic!("replayer reply to {kind} is JSON or CBOR"));
        assert_eq!(answer["ok"], false, "{kind}: {answer}");
    }
    client.flush().await.unwrap();

    // Then one good datagram through the producer.
    let datagram = Datagram {
        sensor_id: 9,
        day: 100,
        time_ticks: 1,
        status: 0,
        status_flags: 0,
        payload: Payload::Geocentric(GeocentricRaw::default()),
    };
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(&datagram.encode(), ("127.0.0.1", rig.udp_port))
        .unwrap();

    let telemetry = 2 * payloads.len() as u64;
    let in_stream = (STREAM_SUBJECTS.len() * payloads.len()) as u64;
    let through = wait_until(Duration::from_secs(60), || async {
        let receiver = scrape(rig.receiver_metrics);
        let archiver = scrape(rig.archiver_metrics);
        metric(&receiver, "tspi_receiver_messages_invalid_total") as u64 == telemetry
            && metric(&receiver, "tspi_receiver_messages_written_total") as u64 == 1
            && metric(&archiver, "tspi_archiver_rejects_total") as u64 == in_stream
            && metric(&archiver, "tspi_archiver_rows_written_total") as u64 == in_stream + 1
    })
    .await;
    let receiver_metrics = scrape(rig.receiver_metrics);
    let archiver_metrics = scrape(rig.archiver_metrics);
    assert!(
        through.is_some(),
        "receiver counts {telemetry} invalid and writes the good one; archiver stores \
         {in_stream} rejects and the good one:\nreceiver:\n{receiver_metrics}\narchiver:\n\
         {archiver_metrics}"
    );
    assert_eq!(
        rig.receiver_output(),
        1,
        "the receiver printed the good record only"
    );

    // The headless player saw the good frame and counted every hostile message it reads.
    let player_counts = wait_until(Duration::from_secs(30), || async {
        last_counts(&player).is_some_and(|c| c["frames_in"].as_u64() >= Some(1))
    })
    .await;
    let counts = last_counts(&player).unwrap_or_default();
    assert!(player_counts.is_some(), "player counts: {counts}");
    let player_invalid = counts["invalid"].as_u64().unwrap_or(0);
    // The stream's and tspi.ops.ctrl's; heartbeats and channels of other displays are
    // not its to read.
    let player_expected = in_stream + payloads.len() as u64;
    assert_eq!(
        player_invalid, player_expected,
        "the player counted the hostile stream and control messages: {counts}"
    );
    let web_expected = player_expected;
    let web_invalid = wait_until(Duration::from_secs(30), || async {
        metric(
            &scrape(web_metrics),
            "tspi_player_web_invalid_messages_total",
        ) as u64
            == web_expected
    })
    .await;
    assert!(
        web_invalid.is_some(),
        "the web display counted {web_expected} malformed messages:\n{}",
        scrape(web_metrics)
    );

    let web_answers = wait_until(Duration::from_secs(10), || async {
        !scrape(web_metrics).is_empty()
    })
    .await;
    assert!(web_answers.is_some(), "the web display still answers");

    let mut peaks = Vec::new();
    for (name, running) in [
        ("producer", &mut rig.producer),
        ("archiver", &mut rig.archiver),
        ("receiver", &mut rig.receiver),
        ("player", &mut player),
        ("player --web", &mut web),
        ("replayer", &mut replayer),
    ] {
        assert!(
            running.is_running(),
            "{name} survived: {}",
            running.stderr()
        );
        let peak = peak_rss_kb(running.pid()) / 1024;
        assert!(peak < 512, "{name}: peak RSS {peak} MiB");
        peaks.push(format!("{name} {peak} MiB"));
    }
    chaos::report(
        "big-messages",
        &format!(
            "{} kinds x ({} stream + {} core subjects + replayer control), 1 MiB each: \
             receiver {} invalid, archiver {} rejects (stored raw), player {} invalid, web \
             display {} invalid, replayer answered every one with an error; peak RSS: {}",
            payloads.len(),
            STREAM_SUBJECTS.len(),
            CORE_SUBJECTS.len(),
            metric(&receiver_metrics, "tspi_receiver_messages_invalid_total"),
            metric(&archiver_metrics, "tspi_archiver_rejects_total"),
            player_invalid,
            web_expected,
            peaks.join(", ")
        ),
    );
}

/// The counts of the headless player's last `metrics` (or `end`) line.
fn last_counts(player: &common::Running) -> Option<serde_json::Value> {
    player
        .stdout()
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "metrics" || v["event"] == "end")
        .map(|v| v["counts"].clone())
}
