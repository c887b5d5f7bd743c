//! The web display's TCP listener, guarded against connection floods: at most a fixed
//! number of connections at once (more are closed on accept, counted as
//! `refused{reason="connections"}`), a connection that sends no request soon after it
//! opens or then carries nothing either way for a while is closed, and accept errors
//! (out of descriptors) back off instead of spinning. Without this, a few hundred idle
//! sockets hold the process's descriptors and a NATS reconnect has none left.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection must send its first bytes within this long.
pub const FIRST_REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// A connection that carries nothing either way for this long is closed. Open tabs never
/// get near it: the server sends a clock every 2 s and a ping every 5 s.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct GuardedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    refused: Counter,
    backoff: Duration,
    last_warning: Option<Instant>,
}

impl GuardedListener {
    /// Serve at most `max_connections` at once from `inner`.
    pub fn new(inner: TcpListener, max_connections: usize, refused: Counter) -> Self {
        GuardedListener {
            inner,
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            refused,
            backoff: Duration::from_millis(10),
            last_warning: None,
        }
    }

    fn warn_now(&mut self) -> bool {
        let due = self
            .last_warning
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if due {
            self.last_warning = Some(Instant::now());
        }
        due
    }
}

impl Listener for GuardedListener {
    type Io = GuardedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, remote)) => {
                    self.backoff = Duration::from_millis(10);
                    let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                        self.refused.inc();
                        if self.warn_now() {
                            tracing::warn!(%remote, "web display at its connection limit; closing new connections");
                        }
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    return (GuardedIo::new(stream, slot), remote);
                }
                Err(e) => {
                    if self.warn_now() {
                        tracing::warn!(error = %e, "web display cannot accept; backing off");
                    }
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The remote address of a connection, for handlers (`ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, GuardedListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, GuardedListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// A connection holding one of the listener's slots until it closes, and timing out when
/// it is idle.
#[derive(Debug)]
pub struct GuardedIo {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    /// No byte read yet: the shorter first-request deadline applies.
    fresh: bool,
    last_activity: Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl GuardedIo {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit) -> Self {
        GuardedIo {
            stream,
            _slot: slot,
            fresh: true,
            last_activity: Instant::now(),
            timer: Box::pin(tokio::time::sleep(FIRST_REQUEST_DEADLINE)),
        }
    }

    fn limit(&self) -> Duration {
        if self.fresh {
            FIRST_REQUEST_DEADLINE
        } else {
            IDLE_TIMEOUT
        }
    }

    /// While a read waits: has the connection been idle past its limit? Re-arms the
    /// timer (and so the waker) otherwise.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let due = self.last_activity + self.limit();
            if Instant::now() >= due {
                return true;
            }
            self.timer.as_mut().reset(due.into());
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.fresh = false;
                    this.last_activity = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.idle_expired(cx) {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle past its limit",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) && !this.fresh {
            this.last_activity = Instant::now();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) && !this.fresh {
            this.last_activity = Instant::now();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
