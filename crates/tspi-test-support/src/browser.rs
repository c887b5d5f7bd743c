//! A real browser for web tests: Debian's `chromium`, headless, driven over WebDriver
//! by its own `chromedriver` on a free loopback port. The client is a few JSON-over-HTTP
//! calls (W3C WebDriver), in-tree; no browser is ever downloaded. Every request the page
//! makes is recorded (Chrome's performance log), so a test can check where it went.
//!
//! Blocking by design: call it from `spawn_blocking` or `block_in_place` in async tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::free_port;

pub const BROWSER_HINT: &str = "run `tests/install-deps.sh` (installs Debian's chromium and \
chromium-driver), or set TSPI_CHROMIUM and TSPI_CHROMEDRIVER";

fn binary(var: &str, default: &str) -> PathBuf {
    let p = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(p.is_file(), "{} not found: {BROWSER_HINT}", p.display());
    p
}

/// One headless Chromium (one window, one tab) and its chromedriver.
#[derive(Debug)]
pub struct Browser {
    driver: Option<Child>,
    port: u16,
    session: String,
    dir: tempfile::TempDir,
}

/// One HTTP/1.1 exchange with chromedriver (`Connection: close`; it answers with a
/// Content-Length, chunked is decoded too). Returns the status and the JSON body.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(180)))
        .map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // chromedriver may keep the connection open: read the head, then exactly the body.
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let split = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the HTTP head".into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no HTTP status")?;
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    let mut payload = raw[split + 4..].to_vec();
    loop {
        let done = match length {
            Some(len) => payload.len() >= len,
            None if chunked => payload.windows(5).any(|w| w == b"0\r\n\r\n"),
            None => false,
        };
        if done {
            break;
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        payload.extend_from_slice(&buf[..n]);
    }
    if let Some(len) = length {
        payload.truncate(len);
    } else if chunked {
        payload = dechunk(&payload)?;
    }
    let value = if payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&payload).map_err(|e| format!("not JSON ({e})"))?
    };
    Ok((status, value))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line_end]).trim(), 16)
            .map_err(|e| e.to_string())?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or("short chunk")?);
        data = data.get(size + 2..).ok_or("short chunk")?;
    }
}

