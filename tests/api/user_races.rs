//! A refresh racing a password change or a disable, on PostgreSQL with two
//! instances: the user change must take the same family locks as the
//! rotation, or the child the rotation inserts survives (review M1, second
//! path).
//!
//! The free race below rarely lands in the dangerous window (about a
//! millisecond between the rotation spending its token and committing), so
//! a second test forces that interleaving with a lock held from the test.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::helpers::{PASSWORD, TestApp, assert_oauth_error, spawn_pg_pair};

const ROUNDS: u64 = 40;

/// Runs `future` after `delay`.
async fn after<F: std::future::Future>(delay: Duration, future: F) -> F::Output {
    tokio::time::sleep(delay).await;
    future.await
}

/// Round `round`'s change to alice: a disable on odd rounds, a new password
/// on even ones. Returns (whether it disables, the PATCH body, the
/// password after it).
fn user_change(round: u64, password: &str) -> (bool, Value, String) {
    if round % 2 == 1 {
        (true, json!({"disabled": true}), password.to_owned())
    } else {
        let new_password = format!("{PASSWORD} {round}");
        (false, json!({"password": new_password}), new_password)
    }
}

/// Enables alice again after a disabling round.
async fn enable(app: &TestApp, admin: &str, round: u64) {
    let enabled = app
        .patch_json("/admin/users/alice", admin, &json!({"disabled": false}))
        .await;
    assert_eq!(enabled.status(), 200, "round {round}: enable");
}

/// The user's live (unspent, unrevoked, unexpired) refresh tokens, read in
/// the store: what a thief holding one could still use.
async fn live_refresh_tokens(app: &TestApp, name: &str) -> i64 {
    let user = app.services.accounts.get(name).await.expect("user");
    app.services
        .store
        .count_live_refresh_tokens(&user.id, app.clock_now())
        .await
        .expect("count")
}

#[tokio::test]
async fn on_postgres_a_refresh_racing_a_password_change_or_disable_leaves_nothing_live() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let (a, b) = spawn_pg_pair(&[]).await;
    let admin = b.user_token("root", &["admin"]).await;
    a.create_user("alice", &[]).await;
    let mut password = PASSWORD.to_owned();
    let mut refresh_won = 0;
    for round in 0..ROUNDS {
        // A new second, so the login after last round's revocation need not
        // wait for the next one.
        a.clock.advance(1);
        let response = a.login("alice", &password).await;
        assert_eq!(response.status(), 200, "round {round}: login");
        let body: Value = response.json().await.unwrap();
        let r1 = body["refresh_token"].as_str().unwrap().to_owned();
        let (disable, change, new_password) = user_change(round, &password);
        // Sweep the refresh's start across the change's transaction: a
        // password change hashes first (tens of ms), a disable does not.
        let window = if disable { 6 } else { 40 };
        let delay = Duration::from_millis(round * 7 % window);
        let (refreshed, changed) = tokio::join!(
            after(delay, a.refresh(&r1)),
            b.patch_json("/admin/users/alice", &admin, &change)
        );
        assert_eq!(changed.status(), 200, "round {round}: change");
        password = new_password;
        if refreshed.status() == 200 {
            refresh_won += 1;
            let body: Value = refreshed.json().await.unwrap();
            let r2 = body["refresh_token"].as_str().unwrap();
            assert_oauth_error(a.refresh(r2).await, 400, "invalid_grant").await;
        } else {
            assert_oauth_error(refreshed, 400, "invalid_grant").await;
        }
        if disable {
            enable(&b, &admin, round).await;
        }
        assert_eq!(
            live_refresh_tokens(&a, "alice").await,
            0,
            "round {round} ({}): a refresh token outlived the change",
            if disable {
                "disable"
            } else {
                "password change"
            }
        );
    }
    eprintln!("refresh won the race in {refresh_won} of {ROUNDS} rounds");
}

/// Number of sessions of this database waiting for a lock.
async fn lock_waiters(monitor: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(monitor)
    .await
    .expect("pg_stat_activity")
}

