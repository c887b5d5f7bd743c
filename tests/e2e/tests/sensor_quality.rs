//! The producer's per-sensor quality view, fed by the real generator playing sensor
//! faults over UDP: a dropout, a clock jump and reordered datagrams each show up in the
//! metrics of the right sensor with the right counts, and nowhere else.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod chaos;
mod common;

use std::process::Command;
use std::time::Duration;

use chaos::{report, scrape, LoneProducer};
use tspi_test_support::{wait_until, workspace_bin, NatsServer};

/// `name{sensor="<sensor>"}` in an exposition (0 when absent).
fn sensor_metric(exposition: &str, name: &str, sensor: &str) -> f64 {
    chaos::labelled_metric(exposition, name, "sensor", sensor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropouts_clock_jumps_and_reorders_land_on_the_right_sensor() {
    chaos::init_logging();
    let server = NatsServer::start().await;
    let LoneProducer {
        programs,
        mut producer,
        udp_port,
        metrics_port,
        ..
    } = LoneProducer::start(&[server.url()]).await;

    // Five sensors (10000-10004) at 20 Hz for 12 s: 10001 silent from 4 s to 7 s (60
    // frames), 10002's clock 30 s ahead from 6 s on, every 13th datagram held back
    // behind its sensor's next one.
    let mut cmd = Command::new(workspace_bin("generator"));
    cmd.args(["--udp-target", &format!("127.0.0.1:{udp_port}")])
        .args([
            "--count",
            "5",
            "--rate",
            "20",
            "--duration",
            "12",
            "--seed",
            "5",
        ])
        .args(["--dropout", "10001@4+3", "--clock-jump", "10002@6:+30"])
        .args(["--reorder-every", "13"]);
    let mut generator = programs.spawn("generator", cmd);
    let status = generator.wait(Duration::from_secs(60)).await;
    assert!(status.success(), "generator: {}", generator.stderr());
    let summary = generator.json_lines().last().cloned().unwrap();
    let valid = summary["valid"].as_u64().unwrap();
    let reordered = summary["reordered"].as_u64().unwrap();
    let withheld = summary["withheld"].as_u64().unwrap();
    assert_eq!(withheld, 60, "{summary}");
    assert!(reordered > 20, "{summary}");

    // Every datagram counted per sensor, and the dropout's hole settled (1 s horizon).
    let sensors = ["10000", "10001", "10002", "10003", "10004"];
    let settled = wait_until(Duration::from_secs(30), || async {
        let m = scrape(metrics_port);
        let counted: f64 = sensors
            .iter()
            .map(|s| sensor_metric(&m, "tspi_producer_sensor_datagrams_total", s))
            .sum();
        counted >= valid as f64
            && sensor_metric(&m, "tspi_producer_sensor_gaps_total", "10001") >= 1.0
    })
    .await;
    let m = scrape(metrics_port);
    let of = |name: &str, sensor: &str| sensor_metric(&m, name, sensor) as u64;
    let mut lines = Vec::new();
    for s in sensors {
        lines.push(format!(
            "{s}: {} datagrams, gaps {}, missed {}, clock jumps {}, out of order {}, repeated \
             {}, late {}, cadence {} s",
            of("tspi_producer_sensor_datagrams_total", s),
            of("tspi_producer_sensor_gaps_total", s),
            of("tspi_producer_sensor_missed_frames_total", s),
            of("tspi_producer_sensor_clock_jumps_total", s),
            of("tspi_producer_sensor_out_of_order_total", s),
            of("tspi_producer_sensor_repeated_total", s),
            of("tspi_producer_sensor_late_total", s),
            sensor_metric(&m, "tspi_producer_sensor_cadence_seconds", s),
        ));
    }
    report(
        "sensor-quality",
        &format!(
            "generator: {valid} valid, {withheld} withheld (dropout), {reordered} reordered; {}",
            lines.join("; ")
        ),
    );
    assert!(settled.is_some(), "quality metrics not settled:\n{m}");

    assert_eq!(of("tspi_producer_sensor_gaps_total", "10001"), 1);
    assert_eq!(of("tspi_producer_sensor_missed_frames_total", "10001"), 60);
    assert_eq!(of("tspi_producer_sensor_clock_jumps_total", "10002"), 1);
    let total = |name: &str| sensors.iter().map(|s| of(name, s)).sum::<u64>();
    assert_eq!(
        total("tspi_producer_sensor_gaps_total"),
        1,
        "only 10001 fell silent"
    );
    assert_eq!(total("tspi_producer_sensor_missed_frames_total"), 60);
    assert_eq!(
        total("tspi_producer_sensor_clock_jumps_total"),
        1,
        "only 10002's clock jumped"
    );
    assert_eq!(
        total("tspi_producer_sensor_out_of_order_total"),
        reordered,
        "every datagram held back arrives out of order, and nothing else"
    );
    assert_eq!(total("tspi_producer_sensor_repeated_total"), 0);
    assert_eq!(total("tspi_producer_sensor_late_total"), 0);
    for s in sensors {
        let cadence = sensor_metric(&m, "tspi_producer_sensor_cadence_seconds", s);
        assert!((cadence - 0.05).abs() < 1e-9, "{s}: cadence {cadence}");
    }
    assert_eq!(
        total("tspi_producer_sensor_datagrams_total"),
        valid,
        "every valid datagram counted once, by its sensor"
    );
    producer.stop(Duration::from_secs(30)).await;
}
