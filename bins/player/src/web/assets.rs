//! The page, its scripts and its map data, embedded in the binary: the display needs no
//! network beyond its own host (range networks are air-gapped), and every response says
//! so to the browser ([`CSP`]: nothing from another origin may load or be fetched).

/// Every asset comes from this server, and connections go only back to it.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

#[derive(Debug)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

impl Asset {
    /// A strong validator from the content (FNV-1a), so a browser revalidates cheaply.
    pub fn etag(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("\"{h:016x}\"")
    }
}

macro_rules! asset {
    ($path:literal, $ct:expr) => {
        Asset {
            path: $path,
            content_type: $ct,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $path)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// Everything under `bins/player/web/` (a test checks none is missing).
pub static ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("display.css", CSS),
    asset!("js/main.js", JS),
    asset!("js/store.js", JS),
    asset!("js/socket.js", JS),
    asset!("js/geo.js", JS),
    asset!("js/topo.js", JS),
    asset!("js/map.js", JS),
    asset!("js/timeline.js", JS),
    asset!("js/table.js", JS),
    asset!("js/url.js", JS),
    asset!("js/api.js", JS),
    asset!("js/tools.js", JS),
    asset!("js/overlays.js", JS),
    asset!("js/alarms.js", JS),
    asset!("js/plot.js", JS),
    asset!("vendor/world-atlas/countries-50m.json", JSON),
    asset!("vendor/world-atlas/countries-10m.json", JSON),
    asset!("vendor/world-atlas/LICENSE", TEXT),
    asset!("vendor/world-atlas/NOTICE.md", TEXT),
];

pub fn get(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::Path;

    fn files(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files(&p, base, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }

    #[test]
    fn every_file_of_the_page_is_embedded_and_nothing_else() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let mut on_disk = Vec::new();
        files(&base, &base, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
        assert!(get("../Cargo.toml").is_none());
        assert_ne!(
            get("js/main.js").unwrap().etag(),
            get("js/map.js").unwrap().etag()
        );
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        // No absolute URL in what the page loads or runs (the vendored data's licence
        // and notice are text, not loaded by the page).
        for a in ASSETS
            .iter()
            .filter(|a| a.content_type != JSON && a.content_type != TEXT)
        {
            let text = std::str::from_utf8(a.bytes).unwrap();
            for scheme in ["http://", "https://", "//cdn", "ws://", "wss://"] {
                assert!(!text.contains(scheme), "{} mentions {scheme}", a.path);
            }
        }
    }
}
