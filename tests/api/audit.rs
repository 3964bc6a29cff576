//! The audit trail (docs/audit.md): every security event stored with its
//! fields after the real action over HTTP or the CLI, nothing secret in it,
//! `GET /admin/audit` filters and cursor paging, retention, `audit tail`.

use std::io::BufRead as _;
use std::time::{Duration, Instant};

use keyturn::audit::{Actor, Entry, Event, Outcome};
use keyturn::clock::ManualClock;
use serde_json::{Value, json};

use crate::helpers::{
    PASSWORD, TestApp, spawn_app, spawn_app_clocked, spawn_app_with, spawn_pg_app,
};

/// Every event of the trail, newest first, paging through to the end.
async fn all_events(app: &TestApp, admin: &str, filter: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/admin/audit?limit=1000{filter}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let response = app.get(&path, Some(admin)).await;
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        events.extend(body["events"].as_array().unwrap().iter().cloned());
        match body["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return events,
        }
    }
}

/// The one event matching `event` and `subject` (panics unless exactly one).
fn one<'a>(events: &'a [Value], event: &str, subject: &str) -> &'a Value {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == event && e["subject"] == subject)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{event} on {subject}: {found:?}\nall: {}",
        serde_json::to_string_pretty(events).unwrap()
    );
    found[0]
}

