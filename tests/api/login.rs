use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{ISSUER, PASSWORD, error_code, segment, spawn_app};

#[tokio::test]
async fn login_returns_tokens_per_spec() {
    let app = spawn_app().await;
    app.create_user("alice", &["admin", "reports"]).await;
    let response = app.login("alice", PASSWORD).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let refresh = body["refresh_token"].as_str().unwrap();
    assert_eq!(refresh.len(), 43, "256 bits, base64url without padding");

    let token = body["access_token"].as_str().unwrap();
    let header = segment(token, 0);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "RS256");
    let jwks = app.jwks().await;
    let current_kid = jwks["keys"][0]["kid"].as_str().unwrap();
    assert_eq!(header["kid"], current_kid);

    let claims = segment(token, 1);
    let user = app.services.accounts.get("alice").await.unwrap();
    assert_eq!(claims["sub"], user.id.as_str(), "sub is the stable id");
    assert_ne!(claims["sub"], "alice");
    assert_eq!(claims["username"], "alice");
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], "keyturn");
    assert_eq!(claims["client_id"], "first-party");
    assert_eq!(claims["scope"], "");
    assert_eq!(claims["roles"], json!(["admin", "reports"]));
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(claims["nbf"].as_i64().unwrap(), iat);
    assert_eq!(claims["exp"].as_i64().unwrap(), iat + 900);
    assert!(claims["jti"].as_str().unwrap().len() >= 32);
    let text = claims.to_string();
    assert!(!text.contains(PASSWORD) && !text.contains("argon2"));

    // A second login gets a different jti and refresh token.
    let again: Value = app.login("alice", PASSWORD).await.json().await.unwrap();
    assert_ne!(
        segment(again["access_token"].as_str().unwrap(), 1)["jti"],
        claims["jti"]
    );
    assert_ne!(again["refresh_token"], body["refresh_token"]);
}

#[tokio::test]
async fn refresh_tokens_are_stored_hashed() {
    let app = spawn_app().await;
    app.create_user("alice", &[]).await;
    let body: Value = app.login("alice", PASSWORD).await.json().await.unwrap();
    let refresh = body["refresh_token"].as_str().unwrap();
    let user = app.services.accounts.get("alice").await.unwrap();
    let live = app
        .services
        .store
        .count_live_refresh_tokens(&user.id, app.clock_now())
        .await
        .unwrap();
    assert_eq!(live, 1);
    let bytes = app.database_bytes().await;
    assert!(
        !bytes
            .windows(refresh.len())
            .any(|w| w == refresh.as_bytes()),
        "the refresh token itself is not in the database"
    );
    let hash = keyturn::token::hash_refresh_token(refresh);
    assert!(bytes.windows(hash.len()).any(|w| w == hash.as_bytes()));
}

