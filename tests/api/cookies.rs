//! The cookie transport for browser front-ends (SPEC §5a): the three
//! cookies and their exact attributes, the CSRF rule bound to the token,
//! one transport per request, refresh and logout by cookie.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    BrowserSession, PASSWORD, TestApp, assert_no_store, error_code, set_cookies, spawn_app,
    spawn_app_with,
};

const LOCAL: [(&str, &str); 2] = [
    ("KEYTURN_COOKIES", "on"),
    ("KEYTURN_COOKIE_SECURE", "false"),
];

async fn local_app() -> TestApp {
    spawn_app_with(&LOCAL).await
}

fn attrs(list: &[&str]) -> Vec<String> {
    let mut list: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
    list.sort();
    list
}

#[tokio::test]
async fn cookie_login_sets_exactly_the_three_cookies() {
    let app = spawn_app_with(&[("KEYTURN_COOKIES", "on")]).await;
    app.create_user("alice", &[]).await;
    let response = app.cookie_login_response("alice").await;
    assert_eq!(response.status(), 200);
    assert_no_store(&response);
    let cookies = set_cookies(&response);
    assert_eq!(cookies.len(), 3, "{cookies:?}");
    let access = &cookies["keyturn_access"];
    assert_eq!(
        access.attribute_set(),
        attrs(&[
            "Path=/",
            "Max-Age=900",
            "HttpOnly",
            "Secure",
            "SameSite=Strict"
        ])
    );
    assert_eq!(access.value.split('.').count(), 3, "the access token");
    let refresh = &cookies["keyturn_refresh"];
    assert_eq!(
        refresh.attribute_set(),
        attrs(&["Path=/oauth/token", "HttpOnly", "Secure", "SameSite=Strict"])
    );
    let csrf = &cookies["keyturn_csrf"];
    assert_eq!(
        csrf.attribute_set(),
        attrs(&["Path=/", "Secure", "SameSite=Strict"]),
        "readable by the page: no HttpOnly"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"token_type": "cookie", "expires_in": 900, "csrf_token": csrf.value}),
        "no token in the body"
    );
    // The access token is bound to this CSRF value: base64url(SHA-256).
    let claims = crate::helpers::segment(&access.value, 1);
    use base64::Engine as _;
    use sha2::Digest as _;
    let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(csrf.value.as_bytes()));
    assert_eq!(claims["csrf"], expected);
}

#[tokio::test]
async fn local_http_drops_secure_and_a_domain_is_set() {
    let app = spawn_app_with(&[
        ("KEYTURN_COOKIES", "on"),
        ("KEYTURN_COOKIE_SECURE", "false"),
        ("KEYTURN_COOKIE_DOMAIN", "example.test"),
    ])
    .await;
    app.create_user("alice", &[]).await;
    let response = app.cookie_login_response("alice").await;
    let cookies = set_cookies(&response);
    assert_eq!(
        cookies["keyturn_access"].attribute_set(),
        attrs(&[
            "Path=/",
            "Max-Age=900",
            "Domain=example.test",
            "HttpOnly",
            "SameSite=Strict"
        ])
    );
    assert_eq!(
        cookies["keyturn_csrf"].attribute_set(),
        attrs(&["Path=/", "Domain=example.test", "SameSite=Strict"])
    );
}

