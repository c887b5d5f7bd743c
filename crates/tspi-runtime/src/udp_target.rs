//! `--udp-target HOST:PORT`: where a program sends datagrams. An address is used as it
//! is; a host name (a container's service name, a sensor gateway's DNS name) is resolved
//! when sending starts — waiting while it does not resolve yet, as a peer that has not
//! started has no name — and again every few seconds while sending, so a peer that comes
//! back at another address (a restarted container) keeps receiving.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often names are looked up again while sending.
pub const RELOOKUP_INTERVAL: Duration = Duration::from_secs(5);
/// How often a name that does not resolve yet is tried again at the start.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// How often the wait for a name is reported.
const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// One `HOST:PORT` (an IPv6 address in brackets: `[::1]:30000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpTarget {
    host: String,
    port: u16,
}

impl UdpTarget {
    /// The address, when the host is one (no lookup needed).
    pub fn address(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }

    /// The host's first address (IPv4 first, the family most receivers bind).
    pub async fn lookup(&self) -> std::io::Result<SocketAddr> {
        if let Some(a) = self.address() {
            return Ok(a);
        }
        let all: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .collect();
        all.iter()
            .find(|a| a.is_ipv4())
            .or(all.first())
            .copied()
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address")
            })
    }
}

impl fmt::Display for UdpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for UdpTarget {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid target {text:?}: {why} (expected HOST:PORT)");
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, port) = rest
                .split_once("]:")
                .ok_or_else(|| bad("an IPv6 address needs [ADDRESS]:PORT"))?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address in the brackets"))?;
            (host, port)
        } else {
            let (host, port) = text.rsplit_once(':').ok_or_else(|| bad("no port"))?;
            if host.contains(':') {
                return Err(bad("an IPv6 address needs brackets"));
            }
            (host, port)
        };
        let valid_name = |h: &str| {
            !h.is_empty()
                && h.len() <= 253
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        };
        if !(valid_name(host) || host.parse::<IpAddr>().is_ok()) {
            return Err(bad("not a host name or address"));
        }
        let port: u16 = port.parse().map_err(|_| bad("the port is not 1-65535"))?;
        if port == 0 {
            return Err(bad("the port is not 1-65535"));
        }
        Ok(UdpTarget {
            host: host.to_owned(),
            port,
        })
    }
}

/// The addresses datagrams go to now, following the names' lookups made in the
/// background (`current` costs an atomic load when nothing changed).
#[derive(Debug)]
pub struct UdpTargets {
    current: Vec<SocketAddr>,
    updates: Option<watch::Receiver<Vec<SocketAddr>>>,
}

impl UdpTargets {
    /// Fixed addresses (tests, or nothing to look up).
    pub fn fixed(addresses: Vec<SocketAddr>) -> Self {
        UdpTargets {
            current: addresses,
            updates: None,
        }
    }

    /// Where to send now.
    pub fn current(&mut self) -> &[SocketAddr] {
        if let Some(rx) = &mut self.updates {
            if rx.has_changed().unwrap_or(false) {
                self.current = rx.borrow_and_update().clone();
            }
        }
        &self.current
    }

    /// Whether every address is IPv4 (the sending socket's family).
    pub fn all_ipv4(&self) -> bool {
        self.current.iter().all(SocketAddr::is_ipv4)
    }
}

