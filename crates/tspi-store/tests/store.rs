//! tspi-store against a real PostgreSQL: migrations re-run cleanly, writes are idempotent
//! (the COPY fast path and the staging fallback), tags keep their latest state in stream
//! order, and the replay queries return the state in force at a moment.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use bytes::Bytes;
use time::{Duration, OffsetDateTime};
use tspi_store::{
    command_state_at, migrate, tag_moment, tags_before, window_page, window_span, write_batch,
    CommandRow, JsonText, MessageKind, MessageRow, RowDetail, SchemaOptions, TagRow,
};
use tspi_test_support::PgServer;

fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_759_057_200).unwrap()
}

fn row(seq: i64, kind: MessageKind, detail: RowDetail) -> MessageRow {
    MessageRow {
        stream: "TSPI".into(),
        stream_seq: seq,
        stream_ts: t0() + Duration::milliseconds(seq * 10),
        subject: match kind {
            MessageKind::Command => "tspi.cmd.display.units".into(),
            MessageKind::Tag => "tags.create".into(),
            _ => format!("tspi.geocentric.{}", seq % 5),
        },
        kind,
        msg_id: Some(format!("id-{seq}")),
        recv_ts: (kind == MessageKind::Telemetry)
            .then(|| t0() + Duration::milliseconds(seq * 10 - 1)),
        sensor_id: Some((seq % 5) as i32),
        day: Some(271),
        time_s: Some(seq as f64 / 100.0),
        record: Some(JsonText(format!("{{\"seq\":{seq}}}").into_bytes())),
        raw: Bytes::from(format!("raw-{seq}")),
        error: None,
        detail,
    }
}

fn command(seq: i64, units: &str) -> MessageRow {
    row(
        seq,
        MessageKind::Command,
        RowDetail::Command(CommandRow {
            cmd_id: format!("cmd-{seq}"),
            ts: t0() + Duration::milliseconds(seq * 10),
            name: "display.units".into(),
            sender: "test".into(),
            payload: serde_json::json!({ "units": units }),
        }),
    )
}

fn tag(seq: i64, id: &str, status: &str, tagged_ms: i64) -> MessageRow {
    let mut r = row(
        seq,
        MessageKind::Tag,
        RowDetail::Tag(TagRow {
            id: id.into(),
            ts: t0() + Duration::milliseconds(tagged_ms),
            label: format!("label {seq}"),
            status: status.into(),
            creator: None,
            notes: None,
            updated_ts: t0() + Duration::milliseconds(seq * 10),
            extra: None,
        }),
    );
    let tagged = (t0() + Duration::milliseconds(tagged_ms))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    r.record = Some(JsonText(
        serde_json::to_vec(&serde_json::json!({"id": id, "status": status, "ts": tagged})).unwrap(),
    ));
    r
}