fn ed25519_pem() -> String {
    use base64::Engine as _;
    let der =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

/// Does one action of every event family over HTTP and the CLI, then checks
/// each stored event's fields; returns the secrets handed out on the way
/// and the trail as JSON text.
async fn every_family(app: &TestApp) -> (Vec<String>, String) {
    let mut secrets = vec![PASSWORD.to_owned()];
    let admin = app.user_token("root", &["admin"]).await;
    secrets.push(admin.clone());
    let admin_sub = crate::helpers::segment(&admin, 1)["sub"]
        .as_str()
        .unwrap()
        .to_owned();

    // Users, by an admin over HTTP.
    let created = app
        .post_json(
            "/admin/users",
            &admin,
            &json!({"username": "alice", "password": "alice's secret pw", "roles": ["reader"]}),
        )
        .await;
    assert_eq!(created.status(), 201);
    secrets.push("alice's secret pw".into());
    let changed = app
        .patch_json(
            "/admin/users/alice",
            &admin,
            &json!({"password": PASSWORD, "roles": ["reader", "writer"]}),
        )
        .await;
    assert_eq!(changed.status(), 200);
    // Refused: the last admin cannot lose the role.
    let refused = app
        .patch_json("/admin/users/root", &admin, &json!({"roles": []}))
        .await;
    assert_eq!(refused.status(), 409);

    // Logins: success, failures, throttled.
    let (access, refresh) = app.login_tokens("alice").await;
    let _ = access;
    assert_eq!(app.login("alice", "wrong password 1").await.status(), 401);
    for n in 0..6 {
        let status = app.login("mallory", &format!("guess {n}")).await.status();
        if status == 429 {
            break;
        }
    }
    assert_eq!(app.login("mallory", "guess 7").await.status(), 429);

    // Refresh, then reuse of the spent token.
    let (access2, refresh2) = app.refreshed(&refresh).await;
    secrets.extend([refresh.clone(), access2.clone(), refresh2.clone()]);
    assert_eq!(app.refresh(&refresh).await.status(), 400, "reuse refused");

    // Logout (a fresh session).
    let (access3, refresh3) = app.login_tokens("alice").await;
    secrets.extend([access3.clone(), refresh3]);
    assert_eq!(app.post("/logout", &access3).await.status(), 204);

    // Clients over HTTP: create, token, revoke, secret rotation, delete.
    let response = app
        .post_json(
            "/admin/clients",
            &admin,
            &json!({"client_id": "billing", "scopes": ["invoices:read"]}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let secret = body["client_secret"].as_str().unwrap().to_owned();
    secrets.push(secret.clone());
    let client_token = app.client_token("billing", &secret).await;
    secrets.push(client_token.clone());
    let revoked = app
        .post_form(
            "/oauth/revoke",
            &[("token", &client_token)],
            Some(("billing", &secret)),
        )
        .await;
    assert_eq!(revoked.status(), 200);
    let rotated = app.post("/admin/clients/billing/secret", &admin).await;
    assert_eq!(rotated.status(), 200);
    let body: Value = rotated.json().await.unwrap();
    secrets.push(body["client_secret"].as_str().unwrap().to_owned());
    assert_eq!(
        app.delete("/admin/clients/billing", &admin).await.status(),
        204
    );

    // Keys: manual rotation and revocation over HTTP, import by the CLI.
    assert_eq!(
        app.post("/admin/keys/rotate?force=true", &admin)
            .await
            .status(),
        200
    );
    let keys: Value = app
        .get("/admin/keys", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    let retired = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["state"] == "retired")
        .unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = app
        .post(&format!("/admin/keys/{retired}/revoke"), &admin)
        .await;
    assert_eq!(response.status(), 200);
    let pem = ed25519_pem();
    let path = app.dir.path().join("import.pem");
    std::fs::write(&path, &pem).unwrap();
    let out = app.cli(&["keys", "import", path.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let imported = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    secrets.push(pem.lines().nth(1).unwrap().to_owned());

    // A user removed by the CLI.
    let out = app.cli(&["users", "delete", "alice"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Revoking the key that signed the admin's token refused it: log in again.
    let admin = app.token("root").await;
    secrets.push(admin.clone());
    let events = all_events(app, &admin, "").await;
    let local = json!("127.0.0.1");

    let master = one(&events, "master_key_created", "master_key");
    assert_eq!(master["actor"], "system");
    let e = one(&events, "user_created", "alice");
    assert_eq!(e["actor"], admin_sub.as_str());
    assert_eq!(e["client_ip"], local);
    assert_eq!(e["outcome"], "success");
    assert!(
        e["detail"].as_str().unwrap().contains("roles=[reader]"),
        "{e}"
    );
    let e = one(&events, "user_changed", "alice");
    assert_eq!(e["actor"], admin_sub.as_str());
    let detail = e["detail"].as_str().unwrap();
    assert!(
        detail.contains("password changed") && detail.contains("writer"),
        "{e}"
    );
    let e = one(&events, "last_admin_protected", "root");
    assert_eq!(e["outcome"], "refused");
    let logins: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "login_succeeded" && e["subject"] == "alice")
        .collect();
    assert_eq!(logins.len(), 2, "two logins of alice");
    assert_eq!(logins[0]["client_ip"], local);
    let e = one(&events, "login_failed", "alice");
    assert_eq!(
        (e["actor"].as_str(), e["outcome"].as_str()),
        (Some("anonymous"), Some("failure"))
    );
    assert_eq!(e["client_ip"], local);
    let throttled: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "login_throttled" && e["subject"] == "mallory")
        .collect();
    assert!(!throttled.is_empty());
    assert_eq!(throttled[0]["outcome"], "refused");
    let e = events
        .iter()
        .find(|e| {
            e["event"] == "token_issued"
                && e["detail"]
                    .as_str()
                    .unwrap()
                    .contains("grant=refresh_token")
        })
        .expect("refresh grant");
    assert_eq!(e["subject"], "alice");
    let e = one(
        &events,
        "refresh_token_reuse",
        logins[0]["actor"].as_str().unwrap(),
    );
    assert_eq!(e["outcome"], "refused");
    assert!(e["detail"].as_str().unwrap().contains("family="), "{e}");
    let e = one(&events, "logout", "alice");
    assert_eq!(e["client_ip"], local);
    let e = one(&events, "client_created", "billing");
    assert_eq!(e["actor"], admin_sub.as_str());
    let e = one(&events, "token_issued", "billing");
    assert_eq!(e["actor"], "billing");
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("grant=client_credentials"),
        "{e}"
    );
    let e = one(&events, "token_revoked", "billing");
    assert_eq!(e["actor"], "billing");
    one(&events, "client_secret_rotated", "billing");
    one(&events, "client_deleted", "billing");
    let promoted: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "key_promoted" && e["actor"] == admin_sub.as_str())
        .collect();
    assert_eq!(promoted.len(), 1, "the manual rotation");
    let e = one(&events, "key_revoked", &retired);
    assert_eq!(e["actor"], admin_sub.as_str());
    let e = one(&events, "key_imported", &imported);
    assert!(e["actor"].as_str().unwrap().starts_with("cli"), "{e}");
    assert!(e["client_ip"].is_null());
    let e = one(&events, "user_deleted", "alice");
    assert!(e["actor"].as_str().unwrap().starts_with("cli"), "{e}");
    // Start-up generated the first keys: the scheduler's doing.
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "key_generated" && e["actor"] == "scheduler"),
        "first keys"
    );
    // Every event has every field, and ids only fall down the page.
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    for e in &events {
        for field in [
            "id",
            "time",
            "event",
            "actor",
            "subject",
            "client_ip",
            "outcome",
            "detail",
        ] {
            assert!(e.get(field).is_some(), "{field} missing in {e}");
        }
    }
    let text = serde_json::to_string(&events).unwrap();
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a secret in the trail: {secret}"
        );
    }
    (secrets, text)
}

