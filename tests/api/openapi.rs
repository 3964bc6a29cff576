use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn openapi_documents_every_route_security_and_errors() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json", None).await;
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    // Every route, with the success status it documents.
    for (path, method, success) in [
        ("/health", "get", "200"),
        ("/ready", "get", "200"),
        ("/login", "post", "200"),
        ("/profile", "get", "200"),
        ("/.well-known/jwks.json", "get", "200"),
        ("/admin/keys", "get", "200"),
        ("/admin/keys/rotate", "post", "200"),
        ("/admin/keys/{kid}/revoke", "post", "200"),
        ("/admin/users", "get", "200"),
        ("/admin/users", "post", "201"),
        ("/admin/users/{username}", "patch", "200"),
        ("/admin/users/{username}", "delete", "204"),
        ("/oauth/token", "post", "200"),
        ("/oauth/revoke", "post", "200"),
        ("/oauth/introspect", "post", "200"),
        ("/logout", "post", "204"),
        ("/.well-known/oauth-authorization-server", "get", "200"),
        ("/.well-known/openid-configuration", "get", "200"),
        ("/metrics", "get", "200"),
        ("/admin/clients", "get", "200"),
        ("/admin/clients", "post", "201"),
        ("/admin/clients/{client_id}", "delete", "204"),
    ] {
        let op = &paths[path][method];
        assert!(op.is_object(), "{method} {path} documented");
        assert!(
            op["responses"][success].is_object(),
            "{method} {path} documents {success}: {}",
            op["responses"]
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
    let bearer_name = schemes
        .iter()
        .find(|(_, s)| s["scheme"] == "bearer")
        .map(|(name, _)| name.clone())
        .unwrap();
    let error_body = |op: &Value, status: &str| {
        let content = op["responses"][status]["content"].as_object().unwrap();
        let (_, media) = content.iter().next().unwrap();
        assert_eq!(
            media["schema"]["$ref"], "#/components/schemas/ErrorBody",
            "{status} has the error shape"
        );
    };
    for (path, method) in [("/profile", "get"), ("/admin/users", "post")] {
        let op = &paths[path][method];
        assert_eq!(
            op["security"][0][&bearer_name],
            serde_json::json!([]),
            "{path} needs the bearer scheme: {}",
            op["security"]
        );
        error_body(op, "401");
        error_body(op, "403");
        assert!(
            op["responses"]["401"]["headers"]
                .as_object()
                .unwrap()
                .keys()
                .any(|h| h.eq_ignore_ascii_case("www-authenticate")),
            "{path} 401 documents WWW-Authenticate"
        );
    }
    error_body(&paths["/login"]["post"], "401");
    error_body(&paths["/login"]["post"], "429");
    assert!(paths["/.well-known/jwks.json"]["get"]["responses"]["304"].is_object());
    let error_schema = &doc["components"]["schemas"]["ErrorBody"];
    for field in ["error", "error_description"] {
        assert_eq!(error_schema["properties"][field]["type"], "string");
    }
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

/// Swagger UI shows tags in the document's order: `Auth` (log in) first, in
/// `/openapi.json` and in the document `/docs` embeds. Failed on the old
/// `main`, where poem-openapi's alphabetical order put `Admin` first.
#[tokio::test]
async fn the_auth_tag_comes_first_in_the_document_and_the_page() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    let names: Vec<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tag| tag["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Auth", "OAuth", "Keys", "Admin", "Health"]);
    let page = app.get("/docs", None).await.text().await.unwrap();
    let position = |name: &str| {
        page.find(&format!("\"name\": \"{name}\""))
            .unwrap_or_else(|| panic!("the page's document has the tag {name}"))
    };
    assert!(position("Auth") < position("OAuth"));
    assert!(position("OAuth") < position("Admin"));
    let page_slash = app.get("/docs/", None).await;
    assert_eq!(page_slash.status(), 200);
}

/// Error responses document a real example, not Swagger's `"string"`.
/// Failed on the old `main`.
#[tokio::test]
async fn error_bodies_have_a_realistic_example() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    let example = &doc["components"]["schemas"]["ErrorBody"]["example"];
    assert_eq!(example["error"], "invalid_request", "{example}");
    assert!(
        example["error_description"]
            .as_str()
            .is_some_and(|text| text.len() > 10),
        "{example}"
    );
}