async fn wait_for_lock_waiters(monitor: &mut sqlx::PgConnection, n: i64, what: &str) {
    let start = Instant::now();
    while lock_waiters(monitor).await < n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what} never waited"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn on_postgres_a_user_change_waiting_on_a_rotation_revokes_the_child_it_inserts() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let (a, b) = spawn_pg_pair(&[]).await;
    let url = a
        .env
        .iter()
        .find(|(k, _)| k == "KEYTURN_DATABASE_URL")
        .map(|(_, v)| v.clone())
        .unwrap();
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut monitor = sqlx::PgConnection::connect(&url).await.unwrap();
    let admin = b.user_token("root", &["admin"]).await;
    a.create_user("alice", &[]).await;
    let mut password = PASSWORD.to_owned();
    for round in 0..30 {
        a.clock.advance(1);
        let response = a.login("alice", &password).await;
        assert_eq!(response.status(), 200, "round {round}: login");
        let body: Value = response.json().await.unwrap();
        let r1 = body["refresh_token"].as_str().unwrap().to_owned();
        let (disable, change, new_password) = user_change(round, &password);

        // A SHARE lock on refresh_families lets the rotation lock its family
        // row, spend R1 and insert R2, then stops it at its last UPDATE of
        // refresh_families, uncommitted. The user change then starts and
        // waits on the rotation; only then is the rotation let go.
        sqlx::raw_sql("BEGIN; LOCK TABLE refresh_families IN SHARE MODE")
            .execute(&mut holder)
            .await
            .unwrap();
        let orchestrated = async {
            wait_for_lock_waiters(&mut monitor, 1, "the rotation").await;
            let change = b.patch_json("/admin/users/alice", &admin, &change);
            let release = async {
                wait_for_lock_waiters(&mut monitor, 2, "the user change").await;
                sqlx::raw_sql("ROLLBACK")
                    .execute(&mut holder)
                    .await
                    .unwrap();
            };
            tokio::join!(change, release).0
        };
        let (refreshed, changed) = tokio::join!(a.refresh(&r1), orchestrated);
        assert_eq!(changed.status(), 200, "round {round}: change");
        password = new_password;
        assert_eq!(
            refreshed.status(),
            200,
            "round {round}: the rotation went first"
        );
        let body: Value = refreshed.json().await.unwrap();
        let r2 = body["refresh_token"].as_str().unwrap();
        if disable {
            enable(&b, &admin, round).await;
        }
        assert_eq!(
            live_refresh_tokens(&a, "alice").await,
            0,
            "round {round} ({}): the child of a rotation the change waited for stayed live",
            if disable {
                "disable"
            } else {
                "password change"
            }
        );
        assert_oauth_error(a.refresh(r2).await, 400, "invalid_grant").await;
    }
}

/// A login whose password check passed just before a password change or
/// disable committed must not start a session that outlives the change
/// (the family would be inserted after the change revoked the user's
/// families). The login's start is swept across the change's transaction.
#[tokio::test]
async fn on_postgres_a_login_racing_a_password_change_or_disable_starts_no_live_session() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let (a, b) = spawn_pg_pair(&[("KEYTURN_SIGNING_ALG", "EdDSA")]).await;
    let admin = b.user_token("root", &["admin"]).await;
    a.create_user("alice", &[]).await;
    let mut password = PASSWORD.to_owned();
    let (mut logged_in, mut refused) = (0, 0);
    for round in 0..ROUNDS {
        a.clock.advance(1);
        let (disable, change, new_password) = user_change(round, &password);
        let window = if disable { 40 } else { 80 };
        let delay = Duration::from_millis(round * 11 % window);
        let (login, changed) = tokio::join!(
            a.login("alice", &password),
            after(delay, b.patch_json("/admin/users/alice", &admin, &change))
        );
        assert_eq!(changed.status(), 200, "round {round}: change");
        match login.status().as_u16() {
            200 => {
                logged_in += 1;
                let body: Value = login.json().await.unwrap();
                let refresh = body["refresh_token"].as_str().unwrap();
                assert_oauth_error(a.refresh(refresh).await, 400, "invalid_grant").await;
            }
            401 => refused += 1,
            other => panic!("round {round}: login answered {other}"),
        }
        password = new_password;
        if disable {
            enable(&b, &admin, round).await;
        }
        assert_eq!(
            live_refresh_tokens(&a, "alice").await,
            0,
            "round {round}: a session started by the racing login outlived the change"
        );
    }
    eprintln!("racing logins: {logged_in} succeeded (then revoked), {refused} refused");
}
