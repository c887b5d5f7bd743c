//! A player binary under test, its JSON lines, and a telemetry publisher.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // test code

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::Value;
use tspi_core::{Datagram, GeocentricRaw, Payload, StreamPrefix, TelemetryRecord};

pub struct Player {
    pub child: Child,
    pub stdin: Option<std::process::ChildStdin>,
    pub lines: mpsc::Receiver<Value>,
}

impl Drop for Player {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Player {
    pub fn start(url: &str, id: &str) -> Player {
        Self::start_with(url, id, &[])
    }

    pub fn start_with(url: &str, id: &str, extra: &[&str]) -> Player {
        let mut child = Command::new(tspi_test_support::workspace_bin("player"))
            .args([
                "--nats-server",
                url,
                "--client-id",
                id,
                "--operator",
                "ops1",
                "--duration",
                "60s",
            ])
            .args(extra)
            .stdin(if extra.contains(&"--control-stdin") {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Player {
            child,
            stdin,
            lines,
        }
    }

    /// Write one control line (needs `--control-stdin`).
    pub fn send(&mut self, line: &serde_json::Value) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("started with --control-stdin");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Every event until one of `kind` (included), within 10 s.
    pub fn until(&self, kind: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {kind} event after {out:?}"));
            let done = v["event"] == kind;
            out.push(v);
            if done {
                return out;
            }
        }
    }

    /// The next event of `kind` (others skipped), within 10 s.
    pub fn next(&self, kind: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {kind} event"));
            if v["event"] == kind {
                return v;
            }
        }
    }
}

pub async fn frame(js: &jetstream::Context, i: u32) {
    let [x, y, z] = tspi_core::geo::geodetic_to_ecef(34.9, -117.9, 3048.0);
    let d = Datagram {
        sensor_id: 4242,
        day: 300,
        time_ticks: i * 200,
        status: 0xFF,
        status_flags: 1,
        payload: Payload::Geocentric(GeocentricRaw {
            x: (x * 100.0) as i32,
            y: (y * 100.0) as i32,
            z: (z * 100.0) as i32,
            vx: 5144,
            ..Default::default()
        }),
    };
    let rec = TelemetryRecord::from_datagram(&d, tspi_runtime::now_epoch_ms());
    let m = jetstream::message::PublishMessage::build()
        .payload(rec.to_cbor().into())
        .message_id(tspi_core::msg_id(&d));
    js.send_publish(StreamPrefix::default().subject(d.kind(), 4242), m)
        .await
        .unwrap()
        .await
        .unwrap();
}
