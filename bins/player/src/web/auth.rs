//! Who may open the display. On loopback anyone on this host may; beyond it only a
//! browser that presented the access token (`--web-token-file`), once as `?token=` (the
//! server then sets an HttpOnly cookie and drops the token from the address), or a
//! script with `Authorization: Bearer`. WebSocket upgrades from another origin are
//! refused, whatever the token: a page elsewhere must not drive an operator's display.

use std::net::SocketAddr;
use std::path::Path;

use axum::http::{header, HeaderMap};

pub const COOKIE: &str = "tspi_display_token";
/// Shortest token accepted (a guessable token is no token).
pub const MIN_TOKEN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or the wrong one.
    Token,
    /// A WebSocket upgrade from a page of another origin.
    Origin,
}

impl Refusal {
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Token => "token",
            Refusal::Origin => "origin",
        }
    }
}

/// Read the access token: the file's first line, trimmed; at least [`MIN_TOKEN`]
/// printable characters.
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --web-token-file {}: {e}", path.display()))?;
    parse_token(&text, &format!("--web-token-file {}", path.display()))
}

/// The access token in `text` (its first line, trimmed), or why it cannot be one;
/// `source` names where it came from in the error.
pub fn parse_token(text: &str, source: &str) -> Result<String, String> {
    let token = text.lines().next().unwrap_or_default().trim().to_owned();
    if token.len() < MIN_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{source}: the token must be at least {MIN_TOKEN} printable ASCII characters on the first line"
        ));
    }
    Ok(token)
}

/// A bind address beyond this host needs a token.
pub fn check_bind(addr: &SocketAddr, token: Option<&str>) -> Result<(), String> {
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(format!(
            "--web {addr} is reachable from other hosts: give --web-token-file FILE or TSPI_WEB_TOKEN (an access token), or bind to 127.0.0.1"
        ));
    }
    Ok(())
}

/// Compare without an early exit, so response times do not reveal the token.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The token a request carries: `Authorization: Bearer`, the cookie, or `?token=`.
pub fn presented<'a>(headers: &'a HeaderMap, query_token: Option<&'a str>) -> Option<&'a str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v);
    bearer.or(cookie).or(query_token)
}

/// Whether a request may go on, given the configured token.
pub fn check_token(
    expected: Option<&str>,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<(), Refusal> {
    match expected {
        None => Ok(()),
        Some(expected) => match presented(headers, query_token) {
            Some(t) if same(t, expected) => Ok(()),
            _ => Err(Refusal::Token),
        },
    }
}

/// A WebSocket upgrade's `Origin` must be this server's own (`http(s)://<Host>`) or one
/// of `allowed`. Clients that send no `Origin` (scripts, not browsers) are let through:
/// browsers always send it, and it is what protects an operator's browser.
pub fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), Refusal> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().map_err(|_| Refusal::Origin)?;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or(Refusal::Origin)?;
    let own = [format!("http://{host}"), format!("https://{host}")];
    if own.iter().any(|o| o.eq_ignore_ascii_case(origin))
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
    {
        Ok(())
    } else {
        Err(Refusal::Origin)
    }
}

/// `Set-Cookie` for a browser that presented the right token.
pub fn cookie(token: &str) -> String {
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn tokens_from_bearer_cookie_or_query() {
        let t = "0123456789abcdef";
        assert!(check_token(None, &HeaderMap::new(), None).is_ok());
        assert_eq!(
            check_token(Some(t), &HeaderMap::new(), None),
            Err(Refusal::Token)
        );
        assert!(check_token(Some(t), &HeaderMap::new(), Some(t)).is_ok());
        assert!(check_token(Some(t), &HeaderMap::new(), Some("0123456789abcdeX")).is_err());
        let h = headers(&[(header::AUTHORIZATION, &format!("Bearer {t}"))]);
        assert!(check_token(Some(t), &h, None).is_ok());
        let h = headers(&[(header::COOKIE, &format!("a=1; {COOKIE}={t}; b=2"))]);
        assert!(check_token(Some(t), &h, None).is_ok());
        let h = headers(&[(header::COOKIE, &format!("{COOKIE}=wrong"))]);
        assert!(check_token(Some(t), &h, None).is_err());
    }

    #[test]
    fn only_the_own_origin_may_upgrade() {
        let own = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://127.0.0.1:8080"),
        ]);
        assert!(check_origin(&own, &[]).is_ok());
        let foreign = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://evil.example"),
        ]);
        assert_eq!(check_origin(&foreign, &[]), Err(Refusal::Origin));
        assert!(check_origin(&foreign, &["http://evil.example".into()]).is_ok());
        let no_origin = headers(&[(header::HOST, "127.0.0.1:8080")]);
        assert!(check_origin(&no_origin, &[]).is_ok());
        let no_host = headers(&[(header::ORIGIN, "http://127.0.0.1:8080")]);
        assert!(check_origin(&no_host, &[]).is_err());
    }

    #[test]
    fn binds_beyond_loopback_need_a_token() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(check_bind(&any, None)
            .unwrap_err()
            .contains("--web-token-file"));
        assert!(check_bind(&any, Some("x")).is_ok());
        assert!(check_bind(&lo, None).is_ok());
        let dir = std::env::temp_dir().join(format!("tspi-token-{}", std::process::id()));
        std::fs::write(&dir, "short\n").unwrap();
        assert!(read_token(&dir).is_err());
        std::fs::write(&dir, "  0123456789abcdefXYZ  \nsecond line\n").unwrap();
        assert_eq!(read_token(&dir).unwrap(), "0123456789abcdefXYZ");
        std::fs::remove_file(&dir).unwrap();
        assert!(read_token(Path::new("/nonexistent/token")).is_err());
    }
}
