//! `/oauth/revoke` (RFC 7009), `/oauth/introspect` (RFC 7662) and
//! `/logout`, for each state a token can be in, and the revocation list's
//! propagation between instances and its cleanup.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keyturn::store::ChangeKind;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_no_store, assert_oauth_error, segment, spawn_app, spawn_app_with,
};

async fn revoke(app: &TestApp, token: &str, client: (&str, &str)) -> reqwest::Response {
    app.post_form("/oauth/revoke", &[("token", token)], Some(client))
        .await
}

async fn assert_inactive(app: &TestApp, token: &str, client: (&str, &str), why: &str) {
    let info = app.introspect(token, client).await;
    assert_eq!(info, json!({"active": false}), "{why}");
}

#[tokio::test]
async fn introspection_of_every_token_state() {
    let app = spawn_app_with(&[("KEYTURN_SIGNING_ALG", "EdDSA")]).await;
    let secret = app.create_client("gateway", &["read"]).await;
    let me = ("gateway", secret.as_str());
    app.create_user("alice", &["reader"]).await;
    let user = app.services.accounts.get("alice").await.unwrap();
    let (access, refresh) = app.login_tokens("alice").await;

    // An active user access token: every RFC 7662 member.
    let response = app
        .post_form("/oauth/introspect", &[("token", &access)], Some(me))
        .await;
    assert_eq!(response.status(), 200);
    assert_no_store(&response);
    let info: Value = response.json().await.unwrap();
    let claims = segment(&access, 1);
    assert_eq!(info["active"], true);
    assert_eq!(info["token_type"], "Bearer");
    assert_eq!(info["token_use"], "access_token");
    assert_eq!(info["sub"], user.id.as_str());
    assert_eq!(info["username"], "alice");
    assert_eq!(info["client_id"], "first-party");
    assert_eq!(info["scope"], "");
    assert_eq!(info["roles"], json!(["reader"]));
    for claim in ["exp", "iat", "nbf", "iss", "aud", "jti"] {
        assert_eq!(info[claim], claims[claim], "{claim}");
    }

    // An active refresh token (client_secret_post this time).
    let response = app
        .post_form(
            "/oauth/introspect",
            &[
                ("token", refresh.as_str()),
                ("token_type_hint", "refresh_token"),
                ("client_id", "gateway"),
                ("client_secret", &secret),
            ],
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    let info: Value = response.json().await.unwrap();
    assert_eq!(info["active"], true);
    assert_eq!(info["token_use"], "refresh_token");
    assert_eq!(info["sub"], user.id.as_str());
    assert_eq!(info["username"], "alice");
    assert_eq!(info["client_id"], "first-party");
    assert!(info["exp"].as_i64().unwrap() > info["iat"].as_i64().unwrap());
    assert!(info.get("jti").is_none());

    // A client token.
    let client_token = app.client_token("gateway", &secret).await;
    let info = app.introspect(&client_token, me).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["sub"], "gateway");
    assert_eq!(info["client_id"], "gateway");
    assert_eq!(info["scope"], "read");
    assert!(info.get("username").is_none());

    // A spent refresh token.
    let (access2, _) = app.refreshed(&refresh).await;
    assert_inactive(&app, &refresh, me, "spent refresh token").await;

    // Garbage, empty-ish and oversized input.
    for garbage in [
        "garbage",
        "a.b.c",
        "....",
        "eyJhbGciOiJub25lIn0.e30.",
        &"x".repeat(9000),
    ] {
        assert_inactive(&app, garbage, me, "garbage").await;
    }

    // Badly signed: tamper with the signature.
    let mut parts: Vec<String> = access2.split('.').map(str::to_owned).collect();
    let mut signature = B64.decode(&parts[2]).unwrap();
    signature[0] ^= 1;
    parts[2] = B64.encode(signature);
    assert_inactive(&app, &parts.join("."), me, "bad signature").await;

    // Signed by a key keyturn does not know.
    let foreign = ring_ed25519_pkcs8();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("not-a-keyturn-key".into());
    header.typ = Some("at+jwt".into());
    let unknown_key = jsonwebtoken::encode(
        &header,
        &segment(&access2, 1),
        &EncodingKey::from_ed_der(&foreign),
    )
    .unwrap();
    assert_inactive(&app, &unknown_key, me, "unknown key").await;

    // Revoked (logout), then expired.
    let response = app.post("/logout", &access2).await;
    assert_eq!(response.status(), 204);
    assert_inactive(&app, &access2, me, "revoked").await;
    assert_eq!(app.introspect(&client_token, me).await["active"], true);
    app.clock.advance(900 + 31);
    assert_inactive(&app, &client_token, me, "expired").await;

    // Only registered clients may introspect.
    let response = app
        .post_form("/oauth/introspect", &[("token", &client_token)], None)
        .await;
    assert_oauth_error(response, 401, "invalid_client").await;
    let response = app
        .post_form(
            "/oauth/introspect",
            &[("token", &client_token)],
            Some(("gateway", "wrong")),
        )
        .await;
    assert_oauth_error(response, 401, "invalid_client").await;
    let response = app.post_form("/oauth/introspect", &[], Some(me)).await;
    assert_oauth_error(response, 400, "invalid_request").await;
}

