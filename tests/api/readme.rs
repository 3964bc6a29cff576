//! The README, run as written: its "Run it" command starts the real
//! binary, then every `sh` block of the walk-through runs in one bash
//! script against it (serve, users add, login, profile, admin/keys, JWKS,
//! the resource-server example, token verify, keys rotate/revoke, clients
//! add, client_credentials). A README edit that breaks a command fails here.
//!
//! Only three things are rewritten, each an exact string the README must
//! keep: `cargo run --release --` becomes the test's `keyturn` binary, the
//! example's `cargo run … --example resource_server --` becomes the example
//! binary `cargo test` built, and the fixed addresses (`127.0.0.1:8080`,
//! `localhost:3000`) become free ports. Every `curl` fails on an HTTP error
//! (`--fail-with-body`), so a 401 or 409 stops the script.
//!
//! Needs `curl` and `jq` (the README uses both): without them the test
//! prints SKIP, except in CI (`CI=true`), where it fails.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const README: &str = include_str!("../../README.md");
const RUN_COMMAND: &str = "cargo run --release -- serve";
const CLI: &str = "cargo run --release --";
const EXAMPLE: &str =
    "cargo run --no-default-features --features poem --example resource_server --";
const README_BASE: &str = "http://127.0.0.1:8080";
const README_EXAMPLE_ADDR: &str = "localhost:3000";

/// The `sh` blocks of the README between two headings.
fn sh_blocks(from_heading: &str, to_heading: &str) -> Vec<String> {
    let start = README
        .find(from_heading)
        .unwrap_or_else(|| panic!("README has no heading {from_heading:?}"));
    let end = README[start..]
        .find(to_heading)
        .map(|offset| start + offset)
        .unwrap_or_else(|| panic!("README has no heading {to_heading:?} after {from_heading:?}"));
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in README[start..end].lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed code block in the README");
    blocks
}

/// The keys of each `# {…}` sample-output comment of the walk-through
/// (values are shortened with `…`, so only the keys can be compared).
fn documented_key_sets(script: &str) -> Vec<BTreeSet<String>> {
    script
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("# {"))
        .map(|sample| {
            sample
                .split('"')
                .collect::<Vec<_>>()
                .windows(2)
                .filter(|part| part[1].starts_with(':'))
                .map(|part| part[0].to_owned())
                .collect()
        })
        .collect()
}

