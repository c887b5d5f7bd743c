//! Real PostgreSQL for tests: `initdb` into a temp dir, `postgres` on a free loopback port,
//! and a streaming replica made with `pg_basebackup`, so failover can be tested.
//!
//! PostgreSQL refuses to run as root; when the tests run as root (CI), every server
//! command runs as `nobody` through `setpriv`, with the temp dir handed to that user.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// Where the PostgreSQL server binaries are: `$TSPI_PG_BINDIR`, else the newest
/// `/usr/lib/postgresql/*/bin` with `initdb`.
pub fn pg_bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TSPI_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|b| b.join("initdb").is_file() && b.join("postgres").is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL server binaries not found: run `tests/install-deps.sh` (apt-get install postgresql) or set TSPI_PG_BINDIR")
    })
}

/// Whether the PostgreSQL of [`pg_bindir`] has TimescaleDB (its loader library beside the
/// server's); the reason when not.
pub fn timescaledb_installed() -> Result<(), String> {
    let bindir = pg_bindir();
    let lib = bindir.join("../lib/timescaledb.so");
    if lib.is_file() {
        Ok(())
    } else {
        Err(format!(
            "TimescaleDB is not installed for the PostgreSQL in {} ({} is missing); \
             tests/install-deps.sh builds it from the vendored source \
             (../shared/vendor/timescaledb-2.28.3.tar.gz, or TSPI_TIMESCALEDB_SOURCE)",
            bindir.display(),
            lib.display()
        ))
    }
}

const NOBODY: u32 = 65_534;

fn running_as_root() -> bool {
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    euid == 0
}

/// A command that runs as the server's user.
fn as_server_user(program: &Path) -> Command {
    if running_as_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ]);
        c.arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn give_to_server_user(path: &Path) {
    if running_as_root() {
        let status = Command::new("chown")
            .args(["-R", &format!("{NOBODY}:{NOBODY}")])
            .arg(path)
            .status()
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        assert!(status.success(), "chown {} failed", path.display());
    }
}

