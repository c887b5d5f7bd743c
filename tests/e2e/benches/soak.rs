//! Soak (docs/reliability.md): 20,000 msg/s for 10 minutes through generator → producer
//! → R3 cluster → archiver (PostgreSQL) and a durable receiver, every program a release
//! binary. Samples the RSS of every daemon and nats-server each 10 s and reports growth
//! from the end of the first minute to the end (goal: flat within 10 %), then the exact
//! accounting (the receiver only counts here: its lines would be gigabytes).
//!
//! `cargo build --release --bins && cargo bench -p tspi-e2e --bench soak`;
//! `TSPI_SOAK_SECONDS` (default 600) and `TSPI_SOAK_RATE` (aircraft × 100 Hz, default 200
//! aircraft) change the length and the rate; `TSPI_SOAK_RETENTION_MINUTES` (default 30)
//! what `TSPI` keeps.
//!
//! What it keeps is bounded: `TSPI` has a `--retention` (three replicas of 10 minutes
//! once filled this machine's disk), counted by its last sequence; the archive keeps
//! everything. It refuses to start without room for both. The retention must outlast
//! the slowest consumer's lag: JetStream skips what ages out before a consumer reads it
//! (a run with 5 minutes lost 1.78 M messages to a receiver that fell further behind).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is the report
#![allow(dead_code)]

#[path = "../tests/chaos/mod.rs"]
mod chaos;
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use chaos::{rss_kb, Rig, RigOptions};
use tspi_test_support::NatsCluster;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; a filter that is not "soak" skips it.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && a != "soak")
    {
        return;
    }
    chaos::init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(soak());
}

/// Free bytes on the file system of the temp directory (stores and the database).
fn free_bytes() -> u64 {
    let Ok(path) = std::ffi::CString::new(std::env::temp_dir().as_os_str().as_encoded_bytes())
    else {
        return 0;
    };
    #[allow(unsafe_code)]
    // SAFETY: statvfs(3) fills the zeroed struct; the path is NUL-terminated.
    let (rc, st) = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        let rc = libc::statvfs(path.as_ptr(), &mut st);
        (rc, st)
    };
    if rc == 0 {
        st.f_bavail * st.f_frsize
    } else {
        0
    }
}

async fn soak() {
    let secs = env_u64("TSPI_SOAK_SECONDS", 600);
    let aircraft = env_u64("TSPI_SOAK_RATE", 200) as u32;
    let rate = u64::from(aircraft) * 100;
    // Measured on the first run: ~460 bytes a message in each replica's store, ~420
    // bytes a row with its index in the archive.
    let retention_minutes = env_u64("TSPI_SOAK_RETENTION_MINUTES", 30);
    let retention_secs = retention_minutes * 60;
    let retention = format!("{retention_minutes}m");
    let needed = rate * retention_secs.min(secs) * 3 * 460 + rate * secs * 420 + (2 << 30);
    let free = free_bytes();
    assert!(
        free > needed,
        "the soak needs about {:.1} GB free in {}, and there are {:.1} GB",
        needed as f64 / 1e9,
        std::env::temp_dir().display(),
        free as f64 / 1e9
    );
    let mut cluster = NatsCluster::start(3).await;
    let mut rig = Rig::start(
        &cluster.urls(),
        RigOptions {
            receiver_counts_only: true,
            stream_retention: Some(&retention),
            ..RigOptions::default()
        },
    )
    .await;
    let mut daemons: Vec<(String, u32)> = vec![
        ("producer".into(), rig.producer.pid()),
        ("archiver".into(), rig.archiver.pid()),
        ("receiver".into(), rig.receiver.pid()),
    ];
    for i in 0..3 {
        daemons.push((
            format!("nats-server n{}", i + 1),
            cluster.node(i).pid().unwrap(),
        ));
    }
    let mut generator = rig.generator(aircraft, 100, secs);
    let started = Instant::now();
    let mut samples: Vec<(f64, Vec<u64>)> = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let rss: Vec<u64> = daemons.iter().map(|(_, pid)| rss_kb(*pid)).collect();
        eprintln!(
            "soak t={:.0}s rss_kb={rss:?} archived={} stream={:?}",
            started.elapsed().as_secs_f64(),
            rig.archived_rows(),
            rig.stream_messages().await
        );
        samples.push((started.elapsed().as_secs_f64(), rss));
    }
    let sent = chaos::generator_sent(&mut generator, Duration::from_secs(120)).await;
    // Past what the machine takes the producer's queue overflows, counted: the rest must
    // be exact.
    let dropped = rig.producer_metric("tspi_producer_datagrams_dropped_total") as u64;
    let stored = sent - dropped;
    let catch_up = rig.wait_caught_up(stored, Duration::from_secs(600)).await;
    let accounting = rig.assert_exact(stored).await;
    let after_first_minute = samples
        .iter()
        .find(|(t, _)| *t >= 60.0)
        .or(samples.first())
        .map(|(_, r)| r.clone())
        .unwrap_or_default();
    let end = samples.last().map(|(_, r)| r.clone()).unwrap_or_default();
    let mut lines = Vec::new();
    for (i, (name, _)) in daemons.iter().enumerate() {
        let a = after_first_minute.get(i).copied().unwrap_or(0) as f64;
        let b = end.get(i).copied().unwrap_or(0) as f64;
        let peak = samples.iter().map(|(_, r)| r[i]).max().unwrap_or(0);
        lines.push(format!(
            "{name}: {:.1} MiB at 1 min, {:.1} MiB at the end ({:+.1} %), peak {:.1} MiB",
            a / 1024.0,
            b / 1024.0,
            if a > 0.0 { (b - a) / a * 100.0 } else { 0.0 },
            peak as f64 / 1024.0
        ));
    }
    chaos::report(
        "soak",
        &format!(
            "{secs} s at {} msg/s: {}; caught up: stream +{:.1} s, archive +{:.1} s, \
             receiver +{:.1} s after the generator ended; {sent} sent, {dropped} dropped \
             by the producer (counted); {accounting:?}",
            aircraft * 100,
            lines.join("; "),
            catch_up.stream.as_secs_f64(),
            catch_up.archive.as_secs_f64(),
            catch_up.receiver.as_secs_f64(),
        ),
    );
}
