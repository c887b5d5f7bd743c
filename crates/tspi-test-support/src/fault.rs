//! Fault injection for chaos tests: a bouncer that kill -9's and restarts NATS nodes on a
//! schedule, a TCP link proxy that can cut, delay or black-hole a connection, SIGSTOP /
//! SIGCONT of a process tree, and `wait_until` for conditions.
//!
//! Everything here acts only on processes the test started (by PID) and listens only on
//! loopback.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::NatsCluster;

/// Poll `condition` every 20 ms until it holds or `timeout` passes. Returns how long it
/// took, or `None` on timeout (the caller says what it was waiting for).
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if condition().await {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`wait_until`] for a synchronous condition on a blocking thread.
pub fn wait_until_blocking(
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if condition() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    #[allow(unsafe_code)]
    // SAFETY: kill(2) with a pid the test started (or its descendant) and a valid signal.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// `pid` and every process below it, parents first, from `/proc/*/stat`.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid …": comm may hold spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((child, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    tree
}

/// A process tree stopped with SIGSTOP; [`Paused::resume`] (or drop) sends SIGCONT.
#[derive(Debug)]
pub struct Paused {
    pids: Vec<u32>,
}

impl Paused {
    /// SIGSTOP `pid` and its descendants (the parent first, so it forks nothing new).
    pub fn process_tree(pid: u32) -> Paused {
        let pids = process_tree(pid);
        for &p in &pids {
            signal(p, libc::SIGSTOP);
        }
        Paused { pids }
    }

    /// The processes stopped.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// SIGCONT every stopped process.
    pub fn resume(mut self) {
        self.cont();
    }

    fn cont(&mut self) {
        for p in self.pids.drain(..) {
            signal(p, libc::SIGCONT);
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        self.cont();
    }
}

/// What a [`LinkProxy`] does with the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Forward both ways.
    Up,
    /// Forward both ways, each chunk `Duration` late (order kept).
    Delay(Duration),
    /// Forward both ways at most this many bytes a second in each direction (a thin WAN
    /// link; what is read ahead waits in the proxy, order kept).
    Throttle(u64),
    /// Keep the connections open but drop every byte, both ways: a route that silently
    /// stops carrying traffic (the peer sees no close, only silence).
    Blackhole,
    /// Reset every connection and refuse new ones, as when a link goes down hard.
    Cut,
}

/// A TCP proxy on loopback in front of `target`, with its own thread and runtime so it
/// works from sync and async tests alike.
#[derive(Debug)]
pub struct LinkProxy {
    addr: SocketAddr,
    target: SocketAddr,
    state: watch::Sender<LinkState>,
    accepted: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LinkProxy {
    /// Listen on a free loopback port and forward to `target`.
    pub fn start(target: SocketAddr) -> LinkProxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("link proxy bind: {e}"));
        let addr = std_listener
            .local_addr()
            .unwrap_or_else(|e| panic!("link proxy address: {e}"));
        std_listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("link proxy nonblocking: {e}"));
        let (state, state_rx) = watch::channel(LinkState::Up);
        let accepted = Arc::new(AtomicU64::new(0));
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let counter = accepted.clone();
        let thread = std::thread::Builder::new()
            .name(format!("link-proxy-{}", addr.port()))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => panic!("link proxy runtime: {e}"),
                };
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => panic!("link proxy listener: {e}"),
                    };
                    tokio::select! {
                        _ = stop_rx => {}
                        _ = accept_loop(listener, target, state_rx, counter) => {}
                    }
                });
            })
            .unwrap_or_else(|e| panic!("link proxy thread: {e}"));
        LinkProxy {
            addr,
            target,
            state,
            accepted,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Where clients connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// `nats://127.0.0.1:<proxy port>`.
    pub fn nats_url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    pub fn set(&self, state: LinkState) {
        self.state.send_replace(state);
    }

    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    pub fn cut(&self) {
        self.set(LinkState::Cut);
    }

    pub fn heal(&self) {
        self.set(LinkState::Up);
    }

    /// Connections accepted so far (refused ones while cut included).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    state: watch::Receiver<LinkState>,
    accepted: Arc<AtomicU64>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            // Out of descriptors or similar: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        accepted.fetch_add(1, Ordering::Relaxed);
        if *state.borrow() == LinkState::Cut {
            reset(inbound);
            continue;
        }
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else {
                reset(inbound);
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            carry(inbound, outbound, state).await;
        });
    }
}

/// Close with RST rather than FIN: a peer sees the link fail, not a polite goodbye.
fn reset(stream: TcpStream) {
    set_zero_linger(stream.as_raw_fd());
    drop(stream);
}

