//! Interoperability: a widely used third-party OAuth client (Python
//! authlib) does discovery and client_credentials against the running
//! server, and a third-party JWT library (PyJWT) verifies the token from the
//! JWKS (tests/interop/oauth_client.py).

use std::process::Command;

use crate::helpers::spawn_app_at_own_issuer;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/oauth_client.py");
const INSTALL: &str = "run `python3 -m pip install -r tests/interop/requirements.txt`";

/// Fails (never skips) when the Python side is missing.
fn require_python_libraries() {
    let probe = Command::new("python3")
        .args(["-c", "import authlib, jwt, requests"])
        .output()
        .unwrap_or_else(|err| {
            panic!("python3 is needed for the interop test ({err}); then {INSTALL}")
        });
    assert!(
        probe.status.success(),
        "the interop test needs authlib, PyJWT and requests: {INSTALL}\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

async fn run_interop(signing_alg: &str) {
    require_python_libraries();
    let app = spawn_app_at_own_issuer(&[("KEYTURN_SIGNING_ALG", signing_alg)]).await;
    let secret = app.create_client("interop-client", &["reports:read"]).await;
    let base = app.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([SCRIPT, &base, "interop-client", &secret])
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{signing_alg}: interop script failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("interop: all checks passed"), "{stdout}");
    assert!(
        stdout.contains(&format!("PyJWT verified {signing_alg}")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authlib_and_pyjwt_rs256() {
    run_interop("RS256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authlib_and_pyjwt_eddsa() {
    run_interop("EdDSA").await;
}
