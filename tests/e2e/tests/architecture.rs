//! docs/ARCHITECTURE.md's code map names every module of the workspace's crates and
//! programs, so a module added without a word about it fails here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::Path;

use tspi_test_support::workspace_root;

/// The `.rs` files under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file names the map mentions: `name.rs` in code spans, and each of `{a,b}.rs`.
fn named(map: &str) -> Vec<String> {
    let mut names = Vec::new();
    for span in map.split('`').skip(1).step_by(2) {
        if let (Some(open), Some(close)) = (span.find('{'), span.find("}.rs")) {
            names.extend(
                span[open + 1..close]
                    .split(',')
                    .map(|n| format!("{}.rs", n.trim())),
            );
        } else if let Some(file) = span.rsplit('/').next().filter(|f| f.ends_with(".rs")) {
            names.push(
                file.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
    }
    names
}

#[test]
fn the_code_map_names_every_module() {
    let root = workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let map = &doc[doc.find("## Code map").expect("a code map")..];
    let map = &map[..map.find("## Architecture invariants").unwrap_or(map.len())];
    let names = named(map);
    let mut files = Vec::new();
    for group in ["crates", "bins"] {
        for package in std::fs::read_dir(root.join(group)).unwrap() {
            let src = package.unwrap().path().join("src");
            if src.is_dir() {
                sources(&src, &mut files);
            }
        }
    }
    assert!(files.len() > 50, "found only {} sources", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let name = f.file_name().unwrap().to_string_lossy();
            !["lib.rs", "main.rs", "mod.rs"].contains(&name.as_ref())
                && !names.iter().any(|n| *n == name)
        })
        .map(|f| f.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "modules docs/ARCHITECTURE.md's code map does not name: {missing:?}"
    );
}
