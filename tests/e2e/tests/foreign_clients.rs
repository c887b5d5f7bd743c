//! Interop (SPEC §3): the kit's programs against a client it did not write. A Python script
//! (`tests/e2e/interop/foreign_client.py`, nats-py and cbor2, other NATS and CBOR
//! implementations than ours) sends every reference datagram to the producer binary and
//! decodes what comes out; then it publishes commands, a tag and telemetry the way cbor2
//! writes them — datetime tags, float64, half floats, integers for floats, an
//! indefinite-length map, a double where an integer is meant, U+0000 in a string, a
//! heartbeat — plus a record that is not CBOR, records with values no datagram carries
//! and a command with a unit that does not exist. The receiver, the live player, the
//! console's roster and the archiver (binaries, real PostgreSQL) must take the foreign
//! messages as their own and count the bad ones.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::time::Duration;

use serde_json::Value;
use tspi_bus::NatsArgs;
use tspi_test_support::{foreign_python, workspace_root, NatsServer, PgServer};

use common::{free_udp_port, wait_archived, Programs};

fn events<'a>(lines: &'a [Value], event: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event"] == event).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_nats_and_cbor_client_interoperates() {
    let long = Duration::from_secs(60);
    let server = NatsServer::start().await;
    let url = server.url();
    let auth = |_: &str| NatsArgs::for_urls(std::slice::from_ref(&url));
    let programs = Programs::new(&auth);
    let admin = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let pg = PgServer::start_primary();
    let db = pg.create_database("interop");
    let db_url = pg.url(&db);

    programs.archiver_migrate(&db_url).await;
    let udp_port = free_udp_port();
    let mut producer = programs.producer(udp_port, &[]);
    let reached =
        tspi_test_support::wait_until(long, || async { admin.get_stream("TSPI").await.is_ok() })
            .await;
    assert!(reached.is_some(), "no TSPI: {}", producer.stderr());
    let mut archiver = programs.start("archiver", "archiver", &["--database-url", &db_url]);
    let mut receiver = programs.start("receiver", "receiver", &["--deliver", "all"]);
    let mut player = programs.start(
        "player",
        "player",
        &["--client-id", "interop", "--metrics-interval", "1h"],
    );
    player.first_line(long).await;

    let vectors = workspace_root().join("crates/tspi-core/testdata/tspi_vectors.json");
    let script = workspace_root().join("tests/e2e/interop/foreign_client.py");
    let mut foreign = foreign_python();
    foreign
        .arg(&script)
        .args(["--nats", &url, "--udp-port", &udp_port.to_string()])
        .arg("--vectors")
        .arg(&vectors);
    let client = programs.run_ok("foreign-client", foreign, long).await;
    let summary: Value = serde_json::from_str(client.stdout().trim())
        .unwrap_or_else(|e| panic!("foreign client summary ({e}): {}", client.stdout()));
    eprintln!("foreign client: {summary}");

    // 1. What the producer publishes, read by cbor2, is the reference decoding.
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(&vectors).unwrap()).unwrap();
    let cases = cases["cases"].as_array().unwrap();
    let valid = cases.iter().filter(|c| c["ok"] == true).count() as u64;
    assert!(valid > 40, "vectors: {valid} valid");
    assert_eq!(summary["valid_vectors"].as_u64(), Some(valid));
    assert_eq!(summary["telemetry_seen"].as_u64(), Some(valid));
    assert_eq!(summary["mismatches"], Value::Array(vec![]), "{summary}");
    let published = summary["published"].as_object().unwrap();
    assert_eq!(
        published.len(),
        13,
        "every foreign publish acked: {summary}"
    );

    // 2. The archiver stores the foreign messages as its own; the bad ones as invalid.
    let stream_messages = valid + published.len() as u64;
    wait_archived(&pg, None, &db, stream_messages, &archiver, long).await;
    let kinds = pg.psql(
        &db,
        "SELECT string_agg(kind || '=' || n, ',' ORDER BY kind) FROM \
         (SELECT kind, count(*) AS n FROM messages GROUP BY kind) k",
    );
    assert_eq!(
        kinds.trim(),
        format!("command=4,invalid=4,tag=2,telemetry={}", valid + 3),
        "invalid: the not-CBOR record, the two out of range, the furlongs command"
    );
    let invalid = pg.psql(
        &db,
        "SELECT string_agg(subject || ': ' || error, ' | ' ORDER BY stream_seq) \
         FROM messages WHERE kind = 'invalid'",
    );
    for why in [
        "not a CBOR telemetry map",
        "recv_epoch_ms is out of range: -377705116800000",
        "day is out of range: 0",
        "furlongs",
    ] {
        assert!(
            invalid.contains(why),
            "each invalid row says why: {invalid}"
        );
    }
    let commands = pg.psql(
        &db,
        "SELECT string_agg(name || '=' || payload::text, ' ' ORDER BY stream_seq) FROM commands",
    );
    assert_eq!(
        commands.trim(),
        "display.units={\"units\": \"imperial\"} display.marker_color={\"marker_color\": \"#ff8800\"} \
         display.session_metadata={\"session_metadata\": {\"id\": \"S9\", \"name\": \"Sortie 9\"}} \
         display.units={\"units\": \"imperial\"}"
    );
    // U+0000 cannot be stored as text: U+FFFD stands in; `raw` keeps the bytes.
    let nul_id = summary["nul_command"].as_str().unwrap();
    let sender = pg.psql(
        &db,
        &format!(
            "SELECT c.sender || '|' || position('\\x6f7073006465736b'::bytea in m.raw)::text \
             FROM commands c JOIN messages m USING (stream, stream_seq) WHERE c.cmd_id = '{nul_id}'"
        ),
    );
    assert_eq!(sender.trim().split('|').next(), Some("ops\u{FFFD}desk"));
    assert_ne!(
        sender.trim().split('|').nth(1),
        Some("0"),
        "raw bytes kept: {sender}"
    );
    // The datetime-tagged `ts` is the moment the script took, to the microsecond.
    let units_id = summary["commands"]["units"].as_str().unwrap();
    let same_ts = pg.psql(
        &db,
        &format!(
            "SELECT (SELECT ts FROM commands WHERE cmd_id = '{units_id}') = \
                    (SELECT ts FROM commands WHERE name = 'display.session_metadata')"
        ),
    );
    assert_eq!(
        same_ts.trim(),
        "t",
        "tag 0 datetime and the plain string agree"
    );
    let tag_id = summary["tag_id"].as_str().unwrap();
    let tag = pg.psql(
        &db,
        &format!(
            "SELECT label || ',' || status || ',' || (extra->>'range') || ',' || (extra->>'blob') \
             || ',' || (date_trunc('milliseconds', (extra->>'at')::timestamptz) = (SELECT ts FROM commands WHERE cmd_id = '{units_id}'))::text \
             FROM tags WHERE id = '{tag_id}'"
        ),
    );
    // bytes → base64url (RFC 8949 §6.1); the datetime → its RFC 3339 text (µs; the
    // command times are kept to the ms).
    assert_eq!(tag.trim(), "py tag,active,R-2508,AQL_,true");
    let foreign_records = pg.psql(
        &db,
        "SELECT string_agg(time_s::text || ':' || (record->'payload'->>'az_mps2'), ',' ORDER BY time_s) \
         FROM messages WHERE kind = 'telemetry' AND sensor_id = 777",
    );
    assert_eq!(foreign_records.trim(), "1:-9.75,2:-9.75,6:-9.75");

    // 3. The receiver prints both foreign records and skips the bad one, counted.
    let printed = || {
        let lines = receiver.stdout().lines().count() as u64;
        async move { lines >= valid + 3 }
    };
    tspi_test_support::wait_until(Duration::from_secs(15), printed)
        .await
        .unwrap_or_else(|| panic!("receiver lines: {}", receiver.stderr()));
    assert!(receiver.stop(long).await.success(), "{}", receiver.stderr());
    let lines = receiver.json_lines();
    assert_eq!(lines.len() as u64, valid + 3, "{}", receiver.stderr());
    let foreign: Vec<&Value> = lines.iter().filter(|l| l["sensor_id"] == 777).collect();
    assert_eq!(foreign.len(), 3);
    for (line, time_s) in foreign.iter().zip([1.0, 2.0, 6.0]) {
        assert_eq!(line["time_s"], time_s);
        assert_eq!(line["payload"]["x_m"], 1.0);
        assert_eq!(line["payload"]["y_m"], 2.5);
        assert_eq!(line["payload"]["az_mps2"], -9.75);
        assert_eq!(line["status_flags"]["acceleration_z_valid"], true);
    }
    assert!(
        receiver.stderr().contains("invalid=3"),
        "the not-CBOR and the out-of-range records are counted: {}",
        receiver.stderr()
    );

    // 4. The live player applies the foreign commands, refuses the furlongs one, shows
    //    the tag once, and draws the foreign frames with them.
    assert!(player.stop(long).await.success(), "{}", player.stderr());
    let shown = player.json_lines();
    let applied: Vec<&str> = events(&shown, "command")
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        applied,
        [
            "display.units",
            "display.marker_color",
            "display.session_metadata",
            "display.units"
        ],
        "{}",
        player.stderr()
    );
    let tags = events(&shown, "tag");
    assert_eq!(tags.len(), 1, "{tags:?}");
    assert_eq!(tags[0]["tag"]["id"], tag_id);
    let frames: Vec<&Value> = events(&shown, "frame")
        .into_iter()
        .filter(|f| f["sensor_id"] == 777)
        .collect();
    assert_eq!(frames.len(), 3);
    for f in frames {
        assert_eq!(f["units"], "imperial", "{f}");
        assert_eq!(f["marker_color"], "#ff8800");
        assert_eq!(f["session"]["name"], "Sortie 9");
    }
    let end = events(&shown, "end");
    assert_eq!(end.len(), 1);
    assert_eq!(
        end[0]["counts"]["invalid"], 4,
        "not-CBOR, two out of range, furlongs: {}",
        end[0]
    );
    assert_eq!(end[0]["counts"]["frames_in"].as_u64(), Some(valid + 3));

    // 5. The console's roster shows the foreign heartbeat (integral ping, tag 1 time).
    assert!(summary["heartbeat_seq"].as_u64().is_some(), "{summary}");
    let roster = programs
        .console("console-clients", &["clients", "--json"])
        .await;
    let roster: Value = serde_json::from_str(roster.stdout().trim()).unwrap();
    let foreign = roster
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == "py-heartbeat")
        .unwrap_or_else(|| panic!("foreign heartbeat not in the roster: {roster}"));
    assert_eq!(foreign["ping_ms"], 12.0);
    assert_eq!(foreign["operator"], "py-ops");
    assert_eq!(foreign["state"], "FOLLOWING_LIVESTREAM");

    // 6. The producer counted the invalid datagrams by reason; nothing failed.
    assert!(producer.stop(long).await.success());
    let stopped = producer.stderr();
    let invalid_vectors = cases.len() as u64 - valid;
    assert!(
        stopped.contains(&format!(
            "received={} published={valid} duplicates=0 invalid={invalid_vectors}",
            cases.len()
        )) && stopped.contains("failed=0"),
        "{stopped}"
    );
    assert!(archiver.stop(long).await.success(), "{}", archiver.stderr());
}
