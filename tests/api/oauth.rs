//! `POST /oauth/token`: the refresh_token grant (rotation, reuse
//! detection, expiry, user changes, first-party only), client_credentials
//! (both client authentication methods, scopes, audience), form decoding,
//! the per-grant metrics and every RFC 6749 §5.2 error.

use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_no_store, assert_oauth_error, segment, spawn_app, spawn_app_with,
};

async fn assert_invalid_grant(app: &TestApp, refresh_token: &str, why: &str) {
    let response = app.refresh(refresh_token).await;
    assert_eq!(response.status(), 400, "{why}");
    assert_oauth_error(response, 400, "invalid_grant").await;
}

async fn profile_status(app: &TestApp, token: &str) -> u16 {
    app.get("/profile", Some(token)).await.status().as_u16()
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_family() {
    let app = spawn_app().await;
    app.create_user("alice", &["reader"]).await;
    let (a1, r1) = app.login_tokens("alice").await;

    let response = app.refresh(&r1).await;
    assert_eq!(response.status(), 200);
    assert_no_store(&response);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "");
    let a2 = body["access_token"].as_str().unwrap().to_owned();
    let r2 = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2, "a new refresh token every time");
    let claims = segment(&a2, 1);
    assert_eq!(claims["username"], "alice");
    assert_eq!(claims["client_id"], "first-party");
    assert_eq!(claims["roles"], json!(["reader"]));
    assert_ne!(claims["jti"], segment(&a1, 1)["jti"]);

    let (a3, r3) = app.refreshed(&r2).await;
    for token in [&a1, &a2, &a3] {
        assert_eq!(profile_status(&app, token).await, 200);
    }

    // A second session of the same user is a different family.
    let (other_access, other_refresh) = app.login_tokens("alice").await;

    // r1 was spent: presenting it again revokes the family...
    assert_invalid_grant(&app, &r1, "reused r1").await;
    // ...including the newest refresh token and every access token issued in it.
    assert_invalid_grant(&app, &r3, "r3 after reuse").await;
    for token in [&a1, &a2, &a3] {
        assert_eq!(profile_status(&app, token).await, 401);
    }
    // The other session is untouched.
    assert_eq!(profile_status(&app, &other_access).await, 200);
    app.refreshed(&other_refresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uses_of_one_refresh_token_do_not_both_succeed() {
    let app = spawn_app().await;
    app.create_user("alice", &[]).await;
    let (_, refresh) = app.login_tokens("alice").await;
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url("/oauth/token");
            let refresh = refresh.clone();
            tokio::spawn(async move {
                let form = [("grant_type", "refresh_token"), ("refresh_token", &refresh)];
                let response = client.post(url).form(&form).send().await.unwrap();
                response.status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 1, "exactly one use wins: {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 400),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn refresh_tokens_expire() {
    let app = spawn_app_with(&[("KEYTURN_REFRESH_TOKEN_TTL", "1h")]).await;
    app.create_user("alice", &[]).await;
    let (_, r1) = app.login_tokens("alice").await;
    app.clock.advance(3000);
    // Each new refresh token lives a full TTL from its own issue.
    let (_, r2) = app.refreshed(&r1).await;
    app.clock.advance(3599);
    let (_, r3) = app.refreshed(&r2).await;
    app.clock.advance(3600);
    assert_invalid_grant(&app, &r3, "expired").await;
}

#[tokio::test]
async fn added_roles_are_read_again_at_refresh() {
    // Only an addition: removing a role revokes the user's tokens (containment).
    let app = spawn_app().await;
    app.create_user("alice", &["reader"]).await;
    let (_, refresh) = app.login_tokens("alice").await;
    app.services
        .accounts
        .update(
            "alice",
            keyturn::accounts::UserUpdate {
                roles: Some(vec!["reader".into(), "admin".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (access, _) = app.refreshed(&refresh).await;
    assert_eq!(segment(&access, 1)["roles"], json!(["admin", "reader"]));
}

#[tokio::test]
async fn disable_password_change_and_delete_kill_refresh_tokens() {
    let app = spawn_app().await;
    let admin = app.user_token("root", &["admin"]).await;
    for (name, method, change) in [
        (
            "pw",
            "PATCH",
            Some(json!({"password": "another good password"})),
        ),
        ("off", "PATCH", Some(json!({"disabled": true}))),
        ("gone", "DELETE", None),
    ] {
        app.create_user(name, &[]).await;
        let (_, r1) = app.login_tokens(name).await;
        // A spent token's successor must die too.
        let (_, r2) = app.refreshed(&r1).await;
        app.clock.advance(1);
        let mut request = app
            .client
            .request(
                method.parse().unwrap(),
                app.url(&format!("/admin/users/{name}")),
            )
            .bearer_auth(&admin);
        if let Some(change) = &change {
            request = request.json(change);
        }
        assert!(
            request.send().await.unwrap().status().is_success(),
            "{name}"
        );
        assert_invalid_grant(&app, &r2, name).await;
    }
    // Re-enabling does not bring the old refresh token back.
    app.create_user("back", &[]).await;
    let (_, refresh) = app.login_tokens("back").await;
    app.clock.advance(1);
    for disabled in [true, false] {
        let response = app
            .patch_json(
                "/admin/users/back",
                &admin,
                &json!({ "disabled": disabled }),
            )
            .await;
        assert_eq!(response.status(), 200);
    }
    assert_invalid_grant(&app, &refresh, "re-enabled").await;
}

#[tokio::test]
async fn client_credentials_with_basic_and_with_body() {
    let app = spawn_app().await;
    let secret = app
        .create_client("billing", &["invoices:read", "invoices:write"])
        .await;

    let basic = app.client_credentials("billing", &secret, None).await;
    assert_eq!(basic.status(), 200);
    assert_no_store(&basic);
    let basic: Value = basic.json().await.unwrap();

    let post = app
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "billing"),
                ("client_secret", &secret),
            ],
            None,
        )
        .await;
    assert_eq!(post.status(), 200);
    assert_no_store(&post);
    let post: Value = post.json().await.unwrap();

    for body in [&basic, &post] {
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["scope"], "invoices:read invoices:write");
        assert!(body.get("refresh_token").is_none(), "no refresh token");
        let token = body["access_token"].as_str().unwrap();
        let claims = segment(token, 1);
        assert_eq!(claims["sub"], "billing");
        assert_eq!(claims["client_id"], "billing");
        assert_eq!(claims["aud"], "keyturn");
        assert_eq!(claims["roles"], json!([]));
        assert!(claims.get("username").is_none());
        assert_eq!(segment(token, 0)["typ"], "at+jwt");
        // keyturn's own routes accept it (default audience).
        let profile: Value = app.get("/profile", Some(token)).await.json().await.unwrap();
        assert_eq!(profile["sub"], "billing");
        assert_eq!(profile["username"], Value::Null);
    }
}

#[tokio::test]
async fn wrong_secret_and_unknown_client_are_invalid_client() {
    let app = spawn_app().await;
    let secret = app.create_client("billing", &[]).await;
    let wrong = format!("{}x", &secret[..secret.len() - 1]);
    for (id, secret) in [
        ("billing", wrong.as_str()),
        ("nobody", secret.as_str()),
        ("billing", ""),
    ] {
        let response = app.client_credentials(id, secret, None).await;
        assert_oauth_error(response, 401, "invalid_client").await;
        let response = app
            .post_form(
                "/oauth/token",
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", id),
                    ("client_secret", secret),
                ],
                None,
            )
            .await;
        assert_oauth_error(response, 401, "invalid_client").await;
    }
    // Basic credentials are form-urlencoded (RFC 6749 §2.3.1): an encoded
    // id and secret work.
    let response = app
        .client
        .post(app.url("/oauth/token"))
        .basic_auth("bill%69ng", Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn scopes_narrow_and_invalid_scope() {
    let app = spawn_app().await;
    let secret = app.create_client("svc", &["read", "write"]).await;
    for (requested, granted) in [
        (Some("read"), "read"),
        (Some("write read"), "read write"),
        (Some(""), "read write"),
        (None, "read write"),
    ] {
        let response = app.client_credentials("svc", &secret, requested).await;
        assert_eq!(response.status(), 200, "{requested:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["scope"], granted, "{requested:?}");
        assert_eq!(
            segment(body["access_token"].as_str().unwrap(), 1)["scope"],
            granted
        );
    }
    for requested in ["read admin", "admin", "re\"ad"] {
        let response = app
            .client_credentials("svc", &secret, Some(requested))
            .await;
        assert_oauth_error(response, 400, "invalid_scope").await;
    }
    // A refresh may not widen the scope of its refresh token (empty for /login).
    app.create_user("alice", &[]).await;
    let (_, refresh) = app.login_tokens("alice").await;
    let response = app
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("scope", "read"),
            ],
            None,
        )
        .await;
    assert_oauth_error(response, 400, "invalid_scope").await;
    // The refresh token was not spent by the refused request.
    app.refreshed(&refresh).await;
}

#[tokio::test]
async fn every_rfc_6749_error_code() {
    let app = spawn_app().await;
    let secret = app.create_client("svc", &["read"]).await;
    let introspect_only = app
        .create_client_with("gateway", &[], Some(&[]), None)
        .await;
    app.create_user("alice", &[]).await;
    let (_, refresh) = app.login_tokens("alice").await;
    let svc = Some(("svc", secret.as_str()));

    // invalid_request: no grant_type, no refresh_token, two auth methods,
    // a secret without an id, a repeated parameter.
    type Form<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(Form, Option<(&str, &str)>)> = vec![
        (vec![], svc),
        (vec![("grant_type", "refresh_token")], None),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_secret", &secret),
            ],
            svc,
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_secret", &secret),
            ],
            None,
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("grant_type", "client_credentials"),
            ],
            svc,
        ),
    ];
    for (form, basic) in cases {
        let response = app.post_form("/oauth/token", &form, basic).await;
        assert_oauth_error(response, 400, "invalid_request").await;
    }

    // invalid_client: missing, malformed or wrong credentials.
    let response = app
        .post_form(
            "/oauth/token",
            &[("grant_type", "client_credentials")],
            None,
        )
        .await;
    assert_oauth_error(response, 401, "invalid_client").await;
    for header in ["Basic !!!", "Basic c3Zj", "Bearer abc"] {
        let response = app
            .client
            .post(app.url("/oauth/token"))
            .header("authorization", header)
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_oauth_error(response, 401, "invalid_client").await;
    }

    // invalid_grant: unknown refresh token; a first-party token presented
    // by a registered client.
    assert_invalid_grant(&app, "not-a-refresh-token", "unknown").await;
    let both = app
        .create_client_with(
            "both",
            &[],
            Some(&["client_credentials", "refresh_token"]),
            None,
        )
        .await;
    let response = app
        .post_form(
            "/oauth/token",
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
            Some(("both", &both)),
        )
        .await;
    assert_oauth_error(response, 400, "invalid_grant").await;

    // unauthorized_client: a grant the client is not allowed.
    let response = app
        .client_credentials("gateway", &introspect_only, None)
        .await;
    assert_oauth_error(response, 400, "unauthorized_client").await;
    let response = app
        .post_form(
            "/oauth/token",
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
            svc,
        )
        .await;
    assert_oauth_error(response, 400, "unauthorized_client").await;

    // unsupported_grant_type.
    for grant in [
        "password",
        "authorization_code",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
    ] {
        let response = app
            .post_form("/oauth/token", &[("grant_type", grant)], svc)
            .await;
        assert_oauth_error(response, 400, "unsupported_grant_type").await;
    }

    // invalid_scope.
    let response = app.client_credentials("svc", &secret, Some("write")).await;
    assert_oauth_error(response, 400, "invalid_scope").await;

    // Not a form: 415, still not cacheable.
    let response = app
        .client
        .post(app.url("/oauth/token"))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert_no_store(&response);

    // After all that, the refresh token still works.
    app.refreshed(&refresh).await;
}

