//! Every kind of token the server's own routes must refuse: 401 with
//! `WWW-Authenticate: Bearer error="invalid_token"`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{ISSUER, TestApp, segment, spawn_app, spawn_app_with};

async fn assert_refused(app: &TestApp, token: &str, why: &str) {
    let response = app.get("/profile", Some(token)).await;
    assert_eq!(response.status(), 401, "{why}");
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\"",
        "{why}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token", "{why}");
}

fn claims_for(app_user_id: &str, now: i64) -> Value {
    json!({
        "iss": ISSUER, "sub": app_user_id, "aud": "keyturn",
        "exp": now + 600, "iat": now, "nbf": now,
        "jti": "forged", "client_id": "first-party", "scope": "",
        "roles": ["admin"], "username": "alice"
    })
}

/// Signs `claims` under `header` with the server's own current EdDSA key:
/// validly signed tokens that are wrong in exactly one way.
async fn forge(app: &TestApp, header: Header, claims: &Value) -> String {
    let (_, pkcs8) = app.current_private_key().await;
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&pkcs8)).unwrap()
}

fn at_jwt_header(kid: &str) -> Header {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    header.typ = Some("at+jwt".into());
    header
}

fn unsigned(header: Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string()),
        B64.encode(signature)
    )
}

#[tokio::test]
async fn profile_with_a_valid_token() {
    let app = spawn_app().await;
    let token = app.user_token("alice", &["reader"]).await;
    let response = app.get("/profile", Some(&token)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let user = app.services.accounts.get("alice").await.unwrap();
    assert_eq!(body["sub"], user.id.as_str());
    assert_eq!(body["username"], "alice");
    assert_eq!(body["roles"], json!(["reader"]));
    assert_eq!(body["scope"], "");
}

#[tokio::test]
async fn missing_or_malformed_credentials() {
    let app = spawn_app().await;
    let response = app.get("/profile", None).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    for value in [
        "Bearer",
        "Bearer not.a.jwt",
        "Bearer a.b",
        "Basic YWxpY2U6c2VjcmV0",
        "Bearer ....",
        "Bearer eyJhbGciOiJub25lIn0",
    ] {
        let response = app
            .client
            .get(app.url("/profile"))
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{value}");
    }
    let huge = format!("Bearer {}", "a".repeat(9000));
    let response = app
        .client
        .get(app.url("/profile"))
        .header("authorization", huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn forged_and_broken_tokens_are_refused() {
    let app = spawn_app_with(&[("KEYTURN_SIGNING_ALG", "EdDSA")]).await;
    let good = app.user_token("alice", &["admin"]).await;
    let user_id = app.services.accounts.get("alice").await.unwrap().id;
    let kid = segment(&good, 0)["kid"].as_str().unwrap().to_owned();
    let now = app.clock_now();
    let claims = claims_for(&user_id, now);

    // The forging harness itself is sound: a correct forgery is accepted.
    let control = forge(&app, at_jwt_header(&kid), &claims).await;
    assert_eq!(app.get("/profile", Some(&control)).await.status(), 200);

    // alg none, with and without a signature.
    let none = unsigned(json!({"alg":"none","kid":kid,"typ":"at+jwt"}), &claims, b"");
    assert_refused(&app, &none, "alg none").await;
    let none = format!("{}.", &none[..none.len() - 1]);
    assert_refused(&app, &none, "alg none, empty signature").await;

    // HS256 keyed with the public key (the classic confusion attack).
    let jwks = app.jwks().await;
    let public_x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    for secret in [public_x.as_bytes().to_vec(), B64.decode(&public_x).unwrap()] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        header.typ = Some("at+jwt".into());
        let hs =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret)).unwrap();
        assert_refused(&app, &hs, "HS256 with the public key").await;
    }

    // Unknown kid (and kid injection strings).
    for bad_kid in [
        "unknown",
        "../../etc/passwd",
        "' OR 1=1 --",
        &"k".repeat(5000),
    ] {
        let forged = forge(&app, at_jwt_header(bad_kid), &claims).await;
        assert_refused(&app, &forged, "unknown kid").await;
    }
    let mut no_kid = at_jwt_header(&kid);
    no_kid.kid = None;
    assert_refused(&app, &forge(&app, no_kid, &claims).await, "no kid").await;

    // Tampered payload: roles changed after signing.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut payload = segment(&good, 1);
    payload["roles"] = json!(["admin", "superuser"]);
    parts[1] = B64.encode(payload.to_string());
    assert_refused(&app, &parts.join("."), "tampered payload").await;

    // Tampered signature.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut signature = B64.decode(&parts[2]).unwrap();
    signature[0] ^= 1;
    parts[2] = B64.encode(signature);
    assert_refused(&app, &parts.join("."), "tampered signature").await;

    // Wrong type: a plain JWT, or no typ at all.
    let mut header = at_jwt_header(&kid);
    header.typ = Some("JWT".into());
    assert_refused(&app, &forge(&app, header, &claims).await, "typ JWT").await;
    let mut header = at_jwt_header(&kid);
    header.typ = None;
    assert_refused(&app, &forge(&app, header, &claims).await, "no typ").await;

    // Not yet valid, beyond the 30 s leeway.
    let mut future = claims.clone();
    future["nbf"] = json!(now + 120);
    assert_refused(
        &app,
        &forge(&app, at_jwt_header(&kid), &future).await,
        "nbf",
    )
    .await;
    let mut future = claims.clone();
    future["iat"] = json!(now + 120);
    assert_refused(
        &app,
        &forge(&app, at_jwt_header(&kid), &future).await,
        "iat",
    )
    .await;

    // Wrong issuer and audience.
    let mut other = claims.clone();
    other["iss"] = json!("https://evil.example");
    assert_refused(&app, &forge(&app, at_jwt_header(&kid), &other).await, "iss").await;
    let mut other = claims.clone();
    other["aud"] = json!("another-api");
    assert_refused(&app, &forge(&app, at_jwt_header(&kid), &other).await, "aud").await;

    // Missing required claims.
    let mut missing = claims.clone();
    missing.as_object_mut().unwrap().remove("exp");
    assert_refused(
        &app,
        &forge(&app, at_jwt_header(&kid), &missing).await,
        "no exp",
    )
    .await;

    // A deleted user's tokens. (A subject the server never knew is not
    // refused for that: only the signing key can mint it, and a user made a
    // moment ago on another instance looks just the same. Deletion writes
    // a cutoff instead.)
    app.create_user("bob", &[]).await;
    let bob_id = app.services.accounts.get("bob").await.unwrap().id;
    let bob = forge(&app, at_jwt_header(&kid), &claims_for(&bob_id, now)).await;
    assert_eq!(app.get("/profile", Some(&bob)).await.status(), 200);
    assert_eq!(app.delete("/admin/users/bob", &good).await.status(), 204);
    assert_refused(&app, &bob, "deleted user").await;

    // The real token is still fine after all that.
    assert_eq!(app.get("/profile", Some(&good)).await.status(), 200);
}