#[tokio::test]
async fn the_cookie_transport_is_off_by_default() {
    let app = spawn_app().await;
    app.create_user("alice", &[]).await;
    let response = app.cookie_login_response("alice").await;
    assert_eq!(response.status(), 400);
    assert!(set_cookies(&response).is_empty());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("KEYTURN_COOKIES"),
        "{body}"
    );
    // An access cookie means nothing while the transport is off.
    let token = app.token("alice").await;
    let response = app
        .client
        .get(app.url("/profile"))
        .header("cookie", format!("keyturn_access={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn without_transport_login_answers_as_before() {
    let app = local_app().await;
    app.create_user("alice", &[]).await;
    let response = app.login("alice", PASSWORD).await;
    assert_eq!(response.status(), 200);
    assert!(set_cookies(&response).is_empty());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["access_token"].is_string() && body["refresh_token"].is_string());
    let unknown = app
        .client
        .post(app.url("/login"))
        .json(&json!({"username": "alice", "password": PASSWORD, "transport": "carrier-pigeon"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
}

#[tokio::test]
async fn safe_methods_by_cookie_need_no_csrf_header() {
    let app = local_app().await;
    let session = app.browser_session("alice", &[]).await;
    let response = app
        .browser(Method::GET, "/profile", &session, None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["username"], "alice");
}

#[tokio::test]
async fn state_changing_requests_by_cookie_need_the_bound_csrf_value() {
    let app = local_app().await;
    let admin = app.browser_session("root", &["admin"]).await;
    let other = app.browser_session("mallory", &["admin"]).await;
    let create = |csrf: Option<&str>, name: &str| {
        app.browser(Method::POST, "/admin/users", &admin, csrf)
            .json(&json!({"username": name, "password": PASSWORD, "roles": []}))
            .send()
    };
    for (csrf, why) in [
        (None, "no header"),
        (Some(other.csrf.as_str()), "another session's value"),
        (Some(""), "empty"),
        (Some("x"), "garbage"),
    ] {
        let response = create(csrf, "bob").await.unwrap();
        assert_eq!(response.status(), 403, "{why}");
        assert_eq!(error_code(response).await, "csrf_failed", "{why}");
    }
    assert!(
        app.services.accounts.get("bob").await.is_err(),
        "nothing was created"
    );
    let response = create(Some(&admin.csrf), "bob").await.unwrap();
    assert_eq!(response.status(), 201);
    // Bearer requests are not subject to CSRF.
    let token = app.token("root").await;
    let response = app
        .post_json(
            "/admin/users",
            &token,
            &json!({"username": "carol", "password": PASSWORD, "roles": []}),
        )
        .await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn one_transport_per_request() {
    let app = local_app().await;
    let session = app.browser_session("alice", &[]).await;
    let token = app.token("alice").await;
    let both = app
        .browser(Method::GET, "/profile", &session, None)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), 400);
    assert_eq!(error_code(both).await, "invalid_request");
    let twice = app
        .client
        .get(app.url("/profile"))
        .header(
            "cookie",
            format!("keyturn_access={0}; keyturn_access={0}", session.access),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400);
}

#[tokio::test]
async fn two_authorization_headers_are_invalid_even_with_cookies_off() {
    let app = spawn_app().await;
    let token = app.user_token("alice", &[]).await;
    let response = app
        .client
        .get(app.url("/profile"))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "invalid_request");
}

#[tokio::test]
async fn refresh_by_cookie_rotates_and_sets_the_three_cookies_again() {
    let app = local_app().await;
    let first = app.browser_session("alice", &[]).await;

    let response = app.cookie_refresh(&first, None).await;
    assert_eq!(response.status(), 403);
    assert_eq!(error_code(response).await, "csrf_failed");
    let other = app.browser_session("bob", &[]).await;
    let response = app.cookie_refresh(&first, Some(&other.csrf)).await;
    assert_eq!(response.status(), 403);
    assert_eq!(error_code(response).await, "csrf_failed");

    let response = app.cookie_refresh(&first, Some(&first.csrf)).await;
    assert_eq!(response.status(), 200);
    assert_no_store(&response);
    let cookies = set_cookies(&response);
    assert_eq!(cookies.len(), 3);
    assert_eq!(
        cookies["keyturn_refresh"].attribute_set(),
        attrs(&["Path=/oauth/token", "HttpOnly", "SameSite=Strict"])
    );
    let second = BrowserSession::from_response(&response);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "cookie");
    assert_eq!(body["csrf_token"], second.csrf.as_str());
    assert!(body.get("access_token").is_none() && body.get("refresh_token").is_none());
    assert_ne!(second.csrf, first.csrf);
    assert_ne!(second.refresh, first.refresh);

    // The new access token is bound to the new CSRF value only.
    let logout = |session: &BrowserSession, csrf: &str| {
        app.browser(Method::POST, "/logout", session, Some(csrf))
            .send()
    };
    let stale = logout(&second, &first.csrf).await.unwrap();
    assert_eq!(stale.status(), 403);

    // Reuse detection: the spent refresh cookie revokes the family.
    let reused = app.cookie_refresh(&first, Some(&first.csrf)).await;
    assert_eq!(reused.status(), 400);
    assert_eq!(error_code(reused).await, "invalid_grant");
    let response = app
        .browser(Method::GET, "/profile", &second, None)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "the family's access token is revoked"
    );
    let response = app.cookie_refresh(&second, Some(&second.csrf)).await;
    assert_eq!(error_code(response).await, "invalid_grant");
}

