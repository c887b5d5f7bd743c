//! The address holds the view (issue 23): a cold load — a new browser, nothing cached —
//! of each address state shows what the address says once the server's hello (and its
//! origin) is in, and, while data flows, live tracks within one second of navigating:
//! none stale, the frame rate measured, the table counting what the map draws.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;
mod range;

use std::time::{Duration, Instant};

use range::{block, screenshot_path, Range, RangeOptions};
use tspi_test_support::Browser;

struct Case {
    name: &'static str,
    query: String,
    view: &'static str,
    /// A JavaScript condition on `s = tspiDisplay.state()` beyond the common ones.
    also: String,
    live: bool,
    /// `screenshot=1` hides the connection status (and its frame rate).
    status_shown: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_address_state_shows_on_a_cold_load() {
    let range = Range::start(RangeOptions {
        archive: true,
        alarm_rules: None,
        player_args: &[],
    })
    .await;
    let _generator = range.generator("generator", 20, 10, "continuous");
    // Some seconds of the fleet in the archive, for the replay address.
    let archived = || {
        range
            .psql("SELECT count(*) FROM messages")
            .parse::<u64>()
            .unwrap()
    };
    let reached = tspi_test_support::wait_until(Duration::from_secs(60), || async {
        archived() >= 20 * 10 * 6
    })
    .await;
    assert!(reached.is_some(), "the archive fills");
    let moment = time::OffsetDateTime::now_utc() - Duration::from_secs(3);
    let moment = moment
        .replace_millisecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();

    let live = "s.mode === 'live'".to_owned();
    let cases = [
        Case {
            name: "range",
            query: "?view=range".into(),
            view: "range",
            also: live.clone(),
            live: true,
            status_shown: true,
        },
        Case {
            name: "range-placed",
            query: "?view=range&e=2.000&n=-1.000&zoom=9.00&trail=30".into(),
            view: "range",
            also: format!("{live} && s.zoom === 9 && s.trail_s === 30"),
            live: true,
            status_shown: true,
        },
        Case {
            name: "map-placed",
            query: "?view=map&lat=34.90000&lon=-117.90000&zoom=8.50".into(),
            view: "map",
            also: format!("{live} && s.zoom === 8.5"),
            live: true,
            status_shown: true,
        },
        Case {
            name: "map-default",
            query: String::new(),
            view: "map",
            also: live.clone(),
            live: true,
            status_shown: true,
        },
        Case {
            name: "follow",
            query: "?view=range&follow=10003".into(),
            view: "range",
            also: format!("{live} && s.follow === 10003"),
            live: true,
            status_shown: true,
        },
        Case {
            name: "screenshot",
            query: "?view=range&screenshot=1".into(),
            view: "range",
            also: live.clone(),
            live: true,
            status_shown: false,
        },
        Case {
            name: "replay-paused",
            query: format!("?mode=replay&t={moment}&paused=1&view=range"),
            view: "range",
            also: format!(
                "s.mode === 'replay' && s.paused && Date.parse(s.cursor) === Date.parse('{moment}')"
            ),
            live: false,
            status_shown: true,
        },
    ];
    for case in &cases {
        let took = block(|| cold_load(&range, case));
        eprintln!(
            "{}: {} shown {:.0} ms after navigating",
            case.name,
            if case.live {
                "live tracks"
            } else {
                "the replay"
            },
            took.as_secs_f64() * 1e3
        );
        if case.live {
            assert!(
                took <= Duration::from_secs(1),
                "{}: live tracks after {took:?}",
                case.name
            );
        }
    }
}

/// One new browser on `case`'s address: how long from navigating until the page shows
/// all 20 tracks fresh, then the address's view in the state, the selector, the table
/// and the address bar.
fn cold_load(range: &Range, case: &Case) -> Duration {
    let tab = Browser::start(1400, 900);
    let url = format!("{}{}", range.url, case.query);
    let started = Instant::now();
    tab.goto(&url);
    let shown = format!(
        "window.tspiDisplay !== undefined && (s => s.connected && s.tracks.length === 20 \
         && s.tracks.every(t => !t.stale) && s.view === '{view}' && {also})(tspiDisplay.state())",
        view = case.view,
        also = case.also
    );
    // Timed by the page's own clock from the start of navigation (WebDriver's round trips
    // are not the user's wait): checked on every animation frame from the page's load.
    let at_ms = tab
        .wait(&format!(
            "new Promise((resolve, reject) => {{
               const check = () => {{
                 if ({shown}) resolve(performance.now());
                 else if (performance.now() > 15000) reject(new Error('not within 15 s: ' + JSON.stringify(
                   (s => ({{...s, perf: null, tracks: s.tracks.map(t => [t.sensor_id, t.stale])}}))(tspiDisplay.state()))));
                 else requestAnimationFrame(check);
               }};
               check();
             }})"
        ))
        .unwrap_or_else(|e| panic!("{}: the address's picture: {e} ({shown})", case.name));
    let took = Duration::from_secs_f64(at_ms.as_f64().unwrap() / 1e3);
    eprintln!(
        "{}: navigation to the picture {:.0} ms by the page's clock ({:.0} ms through WebDriver); \
         socket open, hello, first picture at {}",
        case.name,
        took.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64() * 1e3,
        tab.eval("tspiDisplay.state().timing_ms")
    );
    // The DOM agrees: the selector, the table's count, the frame rate, the address.
    let status = if case.status_shown {
        "/· [1-9][0-9]* fps/.test(document.getElementById('conn').textContent)"
    } else {
        "true"
    };
    tab.until(
        &format!(
            "document.getElementById('view-select').value === '{view}' \
             && document.getElementById('track-count').textContent.startsWith('20 tracks') \
             && tspiDisplay.state().fps > 0 && {status} \
             && new URLSearchParams(location.search).get('view') === '{view}'",
            view = case.view
        ),
        Duration::from_secs(5),
        &format!(
            "{}: the selector, the table, the frame rate and the address",
            case.name
        ),
    );
    let state = tab.eval("tspiDisplay.state()");
    assert!(
        state["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["stale"] == false),
        "{}: {state}",
        case.name
    );
    tab.screenshot(&screenshot_path(&format!("cold-{}.png", case.name)));
    took
}
