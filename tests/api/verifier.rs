//! The verifier library against a live keyturn: tokens verify by kid with
//! no shared secret, revoked keys stop verifying, and a server rotating
//! every second never fails a verification.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyturn::verifier::{Claims, Verifier, VerifyError};

use crate::helpers::{ISSUER, TestApp, spawn_app, spawn_app_with};

fn builder(app: &TestApp) -> keyturn::verifier::VerifierBuilder {
    Verifier::builder()
        .jwks_url(app.url("/.well-known/jwks.json"))
        .issuer(ISSUER)
        .audience(["keyturn"])
}

#[tokio::test]
async fn verifies_live_tokens_and_refuses_revoked_keys() {
    let app = spawn_app().await;
    let token = app.user_token("alice", &["admin", "reports"]).await;
    let verifier = builder(&app)
        .unknown_kid_cooldown(Duration::from_secs(1))
        .clock(Arc::new(app.clock.clone()))
        .build()
        .await
        .unwrap();
    let claims: Claims = verifier.verify(&token).await.unwrap();
    let user = app.services.accounts.get("alice").await.unwrap();
    assert_eq!(claims.sub, user.id);
    assert_eq!(claims.username.as_deref(), Some("alice"));
    assert!(claims.has_role("admin") && claims.has_role("reports"));
    assert_eq!(claims.client_id.as_deref(), Some("first-party"));

    // Another audience is refused.
    let other = builder(&app).audience(["billing"]).build().await.unwrap();
    assert!(matches!(
        other.verify::<()>(&token).await,
        Err(VerifyError::WrongAudience)
    ));

    // After an emergency revocation the key is gone from the JWKS; once the
    // verifier refreshes, the token is refused as signed by an unknown key.
    let kid = app.keyring.get().signer().unwrap().kid().to_owned();
    let response = app.post(&format!("/admin/keys/{kid}/revoke"), &token).await;
    assert_eq!(response.status(), 200);
    verifier.refresh().await.unwrap();
    assert!(matches!(
        verifier.verify::<()>(&token).await,
        Err(VerifyError::UnknownKey)
    ));
    // The replacement key's tokens verify (an unknown kid triggers a
    // refetch, once the 1 s cooldown since the last fetch is over).
    app.clock.advance(1);
    let fresh = app.token("alice").await;
    assert!(verifier.verify::<()>(&fresh).await.is_ok());
}

#[tokio::test]
async fn eddsa_tokens_verify() {
    let app = crate::helpers::spawn_app_with(&[("KEYTURN_SIGNING_ALG", "EdDSA")]).await;
    let token = app.user_token("alice", &[]).await;
    let verifier = builder(&app).build().await.unwrap();
    assert!(verifier.verify::<()>(&token).await.is_ok());
}

#[tokio::test]
async fn zero_failed_verifications_while_the_live_server_rotates() {
    // A rotation is due every second and happens as soon as the successor
    // has been published for 2 s; the JWKS may be cached for 1 s. The
    // verifier may not refetch on unknown kids (a one-hour cooldown), so
    // only pre-publication and max-age refreshes keep it current. Server
    // and verifier share one frozen clock that the test moves a second at
    // a time: 20 s of rotations without waiting for them.
    let app = spawn_app_with(&[
        ("KEYTURN_ROTATION_SCHEDULE", "* * * * * *"),
        ("KEYTURN_KEY_PREPUBLISH", "2s"),
        ("KEYTURN_JWKS_MAX_AGE", "1s"),
        ("KEYTURN_ACCESS_TOKEN_TTL", "4s"),
        ("KEYTURN_LEEWAY", "1s"),
        ("KEYTURN_SIGNING_ALG", "EdDSA"),
    ])
    .await;
    app.create_user("alice", &[]).await;
    let verifier = builder(&app)
        .refresh_bounds(Duration::from_secs(1), Duration::from_secs(60))
        .unknown_kid_cooldown(Duration::from_secs(3600))
        .clock(Arc::new(app.clock.clone()))
        .build()
        .await
        .unwrap();
    let mut live: Vec<(String, i64)> = Vec::new();
    let (mut verified, mut failures, mut kids) = (0, Vec::new(), HashSet::new());
    for _ in 0..20 {
        app.clock.advance(1);
        // The JWKS max-age has run out: the background refresh fetches the
        // published keys (it looks at the moved clock within milliseconds).
        caught_up(&verifier, &app).await;
        // Then the server rotates, to a key published at least 2 s ago.
        app.tick().await;
        for _ in 0..3 {
            let token = app.token("alice").await;
            kids.insert(crate::helpers::segment(&token, 0)["kid"].to_string());
            live.push((token, app.clock_now()));
        }
        // Tokens younger than their lifetime must keep verifying.
        live.retain(|(_, issued)| app.clock_now() - issued < 3);
        for (token, _) in &live {
            match verifier.verify::<()>(token).await {
                Ok(_) => verified += 1,
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    assert!(kids.len() >= 8, "{} signing keys seen", kids.len());
    assert!(verified > 100, "{verified}");
    assert!(
        failures.is_empty(),
        "{} failures: {failures:?}",
        failures.len()
    );
}

/// Waits (at most 5 s of real time) until the verifier holds every key the
/// server publishes.
async fn caught_up(verifier: &Verifier, app: &TestApp) {
    let jwks = app.jwks().await;
    let published: HashSet<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let cached: HashSet<String> = verifier.key_ids().into_iter().collect();
        if cached.is_superset(&published) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the background refresh did not fetch {published:?} (cached {cached:?})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
