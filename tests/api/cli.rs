//! The real `keyturn` binary against the same store as a running server.

use keyturn::keys::KeyState;
use serde_json::Value;

use crate::helpers::{PASSWORD, spawn_app};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn cli_user_logs_in_to_the_running_server() {
    let app = spawn_app().await;
    let out = app.cli(
        &[
            "users",
            "add",
            "alice",
            "--role",
            "admin",
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("created user alice"));

    // The trailing newline is not part of the password; the token works at
    // once, though the server had not polled the store since the CLI wrote.
    let token = app.token("alice").await;
    let profile: Value = app
        .get("/profile", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(profile["roles"], serde_json::json!(["admin"]));
    assert_eq!(app.get("/admin/users", Some(&token)).await.status(), 200);

    let out = app.cli(&["users", "list"], None);
    assert!(out.status.success());
    let listing = text(&out.stdout);
    assert!(
        listing.contains("alice") && listing.contains("admin"),
        "{listing}"
    );
    assert!(!listing.contains("argon2"));

    // Another admin first: the last enabled admin cannot be demoted.
    app.create_user("root", &["admin"]).await;
    let out = app.cli(&["users", "set-roles", "alice", "--role", "ops"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = app.token("alice").await;
    let profile: Value = app
        .get("/profile", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(profile["roles"], serde_json::json!(["ops"]));

    // Disabling from the CLI is seen by the running server within seconds.
    app.clock.advance(1);
    let out = app.cli(&["users", "disable", "alice"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    app.assert_profile_becomes(&token, 401).await;
    assert_eq!(app.login("alice", PASSWORD).await.status(), 401);
}

#[tokio::test]
async fn cli_passwd_changes_the_password() {
    let app = spawn_app().await;
    app.create_user("alice", &[]).await;
    let out = app.cli(
        &["users", "passwd", "alice", "--password-stdin"],
        Some("a brand new password\r\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(app.login("alice", PASSWORD).await.status(), 401);
    assert_eq!(
        app.login("alice", "a brand new password").await.status(),
        200
    );
}

#[tokio::test]
async fn cli_exit_codes() {
    let app = spawn_app().await;
    app.create_user("alice", &[]).await;

    // 1: failure, one clear line.
    let out = app.cli(
        &["users", "add", "alice", "--password-stdin"],
        Some("another password\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");

    let out = app.cli(&["users", "disable", "nobody"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no such user"));

    // Not a terminal and no --password-stdin: a clear refusal.
    let out = app.cli(&["users", "add", "bob"], Some(""));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--password-stdin"));

    let out = app.cli(
        &["users", "add", "bob", "--password-stdin"],
        Some("short\n"),
    );
    assert_eq!(out.status.code(), Some(1));

    // Names and key ids may begin with `-` (a key id is base64url, so one
    // in 64 does): they are values, not flags. `keys revoke -SSnu…` failed
    // the README walk-through in CI as "unexpected argument '-S'".
    let out = app.cli(
        &["users", "add", "-dash", "--password-stdin"],
        Some("another password\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = app.cli(&["users", "show", "-dash"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for args in [
        &["keys", "show", "-SSnu5iEq"][..],
        &["keys", "revoke", "-SSnu5iEq"][..],
    ] {
        let out = app.cli(args, None);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("no key with kid") || stderr.contains("no such key"),
            "{stderr}"
        );
    }

    // 2: bad usage.
    for args in [
        &["users", "frobnicate"][..],
        &["users", "add"][..],
        &["--no-such-flag", "keys", "list"][..],
        &[][..],
    ] {
        let out = app.cli(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }

    // A bad setting stops with one line naming it.
    let out = app.cli(&["--access-token-ttl", "forever", "keys", "list"], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("KEYTURN_ACCESS_TOKEN_TTL"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn cli_keys_list_and_jwks() {
    let app = spawn_app().await;
    let out = app.cli(&["keys", "list"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    let served = app.jwks().await;
    let mut states = Vec::new();
    for key in served["keys"].as_array().unwrap() {
        let kid = key["kid"].as_str().unwrap();
        let line = listing.lines().find(|l| l.starts_with(kid));
        let line = line.unwrap_or_else(|| panic!("{kid} in {listing}"));
        let state: KeyState = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        states.push(state);
    }
    states.sort_by_key(|s| s.as_str());
    assert_eq!(states, [KeyState::Current, KeyState::Next], "{listing}");
    assert!(!listing.to_lowercase().contains("private"));

    let out = app.cli(&["keys", "jwks"], None);
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, served, "the CLI prints the served JWKS");
}

#[tokio::test]
async fn serve_refuses_a_bad_setting_with_one_line() {
    let app = spawn_app().await;
    let out = app.cli(&["--signing-alg", "HS256", "serve"], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("KEYTURN_SIGNING_ALG"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

// Multi-threaded: the CLI (a blocking child process) calls back into the
// server, which must keep serving on another worker meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_token_verify_uses_discovery_and_the_verifier() {
    // The issuer must be the server's real URL for discovery to match.
    let app = crate::helpers::spawn_app_at_own_issuer(&[]).await;
    let base = app.base.clone();
    let token = app.user_token("alice", &["admin"]).await;

    let out = app.cli(&["token", "verify", &token, "--issuer", &base], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let claims: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["username"], "alice");
    assert_eq!(claims["iss"], base.as_str());

    let out = app.cli(
        &[
            "token",
            "verify",
            &token,
            "--issuer",
            &base,
            "--audience",
            "billing",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("token rejected") && stderr.contains("audience"),
        "{stderr}"
    );

    let mut tampered = token.clone();
    tampered.push('A');
    let out = app.cli(&["token", "verify", &tampered, "--issuer", &base], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim_end().lines().count(), 1);
}

// ---- The operator's view: logs, tables, JSON, completions, settings, the
// master key. These run the real binary, `serve` included.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// A key no test store is sealed with.
const OTHER_MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The `keyturn` binary in `cwd` with only `env` (and PATH) set.
pub(crate) fn keyturn_command(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyturn"));
    command
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied());
    command
}

/// Runs `keyturn` in `cwd` with only `env` (and PATH) set, `stdin` fed.
pub(crate) fn keyturn_in(
    cwd: &Path,
    env: &[(&str, &str)],
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    use std::io::Write as _;
    let mut child = keyturn_command(cwd, env, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyturn runs");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    child.wait_with_output().expect("keyturn exits")
}

/// The settings of a store in `dir` (database and keys directory).
pub(crate) fn store_env(dir: &Path) -> Vec<(String, String)> {
    vec![
        (
            "KEYTURN_DATABASE_URL".into(),
            format!("sqlite://{}/data/keyturn.db", dir.display()),
        ),
        (
            "KEYTURN_KEYS_DIR".into(),
            dir.join("keys").display().to_string(),
        ),
        ("KEYTURN_BIND".into(), "127.0.0.1:0".into()),
    ]
}

pub(crate) fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// `keyturn serve` as a child process, stderr into a file.
pub(crate) struct Served {
    pub(crate) child: Child,
    pub(crate) base: String,
    /// What it printed on stdout up to the end of its start-up message.
    banner: Vec<String>,
    stderr: std::path::PathBuf,
}

pub(crate) fn serve(dir: &Path, env: &[(&str, &str)], log_name: &str) -> Served {
    let stderr = dir.join(log_name);
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyturn"))
        .arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).expect("log file"))
        .spawn()
        .expect("keyturn serve runs");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = Vec::new();
    let mut base = None;
    loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "serve printed {banner:?}; stderr: {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                )
            });
        if let Some(rest) = line.strip_prefix("keyturn listening on ") {
            base = rest.split_whitespace().next().map(str::to_owned);
        }
        let last = line.starts_with("Swagger UI:") || line.contains("Master key:");
        banner.push(line);
        if last {
            break;
        }
    }
    Served {
        child,
        base: base.expect("a listening line"),
        banner,
        stderr,
    }
}

impl Served {
    /// Until it answers a request: only then is its SIGTERM handler surely
    /// installed (the banner is printed just before).
    async fn wait_until_serving(&self) {
        let health = reqwest::get(format!("{}/health", self.base)).await.unwrap();
        assert_eq!(health.status(), 200);
    }

    /// SIGTERM, as an operator stops it; returns what it logged.
    fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "{exit:?}");
        std::fs::read_to_string(&self.stderr).unwrap()
    }
}

#[tokio::test]
async fn served_logs_have_no_colour_codes_and_json_lines_parse() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = store_env(dir.path());
    env.push(("KEYTURN_LOG_FORMAT".into(), "json".into()));
    env.push(("KEYTURN_ACCESS_LOG".into(), "on".into()));
    let server = serve(dir.path(), &pairs(&env), "json.log");
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let health = client
            .get(format!("{}/health", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
    }
    let log = server.stop();
    assert!(!log.contains("\x1b["), "{log}");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let requests = lines
        .iter()
        .filter(|l| l.to_string().contains("/health"))
        .count();
    assert_eq!(requests, 3, "one access line per request: {log}");

    // Text format, access log off (the default): no colour either (stderr is
    // a file), and no line per request.
    let env = store_env(dir.path());
    let server = serve(dir.path(), &pairs(&env), "text.log");
    client
        .get(format!("{}/health", server.base))
        .send()
        .await
        .unwrap();
    let log = server.stop();
    assert!(!log.contains("\x1b["), "{log}");
    assert!(log.contains("keyturn listening"), "{log}");
    assert!(!log.contains("/health"), "{log}");
}

#[tokio::test]
async fn the_first_start_says_where_to_go_and_the_second_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let env = store_env(dir.path());
    let first = serve(dir.path(), &pairs(&env), "first.log");
    let banner = first.banner.join("\n");
    first.wait_until_serving().await;
    first.stop();
    let master = dir.path().join("keys").join("master.key");
    for needle in [
        "First start",
        "/docs",
        "/.well-known/jwks.json",
        "keyturn users add admin --role admin",
        master.to_str().unwrap(),
    ] {
        assert!(banner.contains(needle), "{needle:?} in {banner}");
    }
    let second = serve(dir.path(), &pairs(&env), "second.log");
    let banner = second.banner.join("\n");
    second.wait_until_serving().await;
    second.stop();
    assert!(!banner.contains("First start"), "{banner}");
    assert!(!banner.contains("users add"), "{banner}");
}

/// The column where `header` starts in the header line, and the same
/// column holds a cell start in every row (a space before it).
fn assert_aligned(listing: &str, headers: &[&str]) {
    let mut lines = listing.lines();
    let head = lines.next().expect("a header");
    let rows: Vec<Vec<char>> = lines
        .filter(|l| !l.starts_with("next rotation"))
        .map(|l| l.chars().collect())
        .collect();
    assert!(!rows.is_empty(), "{listing}");
    for header in headers {
        let byte = head.find(header).unwrap_or_else(|| panic!("{header}"));
        let col = head[..byte].chars().count();
        for row in &rows {
            assert!(
                row[col - 1] == ' ' && row[col] != ' ',
                "{header} at column {col}:\n{listing}"
            );
        }
    }
}

#[tokio::test]
async fn lists_are_aligned_and_have_json() {
    let app = spawn_app().await;
    app.create_user("al", &["admin"]).await;
    app.create_user("a-much-longer-user-name-than-usual", &["ops", "billing"])
        .await;
    let out = app.cli(&["users", "list"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_aligned(&text(&out.stdout), &["ID", "STATUS", "CREATED", "ROLES"]);
    let out = app.cli(&["users", "list", "--output", "json"], None);
    let users: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"al"), "{users}");
    assert!(!users.to_string().contains("argon2"));

    for (id, scope) in [
        ("c", "a"),
        ("a-client-with-a-long-id", "read:everything write"),
    ] {
        let mut args = vec!["clients", "add", id];
        for s in scope.split(' ') {
            args.extend(["--scope", s]);
        }
        let out = app.cli(&args, None);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = app.cli(&["clients", "list"], None);
    assert_aligned(
        &text(&out.stdout),
        &["CREATED", "GRANTS", "AUDIENCE", "SCOPES"],
    );
    let out = app.cli(&["-o", "json", "clients", "list"], None);
    let clients: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(clients.as_array().unwrap().len(), 2, "{clients}");
    assert!(!clients.to_string().contains("secret"), "{clients}");

    // Keys: after a rotation the retired key shows when it is pruned, and
    // the next rotation is planned.
    let out = app.cli(&["keys", "rotate", "--force"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = app.cli(&["keys", "list"], None);
    let listing = text(&out.stdout);
    assert_aligned(
        &listing,
        &["ALG", "STATE", "PUBLISHED", "ACTIVATED", "PRUNE"],
    );
    let out = app.cli(&["keys", "list", "-o", "json"], None);
    let keys: Value = serde_json::from_slice(&out.stdout).unwrap();
    let retired: Vec<&Value> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["state"] == "retired")
        .collect();
    assert_eq!(retired.len(), 1, "{keys}");
    assert!(retired[0]["prune_at"].is_string(), "{keys}");
    assert!(keys["next_rotation_at"].is_string(), "{keys}");
    assert!(
        listing.contains(retired[0]["prune_at"].as_str().unwrap()),
        "the table shows the same prune time: {listing}"
    );
}

/// `show` commands print the list's row for one item, in both formats; a
/// missing item exits 1 with one line; JSON output of a change keeps stdout
/// parseable. Failed on the old `main` (no `show` commands; `clients add -o
/// json` printed text; `keys rotate -o json` mixed a status line into JSON).
#[tokio::test]
async fn show_commands_and_json_that_scripts_can_parse() {
    let app = spawn_app().await;
    app.create_user("al", &["admin", "ops"]).await;
    let out = app.cli(&["users", "show", "al", "-o", "json"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown[0]["username"], "al", "{shown}");
    assert_eq!(shown[0]["roles"], serde_json::json!(["admin", "ops"]));
    assert_eq!(shown.as_array().unwrap().len(), 1);
    let out = app.cli(&["users", "show", "al"], None);
    assert_aligned(&text(&out.stdout), &["ID", "STATUS", "CREATED", "ROLES"]);
    let out = app.cli(&["users", "show", "nobody"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim().lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );

    // The secret a script reads from `clients add -o json` works.
    let out = app.cli(
        &["clients", "add", "reports", "--scope", "r", "-o", "json"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["client_id"], "reports");
    let secret = created["client_secret"].as_str().unwrap();
    let response = app.client_credentials("reports", secret, None).await;
    assert_eq!(response.status(), 200);
    let out = app.cli(&["clients", "show", "reports", "-o", "json"], None);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown[0]["scopes"], serde_json::json!(["r"]), "{shown}");
    assert!(!shown.to_string().contains(secret));
    let out = app.cli(&["clients", "show", "nobody"], None);
    assert_eq!(out.status.code(), Some(1));

    let out = app.cli(&["keys", "rotate", "--force", "-o", "json"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let keys: Value = serde_json::from_slice(&out.stdout).expect("stdout is only JSON");
    assert!(text(&out.stderr).contains("rotated"));
    let current = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["state"] == "current")
        .unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = app.cli(&["keys", "show", &current, "-o", "json"], None);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["keys"].as_array().unwrap().len(), 1, "{shown}");
    assert_eq!(shown["keys"][0]["kid"], current.as_str());
    let out = app.cli(&["keys", "show", "no-such-kid"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no key with kid"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn completions_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, needle) in [
        ("bash", "_keyturn()"),
        ("zsh", "#compdef keyturn"),
        ("fish", "complete -c keyturn"),
    ] {
        let out = keyturn_in(dir.path(), &[], &["completions", shell], None);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.contains(needle), "{shell}: {script}");
        assert!(script.contains("rotate"), "{shell} completes subcommands");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn config_check_prints_values_and_sources_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keyturn.toml");
    std::fs::write(&file, "audience = \"from-file\"\n").unwrap();
    let env = [
        ("KEYTURN_MASTER_KEY", OTHER_MASTER_KEY),
        (
            "KEYTURN_DATABASE_URL",
            "postgres://keyturn:hunter2@db/keyturn",
        ),
    ];
    let config = file.to_str().unwrap();
    let out = keyturn_in(
        dir.path(),
        &env,
        &["--config", config, "--leeway", "5s", "config", "check"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let row = |env: &str| -> Vec<String> {
        let line = table.lines().find(|l| l.starts_with(env)).unwrap();
        line.split_whitespace().map(str::to_owned).collect()
    };
    assert_eq!(row("KEYTURN_LEEWAY"), ["KEYTURN_LEEWAY", "5s", "flag"]);
    assert_eq!(
        row("KEYTURN_AUDIENCE"),
        ["KEYTURN_AUDIENCE", "from-file", "keyturn.toml"]
    );
    assert_eq!(
        row("KEYTURN_MASTER_KEY"),
        ["KEYTURN_MASTER_KEY", "[redacted]", "environment"]
    );
    assert_eq!(
        row("KEYTURN_BIND"),
        ["KEYTURN_BIND", "127.0.0.1:8080", "default"]
    );
    assert_eq!(
        row("KEYTURN_DATABASE_URL")[1],
        "postgres://keyturn:[redacted]@db/keyturn"
    );
    assert!(!table.contains(OTHER_MASTER_KEY) && !table.contains("hunter2"));
    assert_aligned(&table, &["VALUE", "SOURCE"]);

    let out = keyturn_in(dir.path(), &env, &["config", "check", "-o", "json"], None);
    let settings: Value = serde_json::from_slice(&out.stdout).unwrap();
    let all = settings.as_array().unwrap();
    assert_eq!(all.len(), keyturn::config::SETTINGS.len());
    let leeway = all.iter().find(|s| s["env"] == "KEYTURN_LEEWAY").unwrap();
    assert_eq!(leeway["source"], "default");
    assert!(!settings.to_string().contains("hunter2"));

    // A bad value: exit 1, one line, and nothing was started or created.
    let out = keyturn_in(
        dir.path(),
        &[],
        &["--leeway", "soon", "config", "check"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("KEYTURN_LEEWAY"), "{stderr}");
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "only keyturn.toml: {entries:?}");
}

#[tokio::test]
async fn a_different_master_key_is_refused_and_writes_nothing() {
    let app = spawn_app().await;
    let wrong = [("KEYTURN_MASTER_KEY", OTHER_MASTER_KEY)];
    let mut env: Vec<(&str, &str)> = app
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.extend(wrong);
    let before = app.services.store.list_keys().await.unwrap().len();
    for (args, stdin) in [
        (
            &["users", "add", "mallory", "--password-stdin"][..],
            Some("a long password\n"),
        ),
        (&["keys", "rotate", "--force"][..], None),
        (&["keys", "list"][..], None),
        (&["serve"][..], None),
    ] {
        let out = keyturn_in(app.dir.path(), &env, args, stdin);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains("KEYTURN_MASTER_KEY is not the one this store is sealed with"),
            "{stderr}"
        );
    }
    assert_eq!(app.services.store.list_keys().await.unwrap().len(), before);
    assert!(app.services.accounts.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_command_without_a_master_key_creates_nothing() {
    let elsewhere = tempfile::tempdir().unwrap();
    let out = keyturn_in(elsewhere.path(), &[], &["keys", "rotate", "--force"], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("no master key") && stderr.contains("keyturn init"),
        "{stderr}"
    );
    let entries: Vec<_> = std::fs::read_dir(elsewhere.path()).unwrap().collect();
    assert!(entries.is_empty(), "nothing created: {entries:?}");

    // Nor does `serve` make a new key for a store that has data.
    let app = spawn_app().await;
    let mut env: Vec<(&str, &str)> = app
        .env
        .iter()
        .filter(|(k, _)| k != "KEYTURN_KEYS_DIR")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let other_keys = elsewhere.path().join("keys");
    env.push(("KEYTURN_KEYS_DIR", other_keys.to_str().unwrap()));
    let out = keyturn_in(elsewhere.path(), &env, &["serve"], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("refusing to make a new one"), "{stderr}");
    assert!(!other_keys.exists());
}

#[tokio::test]
async fn init_makes_the_master_key_of_an_empty_store_only() {
    let dir = tempfile::tempdir().unwrap();
    let env = store_env(dir.path());
    let out = keyturn_in(dir.path(), &pairs(&env), &["init"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let master = dir.path().join("keys").join("master.key");
    assert!(text(&out.stdout).contains(master.to_str().unwrap()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&master).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let key = std::fs::read(&master).unwrap();
    // Other commands now work, with that key.
    let out = keyturn_in(dir.path(), &pairs(&env), &["users", "list"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = keyturn_in(dir.path(), &pairs(&env), &["init"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("already initialised"));
    assert_eq!(std::fs::read(&master).unwrap(), key, "untouched");

    // A store in use (a server made its keys) is refused too.
    let app = spawn_app().await;
    let out = app.cli(&["init"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("already initialised"));
}
