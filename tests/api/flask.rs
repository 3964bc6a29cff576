//! The Flask resource server of examples/flask_resource_server/ (PyJWT's
//! PyJWKClient, no shared secret) against a live keyturn, run in the tests'
//! own virtual environment (tests/api/tools.rs): valid tokens pass; expired,
//! tampered, foreign-issuer, unknown-key and non-access tokens are refused;
//! a token signed after a key rotation passes.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::helpers::{TestApp, segment, spawn_app_at_own_issuer};
use crate::tools;

const APP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/flask_resource_server/app.py"
);

/// The example app as a subprocess on a free port, trusting `issuer`;
/// killed when dropped.
struct FlaskApp {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl FlaskApp {
    /// `None` (after a SKIP line) when the venv cannot be had outside CI.
    async fn start(test: &str, issuer: &str) -> Option<FlaskApp> {
        let python = match tools::python() {
            Ok(python) => python,
            Err(missing) => {
                tools::skip(test, &missing);
                return None;
            }
        };
        let mut child = Command::new(python)
            .arg(APP)
            .env("KEYTURN_ISSUER", issuer)
            .env("PORT", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the Flask app starts");
        let stdout = child.stdout.take().expect("piped");
        // The app binds port 0 and prints the port it got: no race for it.
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await
        .unwrap()
        .expect("the Flask app prints its address");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the Flask app said {line:?}"))
            .to_owned();
        Some(FlaskApp {
            child,
            base,
            client: reqwest::Client::new(),
        })
    }

    /// Status and body of `GET path` with `Authorization: Bearer token`.
    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("the Flask app answers");
        let status = response.status().as_u16();
        if status == 401 {
            assert_eq!(
                response.headers()["www-authenticate"],
                "Bearer error=\"invalid_token\""
            );
        }
        (status, response.json().await.expect("a JSON body"))
    }

    /// Asserts `GET /me` refuses `token` with 401 `invalid_token`.
    async fn assert_refused(&self, token: &str, why: &str) {
        let (status, body) = self.get("/me", token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_token")),
            "{why}: {body}"
        );
    }
}

impl Drop for FlaskApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kid(token: &str) -> String {
    segment(token, 0)["kid"].as_str().unwrap().to_owned()
}

async fn rotate_now(app: &TestApp, admin: &str) {
    let response = app.post("/admin/keys/rotate?force=true", admin).await;
    assert_eq!(response.status(), 200, "forced rotation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_with_pyjwkclient_trusts_keyturn_tokens_and_only_them() {
    let app = spawn_app_at_own_issuer(&[]).await;
    let Some(flask) = FlaskApp::start("flask::trusts_keyturn_tokens", &app.base).await else {
        return;
    };
    let token = app.user_token("alice", &["reader"]).await;
    let admin = app.user_token("root", &["admin"]).await;

    // Valid: identity and claims; the role route wants the role.
    let (status, me) = flask.get("/me", &token).await;
    assert_eq!(status, 200, "{me}");
    let claims = segment(&token, 1);
    assert_eq!(me["sub"], claims["sub"]);
    assert_eq!(me["username"], "alice");
    assert_eq!(me["roles"], json!(["reader"]));
    assert_eq!(me["client_id"], "first-party");
    let (status, body) = flask.get("/admin/report", &token).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let (status, body) = flask.get("/admin/report", &admin).await;
    assert_eq!((status, body["by"].as_str()), (200, Some("root")), "{body}");

    // Tampered: roles raised to admin, the signature left as it was.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut payload = claims.clone();
    payload["roles"] = json!(["admin"]);
    parts[1] = B64.encode(payload.to_string());
    let tampered = parts.join(".");
    flask.assert_refused(&tampered, "tampered").await;
    let (status, _) = flask.get("/admin/report", &tampered).await;
    assert_eq!(status, 401, "tampered, role route");

    // Expired: issued by keyturn an hour ago (its clock moved back), so
    // its 15-minute lifetime ended 45 minutes ago by the real clock Flask
    // reads.
    app.clock.advance(-3600);
    let expired = app.user_token("old", &[]).await;
    app.clock.advance(3600);
    assert!(segment(&expired, 1)["exp"].as_i64().unwrap() < app.clock_now() - 2000);
    flask.assert_refused(&expired, "expired").await;

    // Foreign issuer, same keys: a second keyturn on the same store under
    // another issuer name signs with the very key Flask trusts; only the
    // `iss` check refuses it.
    let other_name = app
        .restart_with(&[
            ("KEYTURN_BIND", "127.0.0.1:0"),
            ("KEYTURN_ISSUER", "http://evil.test"),
        ])
        .await;
    let foreign = other_name.user_token("eve", &[]).await;
    assert_eq!(kid(&foreign), kid(&token), "the same signing key");
    assert_eq!(segment(&foreign, 1)["iss"], "http://evil.test");
    flask.assert_refused(&foreign, "foreign issuer").await;
    other_name.stop().await;

    // Foreign issuer, own keys: an unknown kid, even after a refetch.
    let stranger = spawn_app_at_own_issuer(&[]).await;
    let unknown_key = stranger.user_token("alice", &["admin"]).await;
    flask
        .assert_refused(&unknown_key, "another issuer's key")
        .await;

    // Rotation: the key that signs next is published before it signs (the
    // `next` key), so the JWKS Flask cached at its first request lists it;
    // forced, it signs at once, and Flask accepts its tokens. Tokens of the
    // retired key stay valid until they expire.
    let published: Vec<Value> = app.jwks().await["keys"].as_array().unwrap().clone();
    let before = kid(&token);
    rotate_now(&app, &admin).await;
    let after_rotation = app.token("alice").await;
    let new_kid = kid(&after_rotation);
    assert_ne!(new_kid, before, "signed by the new key");
    assert!(
        published.iter().any(|k| k["kid"] == new_kid.as_str()),
        "the new key was published before it signed"
    );
    let (status, me) = flask.get("/me", &after_rotation).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["kid"], new_kid.as_str());
    let (status, me) = flask.get("/me", &token).await;
    assert_eq!(status, 200, "the retired key's token: {me}");

    // Garbage and no token at all.
    flask.assert_refused("not.a.token", "garbage").await;
    let response = flask
        .client
        .get(format!("{}/me", flask.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

/// Validly signed by keyturn's current key, but not an RFC 9068 access
/// token (`typ` is `JWT`): the app's `typ` check refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_refuses_a_signed_token_that_is_not_an_access_token() {
    let app = spawn_app_at_own_issuer(&[("KEYTURN_SIGNING_ALG", "EdDSA")]).await;
    let Some(flask) = FlaskApp::start("flask::typ", &app.base).await else {
        return;
    };
    let token = app.user_token("alice", &[]).await;
    assert_eq!(flask.get("/me", &token).await.0, 200);
    let (kid, pkcs8) = app.current_private_key().await;
    let key = EncodingKey::from_ed_der(&pkcs8);
    let sign = |typ: &str| {
        let header = json!({"alg": "EdDSA", "kid": kid, "typ": typ});
        let message = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(segment(&token, 1).to_string())
        );
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::EdDSA);
        format!("{message}.{}", signature.unwrap())
    };
    // The same claims and key: only `typ` decides.
    assert_eq!(flask.get("/me", &sign("at+jwt")).await.0, 200);
    let (status, body) = flask.get("/me", &sign("JWT")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error_description"], "not an access token (typ)");
}
