//! Range sites over a WAN that is cut (SPEC §4 "Sites"), every program a process and
//! every server a real nats-server on loopback: a three-node centre (JetStream domain
//! `centre`) with an archiver and a durable receiver, two sites each with its own
//! nats-server (a leaf node of every centre node through a cuttable TCP link, domain
//! `site-<name>`), a producer in site mode and a generator: 2,500 datagrams/s each for
//! 60 s in the test command (which runs debug builds of every program on two cores);
//! 5,000/s for 120 s with `TSPI_CHAOS_FULL=1` — run that with release programs:
//! `cargo build --release --bins && TSPI_BIN_DIR=target/release TSPI_CHAOS_FULL=1
//! cargo test -p tspi-e2e --test sites -- --nocapture`.
//!
//! Site A's link is cut 5 s in for 30 s (60 s full): A keeps ingesting without a drop or
//! a growing queue; while cut, A's nats-server is killed -9 and restarted on its store;
//! site B flows on into the centre at its own rate. Once the link is back, A's backlog
//! flows in, and a central node (the stream's leader) is killed -9 while it does. The
//! centre, the archive and the durable receiver then hold exactly every datagram of both
//! sites, none twice. Reported: A's catch-up (first backlog message, drain rate), B's
//! end-to-end latency during it. Provisioning a second time changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod chaos;
mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use chaos::{metric, programs_for, scrape, Rig, RigOptions};
use common::{free_udp_port, Running};
use futures::StreamExt;
use hdrhistogram::Histogram;
use tspi_bus::{ensure_stream, StreamArgs, StreamSpec};
use tspi_core::{StreamPrefix, TelemetryRecord};
use tspi_test_support::{
    free_port, stream_leader, wait_until, workspace_bin, NatsCluster, SiteServer,
};

/// The two scenario tests of this file run one at a time: each is a whole range on two
/// cores, and its figures mean little with the other beside it.
static ONE_RANGE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sensors per site, each at 50 Hz: 100 (5,000 datagrams/s) with `TSPI_CHAOS_FULL=1`,
/// 50 otherwise (the test command runs debug builds of every program on two cores).
fn sensors() -> u32 {
    if std::env::var_os("TSPI_CHAOS_FULL").is_some() {
        100
    } else {
        50
    }
}
const RATE_HZ: u32 = 50;

/// The site's stream, `TSPI_SITE_<NAME>`.
fn site_stream(site: &SiteServer) -> String {
    tspi_bus::sites::site_stream_name(&site.name)
}

/// The names of the centre's `TSPI` sources.
async fn source_names(js: &jetstream::Context) -> Vec<String> {
    let Ok(mut stream) = js.get_stream("TSPI").await else {
        return Vec::new();
    };
    let Ok(info) = stream.info().await else {
        return Vec::new();
    };
    info.sources.iter().map(|s| s.name.clone()).collect()
}

/// The site's sourcing consumer, read on the site's server.
async fn site_consumer_info(site_url: &str, stream: &str) -> consumer::Info {
    let local = jetstream::new(tspi_e2e::client(&[site_url.to_owned()]).await);
    let consumer: consumer::PushConsumer = local
        .get_consumer_from_stream(tspi_bus::sites::site_consumer_name("TSPI"), stream)
        .await
        .unwrap();
    consumer.cached_info().clone()
}

fn generator(udp_port: u16, sensor_base: u16, seconds: u64) -> Command {
    let mut cmd = Command::new(workspace_bin("generator"));
    cmd.args(["--udp-target", &format!("127.0.0.1:{udp_port}")])
        .args(["--count", &sensors().to_string()])
        .args(["--rate", &RATE_HZ.to_string()])
        .args(["--duration", &seconds.to_string()])
        .args([
            "--sensor-base",
            &sensor_base.to_string(),
            "--seed",
            &sensor_base.to_string(),
        ]);
    cmd
}

