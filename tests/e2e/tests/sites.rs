//! Range sites over a WAN that is cut (SPEC §4 "Sites"), every program a process and
//! every server a real nats-server on loopback: a three-node centre (JetStream domain
//! `centre`), two sites each with its own nats-server (a leaf node of every centre node
//! through a cuttable TCP link, domain `site-<name>`), a producer in site mode and a
//! generator. Site A's link is cut 5 s into the traffic for 30 s (60 s with
//! `TSPI_CHAOS_FULL=1`), outlasting it: site A keeps ingesting without a drop or a
//! growing queue, site B flows on into the centre at its own rate, and once the link is
//! back A's backlog flows in (its catch-up time and rate are reported) and the centre
//! holds exactly every datagram of both sites, none twice, each marked with its site
//! stream.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod chaos;
mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use chaos::{metric, programs_for, scrape};
use common::{free_udp_port, Running};
use tspi_bus::{ensure_stream, StreamArgs, StreamSpec};
use tspi_core::StreamPrefix;
use tspi_test_support::fault::LinkProxy;
use tspi_test_support::{free_port, wait_until, workspace_bin, NatsCluster, NatsServer};

struct Site {
    name: &'static str,
    server: NatsServer,
    /// One per centre node: the site's WAN.
    links: Vec<LinkProxy>,
    producer: Running,
    udp_port: u16,
    metrics_port: u16,
}

impl Site {
    async fn start(centre: &NatsCluster, name: &'static str) -> Site {
        let links: Vec<LinkProxy> = centre
            .leaf_addrs()
            .into_iter()
            .map(LinkProxy::start)
            .collect();
        let remotes: Vec<String> = links
            .iter()
            .map(|l| format!("nats-leaf://{}", l.addr()))
            .collect();
        let server = NatsServer::start_site(name, &remotes).await;
        let programs = programs_for(&[server.url()]);
        let udp_port = free_udp_port();
        let metrics_port = free_port();
        let metrics_addr = format!("127.0.0.1:{metrics_port}");
        let producer =
            programs.producer(udp_port, &["--site", name, "--metrics-addr", &metrics_addr]);
        Site {
            name,
            server,
            links,
            producer,
            udp_port,
            metrics_port,
        }
    }

    fn stream(&self) -> String {
        tspi_bus::sites::site_stream_name(self.name)
    }

    fn cut(&self) {
        self.links.iter().for_each(LinkProxy::cut);
    }

    fn heal(&self) {
        self.links.iter().for_each(LinkProxy::heal);
    }
}

/// The centre's `TSPI` sources: (name, lag) of each.
async fn sources(js: &jetstream::Context) -> Vec<(String, u64)> {
    let Ok(mut stream) = js.get_stream("TSPI").await else {
        return Vec::new();
    };
    let Ok(info) = stream.info().await else {
        return Vec::new();
    };
    info.sources
        .iter()
        .map(|s| (s.name.clone(), s.lag))
        .collect()
}

