//! Issue 5, acceptance 2 (`--creds` part): a three-node cluster in operator (JWT) mode,
//! one account with JetStream, and a `.creds` file per program made by the test, each user
//! granted exactly the subjects `deploy/nats/accounts.conf` grants it. Every program's
//! binary runs end to end with `--creds`; the producer's user cannot read telemetry; a
//! user signed by a foreign account is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use nkeys::KeyPair;
use serde_json::{json, Value};
use tspi_bus::{connect, NatsArgs};
use tspi_test_support::NatsCluster;

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

/// A `.creds` file for a user of `account` with the given permissions claims.
fn creds(dir: &Path, name: &str, account: &KeyPair, permissions: Value) -> PathBuf {
    let user = KeyPair::new_user();
    let mut claims = json!({"subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2});
    if let (Some(c), Some(p)) = (claims.as_object_mut(), permissions.as_object()) {
        c.extend(p.clone());
    }
    let token = jwt(account, &user.public_key(), name, claims);
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    );
    let path = dir.join(format!("{name}.creds"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The JWT form of a deploy user's permissions (`allow_responses: true` is one reply
/// per request, no expiry).
fn claims_of(user: &common::DeployUser) -> Value {
    let mut p = json!({});
    if let Some(publish) = &user.publish {
        p["pub"] = json!({"allow": publish});
    }
    if let Some(subscribe) = &user.subscribe {
        p["sub"] = json!({"allow": subscribe});
    }
    if user.allow_responses {
        p["resp"] = json!({"max": 1, "ttl": 0});
    }
    p
}

fn creds_args(urls: &[String], path: &Path, inbox: &str) -> NatsArgs {
    let mut a = NatsArgs::for_urls(urls);
    a.creds = Some(path.to_owned());
    a.inbox_prefix = inbox.into();
    a.connect_timeout = Duration::from_secs(3);
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_program_connects_with_creds_files_and_permissions_hold() {
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
    let cluster = NatsCluster::start_with_config(
        3,
        &format!(
            "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {acc}: {account_jwt}\n  {sys}: {system_jwt}\n}}\n",
            acc = account.public_key(),
            sys = system.public_key(),
        ),
    );
    let urls = cluster.urls();
    let files: std::collections::HashMap<String, PathBuf> = common::deploy_users()
        .iter()
        .map(|u| {
            (
                u.name.clone(),
                creds(dir.path(), &u.name, &account, claims_of(u)),
            )
        })
        .collect();
    let auth = |user: &str| creds_args(&urls, &files[user], &format!("_INBOX_{user}"));

    let stranger = creds(dir.path(), "stranger", &KeyPair::new_account(), json!({}));
    assert!(
        connect(&creds_args(&urls, &stranger, "_INBOX"), "x")
            .await
            .is_err(),
        "a foreign account's user"
    );

    let admin = connect(&auth("admin"), "admin").await.unwrap();
    let admin_js = async_nats::jetstream::new(admin);
    let reached = tspi_test_support::wait_until(Duration::from_secs(60), || async {
        admin_js.query_account().await.is_ok()
    })
    .await;
    assert!(reached.is_some(), "JetStream not ready");
    let programs = common::Programs::new(&auth);
    common::every_program_end_to_end(&programs, &admin_js).await;
}