/// Follows the centre's `TSPI` from now on and records, for each of site `stream`'s
/// messages, (when it arrived, ms since `base`; its latency to the centre's store, ms:
/// the time the centre stored it − the producer's receive time in the record; its
/// latency to this reader, ms: arrival here − that receive time). The first is B's own
/// path; the second adds this reader's delivery, which shares the stream's leader.
fn follow_site_latency(
    admin: jetstream::Context,
    stream: String,
    sensors: std::ops::Range<u16>,
    base: Instant,
) -> Arc<Mutex<Vec<(u64, u64, u64)>>> {
    let prefix = StreamPrefix::default();
    let filter_subjects: Vec<String> = sensors
        .flat_map(|id| {
            [
                tspi_core::MessageKind::Geocentric,
                tspi_core::MessageKind::Spherical,
            ]
            .map(|kind| prefix.subject(kind, id))
        })
        .collect();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let out = samples.clone();
    tokio::spawn(async move {
        let Ok(tspi) = admin.get_stream("TSPI").await else {
            return;
        };
        let Ok(ordered) = tspi
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: format!("_INBOX.latency.{}", std::process::id()),
                deliver_policy: consumer::DeliverPolicy::New,
                filter_subjects,
                ..Default::default()
            })
            .await
        else {
            return;
        };
        let Ok(mut messages) = ordered.messages().await else {
            return;
        };
        // The ordered consumer reports a lost consumer (a central node killed) as an
        // error and then recreates itself.
        while let Some(m) = messages.next().await {
            let Ok(m) = m else { continue };
            let from_site = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Stream-Source"))
                .is_some_and(|v| v.as_str().starts_with(&stream));
            if !from_site {
                continue;
            }
            let stored_ms = m
                .info()
                .map(|i| (i.published.unix_timestamp_nanos() / 1_000_000) as i64);
            if let (Ok(record), Ok(stored_ms)) = (TelemetryRecord::from_cbor(&m.payload), stored_ms)
            {
                let now = tspi_runtime::now_epoch_ms();
                let stored = u64::try_from(stored_ms - record.recv_epoch_ms).unwrap_or(0);
                let seen = u64::try_from(now - record.recv_epoch_ms).unwrap_or(0);
                out.lock()
                    .unwrap()
                    .push((base.elapsed().as_millis() as u64, stored, seen));
            }
        }
    });
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_stay_exact_through_cuts_and_kills() {
    chaos::init_logging();
    let _alone = ONE_RANGE_AT_A_TIME.lock().await;
    let full = std::env::var_os("TSPI_CHAOS_FULL").is_some();
    let per_site = u64::from(sensors() * RATE_HZ);
    // Traffic for `seconds`; A cut from about `cut_at` for `cut_for`; A's server killed
    // and restarted `leaf_kill_after` into the cut.
    let (seconds, cut_at, cut_for, leaf_kill_after) = if full {
        (120, 5, 60, 20)
    } else {
        (60, 5, 30, 12)
    };

    let mut centre = NatsCluster::start_centre(3).await;
    let admin_client = tspi_e2e::client(&centre.urls()).await;
    let admin = jetstream::new(admin_client.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&admin_client, &admin, &spec).await.unwrap();

    let mut a = SiteServer::start(&centre, "a").await;
    let b = SiteServer::start(&centre, "b").await;
    // TSPI_SITE_SOURCING_MBPS=N: both sites capped (`--site-sourcing-mbps`), to compare
    // B's latency during A's catch-up with and without a cap.
    let cap = std::env::var("TSPI_SITE_SOURCING_MBPS").unwrap_or_else(|_| "0".to_owned());
    // Site A's producer is the rig's: the archiver and the durable receiver read the
    // centre.
    let a_urls = [a.server.url()];
    let mut rig = Rig::start(
        &centre.urls(),
        RigOptions {
            producer_urls: Some(&a_urls),
            producer_args: &["--site", "a", "--site-sourcing-mbps", &cap],
            receiver_counts_only: true,
            ..Default::default()
        },
    )
    .await;
    let b_udp = free_udp_port();
    let b_metrics = free_port();
    let b_programs = programs_for(&[b.server.url()]);
    let b_producer = b_programs.producer(
        b_udp,
        &[
            "--site",
            "b",
            "--site-sourcing-mbps",
            &cap,
            "--metrics-addr",
            &format!("127.0.0.1:{b_metrics}"),
        ],
    );
    let provisioned = wait_until(Duration::from_secs(60), || async {
        let names = source_names(&admin).await;
        [&a, &b].iter().all(|s| names.contains(&site_stream(s)))
    })
    .await;
    assert!(
        provisioned.is_some(),
        "the centre sources both sites: {:?}\n{}\n{}",
        source_names(&admin).await,
        rig.producer.stderr(),
        b_producer.stderr()
    );

    let base = Instant::now();
    let b_latency = follow_site_latency(
        admin.clone(),
        site_stream(&b),
        2000..2000 + sensors() as u16,
        base,
    );
    let programs = programs_for(&centre.urls());
    let mut generators: Vec<Running> = [(rig.udp_port, 1000u16), (b_udp, 2000)]
        .into_iter()
        .map(|(port, sensor_base)| {
            programs.spawn(
                &format!("generator-{sensor_base}"),
                generator(port, sensor_base, seconds),
            )
        })
        .collect();
    let started = Instant::now();
    // Cut once both sites' first `cut_at` seconds are at the centre.
    let flowing = wait_until(Duration::from_secs(60), || async {
        tspi_e2e::stream_count(&admin, "TSPI").await >= 2 * per_site * cut_at
    })
    .await;
    assert!(
        flowing.is_some(),
        "both sites reach the centre before the cut"
    );
    a.cut();
    let cut = Instant::now();
    let at_cut = tspi_e2e::stream_count(&admin, "TSPI").await;
    // While A is cut, only B reaches the centre, at B's rate; A's queue stays short
    // (it stores on its own server), except while that server restarts.
    let queue = |rig: &Rig| rig.producer_metric("tspi_producer_publish_queue_depth");
    let mut queue_max_cut = 0.0f64;
    let mut cut_depths = Vec::new();
    let mut queue_max_restart = 0.0f64;
    let mut leaf_restarted = None;
    let mut at_traffic_end = None;
    let mut sample = tokio::time::interval(Duration::from_millis(500));
    while cut.elapsed() < Duration::from_secs(cut_for) {
        sample.tick().await;
        if leaf_restarted.is_none() {
            let depth = queue(&rig);
            if std::env::var_os("TSPI_CHAOS_TRACE").is_some() {
                eprintln!("t={:.1} A queue {depth}", cut.elapsed().as_secs_f64());
            }
            queue_max_cut = queue_max_cut.max(depth);
            cut_depths.push(depth);
            if cut.elapsed() >= Duration::from_secs(leaf_kill_after) {
                a.server.kill();
                let killed = Instant::now();
                a.server.restart();
                leaf_restarted = Some(killed.elapsed());
            }
        } else {
            queue_max_restart = queue_max_restart.max(queue(&rig));
        }
        if at_traffic_end.is_none() && started.elapsed() >= Duration::from_secs(seconds - 1) {
            at_traffic_end = Some((cut.elapsed(), tspi_e2e::stream_count(&admin, "TSPI").await));
        }
    }
    let (b_span, at_b_end) =
        at_traffic_end.unwrap_or((cut.elapsed(), tspi_e2e::stream_count(&admin, "TSPI").await));
    let b_rate_cut = (at_b_end.saturating_sub(at_cut)) as f64 / b_span.as_secs_f64();
    let backlog_at_heal = rig.producer_metric("tspi_producer_site_backlog");

    // The centre confirming A's messages again (the site consumer's acknowledgement
    // floor moving) marks the link and the source working again.
    let trace = std::env::var_os("TSPI_CHAOS_TRACE").is_some();
    let a_confirmed = || async {
        site_consumer_info(&a.server.url(), &site_stream(&a))
            .await
            .ack_floor
            .stream_sequence
    };
    let confirmed_at_heal = a_confirmed().await;
    a.heal();
    let healed = Instant::now();
    let healed_ms = base.elapsed().as_millis() as u64;
    let resumed = wait_until(Duration::from_secs(60), || async {
        let confirmed = a_confirmed().await;
        if trace {
            eprintln!(
                "t={:.1} A confirmed {confirmed} backlog {} centre {}",
                healed.elapsed().as_secs_f64(),
                rig.producer_metric("tspi_producer_site_backlog"),
                tspi_e2e::stream_count(&admin, "TSPI").await
            );
        }
        confirmed > confirmed_at_heal
    })
    .await;
    assert!(
        resumed.is_some(),
        "the centre confirmed A's backlog again: {}",
        rig.producer_metric("tspi_producer_site_backlog")
    );
    let first_backlog = healed.elapsed();
    // A central node goes while the backlog flows: the stream's leader.
    let leader = stream_leader(&admin, "TSPI").await;
    centre.node(leader).kill();
    let centre_killed_at = healed.elapsed();
    let centre_killed_ms = base.elapsed().as_millis() as u64;
    // A catch-up, through a leader's death, is never a stall.
    let stalled_seen = std::cell::Cell::new(0.0f64);
    // Caught up: less than a second of A's traffic not yet at the centre (while A is
    // live, what is in flight is never exactly none).
    let a_drained = wait_until(Duration::from_secs(240), || async {
        stalled_seen.set(
            stalled_seen
                .get()
                .max(rig.producer_metric("tspi_producer_site_sourcing_stalled")),
        );
        rig.producer_metric("tspi_producer_site_backlog") < per_site as f64
    })
    .await;
    let drained_at = healed.elapsed();
    centre.node(leader).restart();
    assert!(a_drained.is_some(), "A's backlog drained to the centre");
    assert_eq!(
        stalled_seen.get(),
        0.0,
        "A's sourcing was never called stalled while it caught up"
    );
    let caught_up_ms = base.elapsed().as_millis() as u64;

    let mut valid = Vec::new();
    for g in &mut generators {
        let status = g.wait(Duration::from_secs(120)).await;
        assert!(status.success(), "generator: {}", g.stderr());
        let summary = g.json_lines().last().cloned().unwrap();
        valid.push(summary["valid"].as_u64().unwrap());
    }
    let total: u64 = valid.iter().sum();
    let caught = rig.wait_caught_up(total, Duration::from_secs(240)).await;
    let accounting = rig.assert_exact(total).await;
    // Each site stored everything it received, the WAN cut, its server killed or not;
    // neither producer dropped anything.
    for ((site, want), metrics) in [&a, &b]
        .iter()
        .zip(&valid)
        .zip([rig.producer_metrics, b_metrics])
    {
        let local = jetstream::new(tspi_e2e::client(&[site.server.url()]).await);
        assert_eq!(
            tspi_e2e::stream_count(&local, &site_stream(site)).await,
            *want,
            "site {} stored every datagram",
            site.name
        );
        assert_eq!(
            metric(&scrape(metrics), "tspi_producer_dropped_total"),
            0.0,
            "site {} dropped nothing",
            site.name
        );
    }

    // B's latency while A caught up, and before the cut for comparison: to the centre's
    // store (B's own path) and to a reader of the centre (which adds its delivery).
    let samples = b_latency.lock().unwrap().clone();
    let window = |from: u64, to: u64| {
        let mut stored = Histogram::<u64>::new(3).unwrap();
        let mut seen = Histogram::<u64>::new(3).unwrap();
        for (_, s, r) in samples.iter().filter(|(at, _, _)| (from..to).contains(at)) {
            let _ = stored.record(*s);
            let _ = seen.record(*r);
        }
        format!(
            "stored p50 {} ms p99 {} ms max {} ms, seen by a reader p50 {} ms p99 {} ms ({} msgs)",
            stored.value_at_quantile(0.5),
            stored.value_at_quantile(0.99),
            stored.max(),
            seen.value_at_quantile(0.5),
            seen.value_at_quantile(0.99),
            stored.len()
        )
    };
    let before = window(0, healed_ms - (cut_for * 1000));
    let catching_up = window(healed_ms, centre_killed_ms);
    let failing_over = window(centre_killed_ms, caught_up_ms);
    eprintln!(
        "sites-figures: sites a {} + b {} = {total} datagrams at {per_site}/s each (sourcing cap {cap} Mbit/s, 0 none), exact at the centre, in the archive and at the durable receiver ({accounting:?}); \
         site A cut {cut_for} s: its producer's queue at most {queue_max_cut} (0 dropped), {queue_max_restart} while its server was killed -9 and restarted (back in {:.1} s); \
         site B reached the centre at {b_rate_cut:.0}/s during the cut; after the link came back, the centre confirmed A's backlog ({backlog_at_heal}) again within {:.1} s; \
         the centre's stream leader was killed -9 {:.1} s after the link came back; A's backlog drained (under a second of A's traffic behind) {:.1} s after the link came back; \
         stream/archive/receiver caught up {:?}/{:?}/{:?} after the generators ended; \
         B's latency before the cut: {before}; during A's catch-up until the kill: {catching_up}; from the kill until A drained: {failing_over}",
        valid[0],
        valid[1],
        leaf_restarted.unwrap_or_default().as_secs_f64(),
        first_backlog.as_secs_f64(),
        centre_killed_at.as_secs_f64(),
        drained_at.as_secs_f64(),
        caught.stream,
        caught.archive,
        caught.receiver,
    );
    // Not growing: the queue keeps emptying (a queue that held the cut's traffic would
    // only grow, to `cut_for` seconds of it); bursts of a few hundred to a few thousand
    // come and go when the two cores are busy (the site server, the centre, the archiver
    // and PostgreSQL all run here).
    let later_half = &cut_depths[cut_depths.len() / 2..];
    let later_min = later_half.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(
        later_min < per_site as f64 / 10.0 && queue_max_cut < 5.0 * per_site as f64,
        "site A's queue kept emptying while cut: at most {queue_max_cut}, at least {later_min} in the later half: {cut_depths:?}"
    );
    assert!(
        b_rate_cut > per_site as f64 * 0.8,
        "site B flowed on during A's cut: {b_rate_cut:.0}/s"
    );
    assert!(backlog_at_heal > 0.0, "site A had a backlog");
    assert!(
        samples
            .iter()
            .any(|(at, _, _)| (healed_ms..caught_up_ms).contains(at)),
        "B's messages reached the centre during A's catch-up"
    );

    // Provisioning again (a second producer for site A) changes nothing, on the site or
    // at the centre.
    let site_consumer = || async {
        site_consumer_info(&a.server.url(), &site_stream(&a))
            .await
            .created
    };
    let consumer_before = site_consumer().await;
    let config_before =
        serde_json::to_value(tspi_test_support::stream_info(&admin, "TSPI").await.config).unwrap();
    let again_metrics = free_port();
    let again_programs = programs_for(&a_urls);
    let again = again_programs.producer(
        free_udp_port(),
        &[
            "--site",
            "a",
            "--metrics-addr",
            &format!("127.0.0.1:{again_metrics}"),
        ],
    );
    let sourced = wait_until(Duration::from_secs(30), || async {
        metric(&scrape(again_metrics), "tspi_producer_site_sourced") == 1.0
    })
    .await;
    assert!(sourced.is_some(), "second provisioning: {}", again.stderr());
    let config_after =
        serde_json::to_value(tspi_test_support::stream_info(&admin, "TSPI").await.config).unwrap();
    assert_eq!(
        config_before, config_after,
        "the centre's stream config is unchanged"
    );
    assert_eq!(
        consumer_before,
        site_consumer().await,
        "the site's consumer is the same one"
    );
}

