//! The archive's sensor-quality history end to end, every program a process: the
//! generator plays three sensor dropouts over UDP, the producer publishes them, the
//! archiver (as its deploy role) writes plain PostgreSQL and TimescaleDB, and
//! `console quality` as the read-only role finds each dropout, with its start and length
//! to within a second, on the right sensor and nowhere else. On TimescaleDB it reads the
//! continuous aggregate, which agrees with the raw rows.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod chaos;
mod common;

use std::process::Command;
use std::time::Duration;

use chaos::LoneProducer;
use common::{apply_deploy_roles, wait_archived};
use serde_json::Value;
use tspi_test_support::{workspace_bin, NatsServer, PgServer};

/// The run: sensors, seconds, and dropouts as (sensor, seconds after the start, seconds
/// silent). `TSPI_QUALITY_MINUTES=10` runs ten sensors for that many minutes instead
/// (docs/benchmarks.md), with its dropouts across minute boundaries.
struct Plan {
    sensors: u64,
    seconds: u64,
    dropouts: Vec<(u64, f64, f64)>,
}

fn plan() -> Plan {
    match std::env::var("TSPI_QUALITY_MINUTES")
        .ok()
        .and_then(|m| m.parse::<u64>().ok())
        .filter(|m| *m >= 3)
    {
        Some(minutes) => Plan {
            sensors: 10,
            seconds: minutes * 60,
            dropouts: vec![
                (10001, 95.0, 30.0),
                (10004, minutes as f64 * 30.0 - 10.0, 45.0),
                (10007, minutes as f64 * 60.0 - 130.0, 12.5),
            ],
        },
        None => Plan {
            sensors: 4,
            seconds: 25,
            dropouts: vec![(10001, 3.0, 5.0), (10002, 9.0, 7.0), (10003, 18.0, 3.5)],
        },
    }
}

fn seconds_between(a: &Value, b: &Value) -> f64 {
    let at =
        |v: &Value| tspi_core::rfc3339::parse_epoch_ms(v.as_str().unwrap()).unwrap() as f64 / 1e3;
    at(b) - at(a)
}

