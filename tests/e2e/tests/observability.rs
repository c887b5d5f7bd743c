//! The observability bundle (`deploy/observability`, issue 26), checked by Prometheus's
//! own tools and run for real:
//!
//! - `promtool check config` / `check rules` / `test rules` (the alerts' cases);
//! - the Grafana dashboard: valid JSON with unique panel ids, data sources that the
//!   provisioning defines, every PromQL query parsed by promtool, every SQL query run on
//!   a TimescaleDB archive as the read-only role;
//! - a real Prometheus, with the shipped configuration pointed at the real programs
//!   (producer, archiver, alarmer, the web display, postgres_exporter on a primary and its
//!   replica), scrapes them, loads the rules and fires the alert the data should fire;
//!   every metric a rule or a panel names is one some program exports (a renamed metric
//!   fails here, not silently in a range's alerting).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tspi_bus::NatsArgs;
use tspi_test_support::{free_port, workspace_bin, workspace_root, NatsServer, PgServer};

use common::{apply_deploy_roles, free_udp_port, Programs};

fn bundle() -> PathBuf {
    workspace_root().join("deploy/observability")
}

fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{name} not found: run tests/install-deps.sh (Debian's prometheus and \
         prometheus-postgres-exporter packages)"
    );
    Command::new(name)
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = tool("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

fn dashboard() -> Value {
    let path = bundle().join("grafana/dashboards/tspi.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every query target of the dashboard: (panel title, datasource uid, PromQL or SQL).
fn queries(d: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let uid = t["datasource"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let q = t["expr"].as_str().or(t["rawSql"].as_str()).unwrap();
            out.push((p["title"].as_str().unwrap().to_owned(), uid, q.to_owned()));
        }
    }
    for a in d["annotations"]["list"].as_array().unwrap() {
        let uid = a["datasource"]["uid"].as_str().unwrap().to_owned();
        let q = a["target"]["rawSql"].as_str().unwrap().to_owned();
        out.push((a["name"].as_str().unwrap().to_owned(), uid, q));
    }
    out
}

/// The metric names in PromQL text (labels, functions and keywords left out).
fn metric_names(promql: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = promql;
    // Label matchers and their values ({…}) and quoted strings name no metric.
    let mut clean = String::new();
    let mut depth = 0;
    let mut quoted = false;
    for c in rest.chars() {
        match c {
            '"' => quoted = !quoted,
            '{' if !quoted => depth += 1,
            '}' if !quoted => depth -= 1,
            _ if quoted || depth > 0 => {}
            _ => clean.push(c),
        }
    }
    rest = &clean;
    for word in rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        if word.starts_with("tspi_") || word.starts_with("pg_") || word == "up" {
            names.insert(word.to_owned());
        }
    }
    names
}

/// Every PromQL expression the bundle has: the alert rules' and the dashboard's.
fn promql_expressions() -> Vec<String> {
    let rules = std::fs::read_to_string(bundle().join("alerts.yml")).unwrap();
    let mut out: Vec<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .map(str::to_owned)
        .collect();
    assert!(out.len() >= 10, "alerts.yml's expressions: {out:?}");
    out.extend(
        queries(&dashboard())
            .into_iter()
            .filter(|q| q.1 == "tspi-prometheus")
            .map(|q| q.2),
    );
    out
}

#[test]
fn the_bundle_passes_prometheus_own_checks() {
    let dir = bundle();
    let config = promtool(&["check", "config", "prometheus.yml"], &dir);
    assert!(config.contains("SUCCESS"), "{config}");
    let rules = promtool(&["check", "rules", "alerts.yml"], &dir);
    assert!(rules.contains("rules found"), "{rules}");
    // The alerts' own cases: each fires on the series that should fire it, with its text.
    let cases = promtool(&["test", "rules", "alerts_test.yml"], &dir);
    assert!(cases.contains("SUCCESS"), "{cases}");
}

#[test]
fn the_dashboard_is_valid_and_every_promql_query_parses() {
    let d = dashboard();
    assert_eq!(d["uid"], "tspi-range");
    let panels = d["panels"].as_array().unwrap();
    let ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "panel ids are unique: {ids:?}");
    for p in panels {
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(
            x + w <= 24 && g["h"].as_u64().unwrap() > 0,
            "{}: {g}",
            p["title"]
        );
        if p["type"] != "row" {
            assert!(
                !p["targets"].as_array().unwrap().is_empty(),
                "{}",
                p["title"]
            );
        }
    }
    // The data sources the panels use are the ones Grafana is provisioned with.
    let provisioned =
        std::fs::read_to_string(bundle().join("grafana/provisioning/datasources/tspi.yml"))
            .unwrap();
    for (title, uid, _) in queries(&d) {
        assert!(
            provisioned.contains(&format!("uid: {uid}")),
            "{title}: data source {uid:?} is not provisioned"
        );
    }
    // Every PromQL query parses: as recording rules, promtool checks them.
    let scratch = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (k, expr) in promql_expressions().iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query_{k}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    std::fs::write(scratch.path().join("queries.yml"), rules).unwrap();
    let checked = promtool(&["check", "rules", "queries.yml"], scratch.path());
    assert!(checked.contains("SUCCESS"), "{checked}");
}

