//! Refresh sessions: revocations that last as long as the token, refresh
//! tokens that do not pile up, no refresh race on PostgreSQL, a store that
//! goes away and comes back, and private database files.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{
    PASSWORD, PgProxy, assert_oauth_error, error_code, fresh_pg_database, spawn_app,
    spawn_app_with, spawn_pg_pair,
};

const COUNT_TOKENS: &str = "SELECT COUNT(*) FROM refresh_tokens";

#[tokio::test]
async fn a_revoked_token_stays_revoked_until_its_own_exp_after_a_shorter_ttl() {
    let a = spawn_app_with(&[
        ("KEYTURN_ACCESS_TOKEN_TTL", "900s"),
        ("KEYTURN_LEEWAY", "5s"),
    ])
    .await;
    a.create_user("alice", &[]).await;
    let (access, refresh) = a.login_tokens("alice").await;
    a.stop().await;

    // The operator shortens the TTL; the token issued before keeps its exp.
    let b = a.restart_with(&[("KEYTURN_ACCESS_TOKEN_TTL", "60s")]).await;
    assert_eq!(b.get("/profile", Some(&access)).await.status(), 200);
    // Reuse of a spent refresh token revokes the family and its access tokens.
    b.refreshed(&refresh).await;
    assert_oauth_error(b.refresh(&refresh).await, 400, "invalid_grant").await;
    assert_eq!(b.get("/profile", Some(&access)).await.status(), 401);
    b.stop().await;

    // Well past issue + the new TTL, well before the token's own exp.
    a.clock.advance(300);
    let c = a.restart_with(&[("KEYTURN_ACCESS_TOKEN_TTL", "60s")]).await;
    c.maintenance.prune().await;
    assert_eq!(
        c.get("/profile", Some(&access)).await.status(),
        401,
        "the revocation must last until the token's exp (iat + 900 s)"
    );
}

#[tokio::test]
async fn dead_families_are_pruned_and_spent_rows_kept_for_reuse_detection() {
    let app = spawn_app_with(&[("KEYTURN_REFRESH_TOKEN_TTL", "1h")]).await;
    app.create_user("alice", &[]).await;
    let (_, r1) = app.login_tokens("alice").await;
    let (_, r2) = app.refreshed(&r1).await;
    let (_, r3) = app.refreshed(&r2).await;
    app.maintenance.prune().await;
    assert_eq!(
        app.store_count(COUNT_TOKENS).await,
        3,
        "a live family keeps its spent rows"
    );

    // The spent R1 still gives the theft away, so the live R3 dies with it.
    assert_oauth_error(app.refresh(&r1).await, 400, "invalid_grant").await;
    assert_oauth_error(app.refresh(&r3).await, 400, "invalid_grant").await;
    app.maintenance.prune().await;
    assert_eq!(
        app.store_count(COUNT_TOKENS).await,
        0,
        "a revoked family goes"
    );

    // A family whose newest token expired unused goes too.
    let (_, r) = app.login_tokens("alice").await;
    app.refreshed(&r).await;
    app.clock.advance(1800);
    app.maintenance.prune().await;
    assert_eq!(
        app.store_count(COUNT_TOKENS).await,
        2,
        "still live after 30 min"
    );
    app.clock.advance(1801);
    app.maintenance.prune().await;
    assert_eq!(
        app.store_count(COUNT_TOKENS).await,
        0,
        "expired after 1 h idle"
    );
    assert_eq!(
        app.store_count("SELECT COUNT(*) FROM refresh_families")
            .await,
        0
    );
}

#[tokio::test]
async fn the_absolute_lifetime_caps_a_family_however_often_it_is_refreshed() {
    let app = spawn_app_with(&[
        ("KEYTURN_REFRESH_TOKEN_TTL", "30m"),
        ("KEYTURN_REFRESH_ABSOLUTE_TTL", "1h"),
    ])
    .await;
    app.create_user("alice", &[]).await;
    let (_, mut refresh) = app.login_tokens("alice").await;
    for minutes in [20, 20, 19] {
        app.clock.advance(minutes * 60);
        refresh = app.refreshed(&refresh).await.1;
    }
    // 59 minutes in, the last token was cut to the family's end at 60.
    app.clock.advance(60);
    assert_oauth_error(app.refresh(&refresh).await, 400, "invalid_grant").await;
    // A new login starts a new family.
    let (_, fresh) = app.login_tokens("alice").await;
    app.refreshed(&fresh).await;
}

#[tokio::test]
async fn a_users_live_families_are_capped_oldest_revoked_first() {
    // The cap is a setting (`KEYTURN_REFRESH_SESSIONS_PER_USER`, default 10).
    const CAP: i64 = 4;
    let app = spawn_app_with(&[("KEYTURN_REFRESH_SESSIONS_PER_USER", "4")]).await;
    app.create_user("alice", &[]).await;
    let mut sessions = Vec::new();
    for _ in 0..CAP {
        sessions.push(app.login_tokens("alice").await);
        app.clock.advance(1);
    }
    let user = app.services.accounts.get("alice").await.unwrap();
    let live = || async {
        app.services
            .store
            .count_live_refresh_tokens(&user.id, app.clock_now())
            .await
            .unwrap()
    };
    assert_eq!(live().await, CAP);
    // One login more: the oldest session goes, access token included.
    app.login_tokens("alice").await;
    assert_eq!(live().await, CAP);
    let (oldest_access, oldest_refresh) = &sessions[0];
    assert_oauth_error(app.refresh(oldest_refresh).await, 400, "invalid_grant").await;
    assert_eq!(app.get("/profile", Some(oldest_access)).await.status(), 401);
    let (second_access, second_refresh) = &sessions[1];
    assert_eq!(app.get("/profile", Some(second_access)).await.status(), 200);
    app.refreshed(second_refresh).await;
}

