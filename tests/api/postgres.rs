//! The same server on PostgreSQL (127.0.0.1:5432): the store seam holds,
//! and several instances share one keyset, rotating exactly once.

use keyturn::keys::{KeyLifecycle, KeyState};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, fresh_pg_database, spawn_app_with, spawn_pg_app};

const SHORT: [(&str, &str); 5] = [
    ("KEYTURN_KEY_PREPUBLISH", "120s"),
    ("KEYTURN_JWKS_MAX_AGE", "60s"),
    ("KEYTURN_ACCESS_TOKEN_TTL", "300s"),
    ("KEYTURN_LEEWAY", "30s"),
    ("KEYTURN_ROTATION_SCHEDULE", "0 0 * * * *"),
];

fn states(rows: &[keyturn::store::KeyRow]) -> (usize, usize, usize) {
    let count = |s: KeyState| rows.iter().filter(|r| r.state() == s).count();
    (
        count(KeyState::Current),
        count(KeyState::Next),
        count(KeyState::Retired),
    )
}

async fn signer(app: &TestApp) -> String {
    app.keyring.get().signer().unwrap().kid().to_owned()
}

#[tokio::test]
async fn users_tokens_and_admin_on_postgres() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let app = spawn_pg_app(&[]).await;
    let admin = app.user_token("root", &["admin"]).await;
    let profile: Value = app
        .get("/profile", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(profile["username"], "root");
    let response = app
        .post_json(
            "/admin/users",
            &admin,
            &json!({"username": "bob", "password": PASSWORD, "roles": ["reports"]}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let duplicate = app
        .post_json(
            "/admin/users",
            &admin,
            &json!({"username": "bob", "password": PASSWORD}),
        )
        .await;
    assert_eq!(duplicate.status(), 409, "unique violation maps to conflict");
    let bob = app.token("bob").await;
    app.clock.advance(1);
    let response = app
        .patch_json("/admin/users/bob", &admin, &json!({"disabled": true}))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.get("/profile", Some(&bob)).await.status(), 401);
    let user = app.services.accounts.get("bob").await.unwrap();
    let live = app
        .services
        .store
        .count_live_refresh_tokens(&user.id, app.clock_now())
        .await
        .unwrap();
    assert_eq!(live, 0);
    assert_eq!(app.get("/ready", None).await.status(), 200);
}

#[tokio::test]
async fn rotation_revocation_and_pruning_on_postgres() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let app = spawn_pg_app(&SHORT).await;
    let admin = app.user_token("root", &["admin"]).await;
    let first = signer(&app).await;
    let response = app.post("/admin/keys/rotate", &admin).await;
    assert_eq!(response.status(), 409);
    app.clock.advance(120);
    let response = app.post("/admin/keys/rotate", &admin).await;
    assert_eq!(response.status(), 200);
    assert_ne!(signer(&app).await, first);
    assert_eq!(app.get("/profile", Some(&admin)).await.status(), 200);
    let rows = app.services.store.list_keys().await.unwrap();
    assert_eq!(states(&rows), (1, 1, 1));

    let fresh = app.token("root").await;
    let victim = signer(&app).await;
    let response = app
        .post(&format!("/admin/keys/{victim}/revoke"), &fresh)
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.get("/profile", Some(&fresh)).await.status(), 401);
    let rows = app.services.store.list_keys().await.unwrap();
    let revoked = rows.iter().find(|r| r.kid == victim).unwrap();
    assert!(matches!(revoked.lifecycle, KeyLifecycle::Revoked { .. }));
    // In the database itself, the private half is gone.
    let pool = sqlx::PgPool::connect(&app.settings.database_url)
        .await
        .unwrap();
    let sealed: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT sealed_private FROM keys WHERE kid = $1")
            .bind(&victim)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(sealed, None, "revoked key's sealed_private is NULL");
    pool.close().await;

    app.clock.advance(330);
    app.tick().await;
    let rows = app.services.store.list_keys().await.unwrap();
    assert!(rows.iter().all(|r| r.kid != first), "pruned");
}

#[tokio::test]
async fn three_instances_on_one_database_rotate_once() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    // Three instances start at once on an empty database, sharing the
    // master key through the environment: the first keyset is made once.
    let url = fresh_pg_database().await;
    let mut settings = SHORT.to_vec();
    settings.push(("KEYTURN_DATABASE_URL", &url));
    settings.push((
        "KEYTURN_MASTER_KEY",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    ));
    let (a, b, c) = tokio::join!(
        spawn_app_with(&settings),
        spawn_app_with(&settings),
        spawn_app_with(&settings)
    );
    let rows = a.services.store.list_keys().await.unwrap();
    assert_eq!(states(&rows), (1, 1, 0), "{rows:?}");

    let wait = 3600 - a.clock_now().rem_euclid(3600);
    for app in [&a, &b, &c] {
        app.clock.advance(wait.max(120) + 3600);
    }
    tokio::join!(a.tick(), b.tick(), c.tick());
    let rows = a.services.store.list_keys().await.unwrap();
    assert_eq!(states(&rows), (1, 1, 1), "exactly one rotation: {rows:?}");
    for app in [&b, &c] {
        app.tick().await;
    }
    let kid = signer(&a).await;
    assert_eq!(signer(&b).await, kid);
    assert_eq!(signer(&c).await, kid);
    // A user created on one instance logs in on another; a token from one
    // is accepted by all.
    a.create_user("alice", &[]).await;
    let token = b.token("alice").await;
    for app in [&a, &b, &c] {
        app.assert_profile_becomes(&token, 200).await;
    }
}

#[tokio::test]
async fn cli_on_postgres() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let app = spawn_pg_app(&[]).await;
    let out = app.cli(
        &[
            "users",
            "add",
            "carol",
            "--role",
            "admin",
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = app.token("carol").await;
    assert_eq!(app.get("/admin/keys", Some(&token)).await.status(), 200);
    let out = app.cli(&["keys", "list"], None);
    assert!(out.status.success());
}
