//! The connection flags every program takes (SPEC §5) and the client built from them.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::{ConnectOptions, Event, ServerAddr};
use clap::Args;

use crate::BusError;

#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL; repeat (or comma-separate in NATS_URL) to list cluster members.
    #[arg(
        long = "nats-server",
        env = "NATS_URL",
        value_delimiter = ',',
        default_value = "nats://127.0.0.1:4222"
    )]
    pub servers: Vec<String>,
    /// NATS credentials file (JWT + NKey seed).
    #[arg(long, env = "NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// User name for user/password authentication.
    #[arg(long, env = "NATS_USER", requires = "password")]
    pub user: Option<String>,
    /// Password for user/password authentication.
    #[arg(long, env = "NATS_PASSWORD", requires = "user", hide_env_values = true)]
    pub password: Option<String>,
    /// CA certificate (PEM) to verify the server; implies TLS.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Prefix of this client's reply subjects; a per-user prefix (e.g. `_INBOX_producer`)
    /// lets the server keep users from reading each other's replies.
    #[arg(long, env = "NATS_INBOX_PREFIX", default_value = "_INBOX")]
    pub inbox_prefix: String,
    /// How long to wait for the first connection before giving up.
    #[arg(long, default_value = "5s", value_parser = tspi_runtime::parse_duration)]
    pub connect_timeout: Duration,
}

impl NatsArgs {
    /// Args for one or more URLs with no authentication (tests, tools).
    pub fn for_urls<S: AsRef<str>>(urls: &[S]) -> NatsArgs {
        NatsArgs {
            servers: urls.iter().map(|u| u.as_ref().to_owned()).collect(),
            creds: None,
            user: None,
            password: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            inbox_prefix: "_INBOX".into(),
            connect_timeout: Duration::from_secs(5),
        }
    }

    fn addresses(&self) -> Result<Vec<ServerAddr>, BusError> {
        self.servers
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ServerAddr>().map_err(|e| BusError::BadAddress {
                    address: s.to_owned(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }
}

/// Connect with the given flags. The first connection must succeed (a clear error
/// otherwise); afterwards the client reconnects forever with back-off, and every
/// disconnect/reconnect is logged.
pub async fn connect(args: &NatsArgs, name: &str) -> Result<async_nats::Client, BusError> {
    connect_observed(args, name, || {}).await
}

/// [`connect`], calling `on_slow_consumer` each time the client drops messages a
/// subscription did not take in time (so a program can count what it lost).
pub async fn connect_observed(
    args: &NatsArgs,
    name: &str,
    on_slow_consumer: impl Fn() + Send + Sync + 'static,
) -> Result<async_nats::Client, BusError> {
    let on_slow_consumer = std::sync::Arc::new(on_slow_consumer);
    let addresses = args.addresses()?;
    let servers = args.servers.join(",");
    if addresses.is_empty() {
        return Err(BusError::BadAddress {
            address: servers,
            reason: "no server given".into(),
        });
    }
    let mut options = match &args.creds {
        Some(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|source| BusError::Credentials {
                path: path.display().to_string(),
                source,
            })?,
        None => ConnectOptions::new(),
    };
    if let (Some(user), Some(password)) = (&args.user, &args.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(ca) = &args.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    let label = name.to_owned();
    options = options
        .name(name)
        .custom_inbox_prefix(args.inbox_prefix.clone())
        .connection_timeout(args.connect_timeout)
        .max_reconnects(None)
        .client_capacity(65_536)
        .subscription_capacity(65_536)
        .event_callback(move |event| {
            let label = label.clone();
            let on_slow_consumer = on_slow_consumer.clone();
            async move {
                match event {
                    Event::Connected => tracing::info!(client = %label, "connected to NATS"),
                    Event::Disconnected => {
                        tracing::warn!(client = %label, "disconnected from NATS; reconnecting with back-off")
                    }
                    Event::SlowConsumer(sid) => {
                        on_slow_consumer();
                        tracing::warn!(client = %label, sid, "slow consumer: NATS client dropped messages")
                    }
                    // A permissions violation arrives here, not as the failing call's
                    // error (that one only times out): say it loudly.
                    Event::ServerError(e) => {
                        tracing::error!(client = %label, error = %e, "NATS server refused an operation")
                    }
                    other => tracing::info!(client = %label, event = %other, "NATS event"),
                }
            }
        });
    // A first attempt bounded by the timeout: an unreachable server fails start-up.
    let attempt = tokio::time::timeout(args.connect_timeout, options.connect(addresses)).await;
    match attempt {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(source)) => Err(BusError::Connect { servers, source }),
        Err(_) => Err(BusError::Connect {
            servers,
            source: async_nats::ConnectError::new(async_nats::ConnectErrorKind::TimedOut),
        }),
    }
}