/// A fresh Ed25519 PKCS#8 key that keyturn has never seen.
fn ring_ed25519_pkcs8() -> Vec<u8> {
    let rng = ring::rand::SystemRandom::new();
    ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .unwrap()
        .as_ref()
        .to_vec()
}

#[tokio::test]
async fn revocation_of_access_tokens_by_their_client() {
    let app = spawn_app().await;
    let mine = app.create_client("svc", &[]).await;
    let theirs = app.create_client("other", &[]).await;
    let me = ("svc", mine.as_str());
    let token = app.client_token("svc", &mine).await;
    let other_token = app.client_token("other", &theirs).await;

    // Another client's token: 200, no effect (RFC 7009 §2.1).
    let response = revoke(&app, &other_token, me).await;
    assert_eq!(response.status(), 200);
    assert_no_store(&response);
    assert_eq!(response.text().await.unwrap(), "");
    assert_eq!(app.get("/profile", Some(&other_token)).await.status(), 200);

    // Its own token: refused by keyturn's routes and by introspection.
    assert_eq!(app.get("/profile", Some(&token)).await.status(), 200);
    let response = app
        .post_form(
            "/oauth/revoke",
            &[
                ("token", token.as_str()),
                ("token_type_hint", "access_token"),
                ("client_id", "svc"),
                ("client_secret", &mine),
            ],
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.get("/profile", Some(&token)).await.status(), 401);
    assert_inactive(&app, &token, me, "revoked").await;
    // Revoking again, or with a wrong hint, is still 200.
    let response = app
        .post_form(
            "/oauth/revoke",
            &[
                ("token", token.as_str()),
                ("token_type_hint", "refresh_token"),
            ],
            Some(me),
        )
        .await;
    assert_eq!(response.status(), 200);

    // Unknown, garbage and unsupported-hint tokens: 200.
    for garbage in ["unknown-refresh-token", "a.b.c", "x"] {
        let response = revoke(&app, garbage, me).await;
        assert_eq!(response.status(), 200, "{garbage}");
    }
    let response = app
        .post_form(
            "/oauth/revoke",
            &[("token", "abc"), ("token_type_hint", "something_else")],
            Some(me),
        )
        .await;
    assert_eq!(response.status(), 200);

    // An expired token: 200.
    app.clock.advance(2000);
    let old = app.client_token("svc", &mine).await;
    app.clock.advance(2000);
    assert_eq!(revoke(&app, &old, me).await.status(), 200);

    // Client authentication is required; the token parameter too.
    let response = app
        .post_form("/oauth/revoke", &[("token", &other_token)], None)
        .await;
    assert_oauth_error(response, 401, "invalid_client").await;
    let response = app
        .post_form(
            "/oauth/revoke",
            &[("token", &other_token)],
            Some(("svc", "wrong")),
        )
        .await;
    assert_oauth_error(response, 401, "invalid_client").await;
    let response = app.post_form("/oauth/revoke", &[], Some(me)).await;
    assert_oauth_error(response, 400, "invalid_request").await;
}