#[tokio::test]
async fn every_event_family_is_stored_with_its_fields_and_nothing_secret() {
    let app = spawn_app_with(&[("KEYTURN_SIGNING_ALG", "EdDSA")]).await;
    let (secrets, _) = every_family(&app).await;
    // Not in the audit rows, nor anywhere else in the database.
    let bytes = app.database_bytes().await;
    for secret in &secrets {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a secret in the database: {secret}"
        );
    }
}

#[tokio::test]
async fn every_event_family_is_stored_on_postgres() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let app = spawn_pg_app(&[("KEYTURN_SIGNING_ALG", "EdDSA")]).await;
    every_family(&app).await;
}

/// Stores `n` events through the domain's own recorder.
async fn record_many(app: &TestApp, n: usize, event: Event, subject: &str) {
    for i in 0..n {
        let entry = Entry::new(event, &Actor::new("tester", None), subject)
            .outcome(Outcome::Failure)
            .detail(format!("n={i}"));
        app.services.audit.record(entry).await;
    }
}

/// Stand-alone events are committed in groups (store::audit): under many
/// concurrent writers every acknowledged event is stored once, and every
/// token issued to a client has its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_events_are_each_stored_once_in_group_commits() {
    let app = std::sync::Arc::new(spawn_app().await);
    let admin = app.user_token("root", &["admin"]).await;
    let writers: Vec<_> = (0..300)
        .map(|i| {
            let app = std::sync::Arc::clone(&app);
            tokio::spawn(async move {
                let entry = Entry::new(Event::LoginFailed, &Actor::new("tester", None), "carol")
                    .outcome(Outcome::Failure)
                    .detail(format!("n={i}"));
                app.services.audit.record(entry).await;
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let events = all_events(&app, &admin, "&event=login_failed&subject=carol").await;
    let mut details: Vec<String> = events
        .iter()
        .map(|e| e["detail"].as_str().unwrap().to_owned())
        .collect();
    details.sort();
    let mut expected: Vec<String> = (0..300).map(|i| format!("n={i}")).collect();
    expected.sort();
    assert_eq!(details, expected, "each event stored once, none lost");

    let secret = app.create_client("svc", &[]).await;
    // One call first: a burst before this instance has the client cached
    // goes through the throttle's in-flight limit (docs/security.md).
    let first = app.client_token("svc", &secret).await;
    let grants: Vec<_> = (0..100)
        .map(|_| {
            let (app, secret) = (std::sync::Arc::clone(&app), secret.clone());
            tokio::spawn(async move { app.client_token("svc", &secret).await })
        })
        .collect();
    let mut jtis = std::collections::BTreeSet::new();
    let claims = crate::helpers::segment(&first, 1);
    jtis.insert(claims["jti"].as_str().unwrap().to_owned());
    for grant in grants {
        let token = grant.await.unwrap();
        let claims = crate::helpers::segment(&token, 1);
        jtis.insert(claims["jti"].as_str().unwrap().to_owned());
    }
    let issued = all_events(&app, &admin, "&event=token_issued&subject=svc").await;
    let recorded: std::collections::BTreeSet<String> = issued
        .iter()
        .filter_map(|e| {
            e["detail"]
                .as_str()?
                .split_whitespace()
                .find_map(|w| w.strip_prefix("jti="))
        })
        .map(str::to_owned)
        .collect();
    assert_eq!(jtis.len(), 101);
    assert_eq!(recorded, jtis, "every issued token has its event");
}

#[tokio::test]
async fn pages_cover_every_event_once_while_new_ones_arrive() {
    let app = spawn_app().await;
    let admin = app.user_token("root", &["admin"]).await;
    record_many(&app, 250, Event::LoginFailed, "bob").await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/admin/audit?event=login_failed&subject=bob&limit=100".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let response = app.get(&path, Some(&admin)).await;
        assert_eq!(response.status(), 200);
        crate::helpers::assert_no_store(&response);
        let body: Value = response.json().await.unwrap();
        let events = body["events"].as_array().unwrap();
        assert!(events.len() <= 100);
        seen.extend(
            events
                .iter()
                .map(|e| e["detail"].as_str().unwrap().to_owned()),
        );
        pages += 1;
        // Events stored meanwhile are newer: they never shift the pages.
        record_many(&app, 7, Event::LoginFailed, "bob").await;
        match body["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..250).rev().map(|i| format!("n={i}")).collect();
    assert_eq!(seen, expected, "newest first, no duplicates, no gaps");
}

#[tokio::test]
async fn filters_select_by_event_subject_and_time() {
    let clock = ManualClock::default();
    let app = spawn_app_clocked(&[], clock.clone()).await;
    let admin = app.user_token("root", &["admin"]).await;
    let start = app.clock_now();
    record_many(&app, 3, Event::LoginFailed, "bob").await;
    clock.advance(100);
    record_many(&app, 2, Event::LoginFailed, "carol").await;
    record_many(&app, 1, Event::UserDeleted, "carol").await;

    let count = |events: &[Value]| events.len();
    let bob = all_events(&app, &admin, "&subject=bob").await;
    assert_eq!(count(&bob), 3);
    let failed = all_events(&app, &admin, "&event=login_failed").await;
    assert_eq!(count(&failed), 5);
    let carol_failed = all_events(&app, &admin, "&event=login_failed&subject=carol").await;
    assert_eq!(count(&carol_failed), 2);
    let later = all_events(
        &app,
        &admin,
        &format!("&since={}&subject=carol", start + 50),
    )
    .await;
    assert_eq!(count(&later), 3);
    let rfc = chrono::DateTime::from_timestamp(start + 50, 0)
        .unwrap()
        .to_rfc3339();
    let earlier = all_events(
        &app,
        &admin,
        &format!("&until={}&event=login_failed", rfc.replace('+', "%2B")),
    )
    .await;
    assert_eq!(count(&earlier), 3, "until in RFC 3339");
    let none = all_events(&app, &admin, "&subject=nobody").await;
    assert!(none.is_empty());
}

#[tokio::test]
async fn only_admins_read_the_trail_and_bad_parameters_are_400() {
    let app = spawn_app().await;
    let admin = app.user_token("root", &["admin"]).await;
    let reader = app.user_token("rita", &["reader"]).await;
    assert_eq!(app.get("/admin/audit", None).await.status(), 401);
    assert_eq!(app.get("/admin/audit", Some(&reader)).await.status(), 403);
    for bad in [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "limit=-1",
        "cursor=garbage",
        "cursor=YTow",
        "since=yesterday",
        "until=2026-13-01T00:00:00Z",
        "since=200&until=100",
        "event=no_such_event",
        "subject=",
    ] {
        let response = app.get(&format!("/admin/audit?{bad}"), Some(&admin)).await;
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{bad}: {body}");
    }
    let response = app.get("/admin/audit?limit=1000", Some(&admin)).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_maintenance_loop_prunes_events_past_the_retention() {
    let clock = ManualClock::default();
    let app = spawn_app_clocked(&[("KEYTURN_AUDIT_RETENTION", "2d")], clock.clone()).await;
    app.create_user("root", &["admin"]).await;
    record_many(&app, 3, Event::LoginFailed, "old").await;
    clock.advance(86_400 + 60);
    record_many(&app, 2, Event::LoginFailed, "middle").await;
    clock.advance(86_400);
    app.maintenance.prune().await;
    // The oldest are now 2 days and a minute old: gone; the others stay.
    // (A fresh token each time: the clock moved past the last one's exp.)
    let admin = app.token("root").await;
    assert!(all_events(&app, &admin, "&subject=old").await.is_empty());
    assert_eq!(all_events(&app, &admin, "&subject=middle").await.len(), 2);
    assert_eq!(
        all_events(&app, &admin, "&event=user_created").await.len(),
        0
    );
    clock.advance(86_400 + 1);
    app.maintenance.prune().await;
    let admin = app.token("root").await;
    assert!(all_events(&app, &admin, "&subject=middle").await.is_empty());
    // The login of a day ago stays.
    assert_eq!(
        all_events(&app, &admin, "&event=login_succeeded")
            .await
            .len(),
        2
    );
}

#[tokio::test]
async fn audit_tail_prints_json_lines_and_filters() {
    let app = spawn_app().await;
    app.create_user("bob", &[]).await;
    for _ in 0..3 {
        assert_eq!(app.login("bob", "wrong password").await.status(), 401);
    }
    assert_eq!(app.login("bob", PASSWORD).await.status(), 200);
    let out = app.cli(
        &[
            "audit",
            "tail",
            "--event",
            "login_failed",
            "--since",
            "1h",
            "--output",
            "json",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        assert_eq!(line["event"], "login_failed");
        assert_eq!(line["subject"], "bob");
        assert_eq!(line["client_ip"], "127.0.0.1");
    }
    let ids: Vec<i64> = lines.iter().map(|l| l["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first, as tail");

    // The table lines up whatever the values.
    let out = app.cli(&["audit", "tail", "-n", "2"], None);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3, "{text}");
    let column = |line: &str, needle: &str| line.find(needle).unwrap();
    assert!(rows[0].starts_with("TIME"));
    assert_eq!(
        column(rows[0], "EVENT"),
        column(rows[2], "login_succeeded"),
        "{text}"
    );

    let out = app.cli(&["audit", "tail", "--since", "soon"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
    let out = app.cli(&["audit", "tail", "-n", "0"], None);
    assert_eq!(out.status.code(), Some(2), "bad usage");
}

#[tokio::test]
async fn audit_tail_follow_prints_new_events_as_they_happen() {
    use std::process::{Command, Stdio};
    let app = spawn_app().await;
    app.create_user("bob", &[]).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyturn"))
        .args([
            "audit",
            "tail",
            "--follow",
            "--event",
            "login_failed",
            "--output",
            "json",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(app.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    // Let it print the (empty) backlog and start following.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.login("bob", "wrong password").await.status(), 401);
    let started = Instant::now();
    let line = loop {
        match lines.try_recv() {
            Ok(line) => break line,
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("no line from audit tail --follow: {err}"),
        }
    };
    child.kill().unwrap();
    let _ = child.wait();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["event"], "login_failed");
    assert_eq!(event["subject"], "bob");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "seen within the poll interval"
    );
}
