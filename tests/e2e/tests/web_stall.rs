//! A tab that stops reading (issue 10, acceptance 5): its JavaScript is held busy for
//! 30 s, so the browser stops taking its WebSocket; the display thins it, then drops it,
//! and counts both, while the other tab's live updates are not delayed by more than
//! 100 ms.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;
mod range;

use std::time::{Duration, Instant};

use range::{block, Range, RangeOptions};

/// The age of the tab's live updates when they reached it, over `secs`: {n, p50, p99}.
fn latency(tab: &tspi_test_support::Browser, secs: f64) -> serde_json::Value {
    tab.eval("tspiDisplay.latency()");
    // The measuring window itself.
    std::thread::sleep(Duration::from_secs_f64(secs));
    tab.eval("tspiDisplay.latency()")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tab_is_thinned_then_dropped_and_the_other_keeps_up() {
    let range = Range::start(RangeOptions {
        archive: false,
        alarm_rules: None,
        player_args: &["--web-stall-timeout", "10s"],
    })
    .await;
    let stalled = block(|| range.tab("?view=map&trail=10"));
    let other = block(|| range.tab("?view=map&trail=10"));
    // Enough data that a tab which stops reading fills its socket within seconds.
    let _generator = range.generator("generator", 300, 10, "continuous");
    block(|| {
        other.until(
            "tspiDisplay.state().tracks.length === 300",
            Duration::from_secs(20),
            "300 tracks",
        )
    });
    let before = block(|| latency(&other, 5.0));
    let dropped_before = range.metric("tspi_player_web_sessions_dropped_total", "stalled");
    // Cumulative: the 300 tracks' arrival may have thinned already.
    let thinned_before = range.metric("tspi_player_web_updates_thinned_total", "backlog");

    // The stalled tab's page thread is busy for 30 s: it reads nothing.
    let busy = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let _ = stalled.try_eval(
            "(() => { const end = Date.now() + 30000; while (Date.now() < end) {} return 1; })()",
        );
        (stalled, started.elapsed())
    });
    // The window opens once the display is thinning the stalled tab: it has stopped reading.
    let stalling = tspi_test_support::wait_until(Duration::from_secs(10), || async {
        range.metric("tspi_player_web_updates_thinned_total", "backlog") > thinned_before
    })
    .await;
    assert!(
        stalling.is_some(),
        "the busy tab's updates were never thinned"
    );
    let during = block(|| latency(&other, 25.0));
    let (stalled, held) = busy.await.unwrap();
    assert!(
        held >= Duration::from_secs(29),
        "the page was busy for {held:?}"
    );

    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    let (p50_b, p99_b) = (f(&before, "p50"), f(&before, "p99"));
    let (p50_d, p99_d) = (f(&during, "p50"), f(&during, "p99"));
    eprintln!(
        "the other tab's live updates, receive → page: before p50 {p50_b:.0} ms p99 {p99_b:.0} ms \
         ({} updates); while a tab stalled p50 {p50_d:.0} ms p99 {p99_d:.0} ms ({} updates)",
        before["n"], during["n"]
    );
    assert!(
        f(&during, "n") > 10_000.0,
        "updates while stalled: {during}"
    );
    assert!(
        p99_d - p99_b <= 100.0,
        "the other tab was delayed: p99 {p99_b:.0} → {p99_d:.0} ms"
    );
    assert!(
        p50_d - p50_b <= 100.0,
        "the other tab was delayed: p50 {p50_b:.0} → {p50_d:.0} ms"
    );

    let thinned = range.metric("tspi_player_web_updates_thinned_total", "backlog");
    let dropped =
        range.metric("tspi_player_web_sessions_dropped_total", "stalled") - dropped_before;
    eprintln!("thinned for backlog: {thinned}; tabs dropped as stalled: {dropped}");
    assert!(
        thinned > 0.0,
        "the stalled tab's updates were coalesced and counted"
    );
    assert_eq!(
        dropped, 1.0,
        "the stalled tab was closed after the stall timeout"
    );
    // The page notices and connects again, as a new session.
    block(|| {
        stalled.until(
            "tspiDisplay.state().connected && tspiDisplay.state().tracks.length > 0",
            Duration::from_secs(20),
            "the stalled tab reconnects",
        )
    });
    assert!(!range.player.stderr().contains("panicked"));
}
