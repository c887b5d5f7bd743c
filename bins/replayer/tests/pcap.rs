//! `replayer pcap` (the real binary) on captures written by the test, with non-TSPI
//! packets mixed in: exactly the TSPI datagrams come out, in order, over UDP and into
//! JetStream; `--dry-run` reports skips, invalid datagrams, duplicates and gaps.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::net::UdpSocket;
use std::time::Duration;

use tspi_core::{Datagram, GeocentricRaw, Payload, SphericalRaw};
use tspi_replayer::capture::write;
use tspi_test_support::{run_cli, NatsServer};

const BIN: &str = env!("CARGO_BIN_EXE_replayer");
const T: Duration = Duration::from_secs(60);
const T0_NS: i128 = 1_759_057_200_000_000_000;

/// 3 sensors × 100 frames, 20 ms apart; sensor 1 skips frames 50..60 (a gap); frame 7 of
/// sensor 2 is captured twice; noise between them. Returns the frames and the TSPI
/// payloads in capture order.
type Frames = Vec<(i128, Vec<u8>)>;

fn capture() -> (Frames, Vec<[u8; 37]>) {
    let mut frames = Vec::new();
    let mut tspi = Vec::new();
    let mut ts = T0_NS;
    for i in 0..100u32 {
        for sensor in [1u16, 2, 3] {
            if sensor == 1 && (50..60).contains(&i) {
                continue;
            }
            let payload = if sensor == 3 {
                Payload::Spherical(SphericalRaw {
                    range: 1000 + i as i32,
                    ..Default::default()
                })
            } else {
                Payload::Geocentric(GeocentricRaw {
                    x: i as i32,
                    ..Default::default()
                })
            };
            let d = Datagram {
                sensor_id: sensor,
                day: 271,
                time_ticks: 400_000 + i * 200,
                status: 0xFF,
                status_flags: 0,
                payload,
            };
            let bytes = d.encode();
            ts += 6_000_000;
            frames.push((ts, write::udp_frame(40_000, 30_000, &bytes)));
            tspi.push(bytes);
            if sensor == 2 && i == 7 {
                ts += 100_000;
                frames.push((ts, write::udp_frame(40_000, 30_000, &bytes)));
                tspi.push(bytes);
            }
        }
        ts += 2_000_000;
        // Noise: TCP, ARP, short UDP, a 37-byte datagram to another port, an invalid one.
        let mut tcp = write::udp_frame(1, 2, &[0; 37]);
        tcp[23] = 6;
        let mut arp = write::udp_frame(1, 2, &[]);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        match i % 5 {
            0 => frames.push((ts, tcp)),
            1 => frames.push((ts, arp)),
            2 => frames.push((ts, write::udp_frame(40_000, 30_000, &[9; 12]))),
            3 => frames.push((ts, write::udp_frame(40_000, 53, &[0; 37]))),
            _ => {}
        }
    }
    // One 37-byte datagram with an unknown type: forwarded over UDP (a producer counts
    // it), not published.
    let mut bad = tspi[0];
    bad[0] = 0x7f;
    ts += 1_000_000;
    frames.push((ts, write::udp_frame(40_000, 30_000, &bad)));
    tspi.push(bad);
    (frames, tspi)
}

fn receive_all(socket: UdpSocket) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = socket.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    })
}

#[test]
fn pcap_and_pcapng_replay_exactly_their_tspi_datagrams() {
    let (frames, tspi) = capture();
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("c.pcap", write::pcap(&frames)),
        ("c.pcapng", write::pcapng(&frames)),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = socket.local_addr().unwrap().to_string();
        let rx = receive_all(socket);
        let out = run_cli(
            BIN,
            &[
                "pcap",
                path.to_str().unwrap(),
                "--udp-target",
                &target,
                "--port",
                "30000",
                "--speed",
                "4",
            ],
            T,
        );
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let got = rx.join().unwrap();
        assert_eq!(
            got.len(),
            tspi.len(),
            "{name}: every TSPI datagram, nothing else"
        );
        assert!(
            got.iter().zip(&tspi).all(|(a, b)| a[..] == b[..]),
            "{name}: same bytes, same order"
        );
        let summary: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
        assert_eq!(summary["sent_udp"], tspi.len());
        // ~1.9 s of capture at 4x: about 0.5 s.
        let elapsed = summary["elapsed_s"].as_f64().unwrap();
        let span = summary["capture_duration_s"].as_f64().unwrap();
        assert!(
            (elapsed - span / 4.0).abs() < 0.1,
            "{name}: paced {elapsed} s for {span} s at 4x"
        );
    }
}

#[test]
fn dry_run_reports_skips_invalid_duplicates_and_gaps() {
    let (frames, tspi) = capture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.pcapng");
    std::fs::write(&path, write::pcapng(&frames)).unwrap();
    let out = run_cli(
        BIN,
        &[
            "pcap",
            path.to_str().unwrap(),
            "--dry-run",
            "--port",
            "30000",
        ],
        T,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let s: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(s["format"], "pcapng");
    assert_eq!(s["frames"], frames.len());
    assert_eq!(s["tspi_datagrams"], tspi.len());
    assert_eq!(s["valid"], tspi.len() - 1);
    assert_eq!(s["invalid"]["type"], 1, "{s}");
    assert_eq!(s["skipped"]["not_udp"], 20);
    assert_eq!(s["skipped"]["not_ipv4"], 20);
    assert_eq!(s["skipped"]["udp_payload_not_37_bytes"], 20);
    assert_eq!(s["skipped"]["other_udp_port"], 20);
    assert_eq!(s["sensors"], 3);
    assert_eq!(s["duplicates"], 1);
    assert_eq!(s["gaps"]["count"], 1, "{s}");
    assert_eq!(s["gaps"]["largest"][0]["sensor_id"], 1);
    assert!((s["gaps"]["largest"][0]["gap_s"].as_f64().unwrap() - 0.22).abs() < 1e-9);
    assert_eq!(s["sent_udp"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcap_into_jetstream_publishes_each_valid_datagram_once() {
    let nats = NatsServer::start().await;
    let (frames, tspi) = capture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.pcap");
    std::fs::write(&path, write::pcap(&frames)).unwrap();
    let url = nats.url();
    let path_s = path.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        run_cli(
            BIN,
            &[
                "pcap",
                &path_s,
                "--jetstream",
                "--as-fast-as-possible",
                "--nats-server",
                &url,
            ],
            T,
        )
    })
    .await
    .unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let s: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(s["published"], tspi.len() - 1, "{s}");
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("TSPI").await.unwrap();
    let info = stream.info().await.unwrap();
    // The duplicate capture of one frame is dropped by its Nats-Msg-Id; the invalid one is
    // not published.
    assert_eq!(info.state.messages as usize, tspi.len() - 2);
    let first = stream.get_raw_message(1).await.unwrap();
    let rec = tspi_core::TelemetryRecord::from_cbor(&first.payload).unwrap();
    assert_eq!(
        rec.recv_epoch_ms,
        (T0_NS / 1_000_000) as i64 + 6,
        "capture time, not replay time"
    );
}
