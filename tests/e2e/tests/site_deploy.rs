//! A range site as deployed (issue 13, "Provisioning … only the permissions the deploy
//! accounts give a site"): a three-node centre from `deploy/nats/node.conf` with its
//! accounts (`accounts.conf`, the leaf user `site-north`) and a site server from
//! `deploy/nats/site.conf` with `site-accounts.conf`, joined through a cuttable link per
//! centre node. The site's producer runs as the site's `producer` user and provisions
//! the centre's source through the leaf connection; the centre's receiver, as the deploy
//! `receiver`, gets every datagram, also those sent while the link was cut. What the
//! site user may not do at the centre is refused there: deleting or reading `TSPI`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod chaos;
mod common;

use std::time::Duration;

use async_nats::jetstream;
use chaos::{metric, scrape};
use common::{free_udp_port, Programs};
use tspi_bus::{connect, ensure_stream, NatsArgs, StreamArgs, StreamSpec};
use tspi_core::StreamPrefix;
use tspi_test_support::{
    free_port, stream_info, wait_until, workspace_bin, workspace_root, NatsCluster, SiteServer,
};

const SITE: &str = "north";
const SITE_PRODUCER_PASSWORD: &str = "site-pw-producer";
const SITE_ADMIN_PASSWORD: &str = "site-pw-admin";

/// `pw-<user>` for every user of the centre's deploy accounts, as the variables
/// accounts.conf names (`SITE_NORTH_PASSWORD` for `site-north`).
fn centre_env() -> Vec<(String, String)> {
    common::deploy_users()
        .iter()
        .map(|u| {
            (
                format!("{}_PASSWORD", u.name.to_uppercase().replace('-', "_")),
                format!("pw-{}", u.name),
            )
        })
        .collect()
}

fn args(urls: &[String], user: &str, password: &str, inbox: &str) -> NatsArgs {
    let mut a = NatsArgs::for_urls(urls);
    a.user = Some(user.into());
    a.password = Some(password.into());
    a.inbox_prefix = inbox.into();
    a.connect_timeout = Duration::from_secs(3);
    a
}

async fn wait_jetstream(js: &jetstream::Context, what: &str) {
    let ready = wait_until(Duration::from_secs(60), || async {
        js.query_account().await.is_ok()
    })
    .await;
    assert!(ready.is_some(), "{what}: JetStream not ready");
}

fn published(metrics_port: u16) -> u64 {
    metric(&scrape(metrics_port), "tspi_producer_published_total") as u64
}

