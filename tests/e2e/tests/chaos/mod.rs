//! The chaos scenarios' rig: the real programs as processes (generator → UDP → producer →
//! JetStream → archiver → PostgreSQL, and a durable receiver printing JSON lines), and the
//! exact accounting every scenario ends with: datagrams sent = messages in `TSPI` =
//! archived rows = receiver lines, nothing lost, nothing duplicated.
//!
//! Scenarios run shortened in `tests/run.sh`; `TSPI_CHAOS_FULL=1` runs the full lengths
//! that docs/reliability.md reports. Each prints a `chaos-figures:` line with what it
//! measured.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each scenario uses a part

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::Value;
use tspi_bus::NatsArgs;
use tspi_test_support::{free_port, wait_until, workspace_bin, PgServer};

use crate::common::{free_udp_port, Programs, Running};

/// Full-length runs (the figures in docs/reliability.md) instead of the CI lengths.
pub fn full_length() -> bool {
    std::env::var("TSPI_CHAOS_FULL").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `short` seconds in CI, `full` with `TSPI_CHAOS_FULL=1`.
pub fn seconds(short: u64, full: u64) -> u64 {
    if full_length() {
        full
    } else {
        short
    }
}

/// Scenarios share two cores: one at a time within a test binary (cargo runs the
/// binaries themselves one after another).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn init_logging() {
    let _ = tspi_runtime::init_logging(&tspi_runtime::LogArgs {
        log_level: "warn".into(),
        log_format: tspi_runtime::LogFormat::Text,
    });
}

/// Programs connecting without authentication to `urls` (the test clusters are open).
pub fn programs_for(urls: &[String]) -> Programs<'static> {
    let urls = urls.to_vec();
    let auth: &'static dyn Fn(&str) -> NatsArgs =
        Box::leak(Box::new(move |_: &str| NatsArgs::for_urls(&urls)));
    Programs::new(auth)
}

/// The pipeline under test, every program its own process.
pub struct Rig {
    pub programs: Programs<'static>,
    /// Holds the producer's logs when it has its own connection settings.
    pub producer_programs: Option<Programs<'static>>,
    pub admin: jetstream::Context,
    pub pg: PgServer,
    pub db: String,
    pub udp_port: u16,
    pub producer: Running,
    pub producer_metrics: u16,
    pub archiver: Running,
    pub archiver_metrics: u16,
    pub receiver: Running,
    pub receiver_metrics: u16,
    pub receiver_counts_only: bool,
    pub receiver_lines: LineCounter,
    /// `TSPI` has a short `--retention`: count what it stored by its last sequence.
    pub stream_bounded: bool,
}

/// Knobs of [`Rig::start`].
#[derive(Default)]
pub struct RigOptions<'a> {
    pub producer_args: &'a [&'a str],
    pub archiver_args: &'a [&'a str],
    /// A primary with a synchronous standby instead of a lone primary.
    pub pg: Option<PgServer>,
    /// Where the producer connects, if not where the others do (a [`LinkProxy`] to cut).
    ///
    /// [`LinkProxy`]: tspi_test_support::LinkProxy
    pub producer_urls: Option<&'a [String]>,
    /// The receiver only counts (`--no-json-stream`): long runs would write gigabytes.
    /// The accounting then uses its written counter instead of its lines.
    pub receiver_counts_only: bool,
    /// The producer's `--retention` for `TSPI` (a long run would fill the disk with three
    /// replicas of everything). The accounting then counts the stream by its last
    /// sequence, not by the messages it still holds.
    pub stream_retention: Option<&'a str>,
}

