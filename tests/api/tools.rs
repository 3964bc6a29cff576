//! The outside programs some tests drive, found (or made) once: the
//! browser harness (Debian's chromium, node, playwright-core; see
//! tests/ui/install.sh) and the tests' own Python virtual environment
//! (authlib, PyJWT, Flask; made under `target/` by
//! tests/interop/make_venv.py).
//!
//! One rule for all of them: when one is missing, a test calls [`skip`],
//! which prints a SKIP line and lets it pass, except with `CI=true` (set by
//! .ci/run), where a missing tool is a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const MAKE_VENV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/make_venv.py");
/// Everything the virtual environment holds: the interop clients, and the
/// Flask example's own pinned requirements (so the test runs the example
/// with exactly what its README tells users to install).
const REQUIREMENTS: [&str; 2] = [
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/requirements.txt"
    ),
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/flask_resource_server/requirements.txt"
    ),
];
/// What a usable environment imports.
const MODULES: &str = "import authlib, jwt, requests, flask";

/// Ends a test whose tool is missing: a SKIP line outside CI, a failure in
/// CI. The caller returns right after.
pub fn skip(test: &str, missing: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and {test} cannot run: {missing}"
    );
    eprintln!("SKIP {test}: {missing}");
}

/// Runs a command to its end off the async reactor.
pub async fn output(mut command: Command) -> Output {
    let program = command.get_program().to_string_lossy().into_owned();
    tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the blocking task runs")
        .unwrap_or_else(|err| panic!("{program} runs: {err}"))
}

// --- the browser harness -----------------------------------------------------

/// Debian's chromium (or `$CHROMIUM`).
pub fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

fn playwright_core() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-node/node_modules/playwright-core")
}

/// `Err(what is missing)` unless chromium, node and playwright-core are
/// all there.
pub fn browser_harness() -> Result<(), String> {
    let hint = "run `bash tests/ui/install.sh`";
    if !chromium().exists() {
        return Err(format!("no chromium at {}; {hint}", chromium().display()));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Err(format!("no node on PATH; {hint}"));
    }
    if !playwright_core().join("package.json").exists() {
        let dir = playwright_core();
        return Err(format!("no playwright-core in {}; {hint}", dir.display()));
    }
    Ok(())
}

// --- the Python virtual environment ------------------------------------------

fn venv_python(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

fn has_modules(venv: &Path) -> bool {
    Command::new(venv_python(venv))
        .args(["-c", MODULES])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The Python of the tests' own virtual environment, under `target/`
/// (never the system Python: PEP 668), or why it cannot be had (no
/// python3, no network for pip). Made once per version of the
/// requirements files and reused; test processes that race to make it each
/// build aside and the first rename wins.
pub fn python() -> Result<&'static Path, String> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(make_venv)
        .as_deref()
        .map_err(Clone::clone)
}

fn make_venv() -> Result<PathBuf, String> {
    // FNV-1a over every requirements file: new requirements, new venv.
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for file in REQUIREMENTS {
        let text = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
        for byte in text.iter().chain(b"\0") {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("python-venv-{hash:016x}"));
    if has_modules(&venv) {
        return Ok(venv_python(&venv));
    }
    let building = venv.with_extension(format!("building-{}", std::process::id()));
    let made = Command::new("python3")
        .arg(MAKE_VENV)
        .arg(&building)
        .args(REQUIREMENTS)
        .output()
        .map_err(|err| format!("python3 is needed to make the test venv: {err}"))?;
    if !made.status.success() {
        let _ = std::fs::remove_dir_all(&building);
        return Err(format!(
            "could not make the test venv (pip needs PyPI):\n{}",
            String::from_utf8_lossy(&made.stderr)
        ));
    }
    if std::fs::rename(&building, &venv).is_err() {
        // Another test process finished first; use its environment.
        let _ = std::fs::remove_dir_all(&building);
    }
    if has_modules(&venv) {
        Ok(venv_python(&venv))
    } else {
        Err(format!("{} cannot `{MODULES}`", venv.display()))
    }
}