#[tokio::test]
async fn failed_logins_look_alike() {
    let app = spawn_app().await;
    app.create_user("alice", &[]).await;
    app.create_user("dora", &[]).await;
    app.services
        .accounts
        .update(
            "dora",
            keyturn::accounts::UserUpdate {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut bodies = Vec::new();
    for (user, password) in [
        ("nobody", PASSWORD),
        ("alice", "wrong password"),
        ("dora", PASSWORD),
    ] {
        let response = app.login(user, password).await;
        assert_eq!(response.status(), 401, "{user}");
        assert!(response.headers().get("www-authenticate").is_none());
        bodies.push(response.text().await.unwrap());
    }
    assert!(bodies.iter().all(|b| b == &bodies[0]), "{bodies:?}");
    let body: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn unknown_users_cost_a_password_hash_too() {
    let app = spawn_app().await;
    app.create_user("alice", &[]).await;
    // Fastest of several tries, to stay meaningful on a noisy machine: with
    // no dummy hash an unknown user would answer ~100x faster.
    async fn fastest(app: &crate::helpers::TestApp, user: &str) -> Duration {
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            assert_eq!(app.login(user, "wrong password").await.status(), 401);
            best = best.min(start.elapsed());
        }
        best
    }
    let wrong_password = fastest(&app, "alice").await;
    let unknown_user = fastest(&app, "nobody").await;
    assert!(
        unknown_user * 4 > wrong_password,
        "unknown {unknown_user:?} vs wrong password {wrong_password:?}"
    );
}

#[tokio::test]
async fn login_burst_does_not_stall_jwks_or_profile() {
    let app = spawn_app().await;
    let token = app.user_token("alice", &[]).await;
    // Distinct names, so the per-username throttle stays out of the way.
    let burst: Vec<_> = (0..24)
        .map(|n| {
            let client = app.client.clone();
            let url = app.url("/login");
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&json!({"username": format!("user{n}"), "password": "wrong password"}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // While the hashes queue on the bounded pool, reads keep flowing.
    for _ in 0..10 {
        assert_eq!(app.get("/.well-known/jwks.json", None).await.status(), 200);
        assert_eq!(app.get("/profile", Some(&token)).await.status(), 200);
    }
    let still_running = burst.iter().filter(|h| !h.is_finished()).count();
    assert!(
        still_running > 0,
        "the reads finished while logins were still queued"
    );
    for handle in burst {
        assert_eq!(handle.await.unwrap().unwrap(), 401);
    }
}

#[tokio::test]
async fn login_rejects_bad_bodies() {
    let app = spawn_app().await;
    let cases: Vec<(&str, &str, u16, &str)> = vec![
        ("application/json", "{", 400, "invalid_request"),
        (
            "application/json",
            "{\"username\":\"a\"}",
            400,
            "invalid_request",
        ),
        ("application/json", "[]", 400, "invalid_request"),
        (
            "application/json",
            "{\"username\":{},\"password\":[]}",
            400,
            "invalid_request",
        ),
        (
            "text/plain",
            "username=a&password=b",
            415,
            "unsupported_media_type",
        ),
    ];
    for (content_type, body, status, expected_code) in cases {
        let response = app
            .client
            .post(app.url("/login"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{content_type} {body}");
        assert_eq!(error_code(response).await, expected_code, "{body}");
    }
    // A password far beyond the limit is refused like any wrong password.
    let response = app.login("alice", &"x".repeat(60_000)).await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn repeated_failures_are_throttled() {
    let app = spawn_app().await;
    app.create_user("alice", &[]).await;
    for _ in 0..5 {
        assert_eq!(app.login("alice", "wrong password").await.status(), 401);
        app.clock.advance(10);
    }
    // Even the right password waits: the name is locked, not the guess.
    let response = app.login("Alice", PASSWORD).await;
    assert_eq!(response.status(), 429);
    // The first failure leaves the 5-minute window 250 s from now.
    assert_eq!(response.headers()["retry-after"], "250");
    assert_eq!(error_code(response).await, "too_many_requests");
    // Unknown names are throttled alike (nothing to learn about accounts).
    for _ in 0..5 {
        app.login("nobody", "wrong password").await;
    }
    assert_eq!(app.login("nobody", "wrong password").await.status(), 429);
    // Other users are not affected.
    app.create_user("bob", &[]).await;
    assert_eq!(app.login("bob", PASSWORD).await.status(), 200);

    app.clock.advance(250);
    let response = app.login("alice", PASSWORD).await;
    assert_eq!(response.status(), 200, "the window has slid");
    // A success clears the name's failures, and each failure is counted.
    let failures_before = app.metric("keyturn_login_failures_total").await;
    for _ in 0..4 {
        app.login("alice", "wrong password").await;
    }
    assert_eq!(app.login("alice", PASSWORD).await.status(), 200);
    assert_eq!(
        app.metric("keyturn_login_failures_total").await,
        failures_before + 4
    );
}

#[tokio::test]
async fn a_user_created_elsewhere_gets_working_tokens_at_once() {
    let app = spawn_app().await;
    let other = app.restart_with(&[]).await;
    // Created through another instance: this one's view does not know the
    // user until its next poll, yet the token must work immediately.
    for n in 0..3 {
        let name = format!("remote{n}");
        other.create_user(&name, &[]).await;
        let token = app.token(&name).await;
        assert_eq!(
            app.get("/profile", Some(&token)).await.status(),
            200,
            "{name}"
        );
    }
}