#[tokio::test]
async fn per_client_audience() {
    let app = spawn_app().await;
    let secret = app
        .create_client_with("orders", &[], None, Some("orders-api"))
        .await;
    let token = app.client_token("orders", &secret).await;
    assert_eq!(segment(&token, 1)["aud"], "orders-api");
    // Not for keyturn's own routes...
    assert_eq!(profile_status(&app, &token).await, 401);
    // ...but active for introspection.
    let info = app.introspect(&token, ("orders", &secret)).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["aud"], "orders-api");
    // Passing the any-audience check (and so being remembered as verified,
    // token::verified) does not make it pass the own-audience one.
    assert_eq!(
        profile_status(&app, &token).await,
        401,
        "after introspection"
    );
}

#[tokio::test]
async fn refresh_tokens_are_first_party_only() {
    let app = spawn_app().await;
    app.create_user("alice", &[]).await;
    let (_, refresh) = app.login_tokens("alice").await;
    let web = app
        .create_client_with("web", &[], Some(&["refresh_token"]), None)
        .await;

    // client_credentials never comes with a refresh token (RFC 6749 §4.4.3),
    // even for a client allowed the refresh_token grant.
    let both = app
        .create_client_with(
            "both",
            &[],
            Some(&["client_credentials", "refresh_token"]),
            None,
        )
        .await;
    let response = app.client_credentials("both", &both, None).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body.get("refresh_token").is_none(), "{body}");

    // A registered client presenting a first-party refresh token, by either
    // authentication method: invalid_grant, and the token is not spent.
    let form = [("grant_type", "refresh_token"), ("refresh_token", &refresh)];
    let response = app
        .post_form("/oauth/token", &form, Some(("web", &web)))
        .await;
    assert_oauth_error(response, 400, "invalid_grant").await;
    let response = app
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", "web"),
                ("client_secret", &web),
            ],
            None,
        )
        .await;
    assert_oauth_error(response, 400, "invalid_grant").await;

    // `client_id=first-party` without a secret names the public first-party
    // client: the same as no client authentication.
    let response = app
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", "first-party"),
            ],
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap();
    let claims = segment(access, 1);
    assert_eq!(claims["client_id"], "first-party");
    assert_eq!(claims["aud"], "keyturn");
    app.refreshed(body["refresh_token"].as_str().unwrap()).await;
}