/// A site whose producer may not reach the centre's JetStream API: ingest goes on into
/// the site stream, and the refusal is one line naming the subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_without_the_permission_gets_a_one_line_error() {
    chaos::init_logging();
    let centre = NatsCluster::start_centre(3).await;
    let admin_client = tspi_e2e::client(&centre.urls()).await;
    let admin = jetstream::new(admin_client.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&admin_client, &admin, &spec).await.unwrap();
    let site = SiteServer::start_with(
        &centre,
        "c",
        "authorization {\n  users: [ { user: producer, password: site-secret, permissions: {\n    \
         publish: { allow: [\"tspi.>\", \"$JS.API.>\"] }\n    subscribe: { allow: [\"_INBOX.>\"] } } } ]\n}\n\
         no_auth_user: producer\n",
    )
    .await;
    let metrics_port = free_port();
    let site_programs = programs_for(&[site.server.url()]);
    let mut producer = site_programs.producer(
        free_udp_port(),
        &[
            "--site",
            "c",
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
        ],
    );
    let refused = wait_until(Duration::from_secs(30), || async {
        producer.stderr().contains("$JS.centre.API")
    })
    .await;
    let log = producer.stderr();
    assert!(
        refused.is_some(),
        "the producer says what it may not do: {log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("$JS.centre.API"))
        .unwrap_or_default();
    assert!(
        line.to_lowercase().contains("permission"),
        "one line naming the refused permission: {line}"
    );
    assert!(producer.is_running(), "ingest goes on: {log}");
    assert_eq!(
        metric(&scrape(metrics_port), "tspi_producer_site_sourced"),
        0.0
    );
    assert!(
        source_names(&admin).await.is_empty(),
        "the centre sources nothing"
    );
    eprintln!("permission-line: {line}");
}

