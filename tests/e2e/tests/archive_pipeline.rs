//! Issue 3, acceptance 1 and 5: generator → UDP → producer → R3 cluster → archiver
//! (the real binary) → PostgreSQL, with commands, tags and bus garbage alongside the
//! telemetry. During the run the archiver is SIGKILLed twice and restarted, PostgreSQL is
//! killed and restarted, and one NATS node is killed. Afterwards the archive holds exactly
//! one row per stream message: nothing lost, nothing twice.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use tokio_util::sync::CancellationToken;
use tspi_core::units::UnitSystem;
use tspi_core::{DisplayCommand, DisplaySetting, StreamPrefix, Tag, TagStatus};
use tspi_e2e::{stream_count, RunningProducer};
use tspi_generator::{FleetOptions, GeneratorOptions, Kind, Sinks, Style};
use tspi_test_support::{free_port, sigterm, NatsCluster, PgServer};

const TELEMETRY: u64 = 25_000;
const COMMANDS: u64 = 30;
const TAG_IDS: u64 = 5;
const TAG_STATES: u64 = 15;
const BUS_GARBAGE: u64 = 10;

struct Archiver {
    child: Child,
    metrics_port: u16,
}

fn spawn_archiver(urls: &[String], db_url: &str, log: &std::path::Path) -> Archiver {
    let metrics_port = free_port();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(tspi_test_support::workspace_bin("archiver"))
        .args(["--nats-server", &urls.join(","), "--database-url", db_url])
        .args([
            "--ack-wait",
            "3s",
            "--batch-max",
            "500",
            "--batch-wait",
            "50ms",
        ])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    Archiver {
        child,
        metrics_port,
    }
}

fn kill_9(a: &mut Archiver) {
    a.child.kill().unwrap(); // SIGKILL
    a.child.wait().unwrap();
}

async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok();
    out
}

