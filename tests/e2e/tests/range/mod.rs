//! A small range on loopback for the web display's tests: a NATS server, the producer
//! fed by the generator over UDP, optionally PostgreSQL with the archiver and
//! `replayer serve`, and `player --web` — every one the workspace's own binary — plus
//! headless Chromium tabs on the display.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test uses a part

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tspi_bus::NatsArgs;
use tspi_test_support::{free_port, workspace_root, Browser, NatsServer, PgServer};

use crate::common::{free_udp_port, Programs, Running};

/// Run blocking browser calls from an async test.
pub fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Where a range display's screenshots go (kept after the run).
pub fn screenshot_path(name: &str) -> PathBuf {
    workspace_root().join("target/web-screenshots").join(name)
}

pub struct Range {
    pub nats: NatsServer,
    pub programs: Programs<'static>,
    pub udp_port: u16,
    pub producer: Running,
    pub pg: Option<(PgServer, String)>,
    pub archiver: Option<Running>,
    pub replayer: Option<Running>,
    pub player: Running,
    pub url: String,
    pub metrics_port: u16,
    pub alarmer: Option<Running>,
}

pub struct RangeOptions<'a> {
    /// PostgreSQL, the archiver and `replayer serve` (for replays and the timeline).
    pub archive: bool,
    pub player_args: &'a [&'a str],
    /// The alarmer with this rule file (started before the display, so the display has
    /// the boundaries from its start).
    pub alarm_rules: Option<&'a std::path::Path>,
}

/// The range origin the generator flies around, as `--origin`.
pub const ORIGIN: &str = "34.9,-117.9,700";

impl Range {
    pub async fn start(o: RangeOptions<'_>) -> Range {
        let nats = NatsServer::start().await;
        let url = nats.url();
        let auth: &'static dyn Fn(&str) -> NatsArgs = Box::leak(Box::new(move |_: &str| {
            NatsArgs::for_urls(std::slice::from_ref(&url))
        }));
        let programs = Programs::new(auth);
        let udp_port = free_udp_port();
        let mut producer = programs.producer(udp_port, &[]);
        // The producer creates TSPI; the display reads it.
        wait_stream(&nats, &mut producer).await;
        let (pg, archiver, replayer) = if o.archive {
            let pg = PgServer::start_primary();
            let db = pg.create_database("display");
            let db_url = pg.url(&db);
            programs.archiver_migrate(&db_url).await;
            let archiver = programs.start("archiver", "archiver", &["--database-url", &db_url]);
            let mut cmd = programs.command("replayer", "replayer", &["serve"], &[]);
            cmd.args(["--database-url", &db_url]);
            let replayer = programs.spawn("replayer", cmd);
            (Some((pg, db)), Some(archiver), Some(replayer))
        } else {
            (None, None, None)
        };
        let alarmer = o.alarm_rules.map(|rules| {
            programs.start(
                "alarmer",
                "alarmer",
                &["--rules", rules.to_str().unwrap(), "--origin", ORIGIN],
            )
        });
        if let Some(a) = &alarmer {
            wait_alarmer(&nats, a).await;
        }
        let metrics_port = free_port();
        let metrics = format!("127.0.0.1:{metrics_port}");
        let mut args = vec![
            "--web",
            "127.0.0.1:0",
            "--origin",
            ORIGIN,
            "--metrics-addr",
            &metrics,
        ];
        args.extend_from_slice(o.player_args);
        let mut player = programs.start("player-web", "player", &args);
        player.first_line(Duration::from_secs(30)).await;
        let line: Value = serde_json::from_str(player.stdout().lines().next().unwrap()).unwrap();
        assert_eq!(line["event"], "listening", "{line}");
        let url = line["url"].as_str().unwrap().to_owned();
        if let Some(r) = &replayer {
            wait_replayer(&nats, r).await;
        }
        Range {
            nats,
            programs,
            udp_port,
            producer,
            pg,
            archiver,
            replayer,
            player,
            url,
            metrics_port,
            alarmer,
        }
    }

    /// The generator: `count` aircraft at `rate` Hz, mixed geocentric and spherical.
    pub fn generator(&self, name: &str, count: u32, rate: u32, duration: &str) -> Running {
        let target = format!("127.0.0.1:{}", self.udp_port);
        let (count, rate) = (count.to_string(), rate.to_string());
        let mut cmd = Command::new(tspi_test_support::workspace_bin("generator"));
        cmd.args([
            "--udp-target",
            &target,
            "--count",
            &count,
            "--rate",
            &rate,
            "--message-type",
            "mixed",
        ]);
        if duration == "continuous" {
            cmd.arg("--continuous");
        } else {
            cmd.args(["--duration", duration]);
        }
        self.programs.spawn(name, cmd)
    }

    /// `console <args…>` to completion.
    pub async fn console(&self, name: &str, args: &[&str]) -> Running {
        self.programs.console(name, args).await
    }

    /// The player's Prometheus text.
    pub fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics", &[]).1
    }

    /// A metric's value (summed over its series whose labels contain `label`).
    pub fn metric(&self, name: &str, label: &str) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// A new tab on the display, connected.
    pub fn tab(&self, query: &str) -> Browser {
        let b = Browser::start(1400, 900);
        b.requested_urls(); // the browser's own start page, not ours
        b.goto(&format!("{}{query}", self.url));
        b.until(
            "window.tspiDisplay !== undefined && tspiDisplay.state().connected",
            Duration::from_secs(20),
            "the display connects",
        );
        b
    }

    pub fn psql(&self, sql: &str) -> String {
        let (pg, db) = self.pg.as_ref().expect("started with archive: true");
        pg.psql(db, sql)
    }

    /// The display's TCP port.
    pub fn port(&self) -> u16 {
        self.url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap()
    }

    /// Resident memory of the display process, kB.
    pub fn player_rss_kb(&self) -> u64 {
        rss_kb(self.player.pid())
    }
}

pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn wait_stream(nats: &NatsServer, producer: &mut Running) {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let created = || {
        let js = js.clone();
        async move { js.get_stream("TSPI").await.is_ok() }
    };
    if tspi_test_support::wait_until(Duration::from_secs(30), created)
        .await
        .is_none()
    {
        panic!("the producer did not create TSPI: {}", producer.stderr());
    }
}

async fn wait_replayer(nats: &NatsServer, replayer: &Running) {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let answering = || {
        let asked = tokio::time::timeout(
            Duration::from_secs(1),
            client.request("player.probe.ctrl", r#"{"op":"status"}"#.into()),
        );
        async move { matches!(asked.await, Ok(Ok(_))) }
    };
    if tspi_test_support::wait_until(Duration::from_secs(30), answering)
        .await
        .is_none()
    {
        panic!("replayer serve not answering: {}", replayer.stderr());
    }
}

/// A plain HTTP/1.1 GET on loopback with extra headers: (status, body, head).
pub fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, body, _) = http_get_head(port, path, headers);
    (status, body)
}

pub fn http_get_head(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        req.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    // The head; then the body until the server closes (not after a 101: it stays open).
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    if !raw.starts_with(b"HTTP/1.1 101") {
        let _ = s.read_to_end(&mut raw);
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned(), head.to_owned())
}

/// Percentile of samples (sorted copy).
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Until the alarmer answers on `alarms.ctrl`.
async fn wait_alarmer(nats: &NatsServer, alarmer: &Running) {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let answering = || {
        let asked = tokio::time::timeout(
            Duration::from_secs(2),
            client.request("alarms.ctrl", r#"{"op":"list"}"#.into()),
        );
        async move {
            matches!(asked.await, Ok(Ok(reply))
                if serde_json::from_slice::<Value>(&reply.payload).is_ok_and(|v| v["ok"] == true))
        }
    };
    if tspi_test_support::wait_until(Duration::from_secs(30), answering)
        .await
        .is_none()
    {
        panic!("the alarmer does not answer: {}", alarmer.stderr());
    }
}
