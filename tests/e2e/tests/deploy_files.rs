//! deploy/ stays true to the code: the node config parses with the server we ship
//! (`nats-server -t`), the Dockerfile builds every program the workspace has and the
//! README describes, and (where Debian's docker-compose is installed) the compose file
//! is accepted by `docker-compose config`.

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
    let Ok(out) = Command::new("docker-compose").arg("version").output() else {
        eprintln!("docker-compose not installed: `apt-get install docker-compose` to check deploy/docker-compose.yml");
        return;
    };
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