/// The small range of the single-site tests: a three-node centre with `TSPI`, one site's
/// server, and the loopback ports of the site's producer.
struct OneSiteRange {
    /// Held: one range at a time.
    _alone: tokio::sync::MutexGuard<'static, ()>,
    /// Held: the centre's servers stop when it drops.
    _centre: NatsCluster,
    admin: jetstream::Context,
    site: SiteServer,
    udp: u16,
    metrics_port: u16,
}

impl OneSiteRange {
    async fn start(site: &str) -> Self {
        chaos::init_logging();
        let alone = ONE_RANGE_AT_A_TIME.lock().await;
        let centre = NatsCluster::start_centre(3).await;
        let admin_client = tspi_e2e::client(&centre.urls()).await;
        let admin = jetstream::new(admin_client.clone());
        let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
        ensure_stream(&admin_client, &admin, &spec).await.unwrap();
        let site = SiteServer::start(&centre, site).await;
        OneSiteRange {
            _alone: alone,
            _centre: centre,
            admin,
            site,
            udp: free_udp_port(),
            metrics_port: free_port(),
        }
    }

    /// The site's producer on the range's ports, `extra` flags after, once the centre
    /// sources the site.
    async fn site_producer(&self, programs: &common::Programs<'static>, extra: &[&str]) -> Running {
        let metrics_addr = format!("127.0.0.1:{}", self.metrics_port);
        let mut args = vec!["--site", &self.site.name, "--metrics-addr", &metrics_addr];
        args.extend_from_slice(extra);
        let producer = programs.producer(self.udp, &args);
        let sourced = wait_until(Duration::from_secs(30), || async {
            source_names(&self.admin)
                .await
                .contains(&site_stream(&self.site))
        })
        .await;
        assert!(sourced.is_some(), "{}", producer.stderr());
        producer
    }

