//! Interoperability: a widely used third-party OAuth client (Python
//! authlib) does discovery and client_credentials against the running
//! server, and a third-party JWT library (PyJWT) verifies the token from the
//! JWKS (tests/interop/oauth_client.py).

use std::process::Command;

use crate::helpers::spawn_app_at_own_issuer;
use crate::tools;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/oauth_client.py");

async fn run_interop(signing_alg: &str) {
    let python = match tools::python() {
        Ok(python) => python,
        Err(missing) => return tools::skip(&format!("interop ({signing_alg})"), &missing),
    };
    let app = spawn_app_at_own_issuer(&[("KEYTURN_SIGNING_ALG", signing_alg)]).await;
    let secret = app.create_client("interop-client", &["reports:read"]).await;
    let mut command = Command::new(python);
    command.args([SCRIPT, &app.base, "interop-client", &secret]);
    let output = tools::output(command).await;
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