/// SO_LINGER {on, 0}: close(2) then sends RST and discards what is unsent.
fn set_zero_linger(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: setsockopt(2) on a socket this proxy owns (open for the duration of the
    // call), with a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Pump both directions until either side closes or the link is cut (then both sides
/// are reset).
async fn carry(inbound: TcpStream, outbound: TcpStream, mut state: watch::Receiver<LinkState>) {
    let fds = [inbound.as_raw_fd(), outbound.as_raw_fd()];
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let up = pump(in_read, out_write, state.clone());
    let down = pump(out_read, in_write, state.clone());
    let cut = async {
        loop {
            if *state.borrow_and_update() == LinkState::Cut {
                break;
            }
            if state.changed().await.is_err() {
                return;
            }
        }
        // The pumps still own the sockets here, so the descriptors are open; they
        // close (with RST) when the select below drops the pumps.
        for fd in fds {
            set_zero_linger(fd);
        }
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        () = cut => {}
    }
}

/// One direction: a reader stamps each chunk, a writer forwards it when due.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: watch::Receiver<LinkState>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<u64>, Vec<u8>)>(256);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let (due, rate) = match *state.borrow() {
                LinkState::Up => (Instant::now(), None),
                LinkState::Delay(d) => (Instant::now() + d, None),
                LinkState::Throttle(bytes_per_sec) => (Instant::now(), Some(bytes_per_sec.max(1))),
                LinkState::Blackhole => continue,
                LinkState::Cut => break,
            };
            if tx.send((due, rate, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let writer = async {
        // When the throttled link is free again: each chunk occupies it len/rate.
        let mut free_at = Instant::now();
        while let Some((due, rate, chunk)) = rx.recv().await {
            let mut at = due;
            if let Some(bytes_per_sec) = rate {
                at = at.max(free_at);
                free_at = at + Duration::from_secs_f64(chunk.len() as f64 / bytes_per_sec as f64);
            }
            tokio::time::sleep_until(at.into()).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// One kill in a [`bounce`] run.
#[derive(Debug, Clone)]
pub struct Bounce {
    /// Since the start of the run.
    pub at: Duration,
    /// Node indexes killed together.
    pub nodes: Vec<usize>,
    /// How long they stayed down.
    pub down_for: Duration,
}

/// The schedule of a [`bounce`] run.
#[derive(Debug, Clone)]
pub struct BouncePlan {
    /// Keep bouncing for this long.
    pub duration: Duration,
    /// Time between the end of one bounce and the next kill, drawn uniformly.
    pub interval: (Duration, Duration),
    /// How long a killed node stays down before its restart, drawn uniformly.
    pub down: (Duration, Duration),
    /// Chance that a bounce kills two nodes at once (quorum lost on R3).
    pub double_kill: f64,
    pub seed: u64,
}

/// Kill -9 random nodes of `cluster` and restart them, on `plan`'s schedule, until its
/// duration has passed. Blocking: run it on a thread (`spawn_blocking`). Every node is
/// running when it returns.
pub fn bounce(cluster: &mut NatsCluster, plan: &BouncePlan) -> Vec<Bounce> {
    let mut rng = SplitMix(plan.seed);
    let start = Instant::now();
    let mut log = Vec::new();
    while start.elapsed() < plan.duration {
        std::thread::sleep(rng.between(plan.interval.0, plan.interval.1));
        let n = cluster.len();
        let mut nodes = vec![rng.below(n)];
        if n > 2 && rng.unit() < plan.double_kill {
            let second = (nodes[0] + 1 + rng.below(n - 1)) % n;
            nodes.push(second);
        }
        let at = start.elapsed();
        for &i in &nodes {
            cluster.node(i).kill();
        }
        let down_for = rng.between(plan.down.0, plan.down.1);
        std::thread::sleep(down_for);
        for &i in &nodes {
            cluster.node(i).restart();
        }
        log.push(Bounce {
            at,
            nodes,
            down_for,
        });
    }
    log
}

/// A tiny deterministic generator (SplitMix64): a run's schedule is reproducible from its
/// seed.
#[derive(Debug)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + (hi.saturating_sub(lo)).mul_f64(self.unit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_reproducible_and_in_range() {
        let mut a = SplitMix(7);
        let mut b = SplitMix(7);
        for _ in 0..1000 {
            let d = a.between(Duration::from_secs(1), Duration::from_secs(3));
            assert_eq!(d, b.between(Duration::from_secs(1), Duration::from_secs(3)));
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(3));
            assert!(a.below(3) < 3);
            b.below(3);
        }
    }

    /// 512 KiB through a link throttled to 256 KiB/s cannot arrive in less than about
    /// two seconds (a lower bound only: a loaded machine can only make it slower), and
    /// arrives whole and in order.
    #[test]
    fn a_throttled_link_carries_no_more_than_its_rate() {
        use std::io::{Read, Write};
        let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = sink.local_addr().unwrap();
        let receiver = std::thread::spawn(move || {
            let (mut conn, _) = sink.accept().unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            got
        });
        let proxy = LinkProxy::start(target);
        proxy.set(LinkState::Throttle(256 * 1024));
        let sent: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
        let start = Instant::now();
        let mut conn = std::net::TcpStream::connect(proxy.addr()).unwrap();
        conn.write_all(&sent).unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let got = receiver.join().unwrap();
        let took = start.elapsed();
        assert_eq!(got, sent, "whole and in order");
        // The first chunk goes at once; the rest (≥ 448 KiB) waits on the rate.
        assert!(took >= Duration::from_millis(1700), "took only {took:?}");
    }

    #[test]
    fn process_tree_starts_with_the_root() {
        let me = std::process::id();
        assert_eq!(process_tree(me).first(), Some(&me));
    }
}
