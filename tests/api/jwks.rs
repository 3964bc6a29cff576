use jsonwebtoken::jwk::{Jwk, JwkSet, ThumbprintHash};
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;

use crate::helpers::{ISSUER, segment, spawn_app, spawn_app_with};

const PRIVATE_MEMBERS: [&str; 6] = ["d", "p", "q", "dp", "dq", "qi"];

#[tokio::test]
async fn jwks_publishes_current_and_next_public_keys() {
    let app = spawn_app().await;
    let response = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-control"], "public, max-age=300");
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'));
    let body: Value = response.json().await.unwrap();
    let keys = body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "current and next: {body}");
    for key in keys {
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["alg"], "RS256");
        assert!(key["n"].as_str().unwrap().len() >= 342, "2048-bit modulus");
        assert_eq!(key["e"], "AQAB");
        for member in PRIVATE_MEMBERS {
            assert!(key.get(member).is_none(), "{member} must not be published");
        }
        let jwk: Jwk = serde_json::from_value(key.clone()).unwrap();
        assert_eq!(
            jwk.thumbprint(ThumbprintHash::SHA256).unwrap(),
            key["kid"].as_str().unwrap(),
            "kid is the RFC 7638 thumbprint"
        );
    }
    assert_ne!(keys[0]["kid"], keys[1]["kid"]);
}

#[tokio::test]
async fn etag_gives_304() {
    let app = spawn_app().await;
    let first = app.get("/.well-known/jwks.json", None).await;
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let body = first.bytes().await.unwrap();
    let second = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(second.headers()["etag"], etag.as_str(), "stable");
    assert_eq!(second.bytes().await.unwrap(), body, "same bytes");

    let cached = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    assert_eq!(cached.headers()["etag"], etag.as_str());
    assert!(cached.headers().contains_key("cache-control"));
    assert!(cached.bytes().await.unwrap().is_empty());

    for stale in ["\"something-else\"", "garbage", "W/\"x\", \"y\""] {
        let response = app
            .client
            .get(app.url("/.well-known/jwks.json"))
            .header("if-none-match", stale)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{stale}");
    }
}

/// A standard JWKS client's view: pick the key by kid, take the algorithm
/// from the key, verify with jsonwebtoken.
async fn verify_independently(app: &crate::helpers::TestApp, token: &str) -> Value {
    let set: JwkSet = app
        .get("/.well-known/jwks.json", None)
        .await
        .json()
        .await
        .unwrap();
    let kid = segment(token, 0)["kid"].as_str().unwrap().to_owned();
    let jwk = set.find(&kid).expect("kid published");
    let alg = jwk.common.key_algorithm.expect("alg").to_string();
    let mut validation = Validation::new(alg.parse().unwrap());
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&["keyturn"]);
    validation.set_required_spec_claims(&["exp", "iat", "nbf", "sub", "iss", "aud"]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .expect("verifies with the published key")
        .claims
}

#[tokio::test]
async fn tokens_verify_with_the_published_rs256_key() {
    let app = spawn_app().await;
    let token = app.user_token("alice", &[]).await;
    let claims = verify_independently(&app, &token).await;
    assert_eq!(claims["username"], "alice");
}

#[tokio::test]
async fn eddsa_keyset_and_tokens() {
    let app = spawn_app_with(&[("KEYTURN_SIGNING_ALG", "EdDSA")]).await;
    let jwks = app.jwks().await;
    for key in jwks["keys"].as_array().unwrap() {
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["alg"], "EdDSA");
        assert_eq!(key["x"].as_str().unwrap().len(), 43);
        assert!(key.get("d").is_none());
    }
    let token = app.user_token("alice", &[]).await;
    assert_eq!(segment(&token, 0)["alg"], "EdDSA");
    let claims = verify_independently(&app, &token).await;
    assert_eq!(claims["username"], "alice");
}

#[tokio::test]
async fn database_holds_no_private_key_in_clear() {
    let app = spawn_app_with(&[("KEYTURN_SIGNING_ALG", "EdDSA")]).await;
    app.user_token("alice", &[]).await;
    let (_, pkcs8) = app.current_private_key().await;
    let bytes = app.database_bytes().await;
    assert!(bytes.len() > 1000, "the database was read");
    // ring's PKCS#8 v2 document: a 16-byte prefix, then the 32-byte seed.
    assert!(!bytes.windows(pkcs8.len()).any(|w| w == pkcs8.as_slice()));
    let seed = &pkcs8[16..48];
    assert!(!bytes.windows(32).any(|w| w == seed), "no raw seed");
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("PRIVATE KEY"));

    // RSA too.
    let app = spawn_app().await;
    let (_, pkcs8) = app.current_private_key().await;
    let bytes = app.database_bytes().await;
    for chunk in pkcs8.chunks_exact(32).step_by(4) {
        assert!(
            !bytes.windows(32).any(|w| w == chunk),
            "no part of the RSA key"
        );
    }
}
