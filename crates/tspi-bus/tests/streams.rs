//! `ensure_stream` on a real server: creates the SPEC §4 stream, is idempotent, keeps what
//! an operator set that we do not own, and refuses a too-short duplicate window.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use async_nats::jetstream;
use tspi_bus::{ensure_stream, StreamArgs, StreamSpec};
use tspi_core::StreamPrefix;
use tspi_test_support::NatsServer;

#[tokio::test]
async fn create_then_idempotent_update() {
    let server = NatsServer::start().await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();

    let created = ensure_stream(&client, &js, &spec).await.unwrap();
    assert_eq!(created.config.num_replicas, 1, "single node gets R1");
    assert_eq!(created.config.storage, jetstream::stream::StorageType::File);
    assert!(created.config.duplicate_window >= Duration::from_secs(120));
    for s in [
        "tspi.geocentric.>",
        "tspi.spherical.>",
        "tspi.cmd.>",
        "tags.>",
        "tspi.alarm.>",
        "tspi.batch",
    ] {
        assert!(created.config.subjects.contains(&s.to_string()), "{s}");
    }

    // An operator caps the stream's size; our next start must not undo it.
    let mut config = created.config.clone();
    config.max_bytes = 1 << 30;
    js.update_stream(&config).await.unwrap();
    let again = ensure_stream(&client, &js, &spec).await.unwrap();
    assert_eq!(again.config.max_bytes, 1 << 30);
    assert_eq!(again.config.subjects, created.config.subjects);

    // A new retention is applied to the existing stream.
    let args = StreamArgs {
        max_age: Duration::from_secs(3600),
        ..StreamArgs::default()
    };
    let spec = StreamSpec::tspi(&args, &StreamPrefix::default()).unwrap();
    let updated = ensure_stream(&client, &js, &spec).await.unwrap();
    assert_eq!(updated.config.max_age, Duration::from_secs(3600));
}

#[test]
fn duplicate_window_below_two_minutes_is_refused() {
    let args = StreamArgs {
        duplicate_window: Duration::from_secs(30),
        ..StreamArgs::default()
    };
    assert!(StreamSpec::tspi(&args, &StreamPrefix::default()).is_err());
}
