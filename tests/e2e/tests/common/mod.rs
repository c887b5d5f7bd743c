//! Shared by the deploy tests: test-made certificates, the users of
//! `deploy/nats/accounts.conf`, and one run of every program's binary with a user's
//! credentials (however the test's cluster authenticates them).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test uses a part

use std::ffi::OsString;
use std::fs;
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::Value;
use tspi_bus::{connect, NatsArgs};
use tspi_test_support::{
    free_port, pg_bindir, sigterm, wait_until, workspace_bin, workspace_root, PgServer,
};

// ---------------------------------------------------------------------------------------
// Certificates

pub struct Pki {
    pub ca: PathBuf,
    pub server: (PathBuf, PathBuf),
    pub client: (PathBuf, PathBuf),
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, pem).unwrap();
    p
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate.
pub fn pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tspi test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![usage];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
        "nats",
    );
    let (client_pem, client_key) = leaf(
        vec!["tspi-client".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
        "tspi-client",
    );
    Pki {
        ca: write(dir, "ca.pem", &ca_cert.pem()),
        server: (
            write(dir, "server.pem", &server_pem),
            write(dir, "server-key.pem", &server_key),
        ),
        client: (
            write(dir, "client.pem", &client_pem),
            write(dir, "client-key.pem", &client_key),
        ),
    }
}

impl Pki {
    /// The server's `tls` block requiring client certificates (mutual TLS).
    pub fn server_block(&self) -> String {
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  timeout: 3\n}}\n",
            self.server.0.display().to_string(),
            self.server.1.display().to_string(),
            self.ca.display().to_string()
        )
    }

    /// Client side: trust the CA and present the client certificate.
    pub fn apply(&self, args: &mut NatsArgs) {
        args.tls_ca = Some(self.ca.clone());
        args.tls_cert = Some(self.client.0.clone());
        args.tls_key = Some(self.client.1.clone());
    }
}

// ---------------------------------------------------------------------------------------
// The users of deploy/nats/accounts.conf

/// One user of the deploy accounts file and its subject permissions, as written there.
#[derive(Debug, Clone)]
pub struct DeployUser {
    pub name: String,
    /// `None`: no `permissions` block (the admin).
    pub publish: Option<Vec<String>>,
    pub subscribe: Option<Vec<String>>,
    pub allow_responses: bool,
}

fn quoted(text: &str) -> Vec<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The users of `deploy/nats/accounts.conf` with their allow lists, so the `.creds` test
/// grants exactly what the deploy config grants.
pub fn deploy_users() -> Vec<DeployUser> {
    let text = fs::read_to_string(workspace_root().join("deploy/nats/accounts.conf")).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let allow = |entry: &str, key: &str| {
        let start = entry.find(&format!("{key}: {{ allow: ["))?;
        let rest = &entry[start..];
        Some(quoted(&rest[..rest.find(']')?]))
    };
    let users: Vec<DeployUser> = text
        .split("{ user: ")
        .skip(1)
        .map(|entry| DeployUser {
            name: entry
                .split([',', ' '])
                .next()
                .unwrap_or_default()
                .to_owned(),
            publish: allow(entry, "publish"),
            subscribe: allow(entry, "subscribe"),
            allow_responses: entry.contains("allow_responses: true"),
        })
        .collect();
    assert!(
        users.len() >= 8,
        "accounts.conf changed shape: {:?}",
        users.iter().map(|u| &u.name).collect::<Vec<_>>()
    );
    users
}

/// The programs and the deploy user each runs as.
pub const PROGRAM_USERS: [&str; 8] = [
    "producer",
    "generator",
    "receiver",
    "archiver",
    "player",
    "console",
    "replayer",
    "alarmer",
];

// ---------------------------------------------------------------------------------------
// PostgreSQL as deployed

