//! CORS (SPEC §5a): off unless `KEYTURN_CORS_ORIGINS` names the origin;
//! then exact origin, with credentials, never `*`.

use crate::helpers::{spawn_app, spawn_app_with};

const APP: &str = "http://127.0.0.1:5173";

fn cors_headers(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

async fn preflight(app: &crate::helpers::TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(reqwest::Method::OPTIONS, app.url("/logout"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "x-csrf-token, content-type",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn cors_is_off_by_default() {
    let app = spawn_app().await;
    let response = preflight(&app, APP).await;
    assert_ne!(response.status(), 204);
    assert!(
        cors_headers(&response).is_empty(),
        "{:?}",
        response.headers()
    );
    let response = app
        .client
        .get(app.url("/health"))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert!(cors_headers(&response).is_empty());
}

#[tokio::test]
async fn configured_origins_get_credentialed_cors() {
    let app = spawn_app_with(&[
        ("KEYTURN_COOKIES", "on"),
        (
            "KEYTURN_CORS_ORIGINS",
            &format!("https://app.example, {APP}"),
        ),
    ])
    .await;
    let response = preflight(&app, APP).await;
    assert_eq!(response.status(), 204);
    let headers = response.headers();
    assert_eq!(headers["access-control-allow-origin"], APP);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    for method in ["GET", "POST", "PATCH", "DELETE"] {
        assert!(methods.contains(method), "{methods}");
    }
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in ["x-csrf-token", "content-type", "authorization"] {
        assert!(allowed.contains(header), "{allowed}");
    }
    assert!(
        headers
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().contains("Origin"))
    );

    // The actual request gets the same origin back.
    let response = app
        .client
        .get(app.url("/health"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(
        response.headers()["access-control-allow-credentials"],
        "true"
    );
}

#[tokio::test]
async fn other_origins_get_no_cors_headers_and_never_a_wildcard() {
    let app = spawn_app_with(&[("KEYTURN_CORS_ORIGINS", APP)]).await;
    for origin in [
        "https://evil.example",
        "http://127.0.0.1:5174",
        "http://127.0.0.1:5173.evil.example",
        "null",
        "*",
    ] {
        let response = preflight(&app, origin).await;
        assert_ne!(response.status(), 204, "{origin}");
        assert!(cors_headers(&response).is_empty(), "{origin}");
        let response = app
            .client
            .get(app.url("/health"))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert!(cors_headers(&response).is_empty(), "{origin}");
    }
    let response = app.get("/health", None).await;
    assert!(cors_headers(&response).is_empty(), "no Origin, no CORS");
}
