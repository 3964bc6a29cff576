//! Interoperability: a widely used third-party OAuth client (Python
//! authlib) does discovery and client_credentials against the running
//! server, and a third-party JWT library (PyJWT) verifies the token from the
//! JWKS (tests/interop/oauth_client.py).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::helpers::spawn_app_at_own_issuer;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/oauth_client.py");
const MAKE_VENV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/make_venv.py");
const REQUIREMENTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/requirements.txt"
);

fn venv_python(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

fn has_libraries(venv: &Path) -> bool {
    Command::new(venv_python(venv))
        .args(["-c", "import authlib, jwt, requests"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The Python of the interop test's own virtual environment, under
/// `target/` (never the system Python: PEP 668). Made once per version of
/// requirements.txt by tests/interop/make_venv.py and reused; test
/// processes that race to make it each build aside and the first rename
/// wins. Fails (never skips) when it cannot be made.
fn interop_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let requirements = std::fs::read(REQUIREMENTS).expect("requirements.txt");
        // FNV-1a: a new requirements file gets a new environment.
        let hash = requirements.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("interop-venv-{hash:016x}"));
        if !has_libraries(&venv) {
            let building = venv.with_extension(format!("building-{}", std::process::id()));
            let made = Command::new("python3")
                .args([MAKE_VENV, building.to_str().unwrap(), REQUIREMENTS])
                .output()
                .unwrap_or_else(|err| panic!("python3 is needed for the interop test: {err}"));
            assert!(
                made.status.success(),
                "could not make the interop test's virtual environment:\n{}",
                String::from_utf8_lossy(&made.stderr)
            );
            if std::fs::rename(&building, &venv).is_err() {
                // Another test process finished first; use its environment.
                let _ = std::fs::remove_dir_all(&building);
            }
            assert!(
                has_libraries(&venv),
                "{} lacks authlib/PyJWT",
                venv.display()
            );
        }
        venv_python(&venv)
    })
}

async fn run_interop(signing_alg: &str) {
    let python = interop_python();
    let app = spawn_app_at_own_issuer(&[("KEYTURN_SIGNING_ALG", signing_alg)]).await;
    let secret = app.create_client("interop-client", &["reports:read"]).await;
    let base = app.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
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