/// A plain HTTP GET on loopback: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |b| b.1).to_owned();
    (status, body)
}

fn api(port: u16, path: &str) -> Value {
    let (status, body) = get(port, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let holds = || {
        let holds = ok();
        async move { holds }
    };
    let waited = tspi_test_support::wait_until(timeout, holds).await;
    assert!(waited.is_some(), "{what}: not within {timeout:?}");
}

/// Grafana's SQL macros, as its PostgreSQL data source expands them, over the last hour.
fn expand_macros(sql: &str) -> String {
    let mut out = sql.to_owned();
    while let Some(at) = out.find("$__timeFilter(") {
        let close = at + out[at..].find(')').unwrap();
        let column = &out[at + "$__timeFilter(".len()..close];
        let expanded = format!("{column} BETWEEN now() - interval '1 hour' AND now()");
        out.replace_range(at..=close, &expanded);
    }
    assert!(
        !out.contains("$__"),
        "a macro this test does not expand: {out}"
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_programs_loads_the_rules_and_fires_an_alert() {
    let logs = tempfile::tempdir().unwrap();
    let nats = NatsServer::start().await;
    let url = nats.url();
    let auth: &'static dyn Fn(&str) -> NatsArgs = Box::leak(Box::new(move |_: &str| {
        NatsArgs::for_urls(std::slice::from_ref(&url))
    }));
    let programs = Programs::new(auth);

    // The archive: TimescaleDB (the quality aggregate the dashboard reads) and a replica,
    // with the deploy roles (postgres_exporter connects as tspi_monitor).
    let pg = PgServer::start_timescaledb("observability")
        .expect("TimescaleDB is installed by tests/install-deps.sh");
    let db = pg.create_database("observability");
    pg.psql(&db, "CREATE EXTENSION timescaledb");
    apply_deploy_roles(&pg, &db);
    let replica = PgServer::start_replica(&pg);
    let archiver_url = format!("postgresql://archiver@127.0.0.1:{}/{db}", pg.port());
    programs.archiver_migrate(&archiver_url).await;

    let ports: Vec<(&str, u16)> = [
        "producer:9464",
        "archiver:9465",
        "display:9466",
        "alarmer:9467",
        "postgres-exporter-primary:9187",
        "postgres-exporter-replica:9187",
    ]
    .into_iter()
    .map(|t| (t, free_port()))
    .collect();
    let port_of = |target: &str| ports.iter().find(|p| p.0 == target).unwrap().1;
    let addr = |target: &str| format!("127.0.0.1:{}", port_of(target));

    let udp = free_udp_port();
    let _producer = programs.producer(udp, &["--metrics-addr", &addr("producer:9464")]);
    until("the producer's metrics", Duration::from_secs(30), || {
        get(port_of("producer:9464"), "/metrics").0 == 200
    })
    .await;
    let _archiver = programs.start(
        "archiver",
        "archiver",
        &[
            "--database-url",
            &archiver_url,
            "--metrics-addr",
            &addr("archiver:9465"),
        ],
    );
    // A rule that every track breaks: a critical alarm the alert rule must see.
    let rules = logs.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[limit]]\nname = \"ceiling\"\nsensors = [\"*\"]\nfield = \"altitude_m\"\nabove = { critical = -1000.0 }\n",
    )
    .unwrap();
    let _alarmer = programs.start(
        "alarmer",
        "alarmer",
        &[
            "--rules",
            rules.to_str().unwrap(),
            "--metrics-addr",
            &addr("alarmer:9467"),
        ],
    );
    let _display = programs.start(
        "display",
        "player",
        &[
            "--web",
            "127.0.0.1:0",
            "--metrics-addr",
            &addr("display:9466"),
        ],
    );
    let mut exporters = Vec::new();
    for (target, server) in [
        ("postgres-exporter-primary:9187", &pg),
        ("postgres-exporter-replica:9187", &replica),
    ] {
        let mut cmd = tool("prometheus-postgres-exporter");
        cmd.arg(format!("--web.listen-address={}", addr(target)))
            .arg(format!(
                "--extend.query-path={}",
                bundle().join("postgres-exporter-queries.yaml").display()
            ))
            .env(
                "DATA_SOURCE_NAME",
                format!(
                    "postgresql://tspi_monitor@127.0.0.1:{}/{db}?sslmode=disable",
                    server.port()
                ),
            );
        exporters.push(programs.spawn(target.split(':').next().unwrap(), cmd));
    }

    // The shipped configuration, its targets pointed at this run's programs and its
    // intervals shortened; the NATS exporters are not run here (their job stays down).
    let mut config = std::fs::read_to_string(bundle().join("prometheus.yml")).unwrap();
    for (target, port) in &ports {
        assert!(config.contains(target), "prometheus.yml scrapes {target}");
        config = config.replace(target, &format!("127.0.0.1:{port}"));
    }
    let closed = free_port();
    for k in 1..=3 {
        config = config.replace(
            &format!("nats-exporter-{k}:7777"),
            &format!("127.0.0.{}:{closed}", k + 1),
        );
    }
    config = config
        .replace("scrape_interval: 5s", "scrape_interval: 1s")
        .replace("scrape_timeout: 4s", "scrape_timeout: 900ms")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
    let run_dir = logs.path().join("prometheus");
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(run_dir.join("prometheus.yml"), config).unwrap();
    std::fs::copy(bundle().join("alerts.yml"), run_dir.join("alerts.yml")).unwrap();
    let prom_port = free_port();
    let mut cmd = tool("prometheus");
    cmd.arg(format!(
        "--config.file={}",
        run_dir.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        run_dir.join("data").display()
    ))
    .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let prometheus = programs.spawn("prometheus", cmd);
    until("Prometheus is ready", Duration::from_secs(60), || {
        get(prom_port, "/-/ready").0 == 200
    })
    .await;

    // Data through the whole chain.
    let mut generator = Command::new(workspace_bin("generator"));
    generator
        .args(["--udp-target", &format!("127.0.0.1:{udp}")])
        .args(["--count", "5", "--rate", "10", "--duration", "20"]);
    let _generator = programs.spawn("generator", generator);

    // Every target of ours up; the NATS exporters (not run) down.
    until("every program's target up", Duration::from_secs(60), || {
        let t = api(prom_port, "/api/v1/targets?state=active");
        let targets = t["data"]["activeTargets"].as_array().unwrap().clone();
        targets.len() == ports.len() + 3
            && targets
                .iter()
                .all(|t| (t["health"] == "up") == (t["labels"]["job"] != "nats"))
    })
    .await;
    // The rules loaded and evaluated; the critical alarm's alert firing.
    until(
        "TspiCriticalRangeAlarm firing",
        Duration::from_secs(60),
        || {
            let a = api(prom_port, "/api/v1/alerts");
            a["data"]["alerts"].as_array().unwrap().iter().any(|a| {
                a["labels"]["alertname"] == "TspiCriticalRangeAlarm" && a["state"] == "firing"
            })
        },
    )
    .await;
    let rules = api(prom_port, "/api/v1/rules");
    let groups = rules["data"]["groups"].as_array().unwrap();
    let loaded: Vec<&Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert!(loaded.len() >= 14, "{rules}");
    for r in &loaded {
        assert_eq!(r["health"], "ok", "{r}");
    }
    // Down targets only where nothing runs: the NATS exporters' alert is pending.
    let alerts = api(prom_port, "/api/v1/alerts");
    for a in alerts["data"]["alerts"].as_array().unwrap() {
        if a["labels"]["alertname"] == "TspiTargetDown" {
            assert_eq!(a["labels"]["job"], "nats", "{a}");
        }
    }

    // Every metric a rule or a panel names is one a program exports (seen by this
    // Prometheus), but for the site producer's, which exist in site mode only
    // (tests/e2e/tests/sites.rs reads them).
    until(
        "the alarm transitions scraped",
        Duration::from_secs(30),
        || {
            let v = api(prom_port, "/api/v1/label/__name__/values");
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "tspi_alarmer_transitions_total")
        },
    )
    .await;
    let served: BTreeSet<String> = api(prom_port, "/api/v1/label/__name__/values")["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    let operations = std::fs::read_to_string(workspace_root().join("docs/operations.md")).unwrap();
    let mut named = BTreeSet::new();
    for expr in promql_expressions() {
        named.extend(metric_names(&expr));
    }
    assert!(named.len() >= 25, "{named:?}");
    for name in &named {
        if name.starts_with("tspi_producer_site_") {
            assert!(
                operations.contains(&format!("`{name}`")),
                "{name} undocumented"
            );
            continue;
        }
        assert!(
            served.contains(name),
            "{name} is named by deploy/observability but no program exports it"
        );
        if let Some(base) = name.strip_prefix("tspi_") {
            let base = base.trim_end_matches("_bucket");
            assert!(
                operations.contains(&format!("tspi_{base}")),
                "{name} is not in docs/operations.md"
            );
        }
    }
    // The shipped replica query tells the two servers apart and sees the replica caught up.
    let sample = |query: &str| -> Vec<(String, f64)> {
        let v = api(prom_port, &format!("/api/v1/query?query={query}"));
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let role = r["metric"]["role"].as_str().unwrap_or("").to_owned();
                (role, r["value"][1].as_str().unwrap().parse().unwrap())
            })
            .collect()
    };
    let mut recovery = sample("pg_replica_in_recovery");
    recovery.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        recovery,
        vec![("primary".to_owned(), 0.0), ("replica".to_owned(), 1.0)]
    );
    let lag = sample("pg_replica_lag_seconds");
    assert!(lag.iter().all(|(_, s)| (0.0..30.0).contains(s)), "{lag:?}");
    eprintln!(
        "observability: {} targets up, {} rules ok, {} metric names checked against the programs",
        ports.len(),
        loaded.len(),
        named.len()
    );

    // The dashboard's SQL runs on this archive, as the role Grafana reads with.
    let d = dashboard();
    for (title, uid, sql) in queries(&d) {
        if uid != "tspi-archive" {
            continue;
        }
        let out = Command::new(tspi_test_support::pg_bindir().join("psql"))
            .args(["-h", "127.0.0.1", "-p", &replica.port().to_string()])
            .args([
                "-U",
                "tspi_reader",
                "-d",
                &db,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-c", &expand_macros(&sql)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{title}: {}\n{sql}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(prometheus);
    drop(exporters);
}
