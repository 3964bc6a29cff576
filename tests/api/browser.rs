//! Real-browser checks: Debian's chromium, driven by playwright-core
//! (tests/ui/*.mjs), against the real server. `tests/ui/install.sh` (run by
//! .ci/run) installs both. Missing outside CI: a SKIP line and a pass; with
//! `CI=true`, missing is a failure.
//!
//! Alone: `cargo test --test api browser::`.

use std::path::{Path, PathBuf};
use std::process::Command;

use poem::listener::{Acceptor as _, Listener as _, TcpListener};
use poem::web::Html;
use poem::{Response, Route, Server, get, handler};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, spawn_app_at_own_issuer, spawn_app_with};
use crate::tools;

const UI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui");

/// Runs `node tests/ui/<script> args…` and returns its `RESULT {json}`
/// line, or `None` (after a SKIP line) when the harness is missing outside
/// CI.
async fn run_script(script: &str, args: Vec<String>) -> Option<Value> {
    if let Err(missing) = tools::browser_harness() {
        tools::skip(&format!("browser::{script}"), &missing);
        return None;
    }
    let mut command = Command::new("node");
    command.arg(Path::new(UI).join(script)).args(args);
    let output = tools::output(command).await;
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

// --- the cookie transport, from a front-end on another origin ---------------

const INDEX_HTML: &str = include_str!("../ui/frontend/index.html");
const APP_JS: &str = include_str!("../ui/frontend/app.js");

#[handler]
fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

#[handler]
fn app_js() -> Response {
    Response::builder()
        .content_type("text/javascript; charset=utf-8")
        .body(APP_JS)
}

/// tests/ui/frontend/ served on a port of its own: another origin than
/// keyturn's (`http://127.0.0.1:<port>`), the same site. Stops when the
/// test's runtime ends.
async fn serve_front_end() -> String {
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .expect("a free port");
    let addr = *acceptor.local_addr()[0]
        .as_socket_addr()
        .expect("a TCP address");
    let site = Route::new().at("/", get(index)).at("/app.js", get(app_js));
    tokio::spawn(Server::new_with_acceptor(acceptor).run(site));
    format!("http://{addr}")
}

/// One cookie as playwright's `context.cookies()` reports it.
fn cookie<'a>(cookies: &'a Value, name: &str) -> &'a Value {
    cookies
        .as_array()
        .expect("a cookie list")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {cookies}"))
}

/// The attributes the browser stored, without the value and the expiry
/// (the expiry of `keyturn_access` is checked on its own).
fn attributes(cookie: &Value) -> Value {
    json!({
        "path": cookie["path"],
        "domain": cookie["domain"],
        "httpOnly": cookie["httpOnly"],
        "secure": cookie["secure"],
        "sameSite": cookie["sameSite"],
        "session": cookie["expires"] == -1,
    })
}

fn assert_session_cookies(cookies: &Value, when: &str) {
    let names: Vec<&str> = cookies
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["keyturn_access", "keyturn_csrf", "keyturn_refresh"],
        "{when}"
    );
    let expect = |path: &str, http_only: bool, session: bool| {
        json!({"path": path, "domain": "127.0.0.1", "httpOnly": http_only, "secure": false,
               "sameSite": "Strict", "session": session})
    };
    let access = cookie(cookies, "keyturn_access");
    assert_eq!(attributes(access), expect("/", true, false), "{when}");
    assert_eq!(
        attributes(cookie(cookies, "keyturn_refresh")),
        expect("/oauth/token", true, true),
        "{when}"
    );
    assert_eq!(
        attributes(cookie(cookies, "keyturn_csrf")),
        expect("/", false, true),
        "{when}"
    );
    // Max-Age=900, counted by the browser from the real clock.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let left = access["expires"].as_f64().unwrap() - now;
    assert!(
        (800.0..=901.0).contains(&left),
        "{when}: expires in {left} s"
    );
}