/// Posts a raw `application/x-www-form-urlencoded` body.
async fn post_raw_form(
    app: &TestApp,
    body: String,
    basic: Option<(&str, &str)>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn form_bodies_decode_as_before() {
    let app = spawn_app().await;
    let secret = app.create_client("svc", &["read", "write"]).await;
    let svc = Some(("svc", secret.as_str()));
    app.create_user("alice", &[]).await;
    let (_, refresh) = app.login_tokens("alice").await;

    // Every parameter, repeated: invalid_request (RFC 6749 §3.2), even with
    // the same value twice.
    for body in [
        "grant_type=client_credentials&grant_type=client_credentials".to_owned(),
        "grant_type=client_credentials&scope=read&scope=write".to_owned(),
        format!("grant_type=refresh_token&refresh_token={refresh}&refresh_token={refresh}"),
        format!("grant_type=client_credentials&client_id=svc&client_id=svc&client_secret={secret}"),
        format!(
            "grant_type=client_credentials&client_id=svc&client_secret={secret}&client_secret={secret}"
        ),
    ] {
        let response = post_raw_form(&app, body.clone(), None).await;
        assert_oauth_error(response, 400, "invalid_request").await;
    }

    // Percent-escapes and `+` are decoded; unknown parameters are ignored.
    let response = post_raw_form(
        &app,
        "grant_type=client%5Fcredentials&scope=write+read&colour=blue".into(),
        svc,
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["scope"], "read write");

    // A `%` without two hex digits, or bytes that are not UTF-8, are kept
    // (as `%` and U+FFFD): the value is then simply wrong.
    for grant in ["client_credentials%zz", "client_credentials%", "%FF"] {
        let response = post_raw_form(&app, format!("grant_type={grant}"), svc).await;
        assert_oauth_error(response, 400, "unsupported_grant_type").await;
    }
    let response = post_raw_form(
        &app,
        format!("grant_type=client_credentials&client_id=svc&client_secret={secret}%zz"),
        None,
    )
    .await;
    assert_oauth_error(response, 401, "invalid_client").await;
    let response = post_raw_form(
        &app,
        format!("grant_type=refresh_token&refresh_token={refresh}%"),
        None,
    )
    .await;
    assert_oauth_error(response, 400, "invalid_grant").await;

    // A malformed escape in HTTP Basic credentials is a malformed header.
    for (id, secret) in [("svc", format!("{secret}%zz")), ("s%vc", secret.clone())] {
        let response = post_raw_form(
            &app,
            "grant_type=client_credentials".into(),
            Some((id, &secret)),
        )
        .await;
        assert_eq!(response.status(), 401);
        let text = response.text().await.unwrap();
        assert!(text.contains("not valid HTTP Basic"), "{text}");
    }

    // None of that spent the refresh token.
    app.refreshed(&refresh).await;
}

#[tokio::test]
async fn tokens_issued_are_counted_by_grant() {
    let app = spawn_app().await;
    let secret = app.create_client("svc", &[]).await;
    app.create_user("alice", &[]).await;
    let (_, r1) = app.login_tokens("alice").await;
    let (_, r2) = app.refreshed(&r1).await;
    app.refreshed(&r2).await;
    for _ in 0..3 {
        app.client_token("svc", &secret).await;
    }
    // Refused requests count nothing.
    assert_invalid_grant(&app, &r1, "reused").await;
    let response = app
        .post_form("/oauth/token", &[("grant_type", "password")], None)
        .await;
    assert_oauth_error(response, 400, "unsupported_grant_type").await;

    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    let issued: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("keyturn_tokens_issued_total{"))
        .collect();
    assert_eq!(
        issued,
        [
            "keyturn_tokens_issued_total{grant=\"login\"} 1",
            "keyturn_tokens_issued_total{grant=\"refresh_token\"} 2",
            "keyturn_tokens_issued_total{grant=\"client_credentials\"} 3",
        ]
    );
}