/// Run `deploy/postgres/init-primary.sh` against a test server, as the image's entrypoint
/// would: creates the `archiver` (writes) and `tspi_reader` (reads) roles in `db`.
/// The script's additions to `pg_hba.conf`/`postgresql.conf` go to a scratch dir.
pub fn apply_deploy_roles(pg: &PgServer, db: &str) {
    let scratch = tempfile::tempdir().unwrap();
    fs::write(scratch.path().join("pg_hba.conf"), "").unwrap();
    fs::write(scratch.path().join("postgresql.conf"), "").unwrap();
    let path = std::env::join_paths(std::iter::once(pg_bindir()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let out = Command::new("sh")
        .arg(workspace_root().join("deploy/postgres/init-primary.sh"))
        .env("PATH", path)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", pg.port().to_string())
        .env("POSTGRES_USER", tspi_test_support::PG_USER)
        .env("POSTGRES_DB", db)
        .env("PGDATA", scratch.path())
        .env("PG_ARCHIVER_PASSWORD", "pg-archiver")
        .env("PG_READER_PASSWORD", "pg-reader")
        .env("PG_REPLICATION_PASSWORD", "pg-replication")
        .env("PG_MONITOR_PASSWORD", "pg-monitor")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init-primary.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `psql` as `role`; the result, or the error text.
pub fn psql_as(pg: &PgServer, role: &str, db: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(pg_bindir().join("psql"))
        .args(["-h", "127.0.0.1", "-p", &pg.port().to_string(), "-U", role])
        .args([
            "-d",
            db,
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

// ---------------------------------------------------------------------------------------
// Programs as processes

/// The command-line form of a client's connection settings: flags, and the password
/// through `NATS_PASSWORD` (as an operator's unit file would pass it).
fn cli(args: &NatsArgs) -> (Vec<OsString>, Vec<(String, String)>) {
    let mut flags: Vec<OsString> = Vec::new();
    for s in &args.servers {
        flags.extend(["--nats-server".into(), s.into()]);
    }
    let mut env = Vec::new();
    if let Some(c) = &args.creds {
        flags.extend(["--creds".into(), c.into()]);
    }
    if let Some(u) = &args.user {
        flags.extend(["--user".into(), u.into()]);
    }
    if let Some(p) = &args.password {
        env.push(("NATS_PASSWORD".to_owned(), p.clone()));
    }
    for (flag, path) in [
        ("--tls-ca", &args.tls_ca),
        ("--tls-cert", &args.tls_cert),
        ("--tls-key", &args.tls_key),
    ] {
        if let Some(p) = path {
            flags.extend([flag.into(), p.into()]);
        }
    }
    flags.extend(["--inbox-prefix".into(), (&args.inbox_prefix).into()]);
    (flags, env)
}

/// A program started by the test: its output in files; killed on drop.
pub struct Running {
    name: String,
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Running {
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Where stdout goes (to follow a long output incrementally).
    pub fn stdout_path(&self) -> PathBuf {
        self.stdout.clone()
    }

    /// JSON lines of stdout.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {l}", self.name))
            })
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// Whether the process is still running (it has not exited, cleanly or not).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Poll until `ready` says so (a program that exits first is reported with its
    /// stderr unless `ready` accepts the exit).
    async fn poll<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut ready: impl FnMut(&Self, Option<ExitStatus>) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            if let Some(v) = ready(self, exited) {
                return v;
            }
            assert!(
                exited.is_none(),
                "{} exited ({exited:?}) before {what}: {}",
                self.name,
                self.stderr()
            );
            assert!(
                Instant::now() < deadline,
                "{}: no {what} after {timeout:?}; stderr:\n{}",
                self.name,
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait for the process to exit by itself.
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        self.poll(timeout, "exit", |_, exited| exited).await
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn stop(&mut self, timeout: Duration) -> ExitStatus {
        sigterm(self.pid());
        self.wait(timeout).await
    }

    /// Wait until stderr (the log) holds `needle`: a program's readiness line.
    pub async fn logged(&mut self, timeout: Duration, needle: &str) {
        self.poll(timeout, needle, |p, _| {
            p.stderr().contains(needle).then_some(())
        })
        .await;
    }

    /// Wait until stdout has at least one line (the program is subscribed and talking).
    pub async fn first_line(&mut self, timeout: Duration) {
        self.poll(timeout, "output", |p, _| {
            p.stdout().contains('\n').then_some(())
        })
        .await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if std::thread::panicking() {
                eprintln!("--- {} stderr ---\n{}", self.name, self.stderr());
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the workspace's binaries, each as its own deploy user with `auth`'s
/// connection settings.
pub struct Programs<'a> {
    auth: &'a dyn Fn(&str) -> NatsArgs,
    logs: tempfile::TempDir,
}

impl<'a> Programs<'a> {
    pub fn new(auth: &'a dyn Fn(&str) -> NatsArgs) -> Self {
        Programs {
            auth,
            logs: tempfile::tempdir().unwrap(),
        }
    }

    /// `bin <before…> <connection flags for user> <after…>` (subcommand flags must follow
    /// the subcommand, top-level ones precede it).
    pub fn command(&self, bin: &str, user: &str, before: &[&str], after: &[&str]) -> Command {
        let mut cmd = Command::new(workspace_bin(bin));
        for var in [
            "NATS_URL",
            "NATS_CREDS",
            "NATS_USER",
            "NATS_PASSWORD",
            "NATS_INBOX_PREFIX",
            "DATABASE_URL",
        ] {
            cmd.env_remove(var);
        }
        let (flags, env) = cli(&(self.auth)(user));
        cmd.args(before).args(flags).envs(env).args(after);
        cmd
    }

    pub fn spawn(&self, name: &str, mut cmd: Command) -> Running {
        let stdout = self.logs.path().join(format!("{name}.out"));
        let stderr = self.logs.path().join(format!("{name}.err"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Running {
            name: name.to_owned(),
            child: Some(child),
            stdout,
            stderr,
        }
    }

    /// Like [`Programs::spawn`], but stdout goes through a pipe that this test reads (into
    /// the same file) only while the returned flag is false: a reader that stops reading.
    pub fn spawn_with_stoppable_reader(
        &self,
        name: &str,
        mut cmd: Command,
    ) -> (Running, std::sync::Arc<std::sync::atomic::AtomicBool>) {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, Ordering};
        let stdout = self.logs.path().join(format!("{name}.out"));
        let stderr = self.logs.path().join(format!("{name}.err"));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut pipe = child.stdout.take().unwrap();
        let mut file = fs::File::create(&stdout).unwrap();
        let stopped = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stopped.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                if flag.load(Ordering::Relaxed) {
                    // Not reading: the pipe fills and the program's writes block.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if file.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        (
            Running {
                name: name.to_owned(),
                child: Some(child),
                stdout,
                stderr,
            },
            stopped,
        )
    }

    /// `bin <args…>` as its own user (the program's name), in the background.
    pub fn start(&self, name: &str, bin: &str, args: &[&str]) -> Running {
        self.spawn(name, self.command(bin, bin, &[], args))
    }

    /// `console <args…>` as the console's user, to completion.
    pub async fn console(&self, name: &str, args: &[&str]) -> Running {
        let cmd = self.command("console", "console", &[], args);
        self.run_ok(name, cmd, Duration::from_secs(60)).await
    }

    /// `archiver migrate` on the database at `url`, to completion.
    pub async fn archiver_migrate(&self, url: &str) {
        let mut migrate = Command::new(workspace_bin("archiver"));
        migrate
            .args(["migrate", "--database-url", url])
            .env_remove("DATABASE_URL");
        self.run_ok("archiver-migrate", migrate, Duration::from_secs(60))
            .await;
    }

    /// The producer on loopback `udp_port`, no periodic stats lines; `extra` flags after.
    pub fn producer(&self, udp_port: u16, extra: &[&str]) -> Running {
        let port = udp_port.to_string();
        let mut args = vec![
            "--udp-host",
            "127.0.0.1",
            "--udp-port",
            &port,
            "--stats-interval",
            "0",
        ];
        args.extend_from_slice(extra);
        self.start("producer", "producer", &args)
    }

    /// Run to completion; panics unless it exits 0 within `timeout`.
    pub async fn run_ok(&self, name: &str, cmd: Command, timeout: Duration) -> Running {
        let mut p = self.spawn(name, cmd);
        let status = p.wait(timeout).await;
        assert!(status.success(), "{name}: {status}\n{}", p.stderr());
        p
    }
}

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap()
}

fn http_ok(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// `GET /metrics` from a program's `--metrics-addr`.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// Metric families a program serves that docs/operations.md does not name.
fn undocumented_metrics(exposition: &str) -> Vec<String> {
    let docs = fs::read_to_string(workspace_root().join("docs/operations.md")).unwrap();
    let families: Vec<&str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(!families.is_empty(), "no metrics served: {exposition}");
    families
        .into_iter()
        .filter(|f| !docs.contains(&format!("`{f}")))
        .map(str::to_owned)
        .collect()
}

fn count_events(lines: &[Value], event: &str) -> usize {
    lines.iter().filter(|l| l["event"] == event).count()
}

/// Wait until the archive's `messages` holds `want` rows, counted as `role` (or the
/// superuser); fails with the archiver's log after `timeout`.
pub async fn wait_archived(
    pg: &PgServer,
    role: Option<&str>,
    db: &str,
    want: u64,
    archiver: &Running,
    timeout: Duration,
) {
    let archived = || {
        let sql = "SELECT count(*) FROM messages";
        match role {
            Some(role) => psql_as(pg, role, db, sql).unwrap(),
            None => pg.psql(db, sql),
        }
        .trim()
        .parse::<u64>()
        .unwrap()
    };
    let all = wait_until(timeout, || async { archived() == want }).await;
    assert!(
        all.is_some(),
        "archived {} of {want}: {}",
        archived(),
        archiver.stderr()
    );
}

/// The whole system, every program a separate process with its own deploy user:
/// producer (UDP in) and generator (UDP out, then straight to JetStream with its own
/// user), receiver, archiver (PostgreSQL `archiver` role), live player, console (units
/// and a tag), replayer (`tspi_reader` role) playing the archive into a room a
/// historical player follows. Checks the counts agree end to end and that a user
/// cannot do another's job (the receiver binary as the producer's user; the producer's
/// user reading telemetry; the reader role writing).
pub async fn every_program_end_to_end(programs: &Programs<'_>, admin: &jetstream::Context) {
    let pg = PgServer::start_primary();
    let db = pg.create_database("deploy");
    apply_deploy_roles(&pg, &db);
    let archiver_url = format!("postgresql://archiver@127.0.0.1:{}/{db}", pg.port());
    let reader_url = format!("postgresql://tspi_reader@127.0.0.1:{}/{db}", pg.port());
    let started = tspi_runtime::now_epoch_ms();
    let long = Duration::from_secs(60);

    programs.archiver_migrate(&archiver_url).await;
    let udp_port = free_udp_port();
    let producer_metrics = free_port();
    let mut producer = programs.producer(
        udp_port,
        &["--metrics-addr", &format!("127.0.0.1:{producer_metrics}")],
    );
    let reached = tspi_test_support::wait_until(long, || async {
        http_ok(producer_metrics) && admin.get_stream("TSPI").await.is_ok()
    })
    .await;
    assert!(reached.is_some(), "producer not up: {}", producer.stderr());
    assert_eq!(
        tspi_test_support::stream_info(admin, "TSPI")
            .await
            .config
            .num_replicas,
        3,
        "the producer made TSPI R3 on the cluster"
    );

    // The console creates TSPI_OPS (heartbeats) for the players.
    programs
        .console("console-clients", &["clients", "--json"])
        .await;
    let archiver_metrics = free_port();
    let mut archiver = programs.start(
        "archiver",
        "archiver",
        &[
            "--database-url",
            &archiver_url,
            "--metrics-addr",
            &format!("127.0.0.1:{archiver_metrics}"),
        ],
    );
    // A receiver following live until stopped (its metrics are scraped at the end).
    let receiver_metrics = free_port();
    let mut follower = programs.start(
        "receiver-follow",
        "receiver",
        &[
            "--deliver",
            "all",
            "--no-json-stream",
            "--metrics-addr",
            &format!("127.0.0.1:{receiver_metrics}"),
        ],
    );
    let mut live = programs.start(
        "player-live",
        "player",
        &[
            "--no-create-stream",
            "--client-id",
            "deploy-player",
            "--exit-on-idle",
            "6s",
            "--duration",
            "90s",
        ],
    );
    live.first_line(long).await;

    // The producer's user cannot read what it publishes.
    let producer_client = connect(&(programs.auth)("producer"), "snoop")
        .await
        .unwrap();
    let mut snoop = producer_client.subscribe("tspi.>").await.unwrap();
    producer_client.flush().await.unwrap();

    let udp_fleet = programs
        .run_ok(
            "generator-udp",
            {
                let mut cmd = Command::new(workspace_bin("generator"));
                cmd.args(["--udp-target", &format!("127.0.0.1:{udp_port}")])
                    .args(["--count", "4", "--rate", "20", "--duration", "2"])
                    .args(["--message-type", "mixed"]);
                cmd
            },
            long,
        )
        .await;
    let udp_valid = udp_fleet.json_lines().last().unwrap()["valid"]
        .as_u64()
        .unwrap();
    let js_fleet = programs
        .run_ok(
            "generator-jetstream",
            programs.command(
                "generator",
                "generator",
                &[],
                &[
                    "--jetstream",
                    "--count",
                    "2",
                    "--rate",
                    "10",
                    "--duration",
                    "1",
                    "--sensor-base",
                    "20000",
                ],
            ),
            long,
        )
        .await;
    let js_valid = js_fleet.json_lines().last().unwrap()["valid"]
        .as_u64()
        .unwrap();
    let telemetry = udp_valid + js_valid;
    assert_eq!(
        (udp_valid, js_valid),
        (160, 20),
        "4×20×2 over UDP, 2×10×1 direct"
    );

    programs
        .console("console-units", &["units", "imperial"])
        .await;
    programs
        .console("console-tag", &["tag", "deploy check"])
        .await;

    // The receiver reads every telemetry message once.
    let mut receiver = programs.start(
        "receiver",
        "receiver",
        &[
            "--deliver",
            "all",
            "--count",
            &telemetry.to_string(),
            "--duration",
            "60s",
        ],
    );
    assert!(receiver.wait(long).await.success(), "{}", receiver.stderr());
    assert_eq!(receiver.json_lines().len() as u64, telemetry);

    // The archiver stores everything the stream holds: telemetry, the command, the tag.
    let stream_messages = tspi_test_support::stream_info(admin, "TSPI")
        .await
        .state
        .messages;
    assert!(
        stream_messages >= telemetry + 2,
        "telemetry + command + tag: {stream_messages}"
    );
    wait_archived(&pg, Some("archiver"), &db, stream_messages, &archiver, long).await;

    // The live player showed every frame, the units command and the tag.
    assert!(live.wait(long).await.success(), "{}", live.stderr());
    let shown = live.json_lines();
    assert_eq!(count_events(&shown, "frame") as u64, telemetry);
    assert!(
        shown
            .iter()
            .any(|l| l["event"] == "command" && l["payload"]["units"] == "imperial"),
        "units command shown"
    );
    assert_eq!(
        count_events(&shown, "tag"),
        1,
        "tag shown: {:?}",
        shown
            .iter()
            .filter(|l| l["event"] != "frame")
            .collect::<Vec<_>>()
    );

    // The replayer, reading the archive as tspi_reader, plays it into a room that a
    // historical player follows.
    let mut historical = programs.start(
        "player-historical",
        "player",
        &[
            "--no-create-stream",
            "--source",
            "historical",
            "--room",
            "deploy",
            // Room for the replayer's start-up on a loaded machine.
            "--exit-on-idle",
            "8s",
            "--duration",
            "90s",
        ],
    );
    historical.first_line(long).await;
    let start = tspi_core::rfc3339::format_utc_millis(started - 5_000);
    let end = tspi_core::rfc3339::format_utc_millis(tspi_runtime::now_epoch_ms() + 1_000);
    let play = programs
        .run_ok(
            "replayer-play",
            programs.command(
                "replayer",
                "replayer",
                &["play"],
                &[
                    "--room",
                    "deploy",
                    "--start",
                    &start,
                    "--end",
                    &end,
                    "--speed",
                    "20",
                    "--database-url",
                    &reader_url,
                ],
            ),
            long,
        )
        .await;
    let summary = play.json_lines().pop().unwrap();
    assert_eq!(
        summary["published"].as_u64(),
        Some(stream_messages),
        "{summary}"
    );
    assert!(
        historical.wait(long).await.success(),
        "{}",
        historical.stderr()
    );
    let replayed = historical.json_lines();
    assert_eq!(count_events(&replayed, "frame") as u64, telemetry);
    assert_eq!(count_events(&replayed, "tag"), 1);

    eprintln!(
        "every program: {telemetry} frames ({udp_valid} UDP, {js_valid} direct), {stream_messages} \
         stream messages archived, live player {} frames, replayed {} messages, historical \
         player {} frames",
        count_events(&shown, "frame"),
        summary["published"],
        count_events(&replayed, "frame"),
    );

    // Least privilege, from the command line and the database.
    let mut wrong_user = programs.spawn(
        "receiver-as-producer",
        programs.command(
            "receiver",
            "producer",
            &[],
            &["--deliver", "all", "--count", "1", "--duration", "10s"],
        ),
    );
    let status = wrong_user.wait(long).await;
    assert!(
        !status.success() && wrong_user.stdout().is_empty(),
        "the producer's user read telemetry through the receiver: {status}"
    );
    assert!(
        wrong_user.stderr().contains("Permissions Violation")
            && wrong_user.stderr().contains("may not create consumers"),
        "the operator is told why: {}",
        wrong_user.stderr()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), snoop.next())
            .await
            .is_err(),
        "the producer's user received telemetry"
    );
    let denied = psql_as(
        &pg,
        "tspi_reader",
        &db,
        "DELETE FROM messages WHERE stream_seq = 1",
    )
    .unwrap_err();
    assert!(denied.contains("permission denied"), "{denied}");

    // What they count matches what happened, and operations.md explains every metric.
    let produced = scrape(producer_metrics);
    let archived = scrape(archiver_metrics);
    let followed = scrape(receiver_metrics);
    assert!(
        produced.contains(&format!("tspi_producer_published_total {udp_valid}")),
        "{produced}"
    );
    assert!(
        archived.contains(&format!(
            "tspi_archiver_rows_written_total {stream_messages}"
        )),
        "{archived}"
    );
    assert!(
        followed.contains(&format!("tspi_receiver_messages_written_total {telemetry}")),
        "{followed}"
    );
    for exposition in [&produced, &archived, &followed] {
        let missing = undocumented_metrics(exposition);
        assert!(missing.is_empty(), "not in docs/operations.md: {missing:?}");
    }

    // The daemons stop cleanly on SIGTERM, nothing left unacknowledged.
    assert!(follower.stop(long).await.success(), "{}", follower.stderr());
    assert!(producer.stop(long).await.success(), "{}", producer.stderr());
    assert!(archiver.stop(long).await.success(), "{}", archiver.stderr());
    assert!(
        archiver
            .stderr()
            .contains(&format!("archiver stopped rows_written={stream_messages}")),
        "the archiver reports what it did: {}",
        archiver.stderr()
    );
    let info = tspi_test_support::consumer_info(admin, "TSPI", "archiver").await;
    assert_eq!(
        (info.num_pending, info.num_ack_pending),
        (0, 0),
        "archiver consumer drained"
    );

    // The alarmer with its own user: its durable consumer, its transitions into TSPI and
    // operators' requests from the console's user (list, acknowledge).
    let rules = programs.logs.path().join("rules.toml");
    fs::write(
        &rules,
        "[[limit]]\nname = \"ceiling\"\nsensors = [\"30000-30009\"]\nfield = \"altitude_m\"\nabove = { warning = -1000.0 }\n",
    )
    .unwrap();
    let alarmer_metrics = free_port();
    let mut alarmer = programs.start(
        "alarmer",
        "alarmer",
        &[
            "--rules",
            rules.to_str().unwrap(),
            "--metrics-addr",
            &format!("127.0.0.1:{alarmer_metrics}"),
        ],
    );
    // Its readiness line, not the consumer's existence: the consumer can be listed before
    // the server has fixed where "new" starts, and a record stored in between precedes it.
    alarmer.logged(long, "evaluating alarms").await;
    programs
        .run_ok(
            "generator-alarm",
            programs.command(
                "generator",
                "generator",
                &[],
                &[
                    "--jetstream",
                    "--count",
                    "1",
                    "--rate",
                    "10",
                    "--duration",
                    "1",
                    "--sensor-base",
                    "30000",
                ],
            ),
            long,
        )
        .await;
    let alarms_listed = || async {
        let list = programs
            .console("console-alarms", &["alarms", "--json"])
            .await;
        serde_json::from_str::<Value>(list.stdout().trim()).unwrap()
    };
    let seen = wait_until(long, || async {
        alarms_listed()
            .await
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    assert!(seen.is_some(), "no alarm listed: {}", alarmer.stderr());
    let listed = alarms_listed().await;
    assert_eq!(listed[0]["id"], "ceiling/30000", "{listed}");
    assert_eq!(listed[0]["level"], "warning", "{listed}");
    let acked = programs
        .console(
            "console-ack",
            &["ack", "ceiling/30000", "--operator", "deploy"],
        )
        .await;
    let acked: serde_json::Value = serde_json::from_str(acked.stdout().trim()).unwrap();
    assert_eq!(
        (acked["event"].as_str(), acked["operator"].as_str()),
        (Some("acknowledged"), Some("deploy"))
    );
    let alarmed = scrape(alarmer_metrics);
    assert!(
        alarmed.contains("tspi_alarmer_messages_evaluated_total 10"),
        "{alarmed}"
    );
    assert!(
        alarmed.contains("tspi_alarmer_alarms_active{level=\"warning\"} 1"),
        "{alarmed}"
    );
    let missing = undocumented_metrics(&alarmed);
    assert!(missing.is_empty(), "not in docs/operations.md: {missing:?}");
    assert!(alarmer.stop(long).await.success(), "{}", alarmer.stderr());
}