#[tokio::test]
async fn registered_clients_cannot_revoke_first_party_tokens() {
    let app = spawn_app().await;
    let secret = app.create_client("svc", &[]).await;
    app.create_user("alice", &[]).await;
    let (access, refresh) = app.login_tokens("alice").await;
    for token in [&access, &refresh] {
        let response = revoke(&app, token, ("svc", &secret)).await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(app.get("/profile", Some(&access)).await.status(), 200);
    app.refreshed(&refresh).await;
}

#[tokio::test]
async fn logout_revokes_the_token_and_its_refresh_family() {
    let app = spawn_app().await;
    app.create_user("alice", &[]).await;
    let (a1, r1) = app.login_tokens("alice").await;
    let (a2, r2) = app.refreshed(&r1).await;
    let (other_access, other_refresh) = app.login_tokens("alice").await;

    let response = app.post("/logout", &a2).await;
    assert_eq!(response.status(), 204);
    for token in [&a1, &a2] {
        assert_eq!(app.get("/profile", Some(token)).await.status(), 401);
    }
    let response = app.refresh(&r2).await;
    assert_oauth_error(response, 400, "invalid_grant").await;
    // The user's other session is untouched.
    assert_eq!(app.get("/profile", Some(&other_access)).await.status(), 200);
    app.refreshed(&other_refresh).await;

    // Logging out twice, or without a token: 401.
    for token in [Some(a2.as_str()), None] {
        let mut request = app.client.post(app.url("/logout"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
    }

    // A client token can log out too (only its jti).
    let secret = app.create_client("svc", &[]).await;
    let token = app.client_token("svc", &secret).await;
    let response = app.post("/logout", &token).await;
    assert_eq!(response.status(), 204);
    assert_eq!(app.get("/profile", Some(&token)).await.status(), 401);
}

#[tokio::test]
async fn another_instances_revocations_are_seen_within_seconds() {
    let app = spawn_app().await;
    app.create_user("alice", &[]).await;
    app.create_user("root", &["admin"]).await;
    // A second instance on the same database.
    let other =
        keyturn::Application::build_with_clock(app.settings.clone(), Arc::new(app.clock.clone()))
            .await
            .unwrap();
    let other_base = format!("http://{}", other.local_addr());
    tokio::spawn(other.run_until_stopped());

    let (access, refresh) = app.login_tokens("alice").await;
    let secret = app.create_client("svc", &[]).await;
    let client_token = app.client_token("svc", &secret).await;
    assert_eq!(app.get("/profile", Some(&access)).await.status(), 200);

    // Log out and revoke on the other instance...
    let response = app
        .client
        .post(format!("{other_base}/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = app
        .client
        .post(format!("{other_base}/oauth/revoke"))
        .basic_auth("svc", Some(&secret))
        .form(&[("token", &client_token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // ...and this one refuses both within a few seconds, without a restart.
    for token in [&access, &client_token] {
        app.assert_profile_becomes(token, 401).await;
    }
    assert_oauth_error(app.refresh(&refresh).await, 400, "invalid_grant").await;

    // A client deleted on the other instance: its tokens die here too.
    let fresh = app.client_token("svc", &secret).await;
    let (admin_access, _) = app.login_tokens("root").await;
    let response = app
        .client
        .delete(format!("{other_base}/admin/clients/svc"))
        .bearer_auth(&admin_access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    app.assert_profile_becomes(&fresh, 401).await;
}

#[tokio::test]
async fn revocations_are_kept_only_until_the_token_expires() {
    let app = spawn_app_with(&[("KEYTURN_ACCESS_TOKEN_TTL", "60s")]).await;
    let secret = app.create_client("svc", &[]).await;
    let token = app.client_token("svc", &secret).await;
    let exp = segment(&token, 1)["exp"].as_i64().unwrap();
    assert_eq!(revoke(&app, &token, ("svc", &secret)).await.status(), 200);
    let store = &app.services.store;
    let listed = || async {
        store
            .status_changes(ChangeKind::Jti, 0, i64::MIN)
            .await
            .unwrap()
            .entries
    };
    let entries = listed().await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].at, exp);
    assert_eq!(entries[0].until, exp + 30, "kept through the 30 s leeway");

    // Still listed while the token could pass the leeway...
    assert_eq!(store.prune_status_changes(exp + 29).await.unwrap(), 0);
    // ...and removed once it is refused as expired anyway.
    app.clock.advance(60 + 31);
    assert_eq!(app.get("/profile", Some(&token)).await.status(), 401);
    assert_eq!(store.prune_status_changes(exp + 30).await.unwrap(), 1);
    assert!(listed().await.is_empty());
}
