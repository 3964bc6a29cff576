//! The key lifecycle on a live server: scheduled and manual rotation,
//! prepublish, retirement and pruning, revocation, algorithm migration,
//! restarts, CLI changes, crash safety, and zero failed verifications.

use std::collections::HashMap;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use keyturn::keys::{KeyLifecycle, KeyState};
use keyturn::store::{KeyChange, KeyRow, StoreError};
use serde_json::Value;

use keyturn::clock::{Clock as _, ManualClock, SystemClock};

use crate::helpers::{
    ISSUER, PASSWORD, TestApp, error_code, segment, spawn_app_clocked, spawn_app_with,
};

/// Short durations: prepublish 120 s ≥ JWKS max-age 60 s; tokens live
/// 300 s + 30 s leeway, so retired keys stay 330 s.
const SHORT: [(&str, &str); 4] = [
    ("KEYTURN_KEY_PREPUBLISH", "120s"),
    ("KEYTURN_JWKS_MAX_AGE", "60s"),
    ("KEYTURN_ACCESS_TOKEN_TTL", "300s"),
    ("KEYTURN_LEEWAY", "30s"),
];
/// Far enough away that no scheduled rotation happens during a test.
const YEARLY: (&str, &str) = ("KEYTURN_ROTATION_SCHEDULE", "0 0 0 1 1 *");
const HOURLY: (&str, &str) = ("KEYTURN_ROTATION_SCHEDULE", "0 0 * * * *");

async fn app_with(extra: &[(&str, &str)]) -> TestApp {
    app_clocked(extra, ManualClock::default()).await
}

async fn app_clocked(extra: &[(&str, &str)], clock: ManualClock) -> TestApp {
    let mut settings: Vec<(&str, &str)> = SHORT.to_vec();
    settings.extend_from_slice(extra);
    spawn_app_clocked(&settings, clock).await
}

/// The admin listing's kids by state (each state name must parse).
fn kids_by_state(keys: &Value) -> HashMap<KeyState, Vec<String>> {
    let mut map: HashMap<KeyState, Vec<String>> = HashMap::new();
    for key in keys["keys"].as_array().unwrap() {
        map.entry(key["state"].as_str().unwrap().parse().unwrap())
            .or_default()
            .push(key["kid"].as_str().unwrap().to_owned());
    }
    map
}

fn jwks_kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

