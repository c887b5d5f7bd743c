//! The deploy node config (`deploy/nats/node.conf`) as a template: its addresses and
//! store rewritten to a test's loopback ports and temp dir, the rest kept, so tests run
//! the configuration a range deploys.

use std::path::Path;

/// Where one node of a template-made cluster listens.
pub(crate) struct NodeAddresses<'a> {
    pub(crate) name: &'a str,
    pub(crate) port: u16,
    pub(crate) monitor_port: u16,
    /// This node's route port and every node's, for a clustered template; `None` for a
    /// single-node one (which then must have no `cluster` block).
    pub(crate) cluster: Option<(u16, &'a [u16])>,
    /// Where the template's `leafnodes { listen }` moves to, if it has one.
    pub(crate) leaf_port: u16,
    pub(crate) store: &'a Path,
}

/// Rewrite an operator's node configuration for one loopback node. Every setting that
/// is rewritten must occur exactly once, so a template that changes shape fails loudly
/// instead of silently testing something else.
pub(crate) fn node_config_from_template(
    template: &str,
    at: &NodeAddresses<'_>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut depth = 0usize;
    let mut block = "";
    let mut skipping_routes = false;
    let mut seen: Vec<&str> = Vec::new();
    for line in template.lines() {
        let t = line.trim();
        if skipping_routes {
            if t.starts_with(']') || t.ends_with(']') {
                skipping_routes = false;
            }
            continue;
        }
        let replaced = if t.starts_with('#') {
            None
        } else if t.starts_with("server_name:") && depth == 0 {
            seen.push("server_name");
            Some(format!("server_name: {}", at.name))
        } else if t.starts_with("listen:") && depth == 0 {
            seen.push("listen");
            Some(format!("listen: 127.0.0.1:{}", at.port))
        } else if t.starts_with("http:") && depth == 0 {
            seen.push("http");
            Some(format!("http: 127.0.0.1:{}", at.monitor_port))
        } else if t.starts_with("store_dir:") {
            seen.push("store_dir");
            Some(format!("  store_dir: {:?}", at.store.display().to_string()))
        } else if t.starts_with("listen:") && block == "cluster" {
            seen.push("cluster listen");
            at.cluster
                .map(|(port, _)| format!("  listen: 127.0.0.1:{port}"))
        } else if t.starts_with("listen:") && block == "leafnodes" {
            seen.push("leafnodes listen");
            Some(format!("  listen: 127.0.0.1:{}", at.leaf_port))
        } else if t.starts_with("routes:") && block == "cluster" {
            seen.push("routes");
            skipping_routes = !t.ends_with(']');
            at.cluster.map(|(_, routes)| {
                let routes: Vec<String> = routes
                    .iter()
                    .map(|p| format!("nats-route://127.0.0.1:{p}"))
                    .collect();
                format!("  routes: [{}]", routes.join(", "))
            })
        } else {
            None
        };
        if !t.starts_with('#') {
            if t.ends_with('{') && depth == 0 {
                block = match t.trim_end_matches('{').trim() {
                    "cluster" => "cluster",
                    "leafnodes" => "leafnodes",
                    _ => "",
                };
            }
            depth += t.matches('{').count();
            depth = depth.saturating_sub(t.matches('}').count());
            if depth == 0 {
                block = "";
            }
        }
        out.push_str(replaced.as_deref().unwrap_or(line));
        out.push('\n');
    }
    let clustered = usize::from(at.cluster.is_some());
    for (key, want) in [
        ("server_name", 1),
        ("listen", 1),
        ("http", 1),
        ("store_dir", 1),
        ("cluster listen", clustered),
        ("routes", clustered),
    ] {
        let n = seen.iter().filter(|k| **k == key).count();
        if n != want {
            return Err(format!("expected {want} `{key}` setting, found {n}"));
        }
    }
    if seen.iter().filter(|k| **k == "leafnodes listen").count() > 1 {
        return Err("expected at most one `leafnodes listen` setting".to_owned());
    }
    Ok(out)
}

/// The relative paths a configuration `include`s.
pub(crate) fn included_files(config: &str) -> Vec<String> {
    config
        .lines()
        .filter_map(|l| l.trim().strip_prefix("include "))
        .map(|p| p.trim().trim_matches(['"', '\'']).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::workspace_root;
    use std::fs;

    fn addresses(store: &Path) -> NodeAddresses<'_> {
        NodeAddresses {
            name: "n2",
            port: 4100,
            monitor_port: 4200,
            cluster: Some((4301, &[4300, 4301, 4302])),
            leaf_port: 4400,
            store,
        }
    }

    #[test]
    fn the_deploy_node_config_becomes_a_loopback_node_and_keeps_the_rest() {
        let template = fs::read_to_string(workspace_root().join("deploy/nats/node.conf")).unwrap();
        let store = Path::new("/tmp/x/jetstream");
        let conf = node_config_from_template(&template, &addresses(store)).unwrap();
        assert!(conf.contains("server_name: n2\n"), "{conf}");
        assert!(conf.contains("listen: 127.0.0.1:4100\n"));
        assert!(conf.contains("http: 127.0.0.1:4200\n"));
        assert!(conf.contains("  listen: 127.0.0.1:4301\n"));
        assert!(conf.contains(
            "routes: [nats-route://127.0.0.1:4300, nats-route://127.0.0.1:4301, nats-route://127.0.0.1:4302]"
        ));
        assert!(conf.contains("store_dir: \"/tmp/x/jetstream\""));
        assert!(!conf.contains("0.0.0.0"), "{conf}");
        assert!(!conf.contains("nats1:6222"), "old routes dropped: {conf}");
        // What the operator configured stays as written.
        assert!(conf.contains("sync_interval: always"));
        assert!(conf.contains("domain: centre"));
        assert!(
            conf.contains("leafnodes {\n  listen: 127.0.0.1:4400\n"),
            "{conf}"
        );
        assert!(conf.contains("include ./accounts.conf"));
        assert_eq!(
            included_files(&template),
            vec!["./accounts.conf".to_owned()]
        );
    }

    #[test]
    fn a_template_of_another_shape_is_refused() {
        let store = Path::new("/s");
        let no_cluster = "server_name: a\nlisten: 0.0.0.0:4222\nhttp: 0.0.0.0:8222\n\
                          jetstream {\n  store_dir: /d\n}\n";
        let err = node_config_from_template(no_cluster, &addresses(store)).unwrap_err();
        assert!(err.contains("cluster listen"), "{err}");
        let two_listens = "server_name: a\nlisten: 0.0.0.0:4222\nlisten: 0.0.0.0:4223\n\
                           http: 0.0.0.0:8222\njetstream {\n  store_dir: /d\n}\n\
                           cluster {\n  listen: 0.0.0.0:6222\n  routes: [\n    nats-route://a:1\n  ]\n}\n";
        let err = node_config_from_template(two_listens, &addresses(store)).unwrap_err();
        assert!(err.contains("`listen`"), "{err}");
    }
}