fn check_report(name: &str, report: &Value, plan: &Plan) {
    let sensors = report["sensors"].as_array().unwrap();
    let ids: Vec<u64> = sensors
        .iter()
        .map(|s| s["sensor_id"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = (10_000..10_000 + plan.sensors).collect();
    assert_eq!(ids, want, "{name}");
    let reference = &sensors[0]["first_heard"];
    for s in sensors {
        let id = s["sensor_id"].as_u64().unwrap();
        let rate = s["rate_hz"].as_f64().unwrap();
        assert!((rate - 10.0).abs() < 0.1, "{name} {id}: rate {rate}");
        assert_eq!(s["invalid"], 0, "{name} {id}");
        let gaps = s["gaps"].as_array().unwrap();
        let missed = s["missed"].as_i64().unwrap();
        match plan.dropouts.iter().find(|d| d.0 == id) {
            None => {
                assert!(gaps.is_empty(), "{name} {id}: {gaps:?}");
                assert!(missed <= 2, "{name} {id}: missed {missed}");
            }
            Some(&(_, at, length)) => {
                assert_eq!(gaps.len(), 1, "{name} {id}: {gaps:?}");
                let start = seconds_between(reference, &gaps[0]["start"]);
                let found = gaps[0]["length_s"].as_f64().unwrap();
                eprintln!(
                    "{name}: sensor {id} silent from {at} s for {length} s; found from {start:.2} s for {found:.1} s, {missed} missed"
                );
                assert!(
                    (start - at).abs() <= 1.0,
                    "{name} {id}: starts {start} s in"
                );
                assert!((found - length).abs() <= 1.0, "{name} {id}: {found} s long");
                let want = (length * 10.0) as i64;
                assert!(
                    (missed - want).abs() <= 3,
                    "{name} {id}: missed {missed} of {want}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_quality_finds_generator_dropouts_in_the_archive() {
    chaos::init_logging();
    let server = NatsServer::start().await;
    let LoneProducer {
        programs,
        producer: _producer,
        udp_port,
        admin,
        ..
    } = LoneProducer::start(&[server.url()]).await;

    // Plain PostgreSQL, and TimescaleDB where this machine has it, both as deployed.
    let plain = PgServer::start_primary();
    let tsdb =
        PgServer::start_timescaledb("console_quality_finds_generator_dropouts_in_the_archive");
    let mut archives = Vec::new();
    for (name, pg) in [("postgresql", Some(&plain)), ("timescaledb", tsdb.as_ref())] {
        let Some(pg) = pg else { continue };
        let db = pg.create_database("quality");
        apply_deploy_roles(pg, &db);
        let mode = if name == "timescaledb" {
            // As the TimescaleDB image's own init does.
            pg.psql(&db, "CREATE EXTENSION timescaledb");
            "require"
        } else {
            "auto"
        };
        let url = format!("postgresql://archiver@127.0.0.1:{}/{db}", pg.port());
        let durable = format!("archiver-{name}");
        let archiver = programs.start(
            &durable,
            "archiver",
            &[
                "--database-url",
                &url,
                "--durable",
                &durable,
                "--timescaledb",
                mode,
            ],
        );
        let reader = format!("postgresql://tspi_reader@127.0.0.1:{}/{db}", pg.port());
        archives.push((name, pg, db, archiver, reader));
    }

    // Four sensors at 10 Hz for 25 s (or the long plan), three of them silent once.
    let plan = plan();
    let mut cmd = Command::new(workspace_bin("generator"));
    let (count, seconds) = (plan.sensors.to_string(), plan.seconds.to_string());
    cmd.args(["--udp-target", &format!("127.0.0.1:{udp_port}")])
        .args(["--count", &count, "--rate", "10", "--duration", &seconds])
        .args(["--seed", "7"]);
    for &(sensor, at, length) in &plan.dropouts {
        cmd.args(["--dropout", &format!("{sensor}@{at}+{length}")]);
    }
    let mut generator = programs.spawn("generator", cmd);
    let status = generator
        .wait(Duration::from_secs(plan.seconds + 120))
        .await;
    assert!(status.success(), "generator: {}", generator.stderr());
    let summary = generator.json_lines().last().cloned().unwrap();
    let valid = summary["valid"].as_u64().unwrap();
    let stored = tspi_test_support::wait_until(Duration::from_secs(30), || async {
        tspi_e2e::stream_count(&admin, "TSPI").await >= valid
    })
    .await;
    assert!(stored.is_some(), "the stream holds every valid datagram");
    let in_stream = tspi_e2e::stream_count(&admin, "TSPI").await;
    assert_eq!(in_stream, valid);

    let since = format!("{}s", plan.seconds + 300);
    for (name, pg, db, archiver, reader) in &archives {
        wait_archived(pg, None, db, in_stream, archiver, Duration::from_secs(60)).await;
        let args = [
            "quality",
            "--since",
            &since,
            "--json",
            "--database-url",
            reader,
        ];
        let report: Value =
            serde_json::from_str(programs.console("quality", &args).await.stdout().trim()).unwrap();
        check_report(name, &report, &plan);
        let raw_args = [&args[..], &["--raw"]].concat();
        let raw: Value =
            serde_json::from_str(programs.console("quality", &raw_args).await.stdout().trim())
                .unwrap();
        assert_eq!(raw["source"], "raw_rows");
        if *name == "timescaledb" {
            assert_eq!(report["source"], "continuous_aggregate");
            assert_eq!(
                report["sensors"], raw["sensors"],
                "the aggregate agrees with the raw rows"
            );
        }
    }

    // The table an operator reads, and one sensor.
    let (_, _, _, _, reader) = &archives[0];
    let table = programs
        .console(
            "quality",
            &["quality", "--since", &since, "--database-url", reader],
        )
        .await
        .stdout();
    eprintln!("{table}");
    assert!(
        table.contains("Gaps (silences longer than two periods): 3"),
        "{table}"
    );
    let one = programs
        .console(
            "quality",
            &[
                "quality",
                "--since",
                &since,
                "--sensor",
                "10001",
                "--json",
                "--database-url",
                reader,
            ],
        )
        .await
        .stdout();
    let one: Value = serde_json::from_str(one.trim()).unwrap();
    assert_eq!(one["sensors"].as_array().unwrap().len(), 1);
    assert_eq!(one["sensors"][0]["sensor_id"], 10001);

    // A database that is not there: one clear line, no panic.
    let mut down = programs.command(
        "console",
        "console",
        &[],
        &[
            "quality",
            "--database-url",
            "postgresql://nobody@127.0.0.1:1/none",
        ],
    );
    let out = down.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot connect to the archive database"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