/// Commands, tag states and garbage, spread over the run.
async fn operators(js: jetstream::Context, stop: CancellationToken) -> u64 {
    let mut sent = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(180));
    let (mut c, mut t, mut g) = (0u64, 0u64, 0u64);
    while !stop.is_cancelled() && (c < COMMANDS || t < TAG_STATES || g < BUS_GARBAGE) {
        tick.tick().await;
        let now = tspi_core::rfc3339::format_utc_millis(tspi_runtime::now_epoch_ms());
        let (subject, payload, id) = if c < COMMANDS && (c <= t * 2 || t >= TAG_STATES) {
            let setting = match c % 3 {
                0 => DisplaySetting::Units(UnitSystem::Imperial),
                1 => DisplaySetting::MarkerColor(format!("#{:06x}", c * 999)),
                _ => DisplaySetting::SessionMetadata {
                    name: "sortie".into(),
                    id: format!("S{c}"),
                },
            };
            let cmd = DisplayCommand::new(format!("cmd-{c}"), now, "ops".into(), setting).unwrap();
            c += 1;
            (cmd.subject(), cmd.to_cbor(), Some(cmd.cmd_id))
        } else if t < TAG_STATES {
            let subject = if t < TAG_IDS {
                "tags.create"
            } else {
                "tags.update"
            };
            let tag = Tag {
                id: format!("tag-{}", t % TAG_IDS),
                ts: now.clone(),
                label: format!("state {t}"),
                status: TagStatus::Active,
                creator: Some("ops".into()),
                notes: None,
                updated_ts: now.clone(),
                extra: None,
            };
            t += 1;
            let id = tag.msg_id(subject);
            (subject.to_owned(), tag.to_cbor(), Some(id))
        } else if g < BUS_GARBAGE {
            g += 1;
            (
                "tspi.geocentric.777".to_owned(),
                b"\x00not cbor at all".to_vec(),
                None,
            )
        } else {
            continue;
        };
        let mut m = jetstream::message::PublishMessage::build().payload(payload.into());
        if let Some(id) = id {
            m = m.message_id(id);
        }
        // Retried like every publisher here: a killed node can time one out.
        tspi_test_support::publish_acked(&js, subject, m, Duration::from_secs(60)).await;
        sent += 1;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_archive_through_archiver_database_and_node_kills() {
    let mut cluster = NatsCluster::start(3).await;
    let urls = cluster.urls();
    let mut pg = PgServer::start_primary();
    let db = pg.create_database("pipeline");
    let db_url = format!("{}?connect_timeout=2", pg.url(&db));
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("archiver.log");

    let producer = RunningProducer::start(&urls, 1024, Duration::from_secs(2)).await;
    let client = tspi_e2e::client(&urls).await;
    let js = jetstream::new(client.clone());
    let mut archiver = spawn_archiver(&urls, &db_url, &log);

    let stop_ops = CancellationToken::new();
    let ops = tokio::spawn(operators(js.clone(), stop_ops.clone()));
    let generator = {
        let target = producer.udp_addr;
        tokio::spawn(async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let options = GeneratorOptions {
                fleet: FleetOptions {
                    count: 50,
                    sensor_base: 10_000,
                    style: Style::Normal,
                    kind: Kind::Geocentric,
                    min_speed_mps: 100.0,
                    max_speed_mps: 250.0,
                    origin_lat_deg: 34.905,
                    origin_lon_deg: -117.884,
                    origin_alt_m: 700.0,
                    seed: 7,
                },
                rate_hz: 50.0,
                duration: Some(Duration::from_secs(10)),
                day: Some(201),
                duplicate_every: Some(9),
                garbage_every: Some(25),
                faults: Default::default(),
                metrics_interval: None,
                script: None,
                prefix: StreamPrefix::default(),
            };
            let sinks = Sinks {
                udp: Some((socket, tspi_runtime::UdpTargets::fixed(vec![target]))),
                jetstream: None,
            };
            tspi_generator::run(options, sinks, |_| {}, CancellationToken::new())
                .await
                .unwrap()
        })
    };

    let t0 = Instant::now();
    let at = |s: f64| async move {
        let target = t0 + Duration::from_secs_f64(s);
        tokio::time::sleep_until(target.into()).await;
    };
    at(2.0).await;
    kill_9(&mut archiver);
    at(2.5).await;
    archiver = spawn_archiver(&urls, &db_url, &log);
    at(4.0).await;
    kill_9(&mut archiver);
    at(4.5).await;
    archiver = spawn_archiver(&urls, &db_url, &log);
    at(6.0).await;
    pg.kill();
    at(6.8).await;
    pg.restart();
    at(8.0).await;
    cluster.node(1).kill();

    let summary = generator.await.unwrap();
    assert_eq!(summary.valid, TELEMETRY);
    let operator_messages = ops.await.unwrap();
    stop_ops.cancel();
    assert_eq!(operator_messages, COMMANDS + TAG_STATES + BUS_GARBAGE);
    let metrics = producer
        .finish(summary.valid + summary.duplicates, Duration::from_secs(60))
        .await;
    assert_eq!(metrics.publish.failed.get(), 0);

    let expected = TELEMETRY + COMMANDS + TAG_STATES + BUS_GARBAGE;
    assert_eq!(
        stream_count(&js, "TSPI").await,
        expected,
        "the stream holds each message once"
    );
    let count = |pg: &PgServer, sql: &str| pg.psql(&db, sql).parse::<u64>().unwrap();
    let reached = tspi_test_support::wait_until(Duration::from_secs(90), || async {
        count(&pg, "SELECT count(*) FROM messages") >= expected
    })
    .await;
    assert!(
        reached.is_some(),
        "archive stuck at {} of {expected}:\n{}",
        count(&pg, "SELECT count(*) FROM messages"),
        tspi_test_support::file_tail(&log, 40)
    );
    // Every delivery acknowledged and none pending: no redelivery can come, and any that
    // came before had to land without adding a row.
    let settled = || {
        let js = js.clone();
        async move {
            let info = tspi_test_support::consumer_info(&js, "TSPI", "archiver").await;
            info.num_ack_pending == 0 && info.num_pending == 0
        }
    };
    tspi_test_support::wait_until(Duration::from_secs(30), settled)
        .await
        .expect("the archiver's consumer settled");
    let figures = scrape(archiver.metrics_port).await;
    sigterm(archiver.child.id());
    let status = archiver.child.wait().unwrap();
    assert!(status.success(), "archiver exit after SIGTERM: {status:?}");

    assert_eq!(
        count(&pg, "SELECT count(*) FROM messages"),
        expected,
        "exactly one row per message"
    );
    assert_eq!(
        count(&pg, "SELECT count(DISTINCT stream_seq) FROM messages"),
        expected
    );
    assert_eq!(
        count(&pg, "SELECT max(stream_seq) FROM messages"),
        expected,
        "no sequence missing"
    );
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM messages WHERE kind = 'telemetry'"
        ),
        TELEMETRY
    );
    assert_eq!(
        count(
            &pg,
            "SELECT count(DISTINCT msg_id) FROM messages WHERE kind = 'telemetry'"
        ),
        TELEMETRY,
        "no telemetry frame twice"
    );
    assert_eq!(
        count(&pg, "SELECT count(*) FROM messages WHERE kind = 'command'"),
        COMMANDS
    );
    assert_eq!(count(&pg, "SELECT count(*) FROM commands"), COMMANDS);
    assert_eq!(
        count(&pg, "SELECT count(*) FROM messages WHERE kind = 'tag'"),
        TAG_STATES
    );
    assert_eq!(count(&pg, "SELECT count(*) FROM tags"), TAG_IDS);
    assert_eq!(
        pg.psql(&db, "SELECT string_agg(label, ',' ORDER BY id) FROM tags"),
        "state 10,state 11,state 12,state 13,state 14",
        "each tag holds its latest state"
    );
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM messages WHERE kind = 'invalid' AND error IS NOT NULL"
        ),
        BUS_GARBAGE,
        "bus garbage stored raw with its error"
    );
    let mut consumer = js
        .get_stream("TSPI")
        .await
        .unwrap()
        .get_consumer::<jetstream::consumer::pull::Config>("archiver")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(
        (info.num_pending, info.num_ack_pending),
        (0, 0),
        "everything acknowledged"
    );
    let lines: Vec<&str> = figures
        .lines()
        .filter(|l| l.starts_with("tspi_archiver_") && !l.contains("bucket"))
        .collect();
    eprintln!("last archiver instance:\n{}", lines.join("\n"));
    assert!(figures.contains("tspi_archiver_rows_written_total"));
}
