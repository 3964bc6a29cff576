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
    ] {
        let op = &paths[path][method];
        assert!(op.is_object(), "{method} {path} documented");
        assert!(
            op["responses"]["200"].is_object()
                || op["responses"]["201"].is_object()
                || op["responses"]["204"].is_object()
        );
    }
    let schemes = &doc["components"]["securitySchemes"];
    let bearer = schemes.as_object().unwrap().values().next().unwrap();
    assert_eq!(bearer["type"], "http");
    assert_eq!(bearer["scheme"], "bearer");
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
