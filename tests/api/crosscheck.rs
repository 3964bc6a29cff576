//! One token check: the server's own routes and the verifier library give
//! the same verdict, for the same reason, on every kind of token. Each case
//! goes to `GET /profile` and to a `Verifier` built by discovery against the
//! same server, reading the same clock.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey};
use keyturn::token::REQUIRED_CLAIMS;
use keyturn::verifier::{Claims, Verifier, VerifyError};
use serde_json::{Value, json};

use crate::helpers::{TestApp, segment, spawn_app_at_own_issuer};

/// What the server answered: `Ok` for 200, else the 401's description.
async fn server_verdict(app: &TestApp, token: &str) -> Result<(), String> {
    let response = app.get("/profile", Some(token)).await;
    match response.status().as_u16() {
        200 => Ok(()),
        401 => {
            assert_eq!(
                response.headers()["www-authenticate"],
                "Bearer error=\"invalid_token\""
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "invalid_token");
            Err(body["error_description"].as_str().unwrap().to_owned())
        }
        other => panic!("/profile answered {other}"),
    }
}

/// Signs `header.claims` exactly as given (any header members, including
/// ones `jsonwebtoken::Header` cannot express) with the server's current key.
fn sign_raw(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{signature}")
}

fn unsigned(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string()),
        B64.encode(signature)
    )
}

fn with(claims: &Value, edit: &[(&str, Value)]) -> Value {
    let mut claims = claims.clone();
    for (name, value) in edit {
        claims[*name] = value.clone();
    }
    // Every forged token is a new token.
    claims["jti"] = json!(uuid::Uuid::new_v4().to_string());
    claims
}

