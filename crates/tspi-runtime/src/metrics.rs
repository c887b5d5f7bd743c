//! Prometheus text exposition on `--metrics-addr HOST:PORT`, served by a deliberately tiny
//! HTTP responder: every GET gets the current registry, nothing else is routed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464); off when absent.
    #[arg(long, env = "TSPI_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Serve `registry` when `--metrics-addr` was given; a clear error if it cannot bind.
    pub async fn serve(
        &self,
        registry: Registry,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        if let Some(addr) = self.metrics_addr {
            let bound = serve_metrics(addr, Arc::new(registry), shutdown)
                .await
                .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
            tracing::info!(%bound, "metrics endpoint up");
        }
        Ok(())
    }
}

/// Connections served at once; more are closed as soon as they are accepted, so a flood
/// cannot take the descriptors the process needs for NATS and its database.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a scrape may take from accept to the last byte written.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);
/// How long a client may take to send its request head.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

/// Bind `addr` and serve `registry` until `shutdown`. Returns the bound address (useful
/// with port 0).
///
/// Hardened against connection floods: at most [`MAX_CONNECTIONS`] at once (the rest are
/// closed on accept), a deadline on each connection, and a growing pause after accept
/// errors (out of descriptors) instead of a busy loop.
pub async fn serve_metrics(
    addr: SocketAddr,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    // Never more than an eighth of the descriptors, however low the limit.
    let cap = crate::connection_cap(
        MAX_CONNECTIONS,
        crate::open_files_limit().map_or(0, |l| l - l / 8),
        4,
    );
    let slots = Arc::new(Semaphore::new(cap));
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(10);
        let mut refused: u64 = 0;
        let mut last_report: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            let mut stream = match accepted {
                Ok((stream, _)) => {
                    backoff = Duration::from_millis(10);
                    stream
                }
                Err(e) => {
                    // EMFILE and friends: the condition lasts; retrying at once only spins.
                    if last_report.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        last_report = Some(Instant::now());
                        tracing::warn!(error = %e, "metrics endpoint cannot accept; backing off");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                refused += 1;
                if last_report.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    last_report = Some(Instant::now());
                    tracing::warn!(
                        refused,
                        limit = cap,
                        "metrics endpoint busy; closing extra connections"
                    );
                }
                drop(stream);
                continue;
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let _ =
                    tokio::time::timeout(CONNECTION_DEADLINE, answer(&mut stream, &registry)).await;
            });
        }
    });
    Ok(bound)
}

/// Read (and ignore) the request head, bounded in size and time, then send the registry.
/// Reading first matters: closing on a client still writing would reset its connection.
async fn answer(stream: &mut tokio::net::TcpStream, registry: &Registry) {
    let mut buf = [0u8; 4096];
    let mut filled = 0;
    let head = tokio::time::timeout(REQUEST_DEADLINE, async {
        while filled < buf.len() {
            match stream.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => filled += n,
            }
            if buf[..filled].windows(4).any(|w| w == b"\r\n\r\n") {
                return true;
            }
        }
        true
    })
    .await;
    if !matches!(head, Ok(true)) {
        return; // nothing asked in time, or the client went away
    }
    let mut body = String::new();
    let status = match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => "200 OK",
        Err(_) => "500 Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    async fn scrape(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// Reads until the server closes; true if it did within `within`.
    async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(within, s.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn a_flood_of_idle_connections_is_capped_and_timed_out() {
        let shutdown = CancellationToken::new();
        let addr = serve_metrics(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Registry::default()),
            shutdown.clone(),
        )
        .await
        .unwrap();
        assert!(scrape(addr).await.starts_with("HTTP/1.1 200 OK"));

        let mut idle = Vec::new();
        for _ in 0..(MAX_CONNECTIONS + 100) {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // Beyond the cap, connections are closed at once.
        let mut closed_at_once = 0;
        for s in idle.iter_mut().skip(MAX_CONNECTIONS) {
            if closed_within(s, Duration::from_millis(500)).await {
                closed_at_once += 1;
            }
        }
        assert_eq!(closed_at_once, 100, "every connection over the cap closed");
        // The ones within it are dropped once they have asked nothing for the deadline.
        let started = Instant::now();
        for s in idle.iter_mut().take(MAX_CONNECTIONS) {
            assert!(closed_within(s, REQUEST_DEADLINE + Duration::from_secs(2)).await);
        }
        assert!(started.elapsed() < REQUEST_DEADLINE + Duration::from_secs(2));
        // And the endpoint answers again.
        assert!(scrape(addr).await.starts_with("HTTP/1.1 200 OK"));
        shutdown.cancel();
    }
}
