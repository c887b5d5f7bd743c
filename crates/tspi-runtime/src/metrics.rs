//! Prometheus text exposition on `--metrics-addr HOST:PORT`, served by a deliberately tiny
//! HTTP responder: every GET gets the current registry, nothing else is routed.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
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

/// Bind `addr` and serve `registry` until `shutdown`. Returns the bound address (useful
/// with port 0).
pub async fn serve_metrics(
    addr: SocketAddr,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            let Ok((mut stream, _)) = accepted else {
                continue;
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                // Read (and ignore) the whole request head before answering: closing on a
                // client still writing would reset its connection. Bounded in size and time.
                let mut buf = [0u8; 4096];
                let mut filled = 0;
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                    while filled < buf.len() {
                        match stream.read(&mut buf[filled..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => filled += n,
                        }
                        if buf[..filled].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                })
                .await;
                let mut body = String::new();
                let status = match prometheus_client::encoding::text::encode(&mut body, &registry) {
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
            });
        }
    });
    Ok(bound)
}
