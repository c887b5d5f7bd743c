//! deploy/ stays true to the code: the node config parses with the server we ship
//! (`nats-server -t`), the Dockerfile builds every program the workspace has and the
//! README describes, and the compose file is accepted by Debian's `docker-compose config`
//! (tests/install-deps.sh installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::Command;

use tspi_test_support::{nats_server_binary, workspace_root};

fn program_names() -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(workspace_root().join("bins")).unwrap() {
        let manifest = std::fs::read_to_string(entry.unwrap().path().join("Cargo.toml")).unwrap();
        let mut lines = manifest.lines();
        while let Some(line) = lines.next() {
            if line.trim() == "[[bin]]" {
                let name = lines.next().unwrap();
                names.push(name.split('"').nth(1).unwrap().to_owned());
            }
        }
    }
    names.sort();
    names
}

#[test]
fn node_config_parses_with_the_shipped_server() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["node.conf", "accounts.conf"] {
        std::fs::copy(
            workspace_root().join("deploy/nats").join(f),
            dir.path().join(f),
        )
        .unwrap();
    }
    let mut cmd = Command::new(nats_server_binary());
    cmd.arg("-c")
        .arg(dir.path().join("node.conf"))
        .arg("-t")
        .env("NODE_NAME", "n1");
    for user in [
        "PRODUCER",
        "GENERATOR",
        "RECEIVER",
        "ARCHIVER",
        "PLAYER",
        "CONSOLE",
        "REPLAYER",
        "ADMIN",
    ] {
        cmd.env(format!("{user}_PASSWORD"), "x");
    }
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("is valid"), "{text}");
}

#[test]
fn dockerfile_and_readme_cover_every_program() {
    let programs = program_names();
    assert_eq!(
        programs,
        [
            "archiver",
            "console",
            "generator",
            "player",
            "producer",
            "receiver",
            "replayer"
        ]
    );
    let dockerfile = std::fs::read_to_string(workspace_root().join("deploy/Dockerfile")).unwrap();
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    for p in &programs {
        assert!(
            dockerfile.contains(&format!("-p tspi-{p}")),
            "Dockerfile does not build {p}"
        );
        assert!(
            dockerfile.contains(&format!(" {p} ")) || dockerfile.contains(&format!(" {p};")),
            "Dockerfile does not copy {p}"
        );
        assert!(
            readme.contains(&format!("**{p}**")),
            "README does not describe {p}"
        );
    }
}

#[test]
fn compose_file_is_accepted_by_docker_compose() {
    if std::env::var_os("TSPI_SKIP_COMPOSE_CHECK").is_some() {
        eprintln!("TSPI_SKIP_COMPOSE_CHECK set: deploy/docker-compose.yml not checked");
        return;
    }
    let out = Command::new("docker-compose")
        .arg("version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "docker-compose not found ({e}): run tests/install-deps.sh (Debian's \
                 docker-compose package), or set TSPI_SKIP_COMPOSE_CHECK=1"
            )
        });
    assert!(out.status.success());
    let deploy = workspace_root().join("deploy");
    let ok = Command::new("docker-compose")
        .arg("--env-file")
        .arg(deploy.join(".env.example"))
        .arg("-f")
        .arg(deploy.join("docker-compose.yml"))
        .args(["config", "-q"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // Without passwords it refuses to start rather than run with empty ones.
    let missing = Command::new("docker-compose")
        .arg("--env-file")
        .arg("/dev/null")
        .arg("-f")
        .arg(deploy.join("docker-compose.yml"))
        .args(["config", "-q"])
        .output()
        .unwrap();
    assert!(
        !missing.status.success(),
        "compose accepted missing passwords"
    );
}

/// The `--help` text of a program and of each of its subcommands, recursively.
fn help_texts(bin: &std::path::Path, path: &mut Vec<String>, out: &mut String) {
    let o = Command::new(bin)
        .args(path.iter())
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    out.push_str(&text);
    let subcommands: Vec<String> = text
        .split("Commands:")
        .nth(1)
        .map(|rest| {
            rest.lines()
                .skip(1)
                .take_while(|l| l.starts_with("  "))
                .filter_map(|l| l.split_whitespace().next())
                .filter(|c| *c != "help")
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for sub in subcommands {
        path.push(sub);
        help_texts(bin, path, out);
        path.pop();
    }
}

/// Every `--flag` the operator's documents name.
fn documented_flags(text: &str) -> std::collections::BTreeSet<String> {
    let mut flags = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices("--") {
        let before = if i == 0 { b' ' } else { bytes[i - 1] };
        let flag: String = text[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        let starts_word = matches!(before, b' ' | b'`' | b'"' | b'(' | b'[' | b'\n' | b'/');
        // `--tls-*` names a family of flags, not one.
        let family = text[i + 2 + flag.len()..].starts_with('*');
        if starts_word && !family && flag.starts_with(|c: char| c.is_ascii_lowercase()) {
            flags.insert(format!("--{}", flag.trim_end_matches('-')));
        }
    }
    flags
}

/// docs/operations.md, the README, the systemd units and the compose file name only
/// flags the programs (or demo.sh, or the named tools) have: they stay in step with the
/// code.
#[test]
fn documents_name_only_real_flags() {
    let root = workspace_root();
    let mut help = String::new();
    for p in program_names() {
        help_texts(
            &tspi_test_support::workspace_bin(&p),
            &mut Vec::new(),
            &mut help,
        );
    }
    let demo = Command::new(root.join("demo.sh"))
        .arg("--help")
        .output()
        .unwrap();
    help.push_str(&String::from_utf8_lossy(&demo.stdout));
    // Other tools' flags the documents use, and the test command's own.
    let others = [
        "--release",    // cargo
        "--locked",     // cargo
        "--bench",      // cargo
        "--workspace",  // cargo
        "--build",      // docker-compose up
        "--rm",         // docker-compose run
        "--profile",    // docker-compose
        "--now",        // systemctl enable
        "--no-compose", // tests/install-deps.sh
    ];
    let mut documents = vec![root.join("README.md"), root.join("docs/operations.md")];
    documents.push(root.join("deploy/docker-compose.yml"));
    for unit in std::fs::read_dir(root.join("deploy/systemd")).unwrap() {
        documents.push(unit.unwrap().path());
    }
    let mut unknown = Vec::new();
    for doc in &documents {
        let text = std::fs::read_to_string(doc).unwrap();
        for flag in documented_flags(&text) {
            let known = help
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .any(|w| w == flag);
            if !known && !others.contains(&flag.as_str()) {
                unknown.push(format!("{}: {flag}", doc.display()));
            }
        }
    }
    assert!(unknown.is_empty(), "flags no program has: {unknown:#?}");
}