/// A token the server has accepted is remembered as verified
/// (token::verified): a copy differing in any one part is still checked in
/// full, and the original keeps being accepted.
#[tokio::test]
async fn altered_copies_of_an_accepted_token_are_refused() {
    let app = spawn_app().await;
    let token = app.user_token("alice", &[]).await;
    assert_eq!(app.get("/profile", Some(&token)).await.status(), 200);
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = segment(&token, 1);
    claims["roles"] = json!(["admin"]);
    let elevated = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(claims.to_string()),
        parts[2]
    );
    let mut signature = B64.decode(parts[2]).unwrap();
    signature[0] ^= 1;
    let resigned = format!("{}.{}.{}", parts[0], parts[1], B64.encode(&signature));
    let mut header = segment(&token, 0);
    header["typ"] = json!("JWT");
    let retyped = format!(
        "{}.{}.{}",
        B64.encode(header.to_string()),
        parts[1],
        parts[2]
    );
    for (altered, why) in [
        (elevated, "payload changed"),
        (resigned, "signature changed"),
        (retyped, "header changed"),
    ] {
        assert_refused(&app, &altered, why).await;
    }
    assert_eq!(app.get("/profile", Some(&token)).await.status(), 200);
}

#[tokio::test]
async fn tokens_expire_after_ttl_plus_leeway() {
    let app = spawn_app_with(&[("KEYTURN_ACCESS_TOKEN_TTL", "60s")]).await;
    let token = app.user_token("alice", &[]).await;
    // RFC 7519 §4.1.4: valid only *before* exp; the 30 s leeway moves that
    // edge, so the last accepted second is exp + 29.
    app.clock.advance(60 + 29);
    assert_eq!(
        app.get("/profile", Some(&token)).await.status(),
        200,
        "within leeway"
    );
    app.clock.advance(1);
    assert_refused(&app, &token, "expired at exp + leeway").await;
}

#[tokio::test]
async fn password_change_disable_and_delete_revoke_tokens() {
    let app = spawn_app().await;
    let admin = app.user_token("root", &["admin"]).await;
    for (name, change) in [
        ("pw", json!({"password": "another good password"})),
        ("off", json!({"disabled": true})),
    ] {
        let token = app.user_token(name, &[]).await;
        assert_eq!(app.get("/profile", Some(&token)).await.status(), 200);
        app.clock.advance(1);
        let response = app
            .patch_json(&format!("/admin/users/{name}"), &admin, &change)
            .await;
        assert_eq!(response.status(), 200, "{name}");
        assert_refused(&app, &token, name).await;
        let user = app.services.accounts.get(name).await.unwrap();
        let live = app
            .services
            .store
            .count_live_refresh_tokens(&user.id, app.clock_now())
            .await
            .unwrap();
        assert_eq!(live, 0, "{name}: refresh tokens revoked");
    }
    // After a password change the new password works at once.
    let response = app.login("pw", "another good password").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let fresh = body["access_token"].as_str().unwrap();
    assert_eq!(app.get("/profile", Some(fresh)).await.status(), 200);

    let token = app.user_token("gone", &[]).await;
    let response = app.delete("/admin/users/gone", &admin).await;
    assert_eq!(response.status(), 204);
    assert_refused(&app, &token, "deleted user").await;
}
