use keyturn::keys::{KeyState, SigningAlg};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, error_code, spawn_app};

#[tokio::test]
async fn admin_routes_need_a_token_and_the_admin_role() {
    let app = spawn_app().await;
    let user = app.user_token("alice", &["reports"]).await;
    let routes = [
        ("GET", "/admin/keys"),
        ("GET", "/admin/users"),
        ("POST", "/admin/users"),
        ("PATCH", "/admin/users/alice"),
        ("DELETE", "/admin/users/alice"),
    ];
    for (method, path) in routes {
        let request = |token: Option<&str>| {
            let mut r = app
                .client
                .request(method.parse().unwrap(), app.url(path))
                .json(&json!({"username": "x", "password": PASSWORD}));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r
        };
        let response = request(None).send().await.unwrap();
        assert_eq!(response.status(), 401, "{method} {path} without a token");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
        assert_eq!(error_code(response).await, "invalid_token");
        let response = request(Some(&user)).send().await.unwrap();
        assert_eq!(response.status(), 403, "{method} {path} without admin");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer error=\"insufficient_scope\""
        );
        assert_eq!(error_code(response).await, "forbidden");
    }
    // Nothing changed.
    assert_eq!(app.services.accounts.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn admin_lists_keys_without_private_material() {
    let app = spawn_app().await;
    let admin = app.user_token("root", &["admin"]).await;
    let response = app.get("/admin/keys", Some(&admin)).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    let keys = body["keys"].as_array().unwrap();
    let states: Vec<KeyState> = keys
        .iter()
        .map(|k| k["state"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        states.contains(&KeyState::Current) && states.contains(&KeyState::Next),
        "{states:?}"
    );
    for key in keys {
        assert_eq!(key["alg"], "RS256");
        assert!(key["published_at"].is_string());
    }
    for secret in ["sealed", "private", "\"d\"", "PRIVATE KEY"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    // The document names every state and algorithm a listing may show.
    let doc: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    let schemas = &doc["components"]["schemas"];
    let names = |schema: &str| -> Vec<String> {
        schemas[schema]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{schema} is an enum"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let states: Vec<KeyState> = names("KeyStateView")
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            KeyState::Next,
            KeyState::Current,
            KeyState::Retired,
            KeyState::Revoked
        ]
    );
    let algs: Vec<SigningAlg> = names("SigningAlgView")
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(algs, [SigningAlg::Rs256, SigningAlg::EdDsa]);
}

#[tokio::test]
async fn admin_manages_users() {
    let app = spawn_app().await;
    let admin = app.user_token("root", &["admin"]).await;
    let post = |body: Value| {
        let (app, admin) = (&app, &admin);
        async move { app.post_json("/admin/users", admin, &body).await }
    };
    let response =
        post(json!({"username": "bob", "password": PASSWORD, "roles": ["reports"]})).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["username"], "bob");
    assert_eq!(created["roles"], json!(["reports"]));
    assert_eq!(created["disabled"], false);
    assert!(created.get("password").is_none() && created.get("password_hash").is_none());

    let response = post(json!({"username": "bob", "password": PASSWORD})).await;
    assert_eq!(response.status(), 409);
    assert_eq!(error_code(response).await, "conflict");

    for bad in [
        json!({"username": "", "password": PASSWORD}),
        json!({"username": "bad name", "password": PASSWORD}),
        json!({"username": "carol", "password": "short"}),
        json!({"username": "carol", "password": PASSWORD, "roles": ["Not A Role"]}),
        json!({"username": "carol"}),
    ] {
        let response = post(bad.clone()).await;
        assert_eq!(response.status(), 400, "{bad}");
        assert_eq!(error_code(response).await, "invalid_request");
    }

    // bob can log in; the list shows both users without hashes.
    assert_eq!(app.login("bob", PASSWORD).await.status(), 200);
    let text = app
        .get("/admin/users", Some(&admin))
        .await
        .text()
        .await
        .unwrap();
    assert!(!text.contains("argon2"), "{text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bob", "root"]);

    // Role change shows up in the next token.
    let response = app
        .patch_json(
            "/admin/users/bob",
            &admin,
            &json!({"roles": ["admin", "reports"]}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let bob = app.token("bob").await;
    let profile: Value = app.get("/profile", Some(&bob)).await.json().await.unwrap();
    assert_eq!(profile["roles"], json!(["admin", "reports"]));

    // Unknown users are 404 for patch and delete.
    let response = app
        .patch_json("/admin/users/nobody", &admin, &json!({"disabled": true}))
        .await;
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response).await, "not_found");

    // Disable, then delete.
    let response = app
        .patch_json("/admin/users/bob", &admin, &json!({"disabled": true}))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.login("bob", PASSWORD).await.status(), 401);
    let response = app.delete("/admin/users/bob", &admin).await;
    assert_eq!(response.status(), 204);
    let response = app.delete("/admin/users/bob", &admin).await;
    assert_eq!(response.status(), 404);
}