/// `seconds` of 10 sensors at 50 Hz into the site's producer.
async fn send(udp_port: u16, sensor_base: u16, seconds: u64) -> u64 {
    let out = tokio::process::Command::new(workspace_bin("generator"))
        .args(["--udp-target", &format!("127.0.0.1:{udp_port}")])
        .args(["--count", "10", "--rate", "50"])
        .args(["--duration", &seconds.to_string()])
        .args(["--sensor-base", &sensor_base.to_string()])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    v["datagrams"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_works_with_only_the_deploy_accounts_rights() {
    let deploy = workspace_root().join("deploy/nats");
    let centre = NatsCluster::start_from_template(3, &deploy.join("node.conf"), "", &centre_env());
    let centre_urls = centre.urls();
    let centre_admin = connect(
        &args(&centre_urls, "admin", "pw-admin", "_INBOX_admin"),
        "admin",
    )
    .await
    .unwrap();
    let centre_js = jetstream::new(centre_admin.clone());
    wait_jetstream(&centre_js, "centre").await;
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&centre_admin, &centre_js, &spec)
        .await
        .unwrap();

    let site = SiteServer::start_from_template(
        &centre,
        SITE,
        &deploy.join("site.conf"),
        ("site-north", "pw-site-north"),
        &[
            (
                "PRODUCER_PASSWORD".to_owned(),
                SITE_PRODUCER_PASSWORD.to_owned(),
            ),
            ("ADMIN_PASSWORD".to_owned(), SITE_ADMIN_PASSWORD.to_owned()),
        ],
    );
    let site_urls = vec![site.server.url()];
    let site_admin = connect(
        &args(
            &site_urls,
            "admin",
            SITE_ADMIN_PASSWORD,
            "_INBOX_site-north",
        ),
        "site-admin",
    )
    .await
    .unwrap();
    wait_jetstream(&jetstream::new(site_admin.clone()), "site").await;

    // The site's producer as the site's `producer`, its receiver at the centre as the
    // deploy `receiver`.
    let (c_urls, s_urls) = (centre_urls.clone(), site_urls.clone());
    let auth = move |user: &str| match user {
        "site-producer" => args(
            &s_urls,
            "producer",
            SITE_PRODUCER_PASSWORD,
            "_INBOX_site-north",
        ),
        user => args(
            &c_urls,
            user,
            &format!("pw-{user}"),
            &format!("_INBOX_{user}"),
        ),
    };
    let programs = Programs::new(&auth);
    let udp_port = free_udp_port();
    let metrics_port = free_port();
    let mut producer = programs.spawn(
        "site-producer",
        programs.command(
            "producer",
            "site-producer",
            &[],
            &[
                "--site",
                SITE,
                "--udp-host",
                "127.0.0.1",
                "--udp-port",
                &udp_port.to_string(),
                "--metrics-addr",
                &format!("127.0.0.1:{metrics_port}"),
            ],
        ),
    );
    let sourced = wait_until(Duration::from_secs(30), || async {
        producer
            .stderr()
            .contains("the centre sources this site's stream")
    })
    .await;
    assert!(
        sourced.is_some(),
        "the site provisions the centre's source with its deploy rights: {}",
        producer.stderr()
    );
    let mut receiver = programs.spawn(
        "receiver",
        programs.command(
            "receiver",
            "receiver",
            &[],
            &["--durable", "deploy-site", "--deliver", "all"],
        ),
    );

    let mut sent = send(udp_port, 100, 2).await;
    // The WAN cut: the site goes on storing; the centre catches up once it is back.
    site.cut();
    sent += send(udp_port, 200, 3).await;
    let published_while_cut = wait_until(Duration::from_secs(30), || async {
        published(metrics_port) >= sent
    })
    .await;
    assert!(
        published_while_cut.is_some(),
        "the site stored {} of {sent} with the link cut: {}",
        published(metrics_port),
        producer.stderr()
    );
    let cut_count = stream_info(&centre_js, "TSPI").await.state.messages;
    assert!(cut_count < sent, "the link was cut: {cut_count} of {sent}");
    site.heal();

    let all_in = wait_until(Duration::from_secs(60), || async {
        stream_info(&centre_js, "TSPI").await.state.messages >= sent
    })
    .await;
    let state = stream_info(&centre_js, "TSPI").await.state;
    assert!(
        all_in.is_some(),
        "the centre holds {} of {sent}",
        state.messages
    );
    assert_eq!(state.messages, sent, "none twice");
    wait_until(Duration::from_secs(30), || async {
        receiver.stdout().lines().count() as u64 >= sent
    })
    .await;
    assert_eq!(
        receiver.stdout().lines().count() as u64,
        sent,
        "the centre's receiver, as the deploy receiver, gets every datagram: {}",
        receiver.stderr()
    );

    // What the site user may not do at the centre, even as the site's own admin.
    let centre_from_site = jetstream::with_domain(site_admin.clone(), "centre");
    assert!(
        centre_from_site.get_stream("TSPI").await.is_ok(),
        "the site may read TSPI's configuration (to provision its source)"
    );
    assert!(
        centre_from_site.delete_stream("TSPI").await.is_err(),
        "a site may not delete the centre's stream"
    );
    let read = centre_from_site
        .create_consumer_on_stream(
            jetstream::consumer::pull::Config {
                durable_name: Some("from-site".into()),
                ..Default::default()
            },
            "TSPI",
        )
        .await;
    assert!(read.is_err(), "a site may not read the centre's stream");
    assert_eq!(stream_info(&centre_js, "TSPI").await.state.messages, sent);
    assert!(
        stream_info(&centre_js, "TSPI")
            .await
            .config
            .sources
            .iter()
            .flatten()
            .any(|s| s.name == "TSPI_SITE_NORTH"),
        "the centre sources the site"
    );
    eprintln!(
        "site-deploy: {sent} datagrams ({cut_count} at the centre while cut), all at the centre and its receiver once"
    );
    producer.stop(Duration::from_secs(20)).await;
    receiver.stop(Duration::from_secs(20)).await;
}
