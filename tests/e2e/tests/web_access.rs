//! Who may open the web display (issue 10, acceptance 7): a bind beyond loopback without
//! an access token is refused at start; with a token, a wrong or missing one is refused
//! for the page, its assets and its WebSocket; the right one sets a cookie the page and
//! its WebSocket then use; a WebSocket from another origin is refused whatever the token.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;
mod range;

use std::time::Duration;

use range::{block, http_get, http_get_head, Range, RangeOptions};
use tspi_test_support::{run_cli, workspace_bin};

const TOKEN: &str = "range-display-token-0123456789";

fn upgrade(port: u16, extra: &[(&str, &str)]) -> u16 {
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    headers.extend_from_slice(extra);
    http_get_head(port, "/ws", &headers).0
}

#[test]
fn bad_web_flags_are_refused_at_start() {
    let player = workspace_bin("player");
    let player = player.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "short\n").unwrap();
    for (args, reason) in [
        (vec!["--web", "0.0.0.0:0"], "--web-token-file"),
        (vec!["--web", "[::]:0"], "--web-token-file"),
        (
            vec![
                "--web",
                "127.0.0.1:0",
                "--web-token-file",
                "/nonexistent/token",
            ],
            "cannot read --web-token-file",
        ),
        (
            vec![
                "--web",
                "127.0.0.1:0",
                "--web-token-file",
                short.to_str().unwrap(),
            ],
            "at least 16",
        ),
        (
            vec!["--web", "127.0.0.1:0", "--web-rate", "0"],
            "--web-rate",
        ),
        (
            vec!["--web", "127.0.0.1:0", "--web-max-sessions", "0"],
            "--web-max-sessions",
        ),
    ] {
        let out = run_cli(player, &args, Duration::from_secs(20));
        out.assert_clean_failure(reason);
    }
    // clap's own refusals (bad values) exit 2 with a reason and no panic.
    for args in [
        vec!["--web", "127.0.0.1:0", "--origin", "95,0"],
        vec!["--web", "127.0.0.1:0", "--origin", "north"],
        vec!["--web", "127.0.0.1:0", "--sensor-site", "70000=1,2"],
        vec!["--web", "not-an-address"],
    ] {
        let out = run_cli(player, &args, Duration::from_secs(20));
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_cookies_and_origins() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("display.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let token_arg = token_file.to_str().unwrap().to_owned();
    let range = Range::start(RangeOptions {
        archive: false,
        alarm_rules: None,
        player_args: &["--web-token-file", &token_arg],
    })
    .await;
    let port = range.port();
    let host = format!("127.0.0.1:{port}");
    let own_origin = format!("http://{host}");

    // No token, a wrong one: refused, page, assets and WebSocket alike.
    assert_eq!(http_get(port, "/", &[]).0, 401);
    assert_eq!(http_get(port, "/assets/js/main.js", &[]).0, 401);
    assert_eq!(http_get(port, "/?token=wrong-token-0123456789", &[]).0, 401);
    assert_eq!(
        http_get(
            port,
            "/",
            &[("Authorization", "Bearer wrong-token-0123456789")]
        )
        .0,
        401
    );
    assert_eq!(upgrade(port, &[("Origin", &own_origin)]), 401);
    // The right one: a cookie, and the address without the token.
    let (status, _, head) = http_get_head(port, &format!("/?view=range&token={TOKEN}"), &[]);
    assert_eq!(status, 303, "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("location: /?view=range\r\n"), "{head}");
    assert!(
        head.contains(&format!(
            "set-cookie: tspi_display_token={}; path=/; httponly; samesite=strict",
            TOKEN.to_ascii_lowercase()
        )),
        "{head}"
    );
    let cookie = format!("tspi_display_token={TOKEN}");
    assert_eq!(http_get(port, "/", &[("Cookie", &cookie)]).0, 200);
    assert_eq!(
        http_get(port, "/assets/js/main.js", &[("Cookie", &cookie)]).0,
        200
    );
    assert_eq!(
        http_get(port, "/", &[("Authorization", &format!("Bearer {TOKEN}"))]).0,
        200
    );
    // A WebSocket from another origin is refused even with the token.
    assert_eq!(
        upgrade(
            port,
            &[("Cookie", &cookie), ("Origin", "http://evil.example")]
        ),
        403
    );
    assert_eq!(
        upgrade(port, &[("Cookie", &cookie), ("Origin", &own_origin)]),
        101
    );
    assert!(range.metric("tspi_player_web_refused_total", "token") >= 5.0);
    assert!(range.metric("tspi_player_web_refused_total", "origin") >= 1.0);

    // A browser with the token link: it lands on the page (token gone from the address)
    // and its WebSocket is let in by the cookie.
    let _generator = range.generator("generator", 5, 5, "continuous");
    let tab = block(|| range.tab(&format!("?view=map&token={TOKEN}")));
    let url = block(|| tab.eval("location.href"));
    assert!(
        !url.as_str().unwrap().contains("token"),
        "the token stays out of the address: {url}"
    );
    block(|| {
        tab.until(
            "tspiDisplay.state().tracks.length === 5",
            Duration::from_secs(10),
            "tracks through the token",
        )
    });
    assert!(!range.player.stderr().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_loopback_is_open_and_other_origins_are_not() {
    let range = Range::start(RangeOptions {
        archive: false,
        alarm_rules: None,
        player_args: &[],
    })
    .await;
    let port = range.port();
    let own = format!("http://127.0.0.1:{port}");
    assert_eq!(http_get(port, "/", &[]).0, 200);
    let (_, _, head) = http_get_head(port, "/", &[]);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert_eq!(http_get(port, "/nope", &[]).0, 404);
    assert_eq!(http_get(port, "/assets/../Cargo.toml", &[]).0, 404);
    assert_eq!(upgrade(port, &[("Origin", "http://evil.example")]), 403);
    assert_eq!(upgrade(port, &[("Origin", "null")]), 403);
    assert_eq!(upgrade(port, &[("Origin", &own)]), 101);
    assert_eq!(
        upgrade(port, &[]),
        101,
        "clients that send no Origin (scripts) are let in"
    );
}
