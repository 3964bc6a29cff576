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
    // Another writer (an operator, a broken migration) leaves no current key.
    app.sql("UPDATE keys SET state = 'retired', retired_at = 0 WHERE state = 'current'")
        .await;
    app.sql("UPDATE versions SET version = version + 1 WHERE name = 'keys'")
        .await;
    let status = app
        .eventually(
            || async { app.get("/ready", None).await.status() },
            |s| *s == 503,
        )
        .await;
    assert_eq!(status, 503);
}