#[tokio::test]
async fn writes_are_idempotent_and_replay_queries_see_history() {
    let pg = PgServer::start_primary();
    let db = pg.create_database("store");
    let pool = tspi_store::pool(&pg.url(&db), 2).unwrap();
    let mut client = pool.get().await.unwrap();
    let first = migrate(&mut client, &SchemaOptions::default())
        .await
        .unwrap();
    let again = migrate(&mut client, &SchemaOptions::default())
        .await
        .unwrap();
    assert_eq!(first, again);
    assert!(!first.timescaledb, "this machine has no TimescaleDB");

    let mut rows: Vec<MessageRow> = (1..=1000)
        .map(|s| row(s, MessageKind::Telemetry, RowDetail::None))
        .collect();
    rows[99] = command(100, "imperial");
    rows[199] = tag(200, "tag-a", "active", 1500);
    rows[299] = command(300, "metric");
    rows[399] = tag(400, "tag-a", "active", 1600); // update of tag-a
    rows[449] = tag(450, "tag-b", "active", 4000); // tagged after its message
    rows[499] = tag(500, "tag-c", "active", 100);
    rows[599] = tag(600, "tag-c", "deleted", 100);

    let out = write_batch(&mut client, &rows[..500]).await.unwrap();
    assert_eq!(
        (out.inserted, out.skipped, out.deduplicated),
        (500, 0, false)
    );
    // Overlapping redelivery: half stored, half new.
    let out = write_batch(&mut client, &rows[250..750]).await.unwrap();
    assert_eq!(
        (out.inserted, out.skipped, out.deduplicated),
        (250, 250, true)
    );
    let out = write_batch(&mut client, &rows).await.unwrap();
    assert_eq!((out.inserted, out.skipped), (250, 750));
    let out = write_batch(&mut client, &rows).await.unwrap();
    assert_eq!((out.inserted, out.skipped), (0, 1000));

    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM messages").await, 1000);
    assert_eq!(count("SELECT count(*) FROM commands").await, 2);
    assert_eq!(count("SELECT count(*) FROM tags").await, 3);
    // Replaying an older state never overwrites a newer one.
    write_batch(&mut client, &rows[199..200]).await.unwrap();
    let (moment, status) = tag_moment(&client, "tag-a").await.unwrap().unwrap();
    assert_eq!(
        (moment, status.as_str()),
        (t0() + Duration::milliseconds(1600), "active")
    );
    let (_, status) = tag_moment(&client, "tag-c").await.unwrap().unwrap();
    assert_eq!(status, "deleted");
    assert!(tag_moment(&client, "nope").await.unwrap().is_none());

    // At seq 350's time: units imperial (100) then metric (300) → state is the last one.
    let at = t0() + Duration::milliseconds(3505);
    let state = command_state_at(&client, "TSPI", at).await.unwrap();
    assert_eq!(
        state.iter().map(|m| m.stream_seq).collect::<Vec<_>>(),
        vec![300]
    );
    let at = t0() + Duration::milliseconds(2505);
    let state = command_state_at(&client, "TSPI", at).await.unwrap();
    assert_eq!(
        state.iter().map(|m| m.stream_seq).collect::<Vec<_>>(),
        vec![100]
    );
    // Tags as of seq 550: tag-a (latest state 400), tag-c (500, active then). tag-b tags a
    // later moment. As of seq 650 tag-c is deleted.
    let before = |ms| tags_before(&client, "TSPI", t0() + Duration::milliseconds(ms));
    let seqs =
        |v: Vec<tspi_store::ArchivedMessage>| v.iter().map(|m| m.stream_seq).collect::<Vec<_>>();
    assert_eq!(seqs(before(5505).await.unwrap()), vec![500, 400, 450]);
    assert_eq!(seqs(before(3505).await.unwrap()), vec![200]); // the update came later
    assert_eq!(seqs(before(6505).await.unwrap()), vec![400, 450]);

    // Window [seq 101, seq 901) paged by 64, in stream order, nothing missed.
    let (start, end) = (
        t0() + Duration::milliseconds(1010),
        t0() + Duration::milliseconds(9010),
    );
    let span = window_span(&client, "TSPI", start, end)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((span.first_seq, span.last_seq, span.count), (101, 900, 800));
    let mut after = span.first_seq - 1;
    let mut got = Vec::new();
    loop {
        let page = window_page(&client, "TSPI", start, end, after, span.last_seq, 64)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.stream_seq;
        got.extend(page);
    }
    assert_eq!(got.len(), 800);
    assert!(got
        .windows(2)
        .all(|w| w[0].stream_seq + 1 == w[1].stream_seq));
    assert_eq!(&got[0].raw[..], b"raw-101");
    assert!(window_span(
        &client,
        "TSPI",
        end + Duration::hours(1),
        end + Duration::hours(2)
    )
    .await
    .unwrap()
    .is_none());
}

