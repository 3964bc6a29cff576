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
