//! Real-browser checks: Debian's chromium, driven by playwright-core
//! (tests/ui/*.mjs), against the real server. `tests/ui/install.sh` (run by
//! .ci/run) installs both. Missing outside CI: a SKIP line and a pass; with
//! `CI=true`, missing is a failure.
//!
//! Alone: `cargo test --test api browser::`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::helpers::spawn_app_at_own_issuer;

const UI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui");

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

fn playwright_core() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-node/node_modules/playwright-core")
}

/// What of the harness is missing, if anything.
fn missing() -> Option<String> {
    if !chromium().exists() {
        return Some(format!("no chromium at {}", chromium().display()));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("no node on PATH".into());
    }
    if !playwright_core().join("package.json").exists() {
        return Some(format!(
            "no playwright-core in {}",
            playwright_core().display()
        ));
    }
    None
}

/// Runs `node tests/ui/<script> args…` and returns its `RESULT {json}`
/// line, or `None` (after a SKIP line) when the harness is missing outside
/// CI.
async fn run_script(script: &str, args: Vec<String>) -> Option<Value> {
    if let Some(missing) = missing() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and the browser harness is missing: {missing} (tests/ui/install.sh installs it)"
        );
        eprintln!("SKIP browser::{script}: {missing}; run `bash tests/ui/install.sh` to enable");
        return None;
    }
    let path = Path::new(UI).join(script);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(path)
            .args(args)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("{script} printed no RESULT line:\n{stdout}\n{stderr}"));
    Some(serde_json::from_str(line).expect("RESULT is JSON"))
}

/// Where the screenshots go (under target/).
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Swagger UI with the page's own defaults: `/docs` loads, the example login body logs in, Authorize with the bearer token
/// works for `/profile`, and `/oauth/token` with ClientBasicAuth succeeds
/// without touching the form (no placeholder `string` sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_works_with_its_defaults() {
    let app = spawn_app_at_own_issuer(&[]).await;
    // The login example of the OpenAPI document is alice's.
    app.create_user("alice", &["admin"]).await;
    let secret = app.create_client("billing", &["invoices:read"]).await;
    let shots = screenshot_dir();
    let args = vec![
        app.base.clone(),
        "billing".into(),
        secret,
        shots.display().to_string(),
    ];
    let Some(result) = run_script("swagger.mjs", args).await else {
        return;
    };
    assert!(
        result["title"].as_str().unwrap().starts_with("keyturn"),
        "{result}"
    );
    // The page shows the tags in the document's order, which keyturn sets
    // (poem-openapi's own order is alphabetical): log in first.
    assert_eq!(
        result["tags"],
        serde_json::json!(["Auth", "OAuth", "Keys", "Admin", "Health"]),
        "{result}"
    );
    assert!(
        result["login_example"].as_str().unwrap().contains("alice"),
        "{result}"
    );
    assert_eq!(result["login_status"], 200, "{result}");
    assert_eq!(result["profile_status"], 200, "{result}");
    assert_eq!(result["profile"]["username"], "alice");
    assert_eq!(result["profile_authorization"], "Bearer");
    assert_eq!(result["oauth_status"], 200, "{result}");
    assert_eq!(result["oauth_response"]["token_type"], "Bearer");
    assert_eq!(result["oauth_response"]["scope"], "invoices:read");
    assert_eq!(result["oauth_sent"]["authorization"], "Basic");
    let sent = result["oauth_sent"]["body"].as_str().unwrap();
    assert!(sent.contains("grant_type=client_credentials"), "{sent}");
    assert!(!sent.contains("string"), "a placeholder was sent: {sent}");
    assert!(shots.join("swagger-oauth-token.png").exists());
}