impl Browser {
    /// Start chromedriver and a headless Chromium window of `width`×`height`.
    pub fn start(width: u32, height: u32) -> Browser {
        let chromium = binary("TSPI_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = binary("TSPI_CHROMEDRIVER", "/usr/bin/chromedriver");
        let dir = tempfile::Builder::new()
            .prefix("tspi-browser-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let port = free_port();
        // TSPI_BROWSER_NICE=N runs the browser at a lower priority, so a bench on a small
        // machine measures what the page does with the CPU the servers leave it.
        let mut driver = match std::env::var("TSPI_BROWSER_NICE") {
            Ok(n) => {
                let mut c = Command::new("nice");
                c.args(["-n", &n]).arg(&chromedriver);
                c
            }
            Err(_) => Command::new(&chromedriver),
        };
        let driver = driver
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver: {e}; {BROWSER_HINT}"));
        let mut b = Browser {
            driver: Some(driver),
            port,
            session: String::new(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, v)) = http(port, "GET", "/status", None) {
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver not ready in 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = b.dir.path().join("profile");
        let downloads = b.downloads();
        let _ = std::fs::create_dir_all(&downloads);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-quic", "--disable-extensions",
                    "--disable-default-apps", "--mute-audio", "--force-device-scale-factor=1",
                    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                    "--disable-backgrounding-occluded-windows",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {
                    "download.default_directory": downloads,
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                },
            },
            "goog:loggingPrefs": {"performance": "ALL", "browser": "ALL"},
            "timeouts": {"script": 60000, "pageLoad": 60000},
        }}});
        let (status, v) = http(port, "POST", "/session", Some(&caps))
            .unwrap_or_else(|e| panic!("WebDriver new session: {e}"));
        assert_eq!(status, 200, "WebDriver new session: {v}");
        b.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id: {v}"))
            .to_owned();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let (status, v) = http(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        )?;
        if status == 200 {
            Ok(v["value"].clone())
        } else {
            Err(format!(
                "{} {path}: {}",
                v["value"]["error"].as_str().unwrap_or("error"),
                v["value"]["message"].as_str().unwrap_or_default()
            ))
        }
    }

    /// Where this browser saves downloads.
    pub fn downloads(&self) -> PathBuf {
        self.dir.path().join("downloads")
    }

    /// The first download that has completed (Chromium writes `*.crdownload` until it
    /// has), waiting up to `timeout`.
    pub fn downloaded(&self, timeout: Duration) -> Option<PathBuf> {
        let deadline = Instant::now() + timeout;
        loop {
            let done = std::fs::read_dir(self.downloads())
                .ok()
                .and_then(|entries| {
                    entries.flatten().map(|e| e.path()).find(|p| {
                        p.extension().is_none_or(|x| x != "crdownload")
                            && !p
                                .file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    })
                });
            if done.is_some() || Instant::now() > deadline {
                return done;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Open `url` (returns when the page has loaded).
    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url})))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Evaluate `expr` in the page (sync JavaScript expression), its value as JSON.
    pub fn eval(&self, expr: &str) -> Value {
        self.try_eval(expr)
            .unwrap_or_else(|e| panic!("eval {expr}: {e}"))
    }

    pub fn try_eval(&self, expr: &str) -> Result<Value, String> {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": format!("return ({expr});"), "args": []})),
        )
    }

    /// Await a JavaScript expression that yields a Promise; `Err` with its rejection.
    pub fn wait(&self, expr: &str) -> Result<Value, String> {
        let script = format!(
            "const done = arguments[arguments.length - 1];
             Promise.resolve().then(() => ({expr}))
               .then(v => done({{ok: v === undefined ? null : v}}), e => done({{err: String(e && e.message || e)}}));"
        );
        let v = self.call(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": []})),
        )?;
        match v.get("err") {
            Some(e) => Err(e.as_str().unwrap_or_default().to_owned()),
            None => Ok(v["ok"].clone()),
        }
    }

    /// Poll `expr` until it is true (or panic with `what` after `timeout`).
    pub fn until(&self, expr: &str, timeout: Duration, what: &str) -> Duration {
        let started = Instant::now();
        let mut last = Value::Null;
        while started.elapsed() < timeout {
            match self.try_eval(expr) {
                Ok(Value::Bool(true)) => return started.elapsed(),
                Ok(v) => last = v,
                Err(e) => last = Value::String(e),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{what}: not within {timeout:?} ({expr} was {last})");
    }

    /// Save a PNG of the window.
    pub fn screenshot(&self, path: &Path) {
        let v = self
            .call("GET", "/screenshot", None)
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        let png = base64_decode(v.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Every URL the pages asked for since the last call (requests and WebSockets), from
    /// Chrome's performance log; the browser's own `chrome://` pages left out.
    pub fn requested_urls(&self) -> Vec<String> {
        let log = self
            .call("POST", "/se/log", Some(json!({"type": "performance"})))
            .unwrap_or_else(|e| panic!("performance log: {e}"));
        let mut urls = Vec::new();
        for entry in log.as_array().into_iter().flatten() {
            let Some(text) = entry["message"].as_str() else {
                continue;
            };
            let Ok(m) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            let p = &m["message"]["params"];
            match m["message"]["method"].as_str() {
                Some("Network.requestWillBeSent") => {
                    // The browser's own pages (its new-tab page) are not the page's doing.
                    let document = p["documentURL"].as_str().unwrap_or_default();
                    if document.starts_with("chrome://") || document.starts_with("devtools://") {
                        continue;
                    }
                    if let Some(u) = p["request"]["url"].as_str() {
                        urls.push(u.to_owned());
                    }
                }
                Some("Network.webSocketCreated") => {
                    if let Some(u) = p["url"].as_str() {
                        urls.push(u.to_owned());
                    }
                }
                _ => {}
            }
        }
        urls
    }

    /// The page's console messages so far (errors show a broken page).
    pub fn console(&self) -> Vec<Value> {
        self.call("POST", "/se/log", Some(json!({"type": "browser"})))
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            );
        }
        if let Some(mut d) = self.driver.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => return Err(format!("not base64: {c}")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_chunks_decode() {
        assert_eq!(base64_decode("aGVsbG8=").ok(), Some(b"hello".to_vec()));
        assert_eq!(base64_decode("aGk=").ok(), Some(b"hi".to_vec()));
        assert!(base64_decode("a*").is_err());
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").ok(),
            Some(b"abcde".to_vec())
        );
    }
}
