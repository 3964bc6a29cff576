use keyturn::keys::{Jwks, Keyring};
use serde_json::Value;

use crate::helpers::{error_code, spawn_app};

#[tokio::test]
async fn health_is_ok() {
    let app = spawn_app().await;
    let response = app.get("/health", None).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn ready_with_store_and_current_key() {
    let app = spawn_app().await;
    assert_eq!(app.get("/ready", None).await.status(), 200);
}

#[tokio::test]
async fn not_ready_when_the_store_is_unreachable() {
    let app = spawn_app().await;
    app.services.store.close().await;
    let response = app.get("/ready", None).await;
    assert_eq!(response.status(), 503);
    assert_eq!(error_code(response).await, "temporarily_unavailable");
    // Liveness does not depend on the store.
    assert_eq!(app.get("/health", None).await.status(), 200);
}

#[tokio::test]
async fn not_ready_without_a_current_key() {
    let app = spawn_app().await;
    // A keyring at the store's version but with nothing to sign with (as
    // when the signer's private key cannot be opened).
    let version = app.keyring.get().version;
    app.keyring.set(Keyring::new(
        version,
        None,
        None,
        Default::default(),
        Jwks::build([]),
        None,
    ));
    let response = app.get("/ready", None).await;
    assert_eq!(response.status(), 503);
    assert_eq!(error_code(response).await, "temporarily_unavailable");
    // Login cannot issue tokens either, and says so without a 500.
    app.create_user("alice", &[]).await;
    let response = app.login("alice", crate::helpers::PASSWORD).await;
    assert_eq!(response.status(), 503);
}

#[tokio::test]
async fn a_keyset_without_a_signer_heals_itself() {
    let app = spawn_app().await;
    // The next key, read before the change: once the server has healed, the
    // JWKS order no longer tells which key was next (reading it afterwards
    // made this test fail under load).
    let current_kid = app.keyring.get().signer().unwrap().kid().to_owned();
    let before = app.jwks().await;
    let published: Vec<&str> = before["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap())
        .collect();
    assert_eq!(published.len(), 2, "{before}");
    let next_kid = published
        .into_iter()
        .find(|kid| *kid != current_kid)
        .unwrap()
        .to_owned();
    // Another writer leaves no current key: the scheduler promotes the next
    // key at once rather than leave the server unable to sign.
    app.sql("UPDATE keys SET state = 'retired', retired_at = 0 WHERE state = 'current'")
        .await;
    app.sql("UPDATE versions SET version = version + 1 WHERE name = 'keys'")
        .await;
    let signer = app
        .eventually(
            || async {
                app.keyring
                    .get()
                    .signer()
                    .map(|s| s.kid().to_owned())
                    .unwrap_or_default()
            },
            |kid| kid == &next_kid,
        )
        .await;
    assert_eq!(signer, next_kid);
    assert_eq!(app.get("/ready", None).await.status(), 200);
}