/// Look every target up, waiting (reported on the log every 10 s) while a name does not
/// resolve yet; then keep looking the names up every [`RELOOKUP_INTERVAL`] until
/// `shutdown`. `None` when shut down before every name resolved.
pub async fn resolve_targets(
    targets: &[UdpTarget],
    shutdown: &CancellationToken,
) -> Option<UdpTargets> {
    let mut addresses = Vec::with_capacity(targets.len());
    for target in targets {
        addresses.push(first_lookup(target, shutdown).await?);
    }
    if targets.iter().all(|t| t.address().is_some()) {
        return Some(UdpTargets::fixed(addresses));
    }
    let (tx, rx) = watch::channel(addresses.clone());
    let current = addresses.clone();
    let targets = targets.to_vec();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut known = addresses;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RELOOKUP_INTERVAL) => {}
            }
            for (i, target) in targets.iter().enumerate() {
                // A failed lookup keeps the last address: a name server's hiccup must not
                // stop the datagrams.
                match target.lookup().await {
                    Ok(a) if a != known[i] => {
                        tracing::info!(target = %target, from = %known[i], to = %a, "UDP target moved");
                        known[i] = a;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(target = %target, error = %e, "lookup failed; keeping the last address")
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
            tx.send_if_modified(|now| {
                let changed = *now != known;
                if changed {
                    now.clone_from(&known);
                }
                changed
            });
        }
    });
    Some(UdpTargets {
        current,
        updates: Some(rx),
    })
}

async fn first_lookup(target: &UdpTarget, shutdown: &CancellationToken) -> Option<SocketAddr> {
    let started = tokio::time::Instant::now();
    let mut reported = started;
    loop {
        match target.lookup().await {
            Ok(a) => {
                if started.elapsed() >= RETRY_INTERVAL {
                    tracing::info!(target = %target, address = %a, "UDP target resolves now");
                }
                return Some(a);
            }
            Err(e) => {
                if reported == started || reported.elapsed() >= REPORT_INTERVAL {
                    tracing::warn!(target = %target, error = %e, waited_s = started.elapsed().as_secs(),
                        "waiting for the UDP target's name to resolve");
                    reported = tokio::time::Instant::now();
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(RETRY_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_names() {
        let t: UdpTarget = "127.0.0.1:30000".parse().unwrap();
        assert_eq!(t.address(), Some("127.0.0.1:30000".parse().unwrap()));
        let t: UdpTarget = "[::1]:30000".parse().unwrap();
        assert_eq!(t.address(), Some("[::1]:30000".parse().unwrap()));
        assert_eq!(t.to_string(), "[::1]:30000");
        let t: UdpTarget = "producer:30000".parse().unwrap();
        assert_eq!(t.address(), None);
        assert_eq!(t.to_string(), "producer:30000");
        let t: UdpTarget = "gw-1.range.example:5".parse().unwrap();
        assert_eq!(t.to_string(), "gw-1.range.example:5");
    }

    #[test]
    fn refuses_what_is_not_host_port() {
        for bad in [
            "",
            "producer",
            "producer:",
            ":30000",
            "producer:0",
            "producer:65536",
            "producer:x",
            "::1:30000",
            "[::1]30000",
            "[nope]:1",
            "pro ducer:1",
            "a/b:1",
        ] {
            let e = bad.parse::<UdpTarget>().unwrap_err();
            assert!(e.contains("expected HOST:PORT"), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn names_resolve_and_addresses_need_no_lookup() {
        let shutdown = CancellationToken::new();
        let targets: Vec<UdpTarget> = vec![
            "localhost:4000".parse().unwrap(),
            "127.0.0.2:4001".parse().unwrap(),
        ];
        let mut resolved = resolve_targets(&targets, &shutdown).await.unwrap();
        let now = resolved.current().to_vec();
        assert_eq!(now.len(), 2);
        assert!(
            now[0].ip().is_loopback() && now[0].port() == 4000,
            "{now:?}"
        );
        assert_eq!(now[1], "127.0.0.2:4001".parse().unwrap());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn waiting_for_a_name_ends_with_shutdown() {
        let shutdown = CancellationToken::new();
        // Reserved for documentation (RFC 6761): it never resolves.
        let targets: Vec<UdpTarget> = vec!["no-such-host.invalid:4000".parse().unwrap()];
        let waiting = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { resolve_targets(&targets, &shutdown).await })
        };
        // The behaviour under test is that it keeps waiting: give it more than one retry.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            !waiting.is_finished(),
            "gave up on a name that may resolve later"
        );
        shutdown.cancel();
        assert!(waiting.await.unwrap().is_none());
    }
}
