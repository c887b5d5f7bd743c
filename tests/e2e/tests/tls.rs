//! Issue 5, acceptance 2 (TLS part): with certificates made by the test (a CA, a server
//! certificate for 127.0.0.1, a client certificate), a server that requires mutual TLS
//! serves the producer and receiver code paths through the shared `--tls-*` flags; a
//! client without a certificate, or without TLS, is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::time::Duration;

use prometheus_client::registry::Registry;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio_util::sync::CancellationToken;
use tspi_bus::{connect, ensure_stream, NatsArgs, StreamArgs, StreamSpec};
use tspi_core::StreamPrefix;
use tspi_e2e::RunningProducer;
use tspi_receiver::{Deliver, ReceiverMetrics, ReceiverOptions};
use tspi_test_support::NatsServer;

struct Pki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pem).unwrap();
    p
}

fn pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tspi test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![usage];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
        "nats",
    );
    let (client_pem, client_key) = leaf(
        vec!["producer".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
        "producer",
    );
    Pki {
        ca: write(dir, "ca.pem", &ca_cert.pem()),
        server: (
            write(dir, "server.pem", &server_pem),
            write(dir, "server-key.pem", &server_key),
        ),
        client: (
            write(dir, "client.pem", &client_pem),
            write(dir, "client-key.pem", &client_key),
        ),
    }
}

fn tls_args(url: &str, pki: &Pki, with_client_cert: bool) -> NatsArgs {
    let mut a = NatsArgs::for_urls(&[url]);
    a.tls_ca = Some(pki.ca.clone());
    if with_client_cert {
        a.tls_cert = Some(pki.client.0.clone());
        a.tls_key = Some(pki.client.1.clone());
    }
    a.connect_timeout = Duration::from_secs(3);
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_test_made_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let nats = NatsServer::start_with_config(&format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  timeout: 3\n}}\n",
        pki.server.0.display().to_string(),
        pki.server.1.display().to_string(),
        pki.ca.display().to_string()
    ));
    let url = nats.url();

    // Refused: no client certificate; no TLS at all.
    assert!(connect(&tls_args(&url, &pki, false), "t").await.is_err());
    let mut plain = NatsArgs::for_urls(&[url.as_str()]);
    plain.connect_timeout = Duration::from_secs(3);
    assert!(connect(&plain, "t").await.is_err());

    // Accepted with the client certificate: the producer's and receiver's code paths.
    let client = connect(&tls_args(&url, &pki, true), "tls").await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while js.query_account().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "JetStream not ready over TLS"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&client, &js, &spec).await.unwrap();
    let producer = RunningProducer::start_on(client.clone()).await;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..20u32 {
        let d = tspi_core::Datagram {
            sensor_id: 3,
            day: 10,
            time_ticks: i * 200,
            status: 0,
            status_flags: 0,
            payload: tspi_core::Payload::Geocentric(tspi_core::GeocentricRaw::default()),
        };
        socket.send_to(&d.encode(), producer.udp_addr).unwrap();
    }
    let metrics = producer.finish(20, Duration::from_secs(20)).await;
    assert_eq!(metrics.publish.published.get(), 20);
    let mut out = Vec::new();
    let summary = tspi_receiver::run(
        ReceiverOptions {
            stream: "TSPI".into(),
            durable: None,
            subjects: StreamPrefix::default().telemetry_wildcards().to_vec(),
            deliver: Deliver::All,
            json: true,
            count: Some(20),
            duration: Some(Duration::from_secs(20)),
            batch: 64,
            ack_wait: Duration::from_secs(30),
        },
        js.clone(),
        &mut out,
        ReceiverMetrics::new(&mut Registry::default()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(summary.written, 20);
}