#[tokio::test]
async fn logout_by_cookie_revokes_and_clears_the_cookies() {
    let app = local_app().await;
    let session = app.browser_session("alice", &[]).await;
    let refused = app
        .browser(Method::POST, "/logout", &session, None)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(set_cookies(&refused).is_empty());

    let response = app
        .browser(Method::POST, "/logout", &session, Some(&session.csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let cookies = set_cookies(&response);
    assert_eq!(cookies.len(), 3);
    for (name, path, http_only) in [
        ("keyturn_access", "/", true),
        ("keyturn_refresh", "/oauth/token", true),
        ("keyturn_csrf", "/", false),
    ] {
        let cookie = &cookies[name];
        assert_eq!(cookie.value, "", "{name}");
        let mut expected = vec![
            format!("Path={path}"),
            "Max-Age=0".into(),
            "SameSite=Strict".into(),
        ];
        if http_only {
            expected.push("HttpOnly".into());
        }
        expected.sort();
        assert_eq!(cookie.attribute_set(), expected, "{name}");
    }
    let after = app
        .browser(Method::GET, "/profile", &session, None)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    let refresh = app.cookie_refresh(&session, Some(&session.csrf)).await;
    assert_eq!(error_code(refresh).await, "invalid_grant");

    // Logout by Bearer sets no cookies.
    let token = app.token("alice").await;
    let response = app.post("/logout", &token).await;
    assert_eq!(response.status(), 204);
    assert!(set_cookies(&response).is_empty());
}

/// A 403 `csrf_failed` (on the token endpoint too, where other client
/// errors are 400) and no Bearer challenge: the token is fine, a new one
/// with more scope would not help. (77a9cfb answered the refresh with 400,
/// and the other routes with `insufficient_scope`.)
#[tokio::test]
async fn csrf_refusals_are_403_without_a_bearer_challenge_on_every_route() {
    let app = local_app().await;
    let session = app.browser_session("alice", &[]).await;
    let other = app.browser_session("bob", &[]).await;

    for (csrf, why) in [(None, "no header"), (Some(other.csrf.as_str()), "bob's")] {
        let refresh = app.cookie_refresh(&session, csrf).await;
        assert_eq!(refresh.status(), 403, "refresh, {why}");
        assert_no_store(&refresh);
        assert!(
            refresh.headers().get("www-authenticate").is_none(),
            "refresh, {why}: {:?}",
            refresh.headers().get("www-authenticate")
        );
        assert_eq!(error_code(refresh).await, "csrf_failed", "refresh, {why}");

        let logout = app
            .browser(Method::POST, "/logout", &session, csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(logout.status(), 403, "logout, {why}");
        assert!(
            logout.headers().get("www-authenticate").is_none(),
            "logout, {why}: {:?}",
            logout.headers().get("www-authenticate")
        );
        assert_eq!(error_code(logout).await, "csrf_failed", "logout, {why}");
    }

    // A missing role is still insufficient_scope, by cookie or Bearer.
    let admin_only = app
        .browser(
            Method::POST,
            "/admin/keys/rotate",
            &session,
            Some(&session.csrf),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(admin_only.status(), 403);
    assert_eq!(
        admin_only.headers()["www-authenticate"],
        "Bearer error=\"insufficient_scope\""
    );
    assert_eq!(error_code(admin_only).await, "forbidden");

    // Nothing was spent or revoked by the refusals.
    let refreshed = app.cookie_refresh(&session, Some(&session.csrf)).await;
    assert_eq!(refreshed.status(), 200);
}
