//! Issue 5, acceptance 2 (`--creds` part): a server in operator (JWT) mode, an account
//! with JetStream, and per-program user JWTs in `.creds` files made by the test. The
//! producer's and receiver's users work through `--creds`; the producer's user cannot
//! read telemetry; a user signed by a foreign account is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use nkeys::KeyPair;
use serde_json::{json, Value};
use tspi_bus::{connect, ensure_stream, NatsArgs, StreamArgs, StreamSpec};
use tspi_core::StreamPrefix;
use tspi_test_support::NatsServer;

fn b64(bytes: &[u8]) -> String {
    // base64url without padding (RFC 4648 §5), as NATS JWTs use.
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A NATS JWT: `iss` signs claims about `sub`.
fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = json!({
        "jti": format!("{}{}", name, subject.chars().take(12).collect::<String>()),
        "iat": 1_700_000_000,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let body = b64(claims.to_string().as_bytes());
    let signing = format!("{header}.{body}");
    let sig = issuer.sign(signing.as_bytes()).unwrap();
    format!("{signing}.{}", b64(&sig))
}

fn creds(
    dir: &Path,
    name: &str,
    account: &KeyPair,
    publish: &[&str],
    subscribe: &[&str],
) -> PathBuf {
    let user = KeyPair::new_user();
    let token = jwt(
        account,
        &user.public_key(),
        name,
        json!({"pub": {"allow": publish}, "sub": {"allow": subscribe},
               "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2}),
    );
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    );
    let path = dir.join(format!("{name}.creds"));
    std::fs::write(&path, text).unwrap();
    path
}

fn creds_args(url: &str, path: &Path, inbox: &str) -> NatsArgs {
    let mut a = NatsArgs::for_urls(&[url]);
    a.creds = Some(path.to_owned());
    a.inbox_prefix = inbox.into();
    a.connect_timeout = Duration::from_secs(3);
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programs_connect_with_creds_files_and_permissions_hold() {
    let dir = tempfile::tempdir().unwrap();
    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    let system = KeyPair::new_account();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "tspi-op",
        json!({"system_account": system.public_key(), "type": "operator", "version": 2}),
    );
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        json!({"type": "account", "version": 2}),
    );
    let unlimited = json!({"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                           "wildcards": true, "conn": -1, "leaf": -1,
                           "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1});
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "TSPI",
        json!({"limits": unlimited, "type": "account", "version": 2}),
    );
    let nats = NatsServer::start_with_config(&format!(
        "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {acc}: {account_jwt}\n  {sys}: {system_jwt}\n}}\n",
        acc = account.public_key(),
        sys = system.public_key(),
    ));
    let url = nats.url();

    let producer = creds(
        dir.path(),
        "producer",
        &account,
        &[
            "tspi.geocentric.>",
            "tspi.spherical.>",
            "$JS.API.INFO",
            "$JS.API.STREAM.INFO.TSPI",
            "$JS.API.STREAM.CREATE.TSPI",
            "$JS.API.STREAM.UPDATE.TSPI",
        ],
        &["_INBOX_producer.>"],
    );
    let receiver = creds(
        dir.path(),
        "receiver",
        &account,
        &[
            "$JS.API.INFO",
            "$JS.API.STREAM.INFO.TSPI",
            "$JS.API.CONSUMER.CREATE.TSPI",
            "$JS.API.CONSUMER.CREATE.TSPI.>",
            "$JS.API.CONSUMER.INFO.TSPI.>",
            "$JS.API.CONSUMER.MSG.NEXT.TSPI.>",
            "$JS.ACK.TSPI.>",
        ],
        &["_INBOX_receiver.>"],
    );
    let stranger = creds(
        dir.path(),
        "stranger",
        &KeyPair::new_account(),
        &[">"],
        &[">"],
    );

    assert!(
        connect(&creds_args(&url, &stranger, "_INBOX"), "x")
            .await
            .is_err(),
        "a foreign account's user"
    );
    let p = connect(&creds_args(&url, &producer, "_INBOX_producer"), "producer")
        .await
        .unwrap();
    let pjs = async_nats::jetstream::new(p.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
        match ensure_stream(&p, &pjs, &spec).await {
            Ok(_) => break,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    for i in 0..5u32 {
        let m = async_nats::jetstream::message::PublishMessage::build()
            .payload(format!("{i}").into())
            .message_id(format!("m{i}"));
        pjs.send_publish("tspi.geocentric.9", m)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut snoop = p.subscribe("tspi.geocentric.>").await.unwrap();
    p.flush().await.unwrap();
    let r = connect(&creds_args(&url, &receiver, "_INBOX_receiver"), "receiver")
        .await
        .unwrap();
    let rjs = async_nats::jetstream::new(r.clone());
    let stream = rjs.get_stream("TSPI").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = consumer.fetch().max_messages(5).messages().await.unwrap();
    let mut got = 0;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), batch.next()).await {
        m.unwrap().ack().await.unwrap();
        got += 1;
        if got == 5 {
            break;
        }
    }
    assert_eq!(got, 5, "the receiver's user reads through its consumer");
    let m = async_nats::jetstream::message::PublishMessage::build()
        .payload("x".into())
        .message_id("m99");
    pjs.send_publish("tspi.geocentric.9", m)
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), snoop.next())
            .await
            .is_err(),
        "the producer's user cannot read telemetry"
    );
}
