//! NATS and JetStream plumbing shared by the TSPI programs.
//!
//! - [`connect`]: the common connection flags (`--nats-server`, `--creds`, TLS …) and a
//!   client that reconnects with back-off and logs every state change.
//! - [`streams`]: the SPEC §4 stream definitions, created or updated idempotently.
//! - [`operator`]: display commands and tags, validated, then published and acknowledged.
//! - [`publisher`]: JetStream publishing with a bounded window of unacknowledged
//!   messages, retried with the same `Nats-Msg-Id` until acknowledged; or with fast-ingest
//!   batches ([`fast`], nats-server ≥ 2.14) when the stream allows them.

pub mod connect;
pub mod fast;
mod fast_publisher;
pub mod operator;
pub mod publisher;
pub mod sites;
pub mod streams;

pub use connect::{connect, connect_observed, NatsArgs};
pub use publisher::{run_publisher, OutMessage, PublishMetrics, PublishMode, PublisherOptions};
pub use streams::{ensure_stream, use_fast_batches, StreamArgs, StreamSpec};

use thiserror::Error;

/// Failures talking to NATS that a program reports and exits on.
#[derive(Debug, Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {servers}: {source}")]
    Connect {
        servers: String,
        source: async_nats::ConnectError,
    },
    #[error("invalid NATS server address {address:?}: {reason}")]
    BadAddress { address: String, reason: String },
    #[error("cannot read credentials file {path}: {source}")]
    Credentials {
        path: String,
        source: std::io::Error,
    },
    #[error("JetStream is not available on this server: {0}")]
    NoJetStream(String),
    #[error("stream {name} conflicts with the existing configuration: {reason}")]
    StreamConflict { name: String, reason: String },
    #[error("stream {name} does not exist and stream creation is turned off (--no-create-stream)")]
    StreamMissing { name: String },
    #[error("stream {name}: {reason}")]
    Stream { name: String, reason: String },
}