const RACE_ROUNDS: usize = 40;

#[tokio::test]
async fn on_postgres_one_refresh_token_presented_twice_at_once_wins_once() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let (a, b) = spawn_pg_pair(&[]).await;
    a.create_user("alice", &[]).await;
    for round in 0..RACE_ROUNDS {
        let (_, refresh) = a.login_tokens("alice").await;
        let (first, second) = tokio::join!(a.refresh(&refresh), b.refresh(&refresh));
        let (winner, loser) = match (first.status().as_u16(), second.status().as_u16()) {
            (200, 400) => (first, second),
            (400, 200) => (second, first),
            other => panic!("round {round}: exactly one must win, got {other:?}"),
        };
        assert_eq!(error_code(loser).await, "invalid_grant");
        let body: Value = winner.json().await.unwrap();
        let child = body["refresh_token"].as_str().unwrap();
        // Reuse was detected, so the winner's new token is revoked too.
        assert_oauth_error(a.refresh(child).await, 400, "invalid_grant").await;
    }
}

#[tokio::test]
async fn on_postgres_a_refresh_racing_a_family_revocation_leaves_nothing_live() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let (a, b) = spawn_pg_pair(&[]).await;
    a.create_user("alice", &[]).await;
    for round in 0..RACE_ROUNDS {
        let (_, r1) = a.login_tokens("alice").await;
        let (_, r2) = a.refreshed(&r1).await;
        // The victim presents the spent R1 on A (reuse: the family is
        // revoked) while the thief rotates R2 on B.
        let (victim, thief) = tokio::join!(a.refresh(&r1), b.refresh(&r2));
        assert_eq!(victim.status(), 400, "round {round}");
        if thief.status() == 200 {
            let body: Value = thief.json().await.unwrap();
            let r3 = body["refresh_token"].as_str().unwrap();
            let access = body["access_token"].as_str().unwrap();
            assert_oauth_error(b.refresh(r3).await, 400, "invalid_grant").await;
            b.assert_profile_becomes(access, 401).await;
        }
    }
}

#[tokio::test]
async fn when_postgres_is_unreachable_answers_are_503_then_everything_recovers() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let proxy = PgProxy::start().await;
    let url = proxy.url_for(&fresh_pg_database().await);
    let app = spawn_app_with(&[("KEYTURN_DATABASE_URL", &url)]).await;
    app.create_user("alice", &[]).await;
    let (access, refresh) = app.login_tokens("alice").await;
    assert_eq!(app.get("/ready", None).await.status(), 200);

    proxy.switch_off();
    let started = Instant::now();
    let ready = app.get("/ready", None).await;
    let ready_took = started.elapsed();
    assert_eq!(ready.status(), 503);
    assert!(
        ready_took < Duration::from_secs(2),
        "/ready took {ready_took:?}"
    );

    let started = Instant::now();
    let login = app.login("alice", PASSWORD).await;
    let login_took = started.elapsed();
    assert_eq!(login.status(), 503);
    assert!(login.headers().contains_key("retry-after"));
    assert_eq!(error_code(login).await, "temporarily_unavailable");
    assert!(
        login_took < Duration::from_secs(4),
        "/login took {login_took:?}"
    );

    let started = Instant::now();
    let token = app.refresh(&refresh).await;
    let token_took = started.elapsed();
    assert!(token.headers().contains_key("retry-after"));
    assert_oauth_error(token, 503, "temporarily_unavailable").await;
    assert!(
        token_took < Duration::from_secs(4),
        "/oauth/token took {token_took:?}"
    );
    eprintln!(
        "store down: /ready {ready_took:?}, /login {login_took:?}, /oauth/token {token_took:?}"
    );

    // What lives in memory keeps answering.
    assert_eq!(app.get("/.well-known/jwks.json", None).await.status(), 200);
    assert_eq!(app.get("/profile", Some(&access)).await.status(), 200);

    proxy.switch_on();
    let ready = app
        .eventually(
            || async { app.get("/ready", None).await.status() },
            |s| *s == 200,
        )
        .await;
    assert_eq!(ready, 200, "ready again without a restart");
    app.refreshed(&refresh).await;
    app.login_tokens("alice").await;
}

#[cfg(unix)]
#[tokio::test]
async fn the_sqlite_database_and_its_directory_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    if crate::helpers::postgres_pass() {
        return; // no file to check: PostgreSQL keeps its own
    }
    let app = spawn_app().await;
    app.create_user("alice", &[]).await;
    app.login_tokens("alice").await;
    let data = app.dir.path().join("data");
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&data), 0o700, "data/");
    for file in ["keyturn.db", "keyturn.db-wal", "keyturn.db-shm"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
}
