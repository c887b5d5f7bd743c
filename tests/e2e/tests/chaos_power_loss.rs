//! Chaos scenario 3, a site-wide crash: all three nodes are killed -9 at the same instant
//! while acknowledgements stream back, then restarted. Every message JetStream
//! acknowledged must be in the stream afterwards. Run with the deploy setting
//! (`sync_interval: always`, deploy/nats/node.conf) and with the server's default
//! interval, and report both.
//!
//! A kill -9 stops the processes, not the machine: what they wrote is in the kernel's
//! page cache and reaches the disk anyway. A power cut also loses that cache, which is
//! what the default interval leaves exposed (Jepsen's NATS 2.12 analysis: 131,418 of
//! 930,005 acknowledged writes lost). So the second test puts the three stores on a
//! [`PowerCutMount`] (a FUSE file system that holds every write until it is fsynced) and
//! cuts the power after the kill: everything not fsynced is gone when the nodes restart.
//! docs/reliability.md has the figures and what the emulation does not cover.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(clippy::await_holding_lock)] // the serial guard is held across awaits on purpose

mod chaos;
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::stream::{FuturesUnordered, StreamExt};
use tspi_bus::{ensure_stream, StreamArgs, StreamSpec};
use tspi_core::{Datagram, GeocentricRaw, Payload, StreamPrefix, TelemetryRecord};
use tspi_test_support::{wait_until, NatsCluster, PowerCutMount};

struct Outcome {
    acked: u64,
    stored_acked: u64,
    lost: u64,
    stored_total: u64,
    /// Unsynced pages a power cut threw away (0 for a plain kill).
    pages_lost: u64,
    /// Whether `TSPI` was there at all after the restart.
    stream_survived: bool,
    /// Whether it had a leader within 60 s, so that it could be read.
    stream_readable: bool,
}

/// The sum of several rounds' outcomes.
#[derive(Default)]
struct Totals {
    acked: u64,
    lost: u64,
    stored: u64,
    pages_lost: u64,
    streams_lost: u64,
    streams_leaderless: u64,
}

impl Totals {
    fn add(&mut self, o: &Outcome) {
        assert_eq!(
            o.stored_acked + o.lost,
            o.acked,
            "accounting of the acknowledged ids"
        );
        self.acked += o.acked;
        self.lost += o.lost;
        self.stored += o.stored_total;
        self.pages_lost += o.pages_lost;
        self.streams_lost += u64::from(!o.stream_survived);
        self.streams_leaderless += u64::from(o.stream_survived && !o.stream_readable);
    }
}

/// What happens to the machine after the three nodes are killed -9.
enum Crash<'a> {
    /// Nothing: the page cache survives and reaches the disk.
    ProcessesOnly,
    /// The power goes: the stores are on this mount, which loses every unsynced write.
    PowerCut(&'a mut PowerCutMount),
}