    /// `count` sensors at `rate` Hz for `seconds` into the site's producer.
    fn send(&self, count: u32, rate: u32, seconds: u32, sensor_base: u16) {
        let status = Command::new(workspace_bin("generator"))
            .args(["--udp-target", &format!("127.0.0.1:{}", self.udp)])
            .args(["--count", &count.to_string(), "--rate", &rate.to_string()])
            .args(["--duration", &seconds.to_string()])
            .args(["--sensor-base", &sensor_base.to_string()])
            .output()
            .unwrap()
            .status;
        assert!(status.success());
    }

    fn producer_metric(&self, name: &str) -> f64 {
        metric(&scrape(self.metrics_port), name)
    }

    /// The centre's `TSPI`, as `STREAM.INFO` has it now.
    async fn centre_info(&self) -> jetstream::stream::Info {
        let mut stream = self.admin.get_stream("TSPI").await.unwrap();
        stream.info().await.unwrap().clone()
    }

    async fn centre_count(&self) -> u64 {
        tspi_test_support::stream_info(&self.admin, "TSPI")
            .await
            .state
            .messages
    }
}

/// `--site-sourcing-mbps`: a backlog flows into the centre no faster than the limit (the
/// sourcing consumer's rate limit), all of it and once; a new limit (none) changes the
/// consumer in place, at its position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sourcing_limit_paces_the_catch_up() {
    const LIMIT_MBPS: u64 = 1;
    let range = OneSiteRange::start("l").await;
    let site = &range.site;
    let limited_programs = programs_for(&[site.server.url()]);
    let mut limited = range
        .site_producer(
            &limited_programs,
            &["--site-sourcing-mbps", &LIMIT_MBPS.to_string()],
        )
        .await;
    assert_eq!(
        site_consumer_info(&site.server.url(), &site_stream(site))
            .await
            .config
            .rate_limit,
        LIMIT_MBPS * 1_000_000
    );

    // A backlog of 2,000 datagrams written with the link cut.
    site.cut();
    range.send(10, 50, 4, 700);
    let sent = 2_000u64;
    let stored = wait_until(Duration::from_secs(30), || async {
        range.producer_metric("tspi_producer_published_total") as u64 >= sent
    })
    .await;
    assert!(stored.is_some(), "{}", limited.stderr());
    assert_eq!(range.centre_count().await, 0, "nothing crossed the cut");
    site.heal();

    // Follow the flow: from the first backlog message at the centre to the last.
    let mut first: Option<(Instant, u64)> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    // Sampled every 100 ms: the flow's start and end are what is measured.
    let mut sample = tokio::time::interval(Duration::from_millis(100));
    let last = loop {
        sample.tick().await;
        let n = range.centre_count().await;
        let now = Instant::now();
        if n > 0 && first.is_none() {
            first = Some((now, n));
        }
        if n >= sent {
            break now;
        }
        if now >= deadline {
            let consumer = site_consumer_info(&site.server.url(), &site_stream(site)).await;
            let source = range.centre_info().await.sources;
            panic!(
                "the backlog did not arrive: {n} of {sent}\nsite consumer: delivered {:?}, ack floor {:?}, pending {}, ack pending {}, push bound {}\ncentre sources: {source:?}\nsourcing stalled gauge: {}\n{}",
                consumer.delivered,
                consumer.ack_floor,
                consumer.num_pending,
                consumer.num_ack_pending,
                consumer.push_bound,
                range.producer_metric("tspi_producer_site_sourcing_stalled"),
                limited.stderr()
            );
        }
    };
    let state = range.centre_info().await.state;
    assert_eq!(state.messages, sent, "all of it, once");
    let (t0, n0) = first.unwrap();
    let seconds = (last - t0).as_secs_f64();
    let bytes_per_message = state.bytes as f64 / state.messages as f64;
    let mbps = (sent - n0) as f64 * bytes_per_message * 8.0 / seconds / 1e6;
    eprintln!(
        "sourcing-limit: {LIMIT_MBPS} Mbit/s: {} messages ({bytes_per_message:.0} bytes each at the centre) in {seconds:.1} s after the first: {mbps:.2} Mbit/s, {:.0} messages/s",
        sent - n0,
        (sent - n0) as f64 / seconds
    );
    assert!(
        mbps <= LIMIT_MBPS as f64 * 1.5,
        "paced by the limit: {mbps:.2} Mbit/s"
    );
    assert!(
        mbps >= LIMIT_MBPS as f64 * 0.3,
        "not stalled: {mbps:.2} Mbit/s"
    );

    // The same site without a limit: the consumer is changed in place.
    limited.stop(Duration::from_secs(20)).await;
    let unlimited_programs = programs_for(&[site.server.url()]);
    let unlimited = unlimited_programs.producer(range.udp, &["--site", "l"]);
    let updated = wait_until(Duration::from_secs(30), || async {
        unlimited.stderr().contains("change=Updated")
    })
    .await;
    assert!(updated.is_some(), "{}", unlimited.stderr());
    let info = site_consumer_info(&site.server.url(), &site_stream(site)).await;
    assert_eq!(info.config.rate_limit, 0);
    assert_eq!(
        info.delivered.stream_sequence, sent,
        "the consumer kept its position"
    );
}