/// A fresh database on its own server, migrated; the server lives as long as the first.
async fn migrated_store(name: &str) -> (PgServer, deadpool_postgres::Object) {
    let pg = PgServer::start_primary();
    let db = pg.create_database(name);
    let pool = tspi_store::pool(&pg.url(&db), 1).unwrap();
    let mut client = pool.get().await.unwrap();
    migrate(&mut client, &SchemaOptions::default())
        .await
        .unwrap();
    (pg, client)
}

/// U+0000 in any decoded string (a foreign sender's bytes) must not fail the batch:
/// PostgreSQL text and jsonb refuse it, and a refused batch would be redelivered forever.
#[tokio::test]
async fn nul_characters_are_stored_not_refused() {
    let (_pg, mut client) = migrated_store("store_nul").await;

    let mut cmd = command(1, "imperial");
    cmd.msg_id = Some("cmd\0id".into());
    cmd.record = Some(JsonText(
        serde_json::to_vec(&serde_json::json!({"sender": "ops\0desk", "path": "C:\\u0000"}))
            .unwrap(),
    ));
    if let RowDetail::Command(c) = &mut cmd.detail {
        c.sender = "ops\0desk".into();
        c.payload = serde_json::json!({"units": "imperial", "note\0": ["a\0b"]});
    }
    let mut tagged = tag(2, "tag\0nul", "active", 10);
    if let RowDetail::Tag(t) = &mut tagged.detail {
        t.label = "break\0left".into();
        t.creator = Some("\0".into());
        t.extra = Some(serde_json::json!({"k": "v\0"}));
    }
    let mut bad = row(3, MessageKind::Invalid, RowDetail::None);
    bad.error = Some("unknown units \"fur\0longs\"".into());
    bad.raw = Bytes::from_static(b"raw\0bytes");
    let out = write_batch(&mut client, &[cmd, tagged, bad]).await.unwrap();
    assert_eq!(out.inserted, 3);

    let text = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(text("SELECT sender FROM commands").await, "ops\u{FFFD}desk");
    assert_eq!(
        text("SELECT payload->'note\u{FFFD}'->>0 FROM commands").await,
        "a\u{FFFD}b"
    );
    assert_eq!(
        text("SELECT msg_id FROM messages WHERE stream_seq = 1").await,
        "cmd\u{FFFD}id"
    );
    // An escaped backslash followed by `u0000` is text, not U+0000: left alone.
    assert_eq!(
        text("SELECT record->>'sender' || '|' || (record->>'path') FROM messages WHERE stream_seq = 1")
            .await,
        "ops\u{FFFD}desk|C:\\u0000"
    );
    assert_eq!(
        text("SELECT id || label || creator || (extra->>'k') FROM tags").await,
        "tag\u{FFFD}nulbreak\u{FFFD}left\u{FFFD}v\u{FFFD}"
    );
    assert_eq!(
        text("SELECT error FROM messages WHERE stream_seq = 3").await,
        "unknown units \"fur\u{FFFD}longs\""
    );
    let raw: Vec<u8> = client
        .query_one("SELECT raw FROM messages WHERE stream_seq = 3", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        raw, b"raw\0bytes",
        "the original bytes are kept as they came"
    );
}