impl Rig {
    /// Start producer, archiver and a durable receiver against `urls`, and wait until
    /// each is ready: the producer's metrics answer and `TSPI` exists, the archiver's and
    /// the receiver's durable consumers exist.
    pub async fn start(urls: &[String], options: RigOptions<'_>) -> Rig {
        let programs = programs_for(urls);
        let admin = jetstream::new(tspi_e2e::client(urls).await);
        let pg = options.pg.unwrap_or_else(PgServer::start_primary);
        let db = pg.create_database("chaos");
        let url = pg.url(&db);
        programs.archiver_migrate(&url).await;

        let udp_port = free_udp_port();
        let producer_metrics = free_port();
        let metrics_addr = format!("127.0.0.1:{producer_metrics}");
        let mut producer_args = vec!["--metrics-addr", &metrics_addr];
        if let Some(retention) = options.stream_retention {
            producer_args.extend_from_slice(&["--retention", retention]);
        }
        producer_args.extend_from_slice(options.producer_args);
        let producer_programs = options.producer_urls.map(programs_for);
        let mut producer = producer_programs
            .as_ref()
            .unwrap_or(&programs)
            .producer(udp_port, &producer_args);
        let ready = wait_until(Duration::from_secs(60), || async {
            http_answers(producer_metrics) && admin.get_stream("TSPI").await.is_ok()
        })
        .await;
        assert!(ready.is_some(), "producer not up: {}", producer.stderr());
        let _ = &mut producer;

        let archiver_metrics = free_port();
        let archiver_metrics_addr = format!("127.0.0.1:{archiver_metrics}");
        let mut archiver_args = vec![
            "--database-url",
            &url,
            "--metrics-addr",
            &archiver_metrics_addr,
        ];
        archiver_args.extend_from_slice(options.archiver_args);
        let archiver = programs.start("archiver", "archiver", &archiver_args);
        let receiver_metrics = free_port();
        let receiver_metrics_addr = format!("127.0.0.1:{receiver_metrics}");
        let mut receiver_args = vec![
            "--durable",
            "chaos-receiver",
            "--deliver",
            "all",
            "--metrics-addr",
            &receiver_metrics_addr,
        ];
        if options.receiver_counts_only {
            receiver_args.push("--no-json-stream");
        }
        let receiver = programs.start("receiver", "receiver", &receiver_args);
        for (durable, program) in [("archiver", &archiver), ("chaos-receiver", &receiver)] {
            let ready = wait_until(Duration::from_secs(60), || async {
                consumer_exists(&admin, durable).await
            })
            .await;
            assert!(ready.is_some(), "{durable} not up: {}", program.stderr());
        }
        let receiver_lines = LineCounter::new(receiver.stdout_path());
        Rig {
            programs,
            producer_programs,
            admin,
            pg,
            db,
            udp_port,
            producer,
            producer_metrics,
            archiver,
            archiver_metrics,
            receiver,
            receiver_metrics,
            receiver_counts_only: options.receiver_counts_only,
            receiver_lines,
            stream_bounded: options.stream_retention.is_some(),
        }
    }

    /// The generator sending `count` aircraft at `rate_hz` for `secs` seconds to the
    /// producer over UDP, in the background.
    pub fn generator(&self, count: u32, rate_hz: u32, secs: u64) -> Running {
        let mut cmd = std::process::Command::new(workspace_bin("generator"));
        cmd.args(["--udp-target", &format!("127.0.0.1:{}", self.udp_port)])
            .args(["--count", &count.to_string()])
            .args(["--rate", &rate_hz.to_string()])
            .args(["--duration", &secs.to_string()])
            .args(["--seed", "11"]);
        self.programs.spawn("generator", cmd)
    }

    /// Wait until the archive holds more than `rows` (traffic is flowing end to end);
    /// fails with the archiver's log.
    pub async fn wait_archiving(&self, rows: u64) {
        let flowing = wait_until(Duration::from_secs(30), || {
            let n = self.archived_rows();
            async move { n > rows }
        })
        .await;
        assert!(
            flowing.is_some(),
            "no more than {rows} rows archived within 30 s: {}",
            self.archiver.stderr()
        );
    }

    /// Wait until [`cluster_healthy`] holds; how long it took.
    pub async fn wait_healthy(&self, monitor_urls: &[String]) -> Duration {
        wait_until(Duration::from_secs(60), || async {
            cluster_healthy(monitor_urls, &self.admin).await
        })
        .await
        .expect("the cluster is healthy within 60 s")
    }

    /// Messages `TSPI` holds, or with a bounded stream how many it ever stored.
    pub async fn stream_messages(&self) -> Option<u64> {
        let mut stream = self.admin.get_stream("TSPI").await.ok()?;
        let state = stream.info().await.ok()?.state.clone();
        Some(if self.stream_bounded {
            state.last_sequence
        } else {
            state.messages
        })
    }

    pub fn archived_rows(&self) -> u64 {
        self.pg
            .psql(&self.db, "SELECT count(*) FROM messages")
            .parse()
            .unwrap()
    }

