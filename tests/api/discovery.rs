//! RFC 8414 metadata at both well-known locations; every URL resolves.

use serde_json::{Value, json};

use crate::helpers::{spawn_app_at_own_issuer, spawn_app_with};

#[tokio::test]
async fn metadata_urls_resolve() {
    let app = spawn_app_at_own_issuer(&[]).await;
    let secret = app.create_client("svc", &["read", "write"]).await;
    app.create_client("other", &["audit"]).await;
    let response = app
        .get("/.well-known/oauth-authorization-server", None)
        .await;
    assert_eq!(response.status(), 200);
    let meta: Value = response.json().await.unwrap();
    let openid: Value = app
        .get("/.well-known/openid-configuration", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(meta, openid, "one document at both locations");

    assert_eq!(meta["issuer"], app.base.as_str());
    assert_eq!(
        meta["grant_types_supported"],
        json!(["client_credentials", "refresh_token"])
    );
    assert_eq!(meta["response_types_supported"], json!([]));
    for member in [
        "token_endpoint_auth_methods_supported",
        "revocation_endpoint_auth_methods_supported",
        "introspection_endpoint_auth_methods_supported",
    ] {
        assert_eq!(
            meta[member],
            json!(["client_secret_basic", "client_secret_post"]),
            "{member}"
        );
    }
    assert_eq!(meta["scopes_supported"], json!(["audit", "read", "write"]));
    assert_eq!(
        meta["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );

    // Every URL is under the issuer and answers.
    let url = |member: &str| {
        let url = meta[member].as_str().unwrap().to_owned();
        assert!(url.starts_with(&app.base), "{member}: {url}");
        url
    };
    let jwks: Value = app
        .client
        .get(url("jwks_uri"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!jwks["keys"].as_array().unwrap().is_empty());
    let response = app
        .client
        .post(url("token_endpoint"))
        .basic_auth("svc", Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let token: Value = response.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap();
    let response = app
        .client
        .post(url("introspection_endpoint"))
        .basic_auth("svc", Some(&secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.json::<Value>().await.unwrap()["active"], true);
    let response = app
        .client
        .post(url("revocation_endpoint"))
        .basic_auth("svc", Some(&secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let docs = app
        .client
        .get(url("service_documentation"))
        .send()
        .await
        .unwrap();
    // Swagger UI itself, not a redirect (the test client follows none).
    assert_eq!(docs.status(), 200);
    assert_eq!(docs.headers()["content-type"], "text/html; charset=utf-8");
    assert!(docs.text().await.unwrap().contains("SwaggerUIBundle"));
}

#[tokio::test]
async fn metadata_lists_the_algorithms_in_use() {
    let app = spawn_app_with(&[("KEYTURN_SIGNING_ALG", "EdDSA")]).await;
    let meta: Value = app
        .get("/.well-known/oauth-authorization-server", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["id_token_signing_alg_values_supported"],
        json!(["EdDSA"])
    );
    assert_eq!(meta["issuer"], "http://keyturn.test");
    assert_eq!(meta["token_endpoint"], "http://keyturn.test/oauth/token");
    assert_eq!(
        meta["jwks_uri"],
        "http://keyturn.test/.well-known/jwks.json"
    );
    assert_eq!(meta["scopes_supported"], json!([]));
}