/// A row PostgreSQL refuses for its content (a receive time before 4713 BC, which
/// `OffsetDateTime` holds and `timestamptz` does not) is stored raw as `invalid` with the
/// reason; the rest of its batch is stored as usual, and writing it again changes nothing.
#[tokio::test]
async fn a_row_the_database_refuses_does_not_stall_its_batch() {
    let (_pg, mut client) = migrated_store("store_refused").await;

    let mut rows: Vec<MessageRow> = (1..=100)
        .map(|s| row(s, MessageKind::Telemetry, RowDetail::None))
        .collect();
    let ancient = OffsetDateTime::from_unix_timestamp(-377_705_116_800).unwrap(); // -9999-01-01
    rows[36].recv_ts = Some(ancient);
    rows[80].recv_ts = Some(ancient);
    rows[90] = command(91, "imperial");
    let out = write_batch(&mut client, &rows).await.unwrap();
    assert_eq!((out.inserted, out.refused), (100, 2), "{out:?}");

    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM messages").await, 100);
    assert_eq!(count("SELECT count(*) FROM commands").await, 1);
    assert_eq!(
        count("SELECT count(*) FROM messages WHERE kind = 'invalid' AND record IS NULL AND error LIKE 'refused by the database (22008 timestamp out of range)%'").await,
        2
    );
    let raw: Vec<u8> = client
        .query_one("SELECT raw FROM messages WHERE stream_seq = 37", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(raw, b"raw-37");

    let again = write_batch(&mut client, &rows).await.unwrap();
    assert_eq!((again.inserted, again.skipped), (0, 100), "{again:?}");
    let rows: i64 = client
        .query_one("SELECT count(*) FROM messages", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 100);
}

/// One telemetry row of `sensor` received at `recv_ms` after t0, on the bus 2 ms later.
fn telemetry(seq: i64, sensor: i32, recv_ms: i64) -> MessageRow {
    MessageRow {
        stream: "TSPI".into(),
        stream_seq: seq,
        stream_ts: t0() + Duration::milliseconds(recv_ms + 2),
        subject: format!("tspi.geocentric.{sensor}"),
        kind: MessageKind::Telemetry,
        msg_id: Some(format!("{sensor}:{recv_ms}")),
        recv_ts: Some(t0() + Duration::milliseconds(recv_ms)),
        sensor_id: Some(sensor),
        day: Some(271),
        time_s: Some(recv_ms as f64 / 1000.0),
        record: Some(JsonText(b"{}".to_vec())),
        raw: Bytes::from(format!("{sensor}@{recv_ms}")),
        error: None,
        detail: RowDetail::None,
    }
}

/// The display's queries: the picture at a moment (each track's last record at or before
/// it, its trail one record a step), coverage per bucket, and the tags of a span.
#[tokio::test]
async fn display_queries_show_the_picture_at_a_moment() {
    let (_pg, mut client) = migrated_store("store_display").await;
    // Sensors 1 and 2 at 10 Hz for 60 s; 3 stops after 20 s; 4 after 5 s.
    let mut rows = Vec::new();
    let mut seq = 0;
    for k in 0..600i64 {
        for (sensor, until_ms) in [(1, 60_000), (2, 60_000), (3, 20_000), (4, 5_000)] {
            let recv = k * 100 + i64::from(sensor);
            if recv < until_ms {
                seq += 1;
                rows.push(telemetry(seq, sensor, recv));
            }
        }
    }
    let total = rows.len() as i64;
    for chunk in rows.chunks(500) {
        write_batch(&mut client, chunk).await.unwrap();
    }
    // Tags on the bus after the telemetry (sequence and bus time grow together, as in a
    // stream), tagging moments inside it.
    seq += 1;
    let after = |mut r: MessageRow, ms: i64| {
        r.stream_ts = t0() + Duration::milliseconds(ms);
        r
    };
    write_batch(
        &mut client,
        &[after(tag(seq, "t-late", "active", 45_000), 61_000)],
    )
    .await
    .unwrap();
    write_batch(
        &mut client,
        &[after(tag(seq + 1, "t-early", "deleted", 2_000), 61_001)],
    )
    .await
    .unwrap();
    // The time index is summarized up to the newest rows, then there is nothing new.
    assert!(tspi_store::summarize_time_index(&client).await.unwrap() > 0);
    assert_eq!(tspi_store::summarize_time_index(&client).await.unwrap(), 0);

    let at = t0() + Duration::milliseconds(30_050);
    let spec = tspi_store::PictureSpec {
        at,
        lookback: std::time::Duration::from_secs(20),
        trail: std::time::Duration::from_secs(10),
        step: std::time::Duration::from_secs(1),
    };
    let picture = tspi_store::picture_at(&client, "TSPI", &spec)
        .await
        .unwrap();
    let of = |sensor: &str| -> Vec<String> {
        picture
            .iter()
            .map(|m| String::from_utf8(m.raw.to_vec()).unwrap())
            .filter(|r| r.starts_with(&format!("{sensor}@")))
            .collect()
    };
    // Oldest first, ending on the last record received at or before the moment.
    assert!(picture
        .windows(2)
        .all(|w| w[0].receive_time() <= w[1].receive_time()));
    assert_eq!(of("1").last().unwrap(), "1@30001");
    assert_eq!(of("2").last().unwrap(), "2@30002");
    // A trail of one record a second over 10 s, plus the last one before it.
    assert_eq!(of("1").len(), 11, "{:?}", of("1"));
    assert_eq!(of("1")[0], "1@20001", "the latest before the trail span");
    assert_eq!(
        of("1")[1],
        "1@21001",
        "the latest of the oldest trail second"
    );
    // Silent since 20 s: shown where it was last (within the lookback); 4 is too old.
    assert_eq!(of("3"), ["3@19903"]);
    assert!(of("4").is_empty());
    // Nothing after the moment, however close.
    assert!(picture.iter().all(|m| m.receive_time() <= at));
    // A moment exactly on a record: that record closes the newest trail step (it is
    // not a step of its own), so the trail is as long as at any other moment.
    let on_record = tspi_store::PictureSpec {
        at: t0() + Duration::milliseconds(30_001),
        ..spec
    };
    let picture = tspi_store::picture_at(&client, "TSPI", &on_record)
        .await
        .unwrap();
    let of_1: Vec<String> = picture
        .iter()
        .map(|m| String::from_utf8(m.raw.to_vec()).unwrap())
        .filter(|r| r.starts_with("1@"))
        .collect();
    assert_eq!(of_1.len(), 11, "{of_1:?}");
    assert_eq!(of_1.last().unwrap(), "1@30001");
    assert_eq!(of_1[1], "1@21001");

    let counts = tspi_store::coverage(&client, "TSPI", t0(), t0() + Duration::seconds(60), 6)
        .await
        .unwrap();
    assert_eq!(counts.iter().sum::<i64>(), total, "{counts:?}");
    assert_eq!(counts, vec![350, 300, 200, 200, 200, 200]);
    // Buckets that straddle the data's start and end, and an empty span.
    let counts = tspi_store::coverage(
        &client,
        "TSPI",
        t0() - Duration::seconds(30),
        t0() + Duration::seconds(90),
        4,
    )
    .await
    .unwrap();
    assert_eq!(
        counts,
        vec![0, 850, 600, 2],
        "the two tags at 61 s are messages too"
    );
    let empty = tspi_store::coverage(
        &client,
        "TSPI",
        t0() + Duration::hours(1),
        t0() + Duration::hours(2),
        5,
    )
    .await
    .unwrap();
    assert_eq!(empty, vec![0; 5]);
    assert_eq!(
        tspi_store::coverage(&client, "TSPI", t0(), t0(), 3)
            .await
            .unwrap(),
        vec![0, 0, 0]
    );

    let tags = tspi_store::tags_between(&client, t0(), t0() + Duration::seconds(60), 10)
        .await
        .unwrap();
    let ids: Vec<(&str, &str)> = tags
        .iter()
        .map(|t| (t.id.as_str(), t.status.as_str()))
        .collect();
    assert_eq!(ids, [("t-early", "deleted"), ("t-late", "active")]);
    assert_eq!(tags[1].ts, "2025-09-28T11:00:45.000Z");
    let none = tspi_store::tags_between(&client, t0(), t0() + Duration::seconds(1), 10)
        .await
        .unwrap();
    assert!(none.is_empty());
}
