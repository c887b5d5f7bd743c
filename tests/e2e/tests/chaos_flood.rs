//! Connection floods on the listening ports: 400 idle connections to the producer's
//! metrics port with its open-files limit at 256 (the case that once held every
//! descriptor and cost a quarter of a core in accept errors), and to the web display.
//! Ingest goes on, the process reconnects to NATS during the flood (the server is
//! restarted under it), and the accept loop does not spin.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(clippy::await_holding_lock)] // the serial guard is held across awaits on purpose

mod chaos;
mod common;

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use chaos::{programs_for, report, scrape};
use common::free_udp_port;
use tspi_test_support::{free_port, wait_until, NatsServer};

const FLOOD: usize = 400;
const FILE_LIMIT: u32 = 256;

/// `cmd` run under `ulimit -n limit` (through bash, which then execs it).
fn with_file_limit(cmd: &Command, limit: u32) -> Command {
    let mut wrapped = Command::new("bash");
    wrapped
        .arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    wrapped
}

/// CPU seconds (user + system) a process has used, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after "pid (comm)".
    (ticks(11) + ticks(12)) / 100.0
}

/// The share of one core a process uses over `window` (the flood's cost while idle).
async fn cpu_share_over(pid: u32, window: Duration) -> f64 {
    let before = cpu_seconds(pid);
    let started = Instant::now();
    // The measuring window itself.
    tokio::time::sleep(window).await;
    (cpu_seconds(pid) - before) / started.elapsed().as_secs_f64()
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn flood(port: u16) -> Vec<TcpStream> {
    (0..FLOOD)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_port_flood_does_not_starve_ingest_or_reconnects() {
    chaos::init_logging();
    let _serial = chaos::serial();
    let mut nats = NatsServer::start().await;
    let urls = vec![nats.url()];
    let programs = programs_for(&urls);
    let admin = async_nats::jetstream::new(tspi_e2e::client(&urls).await);
    let udp_port = free_udp_port();
    let metrics_port = free_port();
    let cmd = programs.command(
        "producer",
        "producer",
        &[],
        &[
            "--udp-host",
            "127.0.0.1",
            "--udp-port",
            &udp_port.to_string(),
            "--stats-interval",
            "0",
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
        ],
    );
    let producer = programs.spawn("producer", with_file_limit(&cmd, FILE_LIMIT));
    let up = wait_until(Duration::from_secs(30), || async {
        !scrape(metrics_port).is_empty() && admin.get_stream("TSPI").await.is_ok()
    })
    .await;
    assert!(up.is_some(), "producer up: {}", producer.stderr());
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", producer.pid())).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 256 ")),
        "the producer runs with 256 descriptors: {limits}"
    );

    // The flood: 400 idle connections, held open.
    let held = flood(metrics_port);
    assert_eq!(held.len(), FLOOD, "the kernel accepted every connection");
    let idle_cpu = cpu_share_over(producer.pid(), Duration::from_secs(3)).await;
    let descriptors = open_descriptors(producer.pid());

    // Traffic, and a NATS restart under the flood: the producer must reconnect.
    let mut generator = {
        let mut g = Command::new(tspi_test_support::workspace_bin("generator"));
        g.args(["--udp-target", &format!("127.0.0.1:{udp_port}")])
            .args(["--count", "20", "--rate", "50", "--duration", "8"]);
        programs.spawn("generator", g)
    };
    // Restart NATS once the traffic is being stored, so the reconnect happens mid-stream.
    let flowing = wait_until(Duration::from_secs(30), || async {
        match admin.get_stream("TSPI").await {
            Ok(mut s) => s.info().await.is_ok_and(|i| i.state.messages > 1_000),
            Err(_) => false,
        }
    })
    .await;
    assert!(
        flowing.is_some(),
        "traffic stored before the restart: {}",
        producer.stderr()
    );
    nats.restart();
    let sent = chaos::generator_sent(&mut generator, Duration::from_secs(60)).await;
    let stored = wait_until(Duration::from_secs(60), || async {
        match admin.get_stream("TSPI").await {
            Ok(mut s) => s.info().await.is_ok_and(|i| i.state.messages == sent),
            Err(_) => false,
        }
    })
    .await;
    let exposition = scrape(metrics_port);
    report(
        "flood-metrics",
        &format!(
            "{FLOOD} idle connections to the producer's metrics port, open-files limit \
             {FILE_LIMIT}: {descriptors} descriptors open, {:.1} % of a core while flooded; \
             NATS restarted under the flood; {sent} sent, stored {}",
            idle_cpu * 100.0,
            if stored.is_some() { "all" } else { "NOT all" }
        ),
    );
    assert!(
        stored.is_some(),
        "every datagram stored after the reconnect under the flood: {}",
        producer.stderr()
    );
    assert!(
        descriptors < FILE_LIMIT as usize / 2,
        "the flood holds a bounded share of the descriptors: {descriptors}"
    );
    assert!(
        idle_cpu < 0.10,
        "no accept spin: {:.1} % of a core",
        idle_cpu * 100.0
    );
    assert!(
        exposition.contains("tspi_producer_published_total"),
        "the endpoint answers once the idle connections timed out"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_display_flood_is_capped_and_the_page_still_loads() {
    chaos::init_logging();
    let _serial = chaos::serial();
    let mut nats = NatsServer::start().await;
    let urls = vec![nats.url()];
    let programs = programs_for(&urls);
    let client = tspi_e2e::client(&urls).await;
    let spec = tspi_bus::StreamSpec::tspi(
        &tspi_bus::StreamArgs::default(),
        &tspi_core::StreamPrefix::default(),
    )
    .unwrap();
    tspi_bus::ensure_stream(&client, &async_nats::jetstream::new(client.clone()), &spec)
        .await
        .unwrap();
    drop(client);
    let web_port = free_port();
    let cmd = programs.command(
        "player",
        "player",
        &[],
        &[
            "--web",
            &format!("127.0.0.1:{web_port}"),
            "--web-max-sessions",
            "8",
        ],
    );
    let player = programs.spawn("player-web", with_file_limit(&cmd, FILE_LIMIT));
    let up = wait_until(Duration::from_secs(30), || async {
        chaos_http_ok(web_port, "/healthz")
    })
    .await;
    assert!(up.is_some(), "web display up: {}", player.stderr());

    let held = flood(web_port);
    let idle_cpu = cpu_share_over(player.pid(), Duration::from_secs(3)).await;
    let descriptors = open_descriptors(player.pid());
    // A NATS restart under the flood: the display reconnects (the hub's subscription
    // carries on), which needs a descriptor.
    nats.restart();
    let reconnected = wait_until(Duration::from_secs(30), || async {
        nats.client_connections() >= 1
    })
    .await;
    // The idle connections are closed after the first-request deadline; then the page
    // loads again.
    let page = wait_until(Duration::from_secs(30), || async {
        chaos_http_ok(web_port, "/")
    })
    .await;
    report(
        "flood-web",
        &format!(
            "{FLOOD} idle connections to the web display (--web-max-sessions 8, open-files \
             limit {FILE_LIMIT}): {descriptors} descriptors open, {:.1} % of a core while \
             flooded; NATS reconnect {}; page served again {}",
            idle_cpu * 100.0,
            if reconnected.is_some() {
                "ok"
            } else {
                "FAILED"
            },
            page.map_or("never".to_owned(), |d| format!(
                "after {:.1} s",
                d.as_secs_f64()
            ))
        ),
    );
    assert!(reconnected.is_some(), "the display reconnected to NATS");
    assert!(
        page.is_some(),
        "the page loads once the flood's idle connections are closed"
    );
    assert!(
        descriptors < FILE_LIMIT as usize,
        "descriptors bounded: {descriptors}"
    );
    assert!(
        idle_cpu < 0.10,
        "no accept spin: {:.1} % of a core",
        idle_cpu * 100.0
    );
    drop(held);
}

fn chaos_http_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200")
}