async fn crash_all_after_acks(jetstream_lines: &str, kill_after: u64, crash: Crash<'_>) -> Outcome {
    let mut crash = crash;
    let mut cluster = match &crash {
        Crash::ProcessesOnly => NatsCluster::start_with_block_lines(3, jetstream_lines, ""),
        Crash::PowerCut(mount) => {
            let root = mount
                .mountpoint()
                .join(format!("run-{}", tspi_test_support::free_port()));
            std::fs::create_dir(&root).unwrap();
            NatsCluster::start_with_stores_in(3, jetstream_lines, &root)
        }
    };
    cluster.wait_jetstream(Duration::from_secs(60)).await;
    let client = tspi_e2e::client(&cluster.urls()).await;
    let js = jetstream::new(client.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&client, &js, &spec).await.unwrap();

    // Publish with 512 in flight; note every acknowledged id. Kill all three nodes the
    // moment `kill_after` acks are in, with publishes still in flight.
    let mut acked: HashSet<String> = HashSet::new();
    let mut in_flight = FuturesUnordered::new();
    let mut next: u32 = 0;
    let mut crashed = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !crashed && Instant::now() < deadline {
        while in_flight.len() < 512 {
            let d = Datagram {
                sensor_id: 7,
                day: 100,
                time_ticks: next,
                status: 0,
                status_flags: 0,
                payload: Payload::Geocentric(GeocentricRaw::default()),
            };
            let id = tspi_core::msg_id(&d);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let js = js.clone();
            let payload = TelemetryRecord::from_datagram(&d, 0).to_cbor();
            in_flight.push(async move {
                let ack = js
                    .publish_with_headers("tspi.geocentric.7", headers, payload.into())
                    .await;
                match ack {
                    Ok(f) => f.await.ok().map(|_| id),
                    Err(_) => None,
                }
            });
            next += 1;
        }
        if let Some(Some(id)) = in_flight.next().await {
            acked.insert(id);
            if acked.len() as u64 >= kill_after {
                cluster.kill_all();
                crashed = true;
            }
        }
    }
    assert!(crashed, "reached {kill_after} acks");
    drop(in_flight);
    drop(client);

    let pages_lost = match &mut crash {
        Crash::ProcessesOnly => 0,
        Crash::PowerCut(mount) => mount.cut_power().expect("power back on").pages,
    };
    for i in 0..3 {
        cluster.node(i).restart();
    }
    cluster.wait_jetstream(Duration::from_secs(60)).await;
    let client = tspi_e2e::client(&cluster.urls()).await;
    let js = jetstream::new(client);
    // The stream has a leader again, or the restarted cluster says it has no such
    // stream for 10 s in a row (a power cut can take its definition with it).
    let missing_since: std::cell::Cell<Option<Instant>> = std::cell::Cell::new(None);
    let settled = wait_until(Duration::from_secs(60), || async {
        match js.get_stream("TSPI").await {
            Ok(mut s) => {
                missing_since.set(None);
                s.info()
                    .await
                    .is_ok_and(|i| i.cluster.as_ref().is_some_and(|c| c.leader.is_some()))
            }
            Err(e) => {
                let not_found = matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                );
                if !not_found {
                    missing_since.set(None);
                    return false;
                }
                let since = missing_since.get().unwrap_or_else(Instant::now);
                missing_since.set(Some(since));
                since.elapsed() >= Duration::from_secs(10)
            }
        }
    })
    .await;
    let readable = settled.is_some() && missing_since.get().is_none();
    if !readable {
        // A power cut can take the stream with it (its definition was never fsynced),
        // or leave its replicas unable to elect a leader: report either as every
        // acknowledged message lost (none can be read) rather than stop here.
        assert!(
            matches!(crash, Crash::PowerCut(_)),
            "TSPI has a leader after a kill -9 of every node"
        );
        return Outcome {
            acked: acked.len() as u64,
            stored_acked: 0,
            lost: acked.len() as u64,
            stored_total: 0,
            pages_lost,
            stream_survived: settled.is_none(),
            stream_readable: false,
        };
    }
    let stored = tspi_e2e::stream_contents(&js, "TSPI").await;
    let stored_ids: HashSet<String> = stored.iter().map(|m| m.msg_id.clone()).collect();
    let stored_acked = acked.iter().filter(|id| stored_ids.contains(*id)).count() as u64;
    Outcome {
        acked: acked.len() as u64,
        stored_acked,
        lost: acked.len() as u64 - stored_acked,
        stored_total: stored.len() as u64,
        pages_lost,
        stream_survived: true,
        stream_readable: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_wide_crash_right_after_acks_loses_no_acknowledged_message() {
    chaos::init_logging();
    let _serial = chaos::serial();
    let (kill_after, rounds) = if chaos::full_length() {
        (100_000, 5)
    } else {
        (20_000, 1)
    };
    for (setting, lines) in [
        ("sync_interval: always (deploy)", "sync_interval: always"),
        ("default sync interval", ""),
    ] {
        let mut t = Totals::default();
        for _ in 0..rounds {
            let o = crash_all_after_acks(lines, kill_after, Crash::ProcessesOnly).await;
            t.add(&o);
            assert_eq!(
                o.lost, 0,
                "{setting}: {} of {} acknowledged messages missing after a kill -9 of every node",
                o.lost, o.acked
            );
        }
        chaos::report(
            "power-loss",
            &format!(
                "{setting}: {rounds} crash(es) of all three nodes right after {kill_after} acks \
                 (512 in flight): {} acknowledged, {} lost; {} stored in all \
                 (acknowledged + in flight at the crash)",
                t.acked, t.lost, t.stored
            ),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_right_after_acks_loses_nothing_with_sync_always() {
    chaos::init_logging();
    let _serial = chaos::serial();
    let disk = tempfile::tempdir().unwrap();
    let (backing, mountpoint) = (disk.path().join("disk"), disk.path().join("mnt"));
    std::fs::create_dir(&backing).unwrap();
    std::fs::create_dir(&mountpoint).unwrap();
    let mut mount = match PowerCutMount::mount(&backing, &mountpoint) {
        Ok(m) => m,
        Err(e) => {
            tspi_test_support::skipped(
                "power_cut_right_after_acks_loses_nothing_with_sync_always",
                tspi_test_support::Dependency::Fuse,
                &format!("this machine cannot mount a FUSE file system: {e}"),
            );
            return;
        }
    };
    let (kill_after, rounds) = if chaos::full_length() {
        (100_000, 3)
    } else {
        (10_000, 1)
    };
    let mut settings = vec![
        (
            "sync_interval: always (deploy)",
            "sync_interval: always",
            true,
        ),
        ("default sync interval (2 min)", "", false),
    ];
    if chaos::full_length() {
        // A short interval: the stream is older than one interval when the power goes.
        settings.push(("sync_interval: 10s", "sync_interval: 10s", false));
    }
    for (setting, lines, must_keep_all) in settings {
        let mut t = Totals::default();
        for _ in 0..rounds {
            let o = crash_all_after_acks(lines, kill_after, Crash::PowerCut(&mut mount)).await;
            t.add(&o);
            if must_keep_all {
                assert_eq!(
                    o.lost, 0,
                    "{setting}: {} of {} acknowledged messages missing after a power cut \
                     of every node",
                    o.lost, o.acked
                );
            } else {
                // The emulation must have had something to lose, or this measures nothing.
                assert!(
                    o.pages_lost > 0,
                    "{setting}: the power cut found no unsynced write to lose"
                );
            }
        }
        chaos::report(
            "power-cut",
            &format!(
                "{setting}: {rounds} power cut(s) of all three nodes right after {kill_after} \
                 acks (512 in flight): {} acknowledged, {} lost ({:.1} %), stream \
                 gone {} time(s), there but without a leader for 60 s {} time(s); {} \
                 stored in all; {} unsynced 4 KiB pages dropped by the cuts",
                t.acked,
                t.lost,
                100.0 * t.lost as f64 / t.acked.max(1) as f64,
                t.streams_lost,
                t.streams_leaderless,
                t.stored,
                t.pages_lost
            ),
        );
    }
}