#[tokio::test]
async fn server_and_verifier_agree_on_every_token() {
    let app = spawn_app_at_own_issuer(&[("KEYTURN_SIGNING_ALG", "EdDSA")]).await;
    let real = app.user_token("alice", &["reader"]).await;
    let (kid, pkcs8) = app.current_private_key().await;
    let key = EncodingKey::from_ed_der(&pkcs8);
    let leeway = i64::try_from(app.settings.leeway.as_secs()).unwrap();
    let now = app.clock_now();
    // The claims of a real token from this server: only what a case changes
    // differs from what the server itself issues.
    let claims = segment(&real, 1);
    let header = json!({"alg": "EdDSA", "kid": kid, "typ": "at+jwt"});
    let sign = |header: &Value, claims: &Value| sign_raw(header, claims, &key, Algorithm::EdDSA);
    let good = |edit: &[(&str, Value)]| sign(&header, &with(&claims, edit));
    let header_with = |name: &str, value: Value| {
        let mut h = header.clone();
        if value.is_null() {
            h.as_object_mut().unwrap().remove(name);
        } else {
            h[name] = value;
        }
        h
    };

    let verifier = Verifier::builder()
        .issuer_url(&app.base)
        .audience([app.settings.audience.clone()])
        .leeway(app.settings.leeway)
        .required_claims(REQUIRED_CLAIMS)
        .clock(Arc::new(app.clock.clone()))
        .build()
        .await
        .expect("verifier by discovery");

    let tampered_payload = {
        let mut parts: Vec<String> = real.split('.').map(str::to_owned).collect();
        let mut payload = segment(&real, 1);
        payload["roles"] = json!(["admin"]);
        parts[1] = B64.encode(payload.to_string());
        parts.join(".")
    };
    let tampered_signature = {
        let mut parts: Vec<String> = real.split('.').map(str::to_owned).collect();
        let mut signature = B64.decode(&parts[2]).unwrap();
        signature[0] ^= 1;
        parts[2] = B64.encode(signature);
        parts.join(".")
    };
    let public_x = app.jwks().await["keys"][0]["x"]
        .as_str()
        .unwrap()
        .to_owned();
    let hs256_with_public_key = {
        let header = json!({"alg": "HS256", "kid": kid, "typ": "at+jwt"});
        let secret = EncodingKey::from_secret(&B64.decode(&public_x).unwrap());
        sign_raw(&header, &with(&claims, &[]), &secret, Algorithm::HS256)
    };

    use VerifyError as E;
    let cases: Vec<(&str, String, Result<(), VerifyError>)> = vec![
        ("the real token", real.clone(), Ok(())),
        ("a faithful forgery", good(&[]), Ok(())),
        (
            "expired by 1 s past the leeway",
            good(&[("exp", json!(now - leeway - 1))]),
            Err(E::Expired),
        ),
        (
            "exactly at the leeway edge",
            good(&[("exp", json!(now - leeway))]),
            Err(E::Expired),
        ),
        (
            "1 s inside the leeway",
            good(&[("exp", json!(now - leeway + 1))]),
            Ok(()),
        ),
        (
            "nbf past the leeway",
            good(&[("nbf", json!(now + leeway + 1))]),
            Err(E::NotYetValid),
        ),
        (
            "nbf at the leeway edge",
            good(&[("nbf", json!(now + leeway))]),
            Ok(()),
        ),
        (
            "iat in the future",
            good(&[("iat", json!(now + leeway + 1))]),
            Err(E::NotYetValid),
        ),
        (
            "crit header",
            sign(&header_with("crit", json!(["exp"])), &with(&claims, &[])),
            Err(E::Malformed("unsupported critical header")),
        ),
        (
            "typ missing",
            sign(&header_with("typ", Value::Null), &with(&claims, &[])),
            Err(E::WrongType),
        ),
        (
            "typ JWT",
            sign(&header_with("typ", json!("JWT")), &with(&claims, &[])),
            Err(E::WrongType),
        ),
        (
            "typ application/at+jwt",
            sign(
                &header_with("typ", json!("application/at+jwt")),
                &with(&claims, &[]),
            ),
            Ok(()),
        ),
        (
            "header alg is not the key's alg",
            unsigned(
                &json!({"alg": "RS256", "kid": kid, "typ": "at+jwt"}),
                &with(&claims, &[]),
                &[7; 256],
            ),
            Err(E::DisallowedAlgorithm),
        ),
        (
            "alg none",
            unsigned(
                &json!({"alg": "none", "kid": kid, "typ": "at+jwt"}),
                &with(&claims, &[]),
                b"",
            ),
            Err(E::DisallowedAlgorithm),
        ),
        (
            "HS256 keyed with the public key",
            hs256_with_public_key,
            Err(E::DisallowedAlgorithm),
        ),
        (
            "unknown kid",
            sign(
                &header_with("kid", json!("no-such-key")),
                &with(&claims, &[]),
            ),
            Err(E::UnknownKey),
        ),
        ("tampered payload", tampered_payload, Err(E::BadSignature)),
        (
            "tampered signature",
            tampered_signature,
            Err(E::BadSignature),
        ),
        (
            "wrong iss",
            good(&[("iss", json!("https://evil.example"))]),
            Err(E::WrongIssuer),
        ),
        (
            "wrong aud",
            good(&[("aud", json!("another-api"))]),
            Err(E::WrongAudience),
        ),
        (
            "oversized token",
            good(&[("padding", json!("x".repeat(9 * 1024)))]),
            Err(E::Malformed("token too large")),
        ),
        (
            "non-base64 segments",
            "a!b.c$d.e%f".to_owned(),
            Err(E::Malformed("header is not base64url")),
        ),
        (
            "two segments",
            real.rsplit_once('.').unwrap().0.to_owned(),
            Err(E::Malformed("not a compact JWS (three parts)")),
        ),
    ];

    for (name, token, expected) in cases {
        let expected = expected.map_err(|e| e.to_string());
        let library = verifier
            .verify::<()>(&token)
            .await
            .map(|_: Claims| ())
            .map_err(|e| e.to_string());
        let server = server_verdict(&app, &token).await;
        assert_eq!(library, expected, "{name}: the verifier library");
        assert_eq!(server, expected, "{name}: the server's /profile");
    }
}
