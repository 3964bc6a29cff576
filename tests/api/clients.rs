//! OAuth clients: `/admin/clients` and `keyturn clients add|list|remove`.

use serde_json::{Value, json};

use crate::helpers::{assert_no_store, assert_oauth_error, error_code, spawn_app};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn admin_registers_lists_and_deletes_clients() {
    let app = spawn_app().await;
    let admin = app.user_token("root", &["admin"]).await;
    let post = |body: Value, token: String| {
        let request = app
            .client
            .post(app.url("/admin/clients"))
            .bearer_auth(token)
            .json(&body);
        async move { request.send().await.unwrap() }
    };

    let response = post(
        json!({"client_id": "billing", "scopes": ["invoices:write", "invoices:read"], "audience": "billing-api"}),
        admin.clone(),
    )
    .await;
    assert_eq!(response.status(), 201);
    assert_no_store(&response);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["client_id"], "billing");
    assert_eq!(
        created["scopes"],
        json!(["invoices:read", "invoices:write"])
    );
    assert_eq!(created["grant_types"], json!(["client_credentials"]));
    assert_eq!(created["audience"], "billing-api");
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    // 256 bits, base64url without padding.
    assert_eq!(secret.len(), 43, "{secret}");
    assert!(
        secret
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );

    // The secret works at once, and is never shown again nor stored as is.
    let token = app.client_token("billing", &secret).await;
    let listing = app.get("/admin/clients", Some(&admin)).await;
    assert_eq!(listing.status(), 200);
    let listing = listing.text().await.unwrap();
    assert!(
        listing.contains("billing") && !listing.contains(&secret),
        "{listing}"
    );
    let listed: Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(listed["clients"][0]["client_id"], "billing");
    assert!(listed["clients"][0].get("client_secret").is_none());
    let stored = app.database_bytes().await;
    assert!(
        !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is not in the database"
    );

    // Bad input and duplicates.
    for (body, status, code) in [
        (json!({"client_id": "billing"}), 409, "conflict"),
        (json!({"client_id": "first-party"}), 400, "invalid_request"),
        (json!({"client_id": "bad id"}), 400, "invalid_request"),
        (
            json!({"client_id": "x", "scopes": ["a b"]}),
            400,
            "invalid_request",
        ),
        (
            json!({"client_id": "x", "grant_types": ["password"]}),
            400,
            "invalid_request",
        ),
        (
            json!({"client_id": "x", "audience": ""}),
            400,
            "invalid_request",
        ),
        (json!({"scopes": []}), 400, "invalid_request"),
    ] {
        let response = post(body.clone(), admin.clone()).await;
        assert_eq!(response.status(), status, "{body}");
        assert_eq!(error_code(response).await, code, "{body}");
    }

    // Admins only.
    let user = app.user_token("bob", &[]).await;
    assert_eq!(
        post(json!({"client_id": "y"}), user.clone()).await.status(),
        403
    );
    assert_eq!(app.get("/admin/clients", Some(&user)).await.status(), 403);
    assert_eq!(app.get("/admin/clients", None).await.status(), 401);

    // Deleting kills its tokens and its credentials.
    let delete = |id: &str| {
        app.client
            .delete(app.url(&format!("/admin/clients/{id}")))
            .bearer_auth(&admin)
            .send()
    };
    assert_eq!(delete("billing").await.unwrap().status(), 204);
    assert_eq!(delete("billing").await.unwrap().status(), 404);
    let response = app.client_credentials("billing", &secret, None).await;
    assert_oauth_error(response, 401, "invalid_client").await;
    let gateway = app.create_client("gateway", &[]).await;
    let info = app.introspect(&token, ("gateway", &gateway)).await;
    assert_eq!(info, json!({"active": false}));

    // Re-registering the id (past the clock-skew leeway) does not revive
    // the old tokens.
    app.clock.advance(31);
    let again = app.create_client("billing", &[]).await;
    assert_ne!(again, secret);
    let info = app.introspect(&token, ("gateway", &gateway)).await;
    assert_eq!(info, json!({"active": false}));
}

#[tokio::test]
async fn cli_manages_clients_of_the_running_server() {
    let app = spawn_app().await;
    let out = app.cli(
        &[
            "clients",
            "add",
            "reports",
            "--scope",
            "reports:read",
            "--scope",
            "reports:write",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .unwrap_or_else(|| panic!("secret printed: {stdout}"))
        .to_owned();
    assert_eq!(stdout.matches(&secret).count(), 1, "shown once");

    // The running server accepts the client and, once its view has caught
    // up (about a second), its tokens.
    let response = app
        .client_credentials("reports", &secret, Some("reports:read"))
        .await;
    assert_eq!(response.status(), 200);
    let token = app.client_token("reports", &secret).await;
    app.assert_profile_becomes(&token, 200).await;

    let out = app.cli(&["clients", "list"], None);
    assert!(out.status.success());
    let listing = text(&out.stdout);
    assert!(
        listing.contains("reports") && listing.contains("reports:read reports:write"),
        "{listing}"
    );
    assert!(!listing.contains(&secret));

    let out = app.cli(&["clients", "add", "reports"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("already exists"));

    let out = app.cli(&["clients", "remove", "reports"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    app.assert_profile_becomes(&token, 401).await;

    let out = app.cli(&["clients", "remove", "reports"], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no such client"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    for args in [&["clients", "add"][..], &["clients", "frobnicate"][..]] {
        assert_eq!(app.cli(args, None).status.code(), Some(2), "{args:?}");
    }
    let out = app.cli(&["clients", "add", "first-party"], None);
    assert_eq!(out.status.code(), Some(1));
}