/// What the page can read: the CSRF value, never a token.
fn assert_page_reads_only_csrf(outcome: &Value, csrf: &str, when: &str) {
    let seen = outcome["document_cookie"].as_str().unwrap();
    assert!(
        !seen.contains("keyturn_access") && !seen.contains("keyturn_refresh"),
        "{when}: the page read a token cookie: {seen}"
    );
    assert!(
        seen.split("; ")
            .any(|c| c == format!("keyturn_csrf={csrf}")),
        "{when}: the page cannot read keyturn_csrf={csrf}: {seen}"
    );
}

/// The cookie transport in headless chromium: a page served from another
/// origin on 127.0.0.1 (same site, so the `SameSite=Strict` cookies travel;
/// another origin, so CORS applies) logs in by cookie, reads `/profile`,
/// refreshes with `X-CSRF-Token`, is refused a POST without it and accepted
/// with it (logout), is refused `/profile` afterwards, and never reads a
/// token from `document.cookie`. A page on an origin not listed in
/// `KEYTURN_CORS_ORIGINS` cannot read keyturn's answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_flow_from_another_origin() {
    if let Err(missing) = tools::browser_harness() {
        return tools::skip("browser::cookie_flow_from_another_origin", &missing);
    }
    let front_end = serve_front_end().await;
    let foreign = serve_front_end().await;
    let app = spawn_app_with(&[
        ("KEYTURN_COOKIES", "on"),
        ("KEYTURN_COOKIE_SECURE", "false"),
        ("KEYTURN_CORS_ORIGINS", &front_end),
    ])
    .await;
    app.create_user("alice", &[]).await;
    let args = vec![
        front_end,
        foreign,
        app.base.clone(),
        "alice".into(),
        PASSWORD.into(),
    ];
    let Some(result) = run_script("cookies.mjs", args).await else {
        return;
    };
    assert!(result.get("script_error").is_none(), "{result:#}");

    let login = &result["login"];
    assert_eq!(login["status"], 200, "{login:#}");
    assert_eq!(login["body"]["token_type"], "cookie");
    assert!(login["body"].get("access_token").is_none(), "{login:#}");
    let csrf = login["body"]["csrf_token"].as_str().unwrap();
    assert_page_reads_only_csrf(login, csrf, "after login");
    assert_session_cookies(&result["cookies_after_login"], "after login");

    let profile = &result["profile"];
    assert_eq!(profile["status"], 200, "{profile:#}");
    assert_eq!(profile["body"]["username"], "alice");

    let refresh = &result["refresh"];
    assert_eq!(refresh["status"], 200, "{refresh:#}");
    let new_csrf = refresh["body"]["csrf_token"].as_str().unwrap();
    assert_ne!(new_csrf, csrf, "a refresh issues a new CSRF value");
    assert_page_reads_only_csrf(refresh, new_csrf, "after refresh");
    assert_session_cookies(&result["cookies_after_refresh"], "after refresh");

    let foreign = &result["foreign_profile"];
    assert_eq!(foreign["status"], 0, "CORS lets the page read: {foreign:#}");
    assert!(
        foreign["error"].as_str().unwrap().contains("TypeError"),
        "{foreign:#}"
    );

    let forged = &result["forged"];
    assert_eq!(forged["status"], 403, "{forged:#}");
    assert_eq!(forged["body"]["error"], "csrf_failed");
    assert_eq!(result["profile_after_forged"]["status"], 200, "{result:#}");
    assert_eq!(result["logout"]["status"], 204, "{result:#}");
    assert_eq!(result["cookies_after_logout"], json!([]), "cleared");
    let after = &result["profile_after_logout"];
    assert_eq!(after["status"], 401, "{after:#}");
    assert_eq!(after["body"]["error"], "invalid_token");

    // For the log (`cargo test --test api browser:: -- --nocapture`).
    println!(
        "cookies as chromium stored them after the cookie login:\n{:#}",
        result["cookies_after_login"]
    );
}
