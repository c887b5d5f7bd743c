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

/// Whether the `sleep(` at `at` in `text` waits inside a loop of its function (a poll,
/// bounded by the loop's own condition) rather than standing alone.
fn in_a_loop(text: &str, at: usize) -> bool {
    let mut depth = 0usize;
    let bytes = text.as_bytes();
    let mut i = at;
    while i > 0 {
        i -= 1;
        match bytes[i] {
            b'}' => depth += 1,
            b'{' if depth > 0 => depth -= 1,
            b'{' => {
                let line_start = text[..i].rfind('\n').map_or(0, |n| n + 1);
                let opener = &text[line_start..i];
                let words: Vec<&str> = opener
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .collect();
                if words.iter().any(|w| matches!(*w, "loop" | "while" | "for")) {
                    return true;
                }
                if words.contains(&"fn") {
                    return false;
                }
            }
            _ => {}
        }
    }
    false
}

/// Issue 26: a test waits on a condition, not for things to settle. A sleep that is not
/// a poll inside a loop is the behaviour under test (a fault's length, a measuring
/// window, "nothing may arrive meanwhile") and a comment just above says so.
#[test]
fn every_sleep_in_the_tests_is_a_poll_or_says_why() {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in [
        "tests/e2e/tests",
        "tests/e2e/src",
        "crates/tspi-test-support/src",
    ] {
        sources(&root.join(dir), &mut files);
    }
    for group in ["crates", "bins"] {
        for package in std::fs::read_dir(root.join(group)).unwrap() {
            let tests = package.unwrap().path().join("tests");
            if tests.is_dir() {
                sources(&tests, &mut files);
            }
        }
    }
    let mut unexplained = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (at, _) in text.match_indices("sleep(") {
            let line_start = text[..at].rfind('\n').map_or(0, |n| n + 1);
            let line = &text[line_start..text[at..].find('\n').map_or(text.len(), |n| at + n)];
            if line.trim_start().starts_with("//") || in_a_loop(&text, at) {
                continue;
            }
            let above: Vec<&str> = text[..line_start].lines().rev().take(6).collect();
            if !above.iter().any(|l| l.trim_start().starts_with("//")) {
                let n = text[..at].lines().count();
                unexplained.push(format!(
                    "{}:{n}: {}",
                    file.strip_prefix(&root).unwrap().display(),
                    line.trim()
                ));
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "sleeps that neither poll nor say why (wait on a condition: tspi_test_support::wait_until): {unexplained:#?}"
    );
}
