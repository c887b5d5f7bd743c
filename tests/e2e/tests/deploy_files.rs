//! deploy/ stays true to the code: the node config parses with the server we ship
//! (`nats-server -t`), the Dockerfile parses with BuildKit's parser and builds every
//! program the workspace has and the README describes, and the compose file is accepted
//! by Debian's `docker-compose config`, and systemd accepts the units
//! (`systemd-analyze verify`; tests/install-deps.sh installs the checkers).

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

/// A temp dir holding copies of these files of deploy/nats (a config and its include).
fn deploy_nats_files(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::copy(
            workspace_root().join("deploy/nats").join(f),
            dir.path().join(f),
        )
        .unwrap();
    }
    dir
}

#[test]
fn node_config_parses_with_the_shipped_server() {
    let dir = deploy_nats_files(&["node.conf", "accounts.conf"]);
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
        "ALARMER",
        "ADMIN",
        "SITE_NORTH",
    ] {
        cmd.env(format!("{user}_PASSWORD"), "x");
    }
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("is valid"), "{text}");
}

#[test]
fn site_config_parses_with_the_shipped_server() {
    let dir = deploy_nats_files(&["site.conf", "site-accounts.conf"]);
    let out = Command::new(nats_server_binary())
        .arg("-c")
        .arg(dir.path().join("site.conf"))
        .arg("-t")
        .env("PRODUCER_PASSWORD", "x")
        .env("ADMIN_PASSWORD", "x")
        .env(
            "CENTRE_LEAF_URLS",
            "[nats-leaf://site-north:x@centre1:7422, nats-leaf://site-north:x@centre2:7422]",
        )
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("is valid"), "{text}");
}

/// Whether the deploy-file checkers are switched off (`TSPI_SKIP_COMPOSE_CHECK`, for a
/// machine without them); says so, naming what goes unchecked.
fn skipped(what: &str) -> bool {
    let skip = std::env::var_os("TSPI_SKIP_COMPOSE_CHECK").is_some();
    if skip {
        tspi_test_support::skipped(
            "deploy_files",
            tspi_test_support::Dependency::DeployCheckers,
            &format!("TSPI_SKIP_COMPOSE_CHECK set: {what}"),
        );
    }
    skip
}

/// One instruction of a Dockerfile, as BuildKit's own parser reads it.
#[derive(serde::Deserialize)]
struct Instruction {
    cmd: String,
    flags: Vec<String>,
    value: Vec<String>,
    json: bool,
    line: u64,
}

/// `path` through BuildKit's parser (the Go code behind PyPI's `dockerfile`, installed by
/// tests/install-deps.sh into .tools/dockerfile): what `docker build` would read.
fn parse_dockerfile(path: &std::path::Path) -> Vec<Instruction> {
    let parser = workspace_root().join(".tools/dockerfile");
    assert!(
        parser.is_dir(),
        "BuildKit's Dockerfile parser is missing: run tests/install-deps.sh (PyPI `dockerfile` \
         into .tools/dockerfile), or set TSPI_SKIP_COMPOSE_CHECK=1"
    );
    const DUMP: &str = "import dockerfile, json, sys\n\
        print(json.dumps([dict(cmd=c.cmd.upper(), flags=list(c.flags), value=list(c.value), \
        json=c.json, line=c.start_line) for c in dockerfile.parse_file(sys.argv[1])]))";
    let out = Command::new("python3")
        .env("PYTHONPATH", &parser)
        .args(["-c", DUMP])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} does not parse: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The words of `text` after `start` up to the first word ending in `end`.
fn words_between<'a>(text: &'a str, start: &str, end: &str) -> Vec<&'a str> {
    let rest = text.split(start).nth(1).unwrap_or_default();
    let mut words = Vec::new();
    for w in rest.split_whitespace() {
        if let Some(last) = w.strip_suffix(end) {
            words.push(last);
            break;
        }
        words.push(w);
    }
    words
}

