//! `./demo.sh` (issue 5, acceptance 1), run by the test suite so it stays true after every
//! change: bad flags and taken ports are refused with the flag to change, a second demo
//! on the same ports is refused, and a short run (with the debug binaries the suite
//! already built) shows data flowing end to end and leaves no process and no bound port;
//! Ctrl+C (SIGINT to the whole process group) stops everything in order, each program
//! draining once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod demo;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use demo::{assert_nothing_left, demo, demo_command, demo_to_end, run_dir, text, DemoPorts};

#[test]
fn bad_flags_and_taken_ports_are_refused_with_the_flag_to_change() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, _) = demo(&["--bogus".into()], tmp.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).1.contains("unknown option --bogus"),
        "{:?}",
        text(&o)
    );
    let (o, _) = demo(&["--count".into(), "many".into()], tmp.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("not a whole number"), "{:?}", text(&o));
    let (o, _) = demo(&["--help".into()], tmp.path());
    assert!(o.status.success() && text(&o).0.contains("--duration S"));
    let refused = |args: &[&str], says: &str| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (o, _) = demo(&args, tmp.path());
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(text(&o).1.contains(says), "{args:?}: {:?}", text(&o));
    };
    refused(&["--sites", "5"], "--sites is at most 4");
    refused(
        &["--sites", "2", "--cut-site", "east", "5"],
        "--cut-site east: no such site (with --sites 2: north south)",
    );
    refused(
        &[
            "--sites",
            "1",
            "--cut-site",
            "north",
            "30",
            "--duration",
            "20",
        ],
        "must end before --duration",
    );

    // Something else (a NATS, a PostgreSQL) holds a port the demo wants.
    let ports = DemoPorts::pick(1);
    let squatter = TcpListener::bind(("127.0.0.1", ports.base + 101)).unwrap();
    let (o, _) = demo(&ports.args(), tmp.path());
    drop(squatter);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o).1;
    assert!(
        err.contains(&format!("port {} ", ports.base + 101)) && err.contains("--base-port"),
        "{err}"
    );
    let squatter = TcpListener::bind(("127.0.0.1", ports.pg)).unwrap();
    let (o, _) = demo(&ports.args(), tmp.path());
    drop(squatter);
    assert!(text(&o).1.contains("--pg-port"), "{:?}", text(&o));

    // A demo already running on these ports (its lock names a live process: this one).
    std::fs::write(
        tmp.path().join(format!("tspi-demo-{}.pid", ports.base)),
        std::process::id().to_string(),
    )
    .unwrap();
    let (o, _) = demo(&ports.args(), tmp.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("already running"), "{:?}", text(&o));
}