fn generator(site: &Site, sensor_base: u16, seconds: u64) -> Command {
    let mut cmd = Command::new(workspace_bin("generator"));
    cmd.args(["--udp-target", &format!("127.0.0.1:{}", site.udp_port)])
        .args([
            "--count",
            "50",
            "--rate",
            "50",
            "--duration",
            &seconds.to_string(),
        ])
        .args([
            "--sensor-base",
            &sensor_base.to_string(),
            "--seed",
            &sensor_base.to_string(),
        ]);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_site_catches_up_exactly_while_the_other_flows_on() {
    chaos::init_logging();
    let full = std::env::var_os("TSPI_CHAOS_FULL").is_some();
    // Traffic for `seconds`, A cut from `cut_at` for `cut_for`: the cut outlasts the
    // traffic, so what A sends after `cut_at` is all backlog when the link returns.
    let (seconds, cut_at, cut_for) = if full { (60, 5, 60) } else { (30, 5, 30) };

    let centre = NatsCluster::start_centre(3).await;
    let admin_client = tspi_e2e::client(&centre.urls()).await;
    let admin = jetstream::new(admin_client.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&admin_client, &admin, &spec).await.unwrap();

    let sites = [
        Site::start(&centre, "a").await,
        Site::start(&centre, "b").await,
    ];
    let provisioned = wait_until(Duration::from_secs(60), || async {
        let names: Vec<String> = sources(&admin).await.into_iter().map(|s| s.0).collect();
        sites.iter().all(|s| names.contains(&s.stream()))
    })
    .await;
    assert!(
        provisioned.is_some(),
        "the centre sources both sites: {:?}\n{}",
        sources(&admin).await,
        sites[0].producer.stderr()
    );

    // Both sites send 2,500 datagrams/s (50 sensors at 50 Hz, their own sensor ids).
    let programs = programs_for(&[centre.urls()[0].clone()]);
    let mut generators: Vec<Running> = sites
        .iter()
        .zip([1000u16, 2000])
        .map(|(site, base)| {
            programs.spawn(
                &format!("generator-{}", site.name),
                generator(site, base, seconds),
            )
        })
        .collect();
    let started = Instant::now();
    // Cut once both sites' first `cut_at` seconds are at the centre.
    let flowing = wait_until(Duration::from_secs(60), || async {
        tspi_e2e::stream_count(&admin, "TSPI").await >= 2 * 2_500 * cut_at
    })
    .await;
    assert!(
        flowing.is_some(),
        "both sites reach the centre before the cut"
    );
    let a = &sites[0];
    a.cut();
    let cut = Instant::now();
    let at_cut = tspi_e2e::stream_count(&admin, "TSPI").await;
    // While A is cut, only B reaches the centre, at B's rate; A's queue stays empty.
    let mut a_queue_max = 0.0f64;
    let mut at_traffic_end = None;
    // Sampled twice a second for the length of the cut (the cut is what is measured).
    let mut sample = tokio::time::interval(Duration::from_millis(500));
    while cut.elapsed() < Duration::from_secs(cut_for) {
        sample.tick().await;
        a_queue_max = a_queue_max.max(metric(
            &scrape(a.metrics_port),
            "tspi_producer_publish_queue_depth",
        ));
        if at_traffic_end.is_none() && started.elapsed() >= Duration::from_secs(seconds - 1) {
            at_traffic_end = Some((cut.elapsed(), tspi_e2e::stream_count(&admin, "TSPI").await));
        }
    }
    let (b_span, at_b_end) = at_traffic_end.unwrap_or((cut.elapsed(), 0));
    let b_rate = (at_b_end.saturating_sub(at_cut)) as f64 / b_span.as_secs_f64();
    let before_heal = tspi_e2e::stream_count(&admin, "TSPI").await;

    let mut valid = Vec::new();
    for g in &mut generators {
        let status = g.wait(Duration::from_secs(60)).await;
        assert!(status.success(), "generator: {}", g.stderr());
        let summary = g.json_lines().last().cloned().unwrap();
        valid.push(summary["valid"].as_u64().unwrap());
    }
    a.heal();
    let healed = Instant::now();
    let total: u64 = valid.iter().sum();
    // Each site stored everything it received, the WAN cut or not.
    for (site, want) in sites.iter().zip(&valid) {
        let local = jetstream::new(tspi_e2e::client(&[site.server.url()]).await);
        let stored = wait_until(Duration::from_secs(30), || async {
            tspi_e2e::stream_count(&local, &site.stream()).await >= *want
        })
        .await;
        assert!(stored.is_some(), "site {} stored its datagrams", site.name);
        let m = scrape(site.metrics_port);
        assert_eq!(
            metric(&m, "tspi_producer_dropped_total"),
            0.0,
            "site {} dropped nothing",
            site.name
        );
        assert_eq!(tspi_e2e::stream_count(&local, &site.stream()).await, *want);
    }
    // The backlog's first message marks the link and the source working again; from
    // there on, the drain rate.
    let resumed = wait_until(Duration::from_secs(60), || async {
        tspi_e2e::stream_count(&admin, "TSPI").await > before_heal
    })
    .await
    .unwrap_or_default();
    let draining = Instant::now();
    let caught_up = wait_until(Duration::from_secs(180), || async {
        tspi_e2e::stream_count(&admin, "TSPI").await >= total
    })
    .await;
    assert!(
        caught_up.is_some(),
        "the centre caught up: {} of {total}",
        tspi_e2e::stream_count(&admin, "TSPI").await
    );
    let catch_up = healed.elapsed();
    let drain = draining.elapsed();
    let backlog = total - before_heal;
    let contents = tspi_e2e::stream_contents(&admin, "TSPI").await;
    let ids: HashSet<&str> = contents.iter().map(|m| m.msg_id.as_str()).collect();
    assert_eq!(
        contents.len() as u64,
        total,
        "every datagram of both sites at the centre"
    );
    assert_eq!(ids.len(), contents.len(), "none twice");
    eprintln!(
        "sites-figures: sites a {} + b {} = {total} datagrams, all at the centre once; site A cut {cut_for} s \
         (its producer's queue at most {a_queue_max}, 0 dropped); site B reached the centre at {b_rate:.0}/s during the cut; \
         A's backlog of {backlog} caught up {:.1} s after the link came back: the first of it after {:.1} s, \
         then {:.0} msg/s",
        valid[0],
        valid[1],
        catch_up.as_secs_f64(),
        resumed.as_secs_f64(),
        backlog as f64 / drain.as_secs_f64().max(0.001)
    );
    assert!(
        a_queue_max < 1000.0,
        "site A's queue stayed short: {a_queue_max}"
    );
    assert!(
        b_rate > 2_000.0,
        "site B flowed on during A's cut: {b_rate:.0}/s"
    );
    assert!(backlog > 0, "site A had a backlog");
}