/// `tspi_producer_site_sourcing_stalled`: a centre stream that refuses what its source
/// brings (full, with discard new) while the link is up is a stall the site producer
/// reports — the gauge, a warning — and, the centre's limit raised, the source takes the
/// rest, every message once, and the gauge clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_centre_that_takes_nothing_raises_the_stall_gauge() {
    const ROOM: i64 = 100;
    let range = OneSiteRange::start("f").await;
    let set_room = |max_messages: i64| {
        let range = &range;
        async move {
            let mut config = range.centre_info().await.config;
            config.max_messages = max_messages;
            config.discard = jetstream::stream::DiscardPolicy::New;
            range.admin.update_stream(&config).await.unwrap();
        }
    };
    set_room(ROOM).await;
    let programs = programs_for(&[range.site.server.url()]);
    let producer = range
        .site_producer(&programs, &["--site-stall-after", "3s"])
        .await;

    // 300 datagrams with the link up: the centre has room for 100.
    range.send(5, 20, 3, 720);
    let sent = 300u64;
    let stalled = wait_until(Duration::from_secs(60), || async {
        range.producer_metric("tspi_producer_site_sourcing_stalled") == 1.0
    })
    .await;
    assert!(
        stalled.is_some(),
        "the stall is reported: centre holds {}, site backlog {}\n{}",
        range.centre_count().await,
        range.producer_metric("tspi_producer_site_backlog"),
        producer.stderr()
    );
    assert_eq!(
        range.centre_count().await,
        ROOM as u64,
        "the centre took what it had room for"
    );
    assert_eq!(
        range.producer_metric("tspi_producer_site_backlog"),
        (sent - ROOM as u64) as f64,
        "the rest is the site's backlog"
    );
    assert!(
        producer
            .stderr()
            .contains("has taken none of this site's backlog"),
        "{}",
        producer.stderr()
    );

    // Room again: the source takes the rest, once, and the gauge clears.
    let raised = Instant::now();
    set_room(-1).await;
    let drained = wait_until(Duration::from_secs(180), || async {
        range.centre_count().await >= sent
            && range.producer_metric("tspi_producer_site_sourcing_stalled") == 0.0
    })
    .await;
    assert!(
        drained.is_some(),
        "the rest arrives once the centre has room: {} of {sent}\n{}",
        range.centre_count().await,
        producer.stderr()
    );
    assert_eq!(range.centre_count().await, sent, "every message once");
    eprintln!(
        "sourcing-stall: reported with {} of {sent} at the centre; the rest in {:.1} s after the limit was raised",
        ROOM,
        raised.elapsed().as_secs_f64()
    );
}