async fn admin_keys(app: &TestApp, admin: &str) -> Value {
    let response = app.get("/admin/keys", Some(admin)).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn rotate(app: &TestApp, admin: &str, force: bool) -> reqwest::Response {
    app.post(&format!("/admin/keys/rotate?force={force}"), admin)
        .await
}

fn signer_kid(app: &TestApp) -> String {
    app.keyring.get().signer().unwrap().kid().to_owned()
}

/// Seconds until the next top of the hour on the test clock.
fn to_next_hour(app: &TestApp) -> i64 {
    3600 - app.clock_now().rem_euclid(3600)
}

#[tokio::test]
async fn a_full_cycle_on_schedule() {
    // One minute before a top of the hour: the first scheduled time comes
    // before the 120 s prepublish has passed.
    let hour = 3600 * (SystemClock.now() / 3600 + 1);
    let app = app_clocked(&[HOURLY], ManualClock::at(hour - 60)).await;
    let admin = app.user_token("root", &["admin"]).await;
    let logins_before = app
        .metric("keyturn_tokens_issued_total{grant=\"login\"}")
        .await;
    let start = kids_by_state(&admin_keys(&app, &admin).await);
    let (first, second) = (
        start[&KeyState::Current][0].clone(),
        start[&KeyState::Next][0].clone(),
    );
    assert_eq!(segment(&admin, 0)["kid"], first.as_str());

    // Before prepublish has passed, even the schedule does not promote `next`.
    let wait = to_next_hour(&app);
    assert_eq!(wait, 60);
    app.clock.advance(wait);
    app.tick().await;
    assert_eq!(signer_kid(&app), first, "postponed, never rushed");
    // At the next scheduled time after prepublish: rotation.
    let keys = admin_keys(&app, &admin).await;
    let planned = chrono::DateTime::parse_from_rfc3339(keys["next_rotation_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!(planned >= app.clock_now());
    app.clock.advance(planned - app.clock_now() - 10);
    let before = app.token("root").await;
    app.clock.advance(10);
    app.tick().await;
    assert_eq!(signer_kid(&app), second, "next became current");
    let after = kids_by_state(&admin_keys(&app, &before).await);
    assert_eq!(after[&KeyState::Retired], vec![first.clone()]);
    assert_eq!(after[&KeyState::Current], vec![second.clone()]);
    assert_eq!(after[&KeyState::Next].len(), 1);
    let third = after[&KeyState::Next][0].clone();
    let jwks = jwks_kids(&app.jwks().await);
    assert_eq!(jwks, vec![second.clone(), third.clone(), first.clone()]);

    // A token from before the rotation still works; new ones use the new key.
    assert_eq!(app.get("/profile", Some(&before)).await.status(), 200);
    let fresh = app.token("root").await;
    assert_eq!(segment(&fresh, 0)["kid"], second.as_str());

    // The JWKS is not cached past the retired key's prune time.
    let response = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(response.headers()["cache-control"], "public, max-age=60");
    app.clock.advance(330 - 10);
    let response = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(response.headers()["cache-control"], "public, max-age=10");

    // Retired until retired_at + TTL + leeway, then pruned.
    app.tick().await;
    assert!(jwks_kids(&app.jwks().await).contains(&first));
    app.clock.advance(10);
    app.tick().await;
    assert_eq!(jwks_kids(&app.jwks().await), vec![second, third]);
    assert_eq!(
        app.get("/profile", Some(&before)).await.status(),
        401,
        "expired"
    );
    let rows = app.services.store.list_keys().await.unwrap();
    assert!(rows.iter().all(|r| r.kid != first), "pruned from the store");

    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("keyturn_key_rotations_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("keyturn_keys_pruned_total 1"), "{metrics}");
    assert!(
        metrics.contains("keyturn_current_key_age_seconds 330"),
        "{metrics}"
    );
    assert_eq!(
        app.metric("keyturn_tokens_issued_total{grant=\"login\"}")
            .await,
        logins_before + 2,
        "the tokens before and after the rotation"
    );
}

#[tokio::test]
async fn manual_rotation_respects_prepublish_unless_forced() {
    let app = app_with(&[YEARLY]).await;
    let admin = app.user_token("root", &["admin"]).await;
    let first = signer_kid(&app);

    let response = rotate(&app, &admin, false).await;
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "rotation_too_early");
    let earliest = chrono::DateTime::from_timestamp(app.clock_now() + 120, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains(&earliest),
        "{body} names {earliest}"
    );
    assert_eq!(signer_kid(&app), first);

    app.clock.advance(120);
    let response = rotate(&app, &admin, false).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let states = kids_by_state(&body);
    assert_eq!(states[&KeyState::Retired], vec![first.clone()]);
    let second = signer_kid(&app);
    assert_ne!(
        second, first,
        "this instance signs with the new key at once"
    );

    // Forced: the brand-new next key is promoted at once.
    let response = rotate(&app, &admin, true).await;
    assert_eq!(response.status(), 200);
    assert_ne!(signer_kid(&app), second);
    assert_eq!(app.get("/profile", Some(&admin)).await.status(), 200);

    // Non-admins cannot rotate.
    let user = app.user_token("bob", &[]).await;
    assert_eq!(rotate(&app, &user, true).await.status(), 403);
}

#[tokio::test]
async fn revocation_removes_the_key_and_its_tokens_at_once() {
    let app = app_with(&[YEARLY]).await;
    let admin_before = app.user_token("root", &["admin"]).await;
    let old_jwks = app.get("/.well-known/jwks.json", None).await;
    let old_etag = old_jwks.headers()["etag"].to_str().unwrap().to_owned();
    let victim = signer_kid(&app);

    // The admin's own token is signed by the victim: it is accepted for
    // this request and refused right after.
    let response = app
        .post(&format!("/admin/keys/{victim}/revoke"), &admin_before)
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let states = kids_by_state(&body);
    assert_eq!(states[&KeyState::Revoked], vec![victim.clone()]);
    assert_eq!(states[&KeyState::Current].len(), 1);
    assert_eq!(states[&KeyState::Next].len(), 1);

    // Gone from the JWKS, with a new ETag; its tokens refused immediately.
    let response = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .header("if-none-match", &old_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the old ETag no longer matches");
    assert_ne!(response.headers()["etag"].to_str().unwrap(), old_etag);
    let jwks: Value = response.json().await.unwrap();
    assert!(!jwks_kids(&jwks).contains(&victim));
    let response = app.get("/profile", Some(&admin_before)).await;
    assert_eq!(response.status(), 401);

    // Signing goes on, through any number of revocations of the signer.
    for _ in 0..3 {
        let admin = app.token("root").await;
        let kid = segment(&admin, 0)["kid"].as_str().unwrap().to_owned();
        assert_eq!(app.get("/profile", Some(&admin)).await.status(), 200);
        let response = app.post(&format!("/admin/keys/{kid}/revoke"), &admin).await;
        assert_eq!(response.status(), 200);
        assert_eq!(app.get("/profile", Some(&admin)).await.status(), 401);
        assert_eq!(app.get("/ready", None).await.status(), 200);
    }
    // The revoked keys hold no private half any more.
    let rows = app.services.store.list_keys().await.unwrap();
    let revoked: Vec<&KeyRow> = rows
        .iter()
        .filter(|r| r.state() == KeyState::Revoked)
        .collect();
    assert_eq!(revoked.len(), 4);
    for row in &revoked {
        assert!(matches!(row.lifecycle, KeyLifecycle::Revoked { .. }));
        assert!(row.lifecycle.sealed().is_none());
    }
    // In the database itself, every revoked row's private half is NULL.
    let pool = app.store_pool().await;
    for row in &revoked {
        let sealed: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT sealed_private FROM keys WHERE kid = $1")
                .bind(&row.kid)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(sealed, None, "{}'s private half destroyed", row.kid);
    }
    pool.close().await;
    // Unknown or already revoked: 404.
    let admin = app.token("root").await;
    for kid in [victim.as_str(), "no-such-kid"] {
        let response = app.post(&format!("/admin/keys/{kid}/revoke"), &admin).await;
        assert_eq!(response.status(), 404, "{kid}");
        assert_eq!(error_code(response).await, "not_found");
    }
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("keyturn_key_revocations_total 4"),
        "{metrics}"
    );
}

/// Verifies like a standard JWKS client: pick the key by kid, algorithm
/// from the key.
fn verify_with(set: &JwkSet, token: &str) -> Result<Value, String> {
    let kid = segment(token, 0)["kid"].as_str().unwrap().to_owned();
    let jwk = set.find(&kid).ok_or_else(|| format!("unknown kid {kid}"))?;
    let alg = jwk.common.key_algorithm.ok_or("no alg")?.to_string();
    let mut validation = Validation::new(alg.parse().map_err(|_| "alg")?);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&["keyturn"]);
    // Time is the test clock's, checked by the caller.
    validation.validate_exp = false;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn algorithm_migration_without_failed_verification() {
    let rs = app_with(&[YEARLY]).await;
    let rs_token = rs.user_token("alice", &[]).await;
    assert_eq!(segment(&rs_token, 0)["alg"], "RS256");
    rs.stop().await;

    // Restart with EdDSA: an EdDSA key is pre-published; RS256 still signs.
    let ed = rs.restart_with(&[("KEYTURN_SIGNING_ALG", "EdDSA")]).await;
    let cached: JwkSet = ed
        .get("/.well-known/jwks.json", None)
        .await
        .json()
        .await
        .unwrap();
    let algs: Vec<String> = cached
        .keys
        .iter()
        .map(|k| k.common.key_algorithm.unwrap().to_string())
        .collect();
    assert!(algs.contains(&"EdDSA".to_owned()), "{algs:?}");
    let still_rs = ed.token("alice").await;
    assert_eq!(
        segment(&still_rs, 0)["alg"],
        "RS256",
        "no switch before prepublish"
    );

    // After prepublish the switch happens; a JWKS fetched max-age (and even
    // prepublish) earlier verifies the new tokens, and the old ones still work.
    ed.clock.advance(120);
    ed.tick().await;
    let ed_token = ed.token("alice").await;
    assert_eq!(segment(&ed_token, 0)["alg"], "EdDSA");
    verify_with(&cached, &ed_token).expect("new token verifies from the old JWKS");
    assert_eq!(ed.get("/profile", Some(&rs_token)).await.status(), 200);
    assert_eq!(ed.get("/profile", Some(&still_rs)).await.status(), 200);
    let now: JwkSet = ed
        .get("/.well-known/jwks.json", None)
        .await
        .json()
        .await
        .unwrap();
    verify_with(&now, &rs_token).expect("old tokens verify from the new JWKS");

    // Once every RS256 token has expired, RS256 leaves the JWKS.
    ed.clock.advance(330);
    ed.tick().await;
    let jwks = ed.jwks().await;
    for key in jwks["keys"].as_array().unwrap() {
        assert_eq!(key["alg"], "EdDSA", "{jwks}");
    }
}

#[tokio::test]
async fn an_overdue_rotation_happens_once_on_start() {
    let app = app_with(&[HOURLY]).await;
    let first = signer_kid(&app);
    app.stop().await;
    // Down for five hours: five scheduled times missed.
    app.clock.advance(5 * 3600);
    let restarted = app.restart_with(&[]).await;
    assert_ne!(signer_kid(&restarted), first, "rotated on start");
    restarted.tick().await;
    restarted.tick().await;
    let rows = restarted.services.store.list_keys().await.unwrap();
    let retired = rows
        .iter()
        .filter(|r| r.state() == KeyState::Retired)
        .count();
    assert_eq!(retired, 1, "once, not once per missed tick: {rows:?}");
    let metrics = restarted.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("keyturn_key_rotations_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn cli_rotation_and_import_are_seen_by_the_running_server() {
    let app = app_with(&[YEARLY]).await;
    let first = signer_kid(&app);
    // The CLI runs on the real clock: the next key is seconds old.
    let out = app.cli(&["keys", "rotate"], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rotation too early"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1);

    let out = app.cli(&["keys", "rotate", "--force"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signer = app
        .eventually(|| async { signer_kid(&app) }, |kid| kid != &first)
        .await;
    assert_ne!(signer, first, "the running server signs with the new key");
    let listing = String::from_utf8_lossy(&app.cli(&["keys", "list"], None).stdout).into_owned();
    let first_line = listing.lines().find(|l| l.starts_with(&first)).unwrap();
    let state: KeyState = first_line
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(state, KeyState::Retired, "{listing}");
    assert!(listing.contains("next rotation:"), "{listing}");

    // Import a PKCS#1 RSA key as the next key.
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let pem = private.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    let path = app.dir.path().join("import.pem");
    std::fs::write(&path, pem.as_bytes()).unwrap();
    let out = app.cli(&["keys", "import", path.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let kid = stdout.split_whitespace().nth(1).unwrap().to_owned();
    let published = app
        .eventually(
            || async { jwks_kids(&app.jwks().await) },
            |kids| kids.contains(&kid),
        )
        .await;
    assert!(published.contains(&kid));
    let rows = app.services.store.list_keys().await.unwrap();
    let nexts: Vec<_> = rows
        .iter()
        .filter(|r| r.state() == KeyState::Next)
        .collect();
    assert_eq!(
        nexts.len(),
        1,
        "the imported key replaced the generated next"
    );
    assert_eq!(nexts[0].kid, kid);
    // Importing twice, or garbage, fails with one line.
    let out = app.cli(&["keys", "import", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    std::fs::write(&path, "not a key").unwrap();
    let out = app.cli(&["keys", "import", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    // An Ed25519 key for an RS256 server would never sign: refused.
    let doc =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    );
    std::fs::write(&path, pem).unwrap();
    let out = app.cli(&["keys", "import", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("KEYTURN_SIGNING_ALG"), "{stderr}");

    // CLI revocation, seen by the server.
    let victim = signer_kid(&app);
    let out = app.cli(&["keys", "revoke", &victim], None);
    assert!(out.status.success());
    let signer = app
        .eventually(|| async { signer_kid(&app) }, |kid| kid != &victim)
        .await;
    assert_ne!(signer, victim);
}

#[tokio::test]
async fn a_failed_rotation_transaction_changes_nothing() {
    let app = app_with(&[YEARLY]).await;
    let store = &app.services.store;
    let (version, rows) = store.keyset().await.unwrap();
    let current = rows
        .iter()
        .find(|r| r.state() == KeyState::Current)
        .unwrap()
        .clone();
    let next = rows
        .iter()
        .find(|r| r.state() == KeyState::Next)
        .unwrap()
        .clone();
    let mut promoted = next.clone();
    promoted.lifecycle = next.lifecycle.clone().promote(app.clock_now()).unwrap();
    let mut retired = current.clone();
    retired.lifecycle = current.lifecycle.clone().retire(app.clock_now()).unwrap();
    let mut ghost = current.clone();
    ghost.kid = "does-not-exist".into();

    // The process "dies" in the middle: the third change fails.
    let result = store
        .apply_key_changes(
            version,
            &[
                KeyChange::Update(promoted.clone()),
                KeyChange::Update(retired.clone()),
                KeyChange::Update(ghost),
            ],
        )
        .await;
    assert!(result.is_err());
    let (after_version, after) = store.keyset().await.unwrap();
    assert_eq!(after_version, version);
    assert_eq!(after, rows, "all or nothing");

    // A writer with a stale view loses instead of double-rotating.
    app.services
        .keys
        .rotate(app.clock_now(), true)
        .await
        .unwrap();
    let stale = store
        .apply_key_changes(version, &[KeyChange::Update(promoted)])
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict)));
    let rows = store.list_keys().await.unwrap();
    assert_eq!(
        rows.iter()
            .filter(|r| r.state() == KeyState::Current)
            .count(),
        1
    );
}

#[tokio::test]
async fn two_instances_rotate_once() {
    let a = app_with(&[HOURLY]).await;
    let b = a.restart_with(&[]).await;
    a.clock.advance(to_next_hour(&a).max(120) + 3600);
    // Both notice the due rotation at the same moment.
    tokio::join!(a.tick(), b.tick());
    let rows = a.services.store.list_keys().await.unwrap();
    assert_eq!(
        rows.iter()
            .filter(|r| r.state() == KeyState::Retired)
            .count(),
        1,
        "{rows:?}"
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r.state() == KeyState::Current)
            .count(),
        1
    );
    assert_eq!(
        rows.iter().filter(|r| r.state() == KeyState::Next).count(),
        1
    );
    assert_eq!(signer_kid(&a), signer_kid(&b));
}

#[tokio::test]
async fn zero_failed_verifications_across_many_rotations() {
    // Rotation every five minutes, prepublish 120 s, max-age 60 s, tokens
    // of 120 s: a client that honours max-age must never meet a token it
    // cannot verify.
    let app = spawn_app_with(&[
        ("KEYTURN_ROTATION_SCHEDULE", "0 */5 * * * *"),
        ("KEYTURN_KEY_PREPUBLISH", "120s"),
        ("KEYTURN_JWKS_MAX_AGE", "60s"),
        ("KEYTURN_ACCESS_TOKEN_TTL", "120s"),
        ("KEYTURN_LEEWAY", "0s"),
        ("KEYTURN_SIGNING_ALG", "EdDSA"),
    ])
    .await;
    app.create_user("alice", &[]).await;
    let mut cache: Option<(JwkSet, i64, i64)> = None; // (keys, fetched_at, max_age)
    let mut fetches = 0;
    let mut live: Vec<(String, i64)> = Vec::new(); // (token, exp)
    let (mut verified, mut failures) = (0, Vec::new());
    let start = app.clock_now();
    for _ in 0..150 {
        app.clock.advance(20);
        app.tick().await;
        let now = app.clock_now();
        let stale = cache
            .as_ref()
            .is_none_or(|(_, fetched, max_age)| now >= fetched + max_age);
        if stale {
            let response = app.get("/.well-known/jwks.json", None).await;
            let max_age: i64 = response.headers()["cache-control"]
                .to_str()
                .unwrap()
                .trim_start_matches("public, max-age=")
                .parse()
                .unwrap();
            cache = Some((response.json().await.unwrap(), now, max_age));
            fetches += 1;
        }
        let response = app.login("alice", PASSWORD).await;
        let body: Value = response.json().await.unwrap();
        let token = body["access_token"].as_str().unwrap().to_owned();
        live.push((token, now + 120));
        live.retain(|(_, exp)| *exp > now);
        let (set, _, _) = cache.as_ref().unwrap();
        for (token, _) in &live {
            match verify_with(set, token) {
                Ok(_) => verified += 1,
                Err(e) => failures.push(format!("t+{}: {e}", now - start)),
            }
        }
    }
    let rotations = app
        .get("/metrics", None)
        .await
        .text()
        .await
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("keyturn_key_rotations_total "))
        .unwrap()
        .parse::<u32>()
        .unwrap();
    assert!(rotations >= 8, "{rotations} rotations in 50 minutes");
    assert!(verified > 500, "{verified} verifications");
    assert!(fetches > 10, "{fetches} JWKS fetches");
    assert!(
        failures.is_empty(),
        "{} failures: {failures:?}",
        failures.len()
    );
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

#[tokio::test]
async fn imported_keys_sign_after_the_next_rotation() {
    // Ed25519 in both PKCS#8 forms: v2 (ring, with the public key) and v1
    // (seed only, as `openssl genpkey -algorithm ed25519` writes).
    let ed = app_with(&[YEARLY, ("KEYTURN_SIGNING_ALG", "EdDSA")]).await;
    let v2 =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let seed = &v2.as_ref()[16..48];
    let mut v1 = hex_der("302e020100300506032b657004220420");
    v1.extend_from_slice(seed);
    let other =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    for (n, der) in [v1, other.as_ref().to_vec()].into_iter().enumerate() {
        let kid = ed
            .services
            .keys
            .import(&pem("PRIVATE KEY", &der), ed.clock_now())
            .await
            .unwrap();
        ed.clock.advance(120);
        ed.services
            .keys
            .rotate(ed.clock_now(), false)
            .await
            .unwrap();
        ed.tick().await;
        assert_eq!(signer_kid(&ed), kid, "the imported key signs");
        let token = ed.user_token(&format!("user{n}"), &[]).await;
        assert_eq!(segment(&token, 0)["kid"], kid.as_str());
        assert_eq!(ed.get("/profile", Some(&token)).await.status(), 200);
    }

    // RSA in PKCS#8; too small a key is refused.
    let rs = app_with(&[YEARLY]).await;
    use rsa::pkcs8::EncodePrivateKey as _;
    let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let der = private.to_pkcs8_der().unwrap();
    let kid = rs
        .services
        .keys
        .import(&pem("PRIVATE KEY", der.as_bytes()), rs.clock_now())
        .await
        .unwrap();
    rs.clock.advance(120);
    rs.services
        .keys
        .rotate(rs.clock_now(), false)
        .await
        .unwrap();
    rs.tick().await;
    assert_eq!(signer_kid(&rs), kid);
    let small = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap();
    let der = small.to_pkcs8_der().unwrap();
    let err = rs
        .services
        .keys
        .import(&pem("PRIVATE KEY", der.as_bytes()), rs.clock_now())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("2048"), "{err}");
}

fn hex_der(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}