#[test]
fn a_short_demo_shows_data_flowing_and_leaves_nothing_behind() {
    let (tmp, logs) = run_dir();
    let ports = DemoPorts::pick(2);
    let (out, err, session) = demo_to_end(
        &ports,
        &["--duration", "8", "--count", "5", "--rate", "10"],
        &logs,
        tmp.path(),
    );
    // The web display's address comes first; then it says when the display is up.
    let url = format!("http://127.0.0.1:{}/", ports.web);
    assert!(
        out.lines().next().unwrap_or_default().contains(&url),
        "{out}"
    );
    assert!(out.contains(&format!("web display up at {url}")), "{out}");

    // Status lines: archived rows and receiver lines grow; the lag stays bounded.
    let status: Vec<&str> = out.lines().filter(|l| l.starts_with("demo ")).collect();
    assert!(status.len() >= 2, "{out}");
    assert!(
        status.iter().all(|l| l.ends_with("| display tabs 0")),
        "{out}"
    );
    let field = |line: &str, name: &str| -> i64 {
        let after = line
            .split(name)
            .nth(1)
            .unwrap_or_else(|| panic!("{name}: {line}"));
        after
            .split(|c: char| !(c.is_ascii_digit() || c == '-'))
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("{name}: {line}"))
    };
    let rows: Vec<i64> = status.iter().map(|l| field(l, "archived rows ")).collect();
    let lines: Vec<i64> = status.iter().map(|l| field(l, "receiver lines ")).collect();
    assert!(rows.windows(2).all(|w| w[0] <= w[1]), "{rows:?}");
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
    assert!(
        *rows.last().unwrap() > 0 && *lines.last().unwrap() > 0,
        "{out}"
    );
    for l in &status {
        // Each line is a consistent cut: nothing is counted downstream before upstream.
        let sent = field(l, "| sent ");
        let received = field(l, "producer received ");
        let published = field(l, " published ");
        assert!(
            sent >= received && received >= published,
            "counts out of order: {l}"
        );
        for part in l.split("(lag ").skip(1) {
            let lag = field(&format!("(lag {part}"), "(lag ");
            assert!((0..=200).contains(&lag), "lag out of bounds: {l}");
        }
    }
    // 5 aircraft × 10 Hz × 8 s, every one received, archived on both servers.
    assert!(out.contains("demo: receiver printed 400 lines"), "{out}");
    assert!(
        out.contains("demo: exact: sent 400, published 400, receiver lines 400"),
        "{out}"
    );
    // On TimescaleDB where the machine's PostgreSQL has it, as deployed.
    let archiver_log = std::fs::read_to_string(logs.join("archiver.log")).unwrap();
    if tspi_test_support::timescaledb_installed().is_ok() {
        assert!(err.contains("the archive runs on TimescaleDB"), "{err}");
        assert!(archiver_log.contains("timescaledb=true"), "{archiver_log}");
    } else {
        assert!(archiver_log.contains("timescaledb=false"), "{archiver_log}");
    }
    assert!(
        out.contains("archive holds 400 telemetry rows on the primary, 400 on the replica"),
        "{out}"
    );
    assert!(
        err.contains(&format!("logs and data in {}", logs.display())),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(logs.join("receiver.jsonl"))
            .unwrap()
            .lines()
            .count(),
        400
    );

    assert_nothing_left(session, &ports);
    assert!(
        !tmp.path()
            .join(format!("tspi-demo-{}.pid", ports.base))
            .exists(),
        "lock removed"
    );
}

/// `--sites 2 --cut-site north 5`: two range sites made from deploy/nats/site.conf feed
/// the centre beside its own producer; north's link is cut 10 s in for 5 s and the
/// centre catches up; every datagram of the three fleets is received and archived once.
#[test]
fn a_demo_with_two_sites_rides_out_a_cut_site() {
    let (tmp, logs) = run_dir();
    let ports = DemoPorts::pick(4);
    let (out, err, session) = demo_to_end(
        &ports,
        &[
            "--sites",
            "2",
            "--cut-site",
            "north",
            "5",
            "--duration",
            "20",
            "--count",
            "5",
            "--rate",
            "10",
        ],
        &logs,
        tmp.path(),
    );
    for site in ["north", "south"] {
        assert!(
            err.contains(&format!("site {site} (nats://127.0.0.1:"))
                && err.contains("is sourced by the centre"),
            "{err}"
        );
    }
    assert!(
        out.contains("cut site north's link to the centre for 5s"),
        "{out}"
    );
    let status: Vec<&str> = out.lines().filter(|l| l.starts_with("demo ")).collect();
    assert!(
        status
            .iter()
            .any(|l| l.contains("| site north published") && l.contains("(link cut)")),
        "{out}"
    );
    assert!(
        status.iter().all(|l| l.contains("| site south published")),
        "{out}"
    );
    assert!(out.contains("site north's link is back"), "{out}");
    assert!(
        out.contains("site north caught up"),
        "the status line sees the backlog drain: {out}"
    );
    // Three fleets (the centre's, north's, south's) of 5 aircraft × 10 Hz × 20 s.
    assert!(out.contains("demo: receiver printed 3000 lines"), "{out}");
    assert!(
        out.contains("archive holds 3000 telemetry rows on the primary, 3000 on the replica"),
        "{out}"
    );
    assert_nothing_left(session, &ports);
}

