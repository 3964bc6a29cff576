//! Strict HTTP (issue 10): bounded headers, slow clients cut off, and the
//! security headers on every response.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, spawn_app};

/// `REQUEST_DEADLINE` of `src/http/connection.rs`.
const DEADLINE: Duration = Duration::from_secs(10);

/// Writes `head` then `trickle` one byte every 500 ms; returns how long
/// until the server closed the connection (or gave up at 3× the deadline).
async fn trickle(app: &TestApp, head: String, trickle: &'static [u8]) -> Duration {
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        for byte in trickle.iter().cycle() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(DEADLINE * 3, async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    writer.abort();
    assert!(closed.is_ok(), "the connection stayed open");
    started.elapsed()
}

#[tokio::test]
async fn slow_clients_are_cut_off_within_the_deadline() {
    let app = spawn_app().await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let slow_headers = trickle(
        &app,
        format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n"),
        b"X-Slow: aaaa\r\n",
    );
    let slow_body = trickle(
        &app,
        format!(
            "POST /login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: 60000\r\n\r\n"
        ),
        b"{",
    );
    let idle = async {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let _ = tokio::time::timeout(DEADLINE * 3, stream.read(&mut buf)).await;
        started.elapsed()
    };
    let (headers, body, idle) = tokio::join!(slow_headers, slow_body, idle);
    for (what, took) in [("headers", headers), ("body", body), ("silence", idle)] {
        assert!(
            took >= DEADLINE - Duration::from_millis(500)
                && took <= DEADLINE + Duration::from_secs(3),
            "slow {what}: closed after {took:?}"
        );
    }
    // Prompt clients are unaffected.
    assert_eq!(app.get("/health", None).await.status(), 200);
}

#[tokio::test]
async fn oversized_and_too_many_headers_are_refused() {
    let app = spawn_app().await;
    let big = "a".repeat(20 * 1024);
    let response = app
        .client
        .get(app.url("/health"))
        .header("x-big", big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");

    let mut request = app.client.get(app.url("/health"));
    for i in 0..120 {
        request = request.header(format!("x-h{i}"), "v");
    }
    let status = match request.send().await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    };
    assert!(status == 431 || status == 400, "120 headers: {status}");
    assert_eq!(app.get("/health", None).await.status(), 200);
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = spawn_app().await;
    let token = app.user_token("root", &["admin"]).await;
    let responses = [
        ("/health", app.get("/health", None).await, false),
        ("/nowhere", app.get("/nowhere", None).await, false),
        (
            "/.well-known/jwks.json",
            app.get("/.well-known/jwks.json", None).await,
            false,
        ),
        ("/profile", app.get("/profile", Some(&token)).await, true),
        ("/profile 401", app.get("/profile", None).await, true),
        (
            "/admin/users",
            app.get("/admin/users", Some(&token)).await,
            true,
        ),
        ("/login 401", app.login("root", "wrong").await, true),
        (
            "/login 200",
            app.login("root", crate::helpers::PASSWORD).await,
            true,
        ),
        ("/oauth/token", app.refresh("garbage").await, true),
        ("/logout", app.post("/logout", &token).await, true),
    ];
    for (what, response, private) in responses {
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{what}");
        if private {
            assert_eq!(headers["cache-control"], "no-store", "{what}");
        } else {
            assert_ne!(
                headers.get("cache-control").map(|v| v.to_str().unwrap()),
                Some("no-store"),
                "{what}"
            );
        }
    }
}
