//! Bad input on the web display's WebSocket (issue 10, acceptance 6): malformed and
//! unknown requests, binary frames, a 10 MB frame, frames that break the protocol, a
//! request flood and 200 connect/disconnect cycles. Each gets an error reply or a closed
//! socket; the display does not panic, keeps serving a real tab, and its memory returns
//! to its level before.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;
mod range;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use range::{block, Range, RangeOptions};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(range: &Range) -> Ws {
    let url = format!("{}ws", range.url.replace("http://", "ws://"));
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws
}

/// The next reply (other messages skipped), or `None` when the socket closes first.
async fn next_reply(ws: &mut Ws) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["t"] == "reply" {
                    return Some(v);
                }
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(_))) => {}
            Err(_) => panic!("no reply and no close within 10 s"),
        }
    }
}

/// Whether the server closes the socket (within 10 s), reading past other messages.
async fn closes(ws: &mut Ws) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return true,
            Ok(Some(Ok(_))) => {}
            Err(_) => return false,
        }
    }
}

/// A hand-made WebSocket upgrade on a raw socket, for frames no client library sends.
fn raw_upgrade(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(
        String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// After `frame`, the server closes the connection (reading whatever it still sends).
fn raw_frame_closes(port: u16, frame: &[u8]) -> bool {
    let mut s = raw_upgrade(port);
    let _ = s.write_all(frame);
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
    false
}

fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let key = [1u8, 2, 3, 4];
    let mut f = vec![first];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_floods_and_churn_are_survived() {
    let range = Range::start(RangeOptions {
        archive: false,
        alarm_rules: None,
        player_args: &[],
    })
    .await;
    let _generator = range.generator("generator", 20, 10, "continuous");
    let port = range.port();
    // Warm up (first connections allocate what every later one reuses), then measure.
    for _ in 0..5 {
        let mut ws = connect(&range).await;
        ws.close(None).await.ok();
    }
    let closed = tspi_test_support::wait_until(Duration::from_secs(20), || async {
        range.metric("tspi_player_web_sessions", "") <= 0.0
    })
    .await;
    assert!(
        closed.is_some(),
        "warm-up sessions left: {}",
        range.metrics()
    );
    let rss_before = range.player_rss_kb();

    // Malformed and unknown requests: an error reply each, the socket stays.
    let mut ws = connect(&range).await;
    for (frame, expect) in [
        ("this is not json", "not JSON"),
        (r#"{"op":"fly","id":7}"#, "bad request"),
        ("[1,2,3]", "JSON object"),
        ("42", "JSON object"),
        (r#"{"op":"seek","id":8,"to":"yesterday"}"#, "RFC 3339"),
        (r#"{"op":"speed","id":9,"speed":-5}"#, "speed"),
        (r#"{"op":"speed","id":10,"speed":1e309}"#, "not JSON"),
        (r#"{"op":"tag","id":11,"comment":"   "}"#, "empty"),
        (r#"{"op":"trail","id":12,"seconds":99999}"#, "trail"),
        (r#"{"op":"operator","id":13,"name":"a\u0007b"}"#, "control"),
        (
            r#"{"op":"timeline","id":14,"start":"x","end":"y"}"#,
            "RFC 3339",
        ),
    ] {
        ws.send(Message::Text(frame.into())).await.unwrap();
        let r = next_reply(&mut ws)
            .await
            .unwrap_or_else(|| panic!("closed on {frame}"));
        assert_eq!(r["ok"], false, "{frame} -> {r}");
        assert!(
            r["error"].as_str().unwrap().contains(expect),
            "{frame} -> {r}"
        );
    }
    let deep = "[".repeat(10_000);
    ws.send(Message::Text(deep.into())).await.unwrap();
    assert_eq!(next_reply(&mut ws).await.unwrap()["ok"], false);
    ws.send(Message::Binary(vec![0u8, 159, 146, 150].into()))
        .await
        .unwrap();
    let r = next_reply(&mut ws).await.unwrap();
    assert!(r["error"].as_str().unwrap().contains("binary"), "{r}");
    // Still a working session.
    ws.send(Message::Text(
        r#"{"op":"operator","id":1,"name":"ok"}"#.into(),
    ))
    .await
    .unwrap();
    assert_eq!(next_reply(&mut ws).await.unwrap()["ok"], true);

    // A 10 MB frame: the socket is closed.
    let big = "x".repeat(10 * 1024 * 1024);
    let sent = ws.send(Message::Text(big.into())).await;
    assert!(
        sent.is_err() || closes(&mut ws).await,
        "a 10 MB frame must close the socket"
    );

    // Frames that break the protocol: each closes its socket.
    for (name, frame) in [
        ("reserved bits", masked(0x80 | 0x40 | 0x1, b"{}")),
        ("unknown opcode", masked(0x80 | 0x3, b"x")),
        ("unmasked", vec![0x81, 0x02, b'{', b'}']),
        ("long ping", masked(0x80 | 0x9, &[0u8; 200])),
        ("fragmented ping", masked(0x09, b"p")),
        ("bare continuation", masked(0x80, b"xx")),
        ("invalid UTF-8", masked(0x81, &[0xff, 0xfe, 0xfd])),
        (
            "huge length",
            vec![
                0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4,
            ],
        ),
    ] {
        assert!(
            raw_frame_closes(port, &frame),
            "{name}: the socket stayed open"
        );
    }

    // A flood of bad requests: the session is closed as a flood, and counted.
    let mut ws = connect(&range).await;
    for i in 0..2_000 {
        if ws
            .send(Message::Text(format!(r#"{{"op":"nope","id":{i}}}"#).into()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert!(closes(&mut ws).await, "a flood must close the session");
    assert!(range.metric("tspi_player_web_sessions_dropped_total", "flood") >= 1.0);

    // 200 connect/disconnect cycles: clean closes, dropped sockets, half-sent upgrades.
    for i in 0..200 {
        match i % 4 {
            0 | 1 => {
                let mut ws = connect(&range).await;
                ws.close(None).await.ok();
            }
            2 => drop(raw_upgrade(port)),
            _ => {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                let _ = s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgr");
            }
        }
    }
    // Every session is gone again.
    let reached = tspi_test_support::wait_until(Duration::from_secs(20), || async {
        range.metric("tspi_player_web_sessions", "") <= 0.0
    })
    .await;
    assert!(reached.is_some(), "sessions left: {}", range.metrics());
    let rss_after = range.player_rss_kb();
    eprintln!(
        "display RSS before {rss_before} kB, after the bad input and 200 cycles {rss_after} kB ({:+} kB); sessions opened {}",
        rss_after as i64 - rss_before as i64,
        range.metric("tspi_player_web_sessions_opened_total", "")
    );
    assert!(
        rss_after <= rss_before + 4 * 1024,
        "memory grew: {rss_before} → {rss_after} kB"
    );

    // Alive, no panic, and a real tab still works.
    let tab = block(|| range.tab("?view=map"));
    block(|| {
        tab.until(
            "tspiDisplay.state().tracks.length === 20",
            Duration::from_secs(10),
            "tracks after the abuse",
        )
    });
    assert!(
        !range.player.stderr().contains("panicked"),
        "{}",
        range.player.stderr()
    );
}