    /// Wait until the stream, the archive and the receiver each hold `want`; returns
    /// when each got there, measured from now.
    pub async fn wait_caught_up(&mut self, want: u64, timeout: Duration) -> CatchUp {
        let start = Instant::now();
        let mut stream = None;
        let mut archive = None;
        let mut receiver = None;
        let mut last = (0, 0, 0);
        // Longest time each consumer made no progress while behind.
        let mut archive_moved = (0u64, Instant::now(), Duration::ZERO);
        let mut receiver_moved = (0u64, Instant::now(), Duration::ZERO);
        let track = |moved: &mut (u64, Instant, Duration), n: u64| {
            if n != moved.0 {
                *moved = (n, Instant::now(), moved.2);
            } else {
                moved.2 = moved.2.max(moved.1.elapsed());
            }
        };
        while start.elapsed() < timeout {
            if stream.is_none() {
                let n = self.stream_messages().await.unwrap_or(0);
                last.0 = n;
                if n >= want {
                    stream = Some(start.elapsed());
                }
            }
            if archive.is_none() {
                let n = self.archived_rows();
                last.1 = n;
                track(&mut archive_moved, n);
                if n >= want {
                    archive = Some(start.elapsed());
                }
            }
            if receiver.is_none() {
                let n = self.receiver_output();
                last.2 = n;
                track(&mut receiver_moved, n);
                if n >= want {
                    receiver = Some(start.elapsed());
                }
            }
            if std::env::var_os("TSPI_CHAOS_TRACE").is_some() {
                let mut line = format!(
                    "t={:.1} stream={} archive={} receiver={}",
                    start.elapsed().as_secs_f64(),
                    last.0,
                    last.1,
                    last.2
                );
                for durable in ["archiver", "chaos-receiver"] {
                    if let Ok(stream) = self.admin.get_stream("TSPI").await {
                        if let Ok(mut c) = stream
                            .get_consumer::<jetstream::consumer::pull::Config>(durable)
                            .await
                        {
                            if let Ok(i) = c.info().await {
                                line.push_str(&format!(" | {durable}: pending={} ack_pending={} waiting={} delivered={} floor={}", i.num_pending, i.num_ack_pending, i.num_waiting, i.delivered.stream_sequence, i.ack_floor.stream_sequence));
                            }
                        }
                    }
                }
                eprintln!("{line}");
            }
            if let (Some(s), Some(a), Some(r)) = (stream, archive, receiver) {
                if std::env::var_os("TSPI_CHAOS_TRACE").is_some() {
                    eprintln!(
                        "--- archiver ---\n{}\n--- receiver ---\n{}",
                        tail(&self.archiver.stderr(), 40),
                        tail(&self.receiver.stderr(), 20)
                    );
                }
                return CatchUp {
                    stream: s,
                    archive: a,
                    receiver: r,
                    archive_longest_stall: archive_moved.2,
                    receiver_longest_stall: receiver_moved.2,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "not caught up within {timeout:?}: stream {}, archive {}, receiver {} of {want}\n\
             producer: {}\narchiver: {}\nreceiver: {}",
            last.0,
            last.1,
            last.2,
            tail(&self.producer.stderr(), 15),
            tail(&self.archiver.stderr(), 15),
            tail(&self.receiver.stderr(), 15),
        );
    }

    /// The exact accounting: `sent` distinct records in the stream, in the archive and on
    /// the receiver's stdout, each exactly once.
    pub async fn assert_exact(&self, sent: u64) -> Accounting {
        let stream = self.stream_messages().await.unwrap();
        let rows = self.archived_rows();
        let distinct_rows: u64 = self
            .pg
            .psql(
                &self.db,
                "SELECT count(DISTINCT (subject, msg_id)) FROM messages",
            )
            .parse()
            .unwrap();
        let (lines, distinct) = if self.receiver_counts_only {
            let written = metric(
                &scrape(self.receiver_metrics),
                "tspi_receiver_messages_written_total",
            ) as u64;
            (written, written)
        } else {
            let mut keys = HashSet::new();
            let mut lines = 0u64;
            for line in self.receiver.stdout().lines() {
                lines += 1;
                let v: Value = serde_json::from_str(line).expect("receiver line is JSON");
                keys.insert((
                    v["sensor_id"].as_u64().unwrap(),
                    v["day"].as_u64().unwrap(),
                    (v["time_s"].as_f64().unwrap() * 10_000.0).round() as u64,
                ));
            }
            (lines, keys.len() as u64)
        };
        let accounting = Accounting {
            sent,
            stream,
            archived: rows,
            archived_distinct: distinct_rows,
            receiver_lines: lines,
            receiver_distinct: distinct,
        };
        assert_eq!(
            (stream, rows, distinct_rows, lines, distinct),
            (sent, sent, sent, sent, sent),
            "exact accounting (stream, archived, archived distinct, receiver lines, \
             receiver distinct) against {sent} sent: {accounting:?}"
        );
        accounting
    }

    /// What the receiver put out: its lines, or its written counter when it only counts.
    pub fn receiver_output(&mut self) -> u64 {
        if self.receiver_counts_only {
            metric(
                &scrape(self.receiver_metrics),
                "tspi_receiver_messages_written_total",
            ) as u64
        } else {
            self.receiver_lines.count()
        }
    }

    pub fn producer_metric(&self, name: &str) -> f64 {
        metric(&scrape(self.producer_metrics), name)
    }

    pub fn archiver_metric(&self, name: &str) -> f64 {
        metric(&scrape(self.archiver_metrics), name)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CatchUp {
    pub stream: Duration,
    pub archive: Duration,
    pub receiver: Duration,
    /// The longest the archive's row count stood still while behind.
    pub archive_longest_stall: Duration,
    /// The longest the receiver's output stood still while behind.
    pub receiver_longest_stall: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Accounting {
    pub sent: u64,
    pub stream: u64,
    pub archived: u64,
    pub archived_distinct: u64,
    pub receiver_lines: u64,
    pub receiver_distinct: u64,
}

/// The generator's summary: records sent (its last JSON line's `valid`).
pub async fn generator_sent(generator: &mut Running, timeout: Duration) -> u64 {
    let status = generator.wait(timeout).await;
    assert!(status.success(), "generator: {}", generator.stderr());
    generator.json_lines().last().unwrap()["valid"]
        .as_u64()
        .unwrap()
}

/// Counts newline-terminated lines of a growing file, reading only what is new.
pub struct LineCounter {
    path: std::path::PathBuf,
    offset: u64,
    lines: u64,
}

impl LineCounter {
    pub fn new(path: std::path::PathBuf) -> LineCounter {
        LineCounter {
            path,
            offset: 0,
            lines: 0,
        }
    }

    pub fn count(&mut self) -> u64 {
        if let Ok(mut f) = fs::File::open(&self.path) {
            if f.seek(SeekFrom::Start(self.offset)).is_ok() {
                let mut buf = Vec::new();
                if f.read_to_end(&mut buf).is_ok() {
                    // Only whole lines: a partial last line is counted next time.
                    if let Some(last) = buf.iter().rposition(|b| *b == b'\n') {
                        self.lines += buf[..=last].iter().filter(|b| **b == b'\n').count() as u64;
                        self.offset += last as u64 + 1;
                    }
                }
            }
        }
        self.lines
    }
}

async fn consumer_exists(admin: &jetstream::Context, durable: &str) -> bool {
    let Ok(stream) = admin.get_stream("TSPI").await else {
        return false;
    };
    stream
        .get_consumer::<jetstream::consumer::pull::Config>(durable)
        .await
        .is_ok()
}

fn http_answers(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A producer alone on `urls`, its metrics on their own port, up and `TSPI` there.
pub struct LoneProducer {
    pub programs: Programs<'static>,
    pub producer: Running,
    pub udp_port: u16,
    pub metrics_port: u16,
    pub admin: jetstream::Context,
}

impl LoneProducer {
    pub async fn start(urls: &[String]) -> LoneProducer {
        let programs = programs_for(urls);
        let udp_port = free_udp_port();
        let metrics_port = free_port();
        let metrics_addr = format!("127.0.0.1:{metrics_port}");
        let producer = programs.producer(udp_port, &["--metrics-addr", &metrics_addr]);
        let admin = jetstream::new(tspi_e2e::client(urls).await);
        let ready = wait_until(Duration::from_secs(60), || async {
            http_answers(metrics_port) && admin.get_stream("TSPI").await.is_ok()
        })
        .await;
        assert!(ready.is_some(), "producer not up: {}", producer.stderr());
        LoneProducer {
            programs,
            producer,
            udp_port,
            metrics_port,
            admin,
        }
    }
}

/// `GET /metrics` from a `--metrics-addr` port (empty when it does not answer).
pub fn scrape(port: u16) -> String {
    use std::io::Write;
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

/// The sum of every series of sample `name`, labelled or not (0 when absent).
pub fn metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let n = series.split('{').next()?;
            (n == name).then(|| v.trim().parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// The one series `name{label="value"}` in an exposition (0 when absent).
pub fn labelled_metric(exposition: &str, name: &str, label: &str, value: &str) -> f64 {
    let series = format!("{name}{{{label}=\"{value}\"}} ");
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Peak of `VmHWM` (the kernel's own high-water mark of RSS), kB.
pub fn peak_rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmHWM:")
}

pub fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:")
}

fn status_kb(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Every node answers `/healthz` with JetStream current, and `TSPI` has a leader with
/// every replica current.
pub async fn cluster_healthy(monitor_urls: &[String], admin: &jetstream::Context) -> bool {
    for url in monitor_urls {
        let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
        if !healthz_ok(port) {
            return false;
        }
    }
    let Ok(mut stream) = admin.get_stream("TSPI").await else {
        return false;
    };
    let Ok(info) = stream.info().await else {
        return false;
    };
    match &info.cluster {
        Some(c) => c.leader.is_some() && c.replicas.iter().all(|r| r.current && !r.offline),
        None => false,
    }
}

fn healthz_ok(port: u16) -> bool {
    use std::io::Write;
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.starts_with("HTTP/1.1 200") || body.starts_with("HTTP/1.0 200")
}

/// Print a scenario's figures in one greppable line (docs/reliability.md quotes them).
pub fn report(scenario: &str, figures: &str) {
    println!("chaos-figures: {scenario}: {figures}");
    eprintln!("chaos-figures: {scenario}: {figures}");
}