/// deploy/Dockerfile is one `docker build` would accept (no engine here, so this is the
/// parser and the checks a build would fail on: instructions, stages, shell syntax), it
/// builds and ships exactly the workspace's programs on a toolchain the workspace accepts,
/// runs them as a non-root user, and the build context leaves out build output and
/// secrets. The README describes every program.
#[test]
fn dockerfile_builds_every_program_and_readme_covers_them() {
    let programs = program_names();
    assert_eq!(
        programs,
        [
            "alarmer",
            "archiver",
            "console",
            "generator",
            "player",
            "producer",
            "receiver",
            "replayer"
        ]
    );
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for p in &programs {
        assert!(
            readme.contains(&format!("**{p}**")),
            "README does not describe {p}"
        );
    }
    if skipped("deploy/Dockerfile not parsed") {
        return;
    }

    let dockerfile = parse_dockerfile(&root.join("deploy/Dockerfile"));
    const KNOWN: [&str; 18] = [
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
        "MAINTAINER",
    ];
    let mut stages: Vec<String> = Vec::new();
    let mut final_user = None;
    let mut build_runs = Vec::new();
    for (i, ins) in dockerfile.iter().enumerate() {
        let at = format!("deploy/Dockerfile line {}", ins.line);
        assert!(
            KNOWN.contains(&ins.cmd.as_str()),
            "{at}: unknown {}",
            ins.cmd
        );
        assert!(
            i > 0 || ins.cmd == "FROM" || ins.cmd == "ARG",
            "{at}: must start with FROM"
        );
        match ins.cmd.as_str() {
            "FROM" => {
                assert!(!ins.value.is_empty(), "{at}: FROM without an image");
                if let [_, kw, name] = ins.value.as_slice() {
                    assert!(kw.eq_ignore_ascii_case("as"), "{at}: FROM image AS name");
                    stages.push(name.clone());
                }
                final_user = None;
            }
            "COPY" => {
                for from in ins.flags.iter().filter_map(|f| f.strip_prefix("--from=")) {
                    assert!(stages.iter().any(|s| s == from), "{at}: no stage {from}");
                }
                assert!(
                    ins.value.len() >= 2,
                    "{at}: COPY needs a source and a target"
                );
            }
            "USER" => final_user = ins.value.first().cloned(),
            "RUN" if !ins.json => {
                let body = ins.value.join(" ");
                let sh = Command::new("sh")
                    .args(["-n", "-c", &body])
                    .output()
                    .unwrap();
                assert!(
                    sh.status.success(),
                    "{at}: shell syntax: {}",
                    String::from_utf8_lossy(&sh.stderr)
                );
                if body.contains("cargo build") {
                    build_runs.push(body);
                }
            }
            _ => {}
        }
    }
    let user = final_user.expect("the runtime stage sets USER");
    assert!(user != "root" && user != "0", "runs as root");

    let [build] = build_runs.as_slice() else {
        panic!("one RUN with cargo build, found {}", build_runs.len());
    };
    let words: Vec<&str> = build.split_whitespace().collect();
    let mut packages: Vec<&str> = words
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1])
        .collect();
    packages.sort_unstable();
    let expected: Vec<String> = programs.iter().map(|p| format!("tspi-{p}")).collect();
    assert_eq!(packages, expected, "the packages cargo builds");
    assert!(words.contains(&"--release") && words.contains(&"--locked"));
    let mut copied = words_between(build, "for b in", ";");
    copied.sort_unstable();
    assert_eq!(copied, programs, "the binaries copied to the image");

    // The toolchain image (the default of the ARG it names, where it names one: build.sh
    // passes a local one) is at least the workspace's rust-version.
    let from = &dockerfile
        .iter()
        .find(|i| i.cmd == "FROM")
        .expect("a FROM")
        .value[0];
    let arg_default = |name: &str| {
        dockerfile
            .iter()
            .filter(|i| i.cmd == "ARG")
            .find_map(|i| {
                i.value[0]
                    .strip_prefix(&format!("{name}="))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("ARG {name} has no default"))
    };
    let image = &match from.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        Some(arg) => arg_default(arg),
        None => from.clone(),
    };
    let toolchain = image
        .strip_prefix("rust:")
        .and_then(|t| t.split('-').next())
        .unwrap_or_else(|| panic!("build stage is not a rust image: {image}"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let minimum = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    assert!(
        version(toolchain) >= version(minimum),
        "{image} is older than rust-version {minimum}"
    );

    // compose builds with the repository as context: no target/ (GBs) or deploy/.env
    // (the real passwords) in it.
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    let ignored: Vec<&str> = ignore
        .lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .collect();
    for path in ["target", ".tools", ".git", "deploy/.env"] {
        assert!(
            ignored.contains(&path),
            ".dockerignore does not leave out {path}"
        );
    }
}

#[test]
fn compose_file_is_accepted_by_docker_compose() {
    if skipped("deploy/docker-compose.yml not checked") {
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

/// The systemd units are ones systemd accepts (`systemd-analyze verify`: every key known,
/// every value parsed, the ExecStart binary there — pointed at the workspace's own
/// binaries instead of /usr/local/bin) and each runs a program the workspace builds.
#[test]
fn systemd_units_verify() {
    if skipped("deploy/systemd not verified") {
        return;
    }
    let bin_dir = tspi_test_support::workspace_bin("producer")
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for entry in std::fs::read_dir(workspace_root().join("deploy/systemd")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "service") {
            let text = std::fs::read_to_string(&path).unwrap();
            let exec = text
                .lines()
                .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/"))
                .unwrap_or_else(|| panic!("{}: no ExecStart in /usr/local/bin", path.display()));
            let program = exec.split_whitespace().next().unwrap();
            assert!(
                program_names().iter().any(|p| p == program),
                "{}: {program} is not a program of the workspace",
                path.display()
            );
            let local = dir.path().join(path.file_name().unwrap());
            let text = text.replace("/usr/local/bin/", &format!("{}/", bin_dir.display()));
            std::fs::write(&local, text).unwrap();
            units.push(local);
        }
    }
    assert!(units.len() >= 5, "a unit per daemon: {units:?}");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "systemd-analyze not found ({e}): run tests/install-deps.sh (Debian's systemd \
                 package), or set TSPI_SKIP_COMPOSE_CHECK=1"
            )
        });
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on unknown keys and unparsable values, but names them.
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
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
    let images = Command::new(root.join("deploy/images/build.sh"))
        .arg("--help")
        .output()
        .unwrap();
    help.push_str(&String::from_utf8_lossy(&images.stdout));
    // The observability profile's servers (tests/install-deps.sh installs them).
    for tool in ["prometheus", "prometheus-postgres-exporter"] {
        let out = Command::new(tool)
            .arg("--help")
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e} (run tests/install-deps.sh)"));
        help.push_str(&String::from_utf8_lossy(&out.stdout));
        help.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    // Other tools' flags the documents use, and the test command's own.
    let others = [
        "--release",    // cargo
        "--locked",     // cargo
        "--bench",      // cargo
        "--workspace",  // cargo
        "--bins",       // cargo build
        "--test",       // cargo test
        "--nocapture",  // the test harness
        "--build",      // docker-compose up
        "--volumes",    // docker-compose down
        "--variant",    // debootstrap
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
