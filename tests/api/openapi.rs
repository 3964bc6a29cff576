use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn openapi_documents_every_route_security_and_errors() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json", None).await;
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/health", "get"),
        ("/ready", "get"),
        ("/login", "post"),
        ("/profile", "get"),
        ("/.well-known/jwks.json", "get"),
        ("/admin/keys", "get"),
        ("/admin/users", "get"),
        ("/admin/users", "post"),
        ("/admin/users/{username}", "patch"),
        ("/admin/users/{username}", "delete"),
        ("/oauth/token", "post"),
        ("/oauth/revoke", "post"),
        ("/oauth/introspect", "post"),
        ("/logout", "post"),
        ("/.well-known/oauth-authorization-server", "get"),
        ("/.well-known/openid-configuration", "get"),
        ("/admin/clients", "get"),
        ("/admin/clients", "post"),
        ("/admin/clients/{client_id}", "delete"),
    ] {
        let op = &paths[path][method];
        assert!(op.is_object(), "{method} {path} documented");
        assert!(
            op["responses"]["200"].is_object()
                || op["responses"]["201"].is_object()
                || op["responses"]["204"].is_object()
        );
    }
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let scheme = |name: &str| {
        schemes
            .values()
            .find(|s| s["type"] == "http" && s["scheme"] == name)
            .unwrap_or_else(|| panic!("an http {name} scheme"))
    };
    scheme("bearer");
    scheme("basic");
    for (path, method) in [("/profile", "get"), ("/admin/users", "post")] {
        let op = &paths[path][method];
        assert!(op["security"].is_array(), "{path} has security");
        assert!(op["responses"]["401"].is_object(), "{path} documents 401");
        assert!(op["responses"]["403"].is_object(), "{path} documents 403");
    }
    assert!(paths["/login"]["post"]["responses"]["401"].is_object());
    assert!(paths["/.well-known/jwks.json"]["get"]["responses"]["304"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

#[tokio::test]
async fn oauth_endpoints_document_forms_client_auth_and_errors() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    let paths = &doc["paths"];
    let schemas = &doc["components"]["schemas"];
    for (path, fields) in [
        (
            "/oauth/token",
            &[
                "grant_type",
                "refresh_token",
                "scope",
                "client_id",
                "client_secret",
            ][..],
        ),
        (
            "/oauth/revoke",
            &["token", "token_type_hint", "client_id", "client_secret"][..],
        ),
        (
            "/oauth/introspect",
            &["token", "token_type_hint", "client_id", "client_secret"][..],
        ),
    ] {
        let op = &paths[path]["post"];
        let form = &op["requestBody"]["content"]["application/x-www-form-urlencoded"];
        assert!(form.is_object(), "{path} takes a form");
        let reference = form["schema"]["$ref"].as_str().unwrap();
        let schema = &schemas[reference.rsplit('/').next().unwrap()];
        for field in fields {
            assert!(schema["properties"][field].is_object(), "{path}: {field}");
        }
        assert!(op["responses"]["200"].is_object(), "{path} 200");
        assert!(op["responses"]["400"].is_object(), "{path} 400");
        assert!(op["responses"]["401"].is_object(), "{path} 401");
        assert!(
            op["security"].is_array(),
            "{path} documents client authentication"
        );
        let headers = op["responses"]["400"]["headers"].as_object().unwrap();
        for name in ["cache-control", "pragma"] {
            assert!(
                headers.keys().any(|h| h.eq_ignore_ascii_case(name)),
                "{path}: {name} documented"
            );
        }
    }
    let logout = &paths["/logout"]["post"];
    assert!(logout["responses"]["204"].is_object());
    assert!(logout["responses"]["401"].is_object());
    assert!(paths["/admin/clients"]["post"]["responses"]["201"].is_object());
    assert!(paths["/admin/clients"]["post"]["responses"]["409"].is_object());
}

#[tokio::test]
async fn swagger_ui_is_served() {
    let app = spawn_app().await;
    let response = app.get("/docs", None).await;
    let response = if response.status().is_redirection() {
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        app.get(&location, None).await
    } else {
        response
    };
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "Swagger UI page");
    assert!(html.contains("SwaggerUIBundle"));
}