fn run_ok(mut cmd: Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One PostgreSQL server (primary or replica) in its own data dir.
#[derive(Debug)]
pub struct PgServer {
    port: u16,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

/// The superuser every test server is initialised with (trust auth on loopback).
pub const PG_USER: &str = "tspi";

impl PgServer {
    fn layout(prefix: &str) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        // nobody must be able to reach the data dir through the temp dir.
        let _ = fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755));
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("sock");
        fs::create_dir_all(&socket_dir).unwrap_or_else(|e| panic!("{e}"));
        let log = dir.path().join("postgres.log");
        fs::write(&log, "").unwrap_or_else(|e| panic!("{e}"));
        (dir, data, socket_dir, log)
    }

    /// `initdb` and start a primary that accepts replication connections.
    pub fn start_primary() -> PgServer {
        Self::start_primary_with("")
    }

    /// A primary with TimescaleDB preloaded and its telemetry off (a range network is
    /// air-gapped), or `None` when this machine's PostgreSQL has no TimescaleDB: then the
    /// calling test is reported skipped ([`crate::skipped`]).
    pub fn start_timescaledb(test: &str) -> Option<PgServer> {
        if let Err(why) = timescaledb_installed() {
            crate::skipped(test, crate::Dependency::TimescaleDb, &why);
            return None;
        }
        Some(Self::start_primary_with(
            "shared_preload_libraries = 'timescaledb'\ntimescaledb.telemetry_level = off\n",
        ))
    }

    fn start_primary_with(extra_conf: &str) -> PgServer {
        let bindir = pg_bindir();
        let (dir, data, socket_dir, log) = Self::layout("tspi-pg-primary-");
        give_to_server_user(dir.path());
        let mut initdb = as_server_user(&bindir.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-U",
            PG_USER,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        run_ok(initdb, "initdb");
        let conf = "listen_addresses = '127.0.0.1'\nwal_level = replica\nmax_wal_senders = 5\n\
                    hot_standby = on\nfsync = on\nsynchronous_commit = on\n";
        let mut pg_conf = fs::read_to_string(data.join("postgresql.conf")).unwrap_or_default();
        pg_conf.push_str(conf);
        pg_conf.push_str(extra_conf);
        fs::write(data.join("postgresql.conf"), pg_conf).unwrap_or_else(|e| panic!("{e}"));
        let mut hba = fs::read_to_string(data.join("pg_hba.conf")).unwrap_or_default();
        hba.push_str("host replication all 127.0.0.1/32 trust\n");
        fs::write(data.join("pg_hba.conf"), hba).unwrap_or_else(|e| panic!("{e}"));
        Self::launch(dir, data, socket_dir, log)
    }

    /// A streaming replica of `primary`, made with `pg_basebackup -R`.
    pub fn start_replica(primary: &PgServer) -> PgServer {
        let bindir = pg_bindir();
        let (dir, data, socket_dir, log) = Self::layout("tspi-pg-replica-");
        give_to_server_user(dir.path());
        let mut backup = as_server_user(&bindir.join("pg_basebackup"));
        backup.arg("-D").arg(&data).args(primary.conn_args()).args([
            "-R",
            "-X",
            "stream",
            "--no-sync",
            "--checkpoint=fast",
        ]);
        run_ok(backup, "pg_basebackup");
        Self::launch(dir, data, socket_dir, log)
    }

    fn launch(
        dir: tempfile::TempDir,
        data: PathBuf,
        socket_dir: PathBuf,
        log: PathBuf,
    ) -> PgServer {
        let mut s = PgServer {
            port: free_port(),
            data,
            socket_dir,
            log,
            child: None,
            _dir: dir,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let bindir = pg_bindir();
        let child = as_server_user(&bindir.join("postgres"))
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.socket_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                fs::OpenOptions::new()
                    .append(true)
                    .open(&self.log)
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("start postgres: {e}"));
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let isready = pg_bindir().join("pg_isready");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ok = Command::new(&isready)
                .args(self.conn_args())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "postgres exited at start-up ({status}):\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("postgres not ready within 30 s:\n{}", self.log_tail(30));
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `-h 127.0.0.1 -p <port> -U tspi`, for the client programs.
    fn conn_args(&self) -> [String; 6] {
        [
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            PG_USER.into(),
        ]
    }

    /// A libpq URL for database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://{PG_USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Run SQL with `psql` and return its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(pg_bindir().join("psql"))
            .args(self.conn_args())
            .args(["-d", db])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("psql: {e}"));
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `sql` running in a `psql` in the background until it ends or this is dropped: a
    /// client whose backend outlives a crash of the postmaster while it works.
    pub fn background_query(&self, db: &str, sql: &str) -> BackgroundQuery {
        let child = Command::new(pg_bindir().join("psql"))
            .args(self.conn_args())
            .args(["-d", db, "-X", "-q", "-c", sql])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("psql: {e}"));
        BackgroundQuery(child)
    }

    /// A fresh, uniquely named database.
    pub fn create_database(&self, prefix: &str) -> String {
        let name = format!("{prefix}_{}", free_port());
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// Stop immediately (like a crash; WAL recovery on restart).
    ///
    /// Returns once the old backends are gone too: they outlive a SIGKILLed postmaster
    /// until they notice, and while any is attached to its shared memory a new
    /// postmaster on the same data directory refuses to start ("pre-existing shared
    /// memory block is still in use").
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let shmid = self.shared_memory_id();
            let _ = child.kill();
            let _ = child.wait();
            if let Some(shmid) = shmid {
                wait_until_detached(shmid, Duration::from_secs(30));
            }
        }
    }

    /// The System V shared memory id the running postmaster recorded on line 7 of
    /// `postmaster.pid` ("key id").
    fn shared_memory_id(&self) -> Option<libc::c_int> {
        let pid_file = fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        pid_file
            .lines()
            .nth(6)?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// SIGSTOP the postmaster and every backend: the database hangs (connections stay
    /// open, nothing answers) until the returned guard is resumed or dropped.
    pub fn pause(&self) -> Option<crate::fault::Paused> {
        self.child
            .as_ref()
            .map(|c| crate::fault::Paused::process_tree(c.id()))
    }

    /// Start again after [`PgServer::kill`] on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Promote a replica to primary (`pg_ctl promote`) and wait until it accepts writes.
    pub fn promote(&self) {
        let mut cmd = as_server_user(&pg_bindir().join("pg_ctl"));
        cmd.args(["promote", "-w", "-D"]).arg(&self.data);
        run_ok(cmd, "pg_ctl promote");
        let reached = crate::wait_until_blocking(Duration::from_secs(30), || {
            self.psql("postgres", "SELECT pg_is_in_recovery()") == "f"
        });
        assert!(reached.is_some(), "replica did not leave recovery");
    }

    pub fn log_tail(&self, n: usize) -> String {
        crate::file_tail(&self.log, n)
    }
}

/// See [`PgServer::background_query`].
#[derive(Debug)]
pub struct BackgroundQuery(Child);

impl Drop for BackgroundQuery {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until no process is attached to shared memory segment `shmid` (or it is gone).
fn wait_until_detached(shmid: libc::c_int, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        // SAFETY: an all-zero shmid_ds is a valid out-buffer for IPC_STAT.
        #[allow(unsafe_code)]
        let mut stat: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: shmctl(2) IPC_STAT only writes into `stat`.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::shmctl(shmid, libc::IPC_STAT, &mut stat) };
        if rc != 0 || stat.shm_nattch == 0 || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- postgres log tail ---\n{}", self.log_tail(30));
        }
        // SIGKILL of the postmaster leaves its backends to exit on their own when they
        // notice; a fast shutdown first keeps the process table clean.
        if let Some(child) = self.child.as_ref() {
            #[allow(unsafe_code)]
            // SAFETY: kill(2) with the pid of a child this struct spawned.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGINT);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            if let Some(child) = self.child.as_mut() {
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        self.kill();
    }
}