/// Ctrl+C at the terminal: SIGINT to the demo's whole process group, as a terminal sends
/// it. Only the script may act on it: every program drains once (no "second signal"),
/// the producer publishes all it received while NATS is still up, the servers stop last,
/// and nothing is left running or bound.
#[test]
fn ctrl_c_stops_everything_in_order_and_every_program_drains() {
    let (tmp, logs) = run_dir();
    let ports = DemoPorts::pick(3);
    let mut args = ports.args();
    args.extend(["--count", "5", "--rate", "10", "--log-dir"].map(String::from));
    args.push(logs.display().to_string());
    let out_path = tmp.path().join("demo.out");
    let err_path = tmp.path().join("demo.err");
    let mut child = demo_command(&args, tmp.path())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let session = child.id() as i32;
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();

    let status_lines = || {
        read(&out_path)
            .lines()
            .filter(|l| l.starts_with("demo "))
            .count()
    };
    let reached =
        tspi_test_support::wait_until_blocking(std::time::Duration::from_secs(120), || {
            status_lines() >= 2 || !matches!(child.try_wait(), Ok(None))
        });
    assert!(
        reached.is_some() && status_lines() >= 2,
        "no status lines (demo {:?}):\n{}\n{}",
        child.try_wait(),
        read(&out_path),
        read(&err_path)
    );
    // A browser on the demo's display: it shows the fleet, and the status line counts it.
    let tab = tspi_test_support::Browser::start(1200, 800);
    tab.goto(&format!("http://127.0.0.1:{}/", ports.web));
    tab.until(
        "window.tspiDisplay !== undefined && tspiDisplay.state().tracks.length === 5",
        std::time::Duration::from_secs(30),
        "the demo's five aircraft on the web display",
    );
    let lines_before = read(&out_path).lines().count();
    let reached =
        tspi_test_support::wait_until_blocking(std::time::Duration::from_secs(30), || {
            read(&out_path)
                .lines()
                .skip(lines_before)
                .any(|l| l.starts_with("demo ") && l.ends_with("| display tabs 1"))
        });
    assert!(
        reached.is_some(),
        "no status line counts the tab:\n{}",
        read(&out_path)
    );
    drop(tab);
    let kill = Command::new("kill")
        .args(["-INT", "--", &format!("-{session}")])
        .status()
        .unwrap();
    assert!(kill.success());
    tspi_test_support::wait_until_blocking(std::time::Duration::from_secs(90), || {
        !matches!(child.try_wait(), Ok(None))
    });
    let status = child
        .try_wait()
        .unwrap()
        .unwrap_or_else(|| panic!("demo did not stop"));
    let err = read(&err_path);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("demo: stopping 13 processes")
            && err.contains(&format!("logs and data in {}", logs.display())),
        "{err}"
    );

    let log = |name: &str| read(&logs.join(name));
    for name in [
        "producer.log",
        "receiver.log",
        "archiver.log",
        "player.log",
        "display.log",
        "replayer.log",
    ] {
        let text = log(name);
        assert_eq!(
            text.matches("shutdown requested").count(),
            1,
            "{name} drains once:\n{text}"
        );
        assert!(!text.contains("second signal"), "{name}:\n{text}");
    }
    let producer = log("producer.log");
    let counted = |key: &str| -> u64 {
        let stopped = producer
            .lines()
            .find(|l| l.contains("producer stopped"))
            .unwrap_or_else(|| panic!("no summary:\n{producer}"));
        stopped
            .split(&format!(" {key}="))
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key}: {stopped}"))
    };
    assert!(counted("received") > 0);
    assert_eq!(
        (counted("published"), counted("failed")),
        (counted("received"), 0),
        "the producer published everything before NATS stopped"
    );
    assert!(log("receiver.log").contains("receiver stopped"));
    assert!(log("archiver.log").contains("archiver stopped"));
    assert!(log("pg/primary.log").contains("database system is shut down"));
    assert!(log("pg/replica.log").contains("database system is shut down"));
    for n in ["n1.log", "n2.log", "n3.log"] {
        assert!(log(n).contains("Server Exiting"), "{n}");
    }

    assert_nothing_left(session, &ports);
}