/// The top-level keys of every JSON object the script printed at the start
/// of a line (curl prints no newline after a body, so text may follow it).
fn printed_key_sets(stdout: &str) -> Vec<BTreeSet<String>> {
    stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .filter_map(|line| {
            serde_json::Deserializer::from_str(line)
                .into_iter::<serde_json::Value>()
                .next()?
                .ok()
        })
        .filter_map(|value| {
            value
                .as_object()
                .map(|object| object.keys().cloned().collect())
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// `target/debug/examples/resource_server`, which `cargo test` builds.
fn example_binary() -> PathBuf {
    let keyturn = PathBuf::from(env!("CARGO_BIN_EXE_keyturn"));
    keyturn
        .parent()
        .expect("target/debug")
        .join("examples")
        .join("resource_server")
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_readme_walk_through_runs_as_written() {
    let missing: Vec<&str> = ["curl", "jq", "bash"]
        .into_iter()
        .filter(|tool| !have(tool))
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have {missing:?} for the README walk-through (.ci/run installs them)"
        );
        eprintln!("SKIP the README walk-through: {missing:?} not installed");
        return;
    }
    let example = example_binary();
    assert!(
        example.exists(),
        "{} is missing: `cargo test` builds the examples",
        example.display()
    );

    let run = sh_blocks("## Run it", "## Test it");
    assert_eq!(
        run,
        vec![format!("{RUN_COMMAND}\n")],
        "the README's run command"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let example_addr = format!("127.0.0.1:{}", free_port());
    // The server and the CLI share the working directory, so both use the
    // defaults `data/keyturn.db` and `keys/master.key`, as in the README.
    // Short key timings let `keys rotate` (without --force) go through.
    let env = [
        ("KEYTURN_BIND", format!("127.0.0.1:{port}")),
        ("KEYTURN_ISSUER", base.clone()),
        ("KEYTURN_JWKS_MAX_AGE", "1s".to_owned()),
        ("KEYTURN_KEY_PREPUBLISH", "1s".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let server = Command::new(env!("CARGO_BIN_EXE_keyturn"))
        .arg("serve")
        .current_dir(dir.path())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyturn serve starts");
    let mut server = Server(server);
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..300 {
        if let Some(status) = server.0.try_wait().expect("server status") {
            panic!("keyturn serve exited with {status}");
        }
        if http
            .get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "keyturn serve did not become ready in 30 s");

    let walk_through = sh_blocks("## Walk-through with curl", "## Configuration").concat();
    let example_line = format!("{EXAMPLE} {README_BASE} &");
    assert!(
        walk_through.contains(&example_line),
        "the README starts the example with `{example_line}`"
    );
    let script = walk_through
        .replace(
            &example_line,
            &format!("\"$RESOURCE_SERVER\" {README_BASE} --bind {example_addr} &"),
        )
        .replace(CLI, "\"$KEYTURN\"")
        .replace(README_BASE, &base)
        .replace(README_EXAMPLE_ADDR, &example_addr);
    assert!(
        !script.contains("cargo "),
        "a cargo command the test does not know how to run:\n{script}"
    );
    let prelude = "set -euo pipefail\n\
        trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n\
        # Every request must succeed; the example server may still be starting.\n\
        curl() { command curl --show-error --fail-with-body --retry 30 --retry-connrefused --retry-delay 1 \"$@\"; }\n\
        set -x\n";
    let output = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        let script = format!("{prelude}{script}");
        let env = env.clone();
        let example = example.clone();
        move || {
            Command::new("bash")
                .arg("-c")
                .arg(script)
                .current_dir(dir)
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .env("KEYTURN", env!("CARGO_BIN_EXE_keyturn"))
                .env("RESOURCE_SERVER", example)
                .output()
                .expect("bash runs")
        }
    })
    .await
    .expect("script thread");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the README walk-through failed ({}):\n--- stdout\n{stdout}\n--- stderr (commands)\n{stderr}",
        output.status
    );

    // What the README says each step prints.
    let printed = printed_key_sets(&stdout);
    let documented = documented_key_sets(&script);
    assert!(
        documented.len() >= 3,
        "the walk-through shows sample outputs"
    );
    for keys in documented {
        assert!(
            printed.contains(&keys),
            "the README shows a sample output with the keys {keys:?}; no output has exactly \
             those keys: {printed:?}"
        );
    }
    for expected in [
        "\"username\":\"alice\"",
        "\"roles\":[\"admin\"]",
        "HTTP/1.1 200",
        "etag:",
        "created client billing",
        "\"scope\":\"invoices:read\"",
        "\"token_type\":\"Bearer\"",
    ] {
        assert!(
            stdout.to_lowercase().contains(&expected.to_lowercase()),
            "the walk-through's output lacks {expected}:\n{stdout}"
        );
    }
    // Shown with `--nocapture`: the commands (bash -x) and what they printed.
    println!("--- commands\n{stderr}\n--- output\n{stdout}");
    drop(server);
}

/// Docs and benches name no directory of one machine (a developer's home,
/// this workplace's checkout). Failed on the old `main` (`benches/README.md`
/// named `/work/target-bench`).
#[test]
fn docs_and_benches_name_no_machine_paths() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for dir in ["docs", "benches"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("the directory exists") {
            let path = entry.expect("a directory entry").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for (number, line) in text.lines().enumerate() {
            for machine_path in ["/work/", "/home/", "/root/", "/Users/"] {
                assert!(
                    !line.contains(machine_path),
                    "{}:{}: names the machine path {machine_path}: {line}",
                    path.display(),
                    number + 1
                );
            }
        }
    }
}
