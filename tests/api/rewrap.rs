//! Master-key rotation (`keyturn keys new-master-key`, `keyturn keys rewrap`)
//! with servers running, through the real binary, on SQLite and on
//! PostgreSQL: the JWKS and tokens survive, instances holding the new key
//! follow and seal under it, an instance without it changes no key, the old
//! key alone is refused afterwards, and bad input changes nothing.

use std::path::Path;
use std::process::Output;

use keyturn::audit::AuditQuery;
use keyturn::keys::{KeyError, KeyState, MasterKey};
use keyturn::store::KeyRow;
use secrecy::SecretString;
use serde_json::Value;

use crate::cli::keyturn_in;
use crate::helpers::{PASSWORD, TestApp, postgres_available, spawn_app, spawn_pg_app};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `keyturn` with `app`'s settings, some of them replaced by `changes`.
fn keyturn_with(
    app: &TestApp,
    changes: &[(&str, &str)],
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    let mut env: Vec<(&str, &str)> = app
        .env
        .iter()
        .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.extend_from_slice(changes);
    keyturn_in(app.dir.path(), &env, args, stdin)
}

/// Asserts exit 1 with one line on stderr containing `needle`.
fn assert_refused(out: &Output, needle: &str, what: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: {stderr}");
    assert!(stderr.contains(needle), "{what}: {stderr}");
}

/// `keyturn keys new-master-key FILE` through the binary; the key's text.
fn new_master_key(app: &TestApp, file: &Path) -> String {
    let out = app.cli(&["keys", "new-master-key", file.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("keys rewrap --new-master-key"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "private");
    }
    std::fs::read_to_string(file).unwrap().trim().to_owned()
}

fn key(encoded: &str) -> MasterKey {
    MasterKey::from_base64(&SecretString::from(encoded.to_owned()), "test").unwrap()
}

/// What a master-key change must leave alone or replace: the check value
/// and every stored row, sealed halves included.
async fn snapshot(app: &TestApp) -> (Option<String>, Vec<KeyRow>) {
    let store = &app.services.store;
    (
        store.master_check().await.unwrap(),
        store.list_keys().await.unwrap(),
    )
}

/// Every sealed private half opens with `with` and not with `without`.
async fn sealed_under(app: &TestApp, with: &MasterKey, without: &MasterKey) -> usize {
    let rows = app.services.store.list_keys().await.unwrap();
    let mut sealed = 0;
    for row in &rows {
        if let Some(blob) = row.lifecycle.sealed() {
            assert!(with.open(&row.kid, blob).is_ok(), "{} opens", row.kid);
            assert!(without.open(&row.kid, blob).is_err(), "{} not", row.kid);
            sealed += 1;
        }
    }
    sealed
}

async fn rewrapped_events(app: &TestApp) -> Vec<keyturn::store::AuditRow> {
    let query = AuditQuery {
        event: Some("master_key_rewrapped".into()),
        ..AuditQuery::default()
    };
    app.services.audit.page(&query).await.unwrap().events
}

/// Waits until `app` has reloaded its keyring to the store's keyset.
async fn follows_store(app: &TestApp) {
    let store_version = app.services.store.versions().await.unwrap().keys;
    let seen = app
        .eventually(
            || async { app.keyring.get().version },
            |v| *v == store_version,
        )
        .await;
    assert_eq!(seen, store_version, "keyring reloaded");
}

async fn profile_ok(app: &TestApp, token: &str) {
    assert_eq!(app.get("/profile", Some(token)).await.status(), 200);
}

fn kid_of(token: &str) -> String {
    crate::helpers::segment(token, 0)["kid"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The SQLite file never holds a private key, nor either master key.
async fn assert_nothing_in_clear(app: &TestApp, pkcs8: &[u8], master_keys: &[&str]) {
    use base64::Engine as _;
    let bytes = app.database_bytes().await;
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    // The PKCS#8 key body (past its fixed header) and its PEM base64.
    assert!(!contains(&pkcs8[pkcs8.len() - 32..]), "private key bytes");
    let pem_body = base64::engine::general_purpose::STANDARD.encode(pkcs8);
    assert!(!contains(&pem_body.as_bytes()[..40]), "private key base64");
    for encoded in master_keys {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert!(!contains(&raw), "master key bytes");
        assert!(!contains(encoded.as_bytes()), "master key base64");
    }
}

#[tokio::test]
async fn rewrap_on_sqlite_with_servers_running() {
    // `app` started with keys/master.key only: it holds just the old key.
    let app = spawn_app().await;
    let keys_dir = app.settings.keys_dir.clone();
    let old_text = std::fs::read_to_string(keys_dir.join("master.key"))
        .unwrap()
        .trim()
        .to_owned();
    let (old, token) = (key(&old_text), app.user_token("alice", &[]).await);
    let jwks = app.jwks().await;
    let (_, pkcs8) = app.current_private_key().await;

    // The new key beside the old one; a second instance loads both.
    let new_path = keys_dir.join("master.key.new");
    let out = app.cli(&["keys", "new-master-key"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(new_path.to_str().unwrap()));
    let new_text = std::fs::read_to_string(&new_path)
        .unwrap()
        .trim()
        .to_owned();
    let new = key(&new_text);
    let refused = app.cli(&["keys", "new-master-key"], None);
    assert_refused(&refused, "master.key.new", "never overwritten");
    assert_eq!(std::fs::read_to_string(&new_path).unwrap().trim(), new_text);
    let both = app.restart_with(&[]).await;

    let out = app.cli(
        &[
            "keys",
            "rewrap",
            "--new-master-key",
            new_path.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("rewrapped 2 private keys"),
        "{}",
        text(&out.stdout)
    );
    let check = app.services.store.master_check().await.unwrap().unwrap();
    assert!(new.matches_check(&check) && !old.matches_check(&check));
    assert_eq!(sealed_under(&app, &new, &old).await, 2);
    let events = rewrapped_events(&app).await;
    assert_eq!(events.len(), 1);
    assert!(events[0].record.actor.starts_with("cli"));
    assert!(!events[0].record.detail.contains(&new_text));

    // The instance holding both keys reloads; JWKS and tokens are unchanged
    // on both, and both still sign.
    follows_store(&both).await;
    assert_eq!(both.jwks().await, jwks);
    assert_eq!(app.jwks().await, jwks);
    profile_ok(&both, &token).await;
    profile_ok(&app, &token).await;
    let from_both = both.token("alice").await;
    let from_app = app.token("alice").await;
    profile_ok(&app, &from_both).await;
    profile_ok(&both, &from_app).await;

    // The instance holding only the old key seals nothing and changes no key.
    let before = snapshot(&app).await;
    let err = app
        .services
        .keys
        .rotate(app.clock_now(), true)
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::MasterKeyChanged), "{err}");
    assert_eq!(snapshot(&app).await, before);

    // A rotation after the rewrap (the CLI holds both keys, from the keys
    // dir): its new next key is sealed under the new key.
    let out = app.cli(&["keys", "rotate", "--force"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(sealed_under(&app, &new, &old).await, 3);
    follows_store(&both).await;
    let rotated = both.token("alice").await;
    assert_ne!(
        kid_of(&rotated),
        kid_of(&token),
        "signs with the promoted key"
    );
    profile_ok(&both, &rotated).await;
    profile_ok(&app, &rotated).await;

    assert_nothing_in_clear(&app, &pkcs8, &[&old_text, &new_text]).await;

    // The old key is dropped: only the new one, and a restart works.
    app.stop().await;
    both.stop().await;
    std::fs::rename(&new_path, keys_dir.join("master.key")).unwrap();
    let restarted = app.restart_with(&[]).await;
    profile_ok(&restarted, &token).await;
    profile_ok(&restarted, &restarted.token("alice").await).await;

    // The old key alone is refused, by the server and by every command.
    let only_old = [("KEYTURN_MASTER_KEY", old_text.as_str())];
    for args in [&["serve"][..], &["keys", "list"][..]] {
        let out = keyturn_with(&restarted, &only_old, args, None);
        assert_refused(
            &out,
            "KEYTURN_MASTER_KEY is not the one this store is sealed with",
            &format!("{args:?}"),
        );
    }
}

#[tokio::test]
async fn rewrap_refuses_bad_input_and_changes_nothing() {
    let app = spawn_app().await;
    let keys_dir = app.settings.keys_dir.clone();
    let dir = tempfile::tempdir().unwrap();
    let new_path = dir.path().join("new.key");
    let new_text = new_master_key(&app, &new_path);
    let before = snapshot(&app).await;
    let rewrap = |file: &Path| -> Vec<String> {
        ["keys", "rewrap", "--new-master-key"]
            .into_iter()
            .map(String::from)
            .chain([file.display().to_string()])
            .collect()
    };
    let run = |changes: &[(&str, &str)], file: &Path| {
        let args = rewrap(file);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        keyturn_with(&app, changes, &args, None)
    };

    // The wrong current key: the store's key must be in the settings.
    const OTHER: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let out = run(&[("KEYTURN_MASTER_KEY", OTHER)], &new_path);
    assert_refused(
        &out,
        "is not the one this store is sealed with",
        "wrong key",
    );
    // Nor may the list hold a malformed entry (named, never shown).
    let listed = format!("{new_text},c2hvcnQ=");
    let out = run(&[("KEYTURN_MASTER_KEY", &listed)], &new_path);
    assert_refused(&out, "KEYTURN_MASTER_KEY entry 2 of 2", "bad entry");
    assert_eq!(
        text(&out.stderr).trim_end(),
        "error: KEYTURN_MASTER_KEY entry 2 of 2 must be base64 of exactly 32 bytes",
        "said once"
    );
    assert!(!text(&out.stderr).contains(&new_text));

    // Malformed new keys, in a file or on standard input.
    let cases: [(&str, &[u8]); 3] = [
        ("garbage", b"not a key at all\n"),
        ("short", b"c2hvcnQ=\n"),
        ("empty", b""),
    ];
    for (name, content) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        // Private, as a key file must be (else a warning line comes first).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let out = run(&[], &path);
        assert_refused(&out, "must hold base64 of exactly 32 bytes", name);
        assert!(text(&out.stderr).contains(path.to_str().unwrap()), "{name}");
    }
    let out = app.cli(
        &["keys", "rewrap", "--new-master-key", "-"],
        Some("not a key\n"),
    );
    assert_refused(&out, "standard input", "stdin");
    let out = run(&[], &dir.path().join("missing"));
    assert_refused(&out, "does not exist", "missing file");
    // The key itself as the argument is refused without being echoed.
    let out = app.cli(&["keys", "rewrap", "--new-master-key", &new_text], None);
    assert_refused(&out, "never the key itself", "key as argv");
    assert!(!text(&out.stderr).contains(&new_text));
    // The store's own key again.
    let out = run(&[], &keys_dir.join("master.key"));
    assert_refused(&out, "already this store's master key", "same key");
    // No file at all is bad usage.
    let out = app.cli(&["keys", "rewrap"], None);
    assert_eq!(out.status.code(), Some(2));

    assert_eq!(snapshot(&app).await, before, "nothing changed");
    assert!(rewrapped_events(&app).await.is_empty());
    assert!(!keys_dir.join("master.key.new").exists());
}

#[tokio::test]
async fn rewrap_on_postgres_with_two_instances_running() {
    if !postgres_available().await {
        return;
    }
    // A key for the store, made by keyturn, given through the environment.
    let maker = spawn_app().await;
    let keys = tempfile::tempdir().unwrap();
    let old_text = new_master_key(&maker, &keys.path().join("old.key"));
    let new_text = new_master_key(&maker, &keys.path().join("new.key"));
    let (old, new) = (key(&old_text), key(&new_text));

    // A holds the old key only; B both, new first: the store's check value,
    // not the order, picks the sealing key.
    let a = spawn_pg_app(&[("KEYTURN_MASTER_KEY", &old_text)]).await;
    let both = format!("{new_text},{old_text}");
    let b = a.restart_with(&[("KEYTURN_MASTER_KEY", &both)]).await;
    let token = a.user_token("bob", &[]).await;
    let jwks = a.jwks().await;
    assert_eq!(sealed_under(&a, &old, &new).await, 2);

    // The rewrap reads the new key from standard input.
    let out = a.cli(
        &["keys", "rewrap", "--new-master-key", "-"],
        Some(&format!("{new_text}\n")),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(sealed_under(&a, &new, &old).await, 2);
    assert_eq!(rewrapped_events(&a).await.len(), 1);

    follows_store(&b).await;
    for app in [&a, &b] {
        assert_eq!(app.jwks().await, jwks);
        profile_ok(app, &token).await;
    }
    let from_b = b.token("bob").await;
    let from_a = a.token("bob").await;
    profile_ok(&a, &from_b).await;
    profile_ok(&b, &from_a).await;

    // A keeps serving from memory but changes no key.
    let before = snapshot(&a).await;
    let err = a
        .services
        .keys
        .rotate(a.clock_now(), true)
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::MasterKeyChanged), "{err}");
    assert_eq!(snapshot(&a).await, before);
    let out = a.cli(&["keys", "rotate", "--force"], None);
    assert_refused(&out, "is not the one this store is sealed with", "A's key");

    // Over HTTP on A it is refused too, and nothing is written.
    let admin = b.user_token("root", &["admin"]).await;
    a.assert_profile_becomes(&admin, 200).await;
    let refused = a.post("/admin/keys/rotate?force=true", &admin).await;
    assert_eq!(refused.status(), 500, "a misconfigured instance");
    assert_eq!(snapshot(&a).await, before);

    // A rotation after the rewrap by the running B, which started before it:
    // its new next key is sealed under the new key.
    let rotated = b.post("/admin/keys/rotate?force=true", &admin).await;
    assert_eq!(rotated.status(), 200);
    assert_eq!(sealed_under(&b, &new, &old).await, 3);
    follows_store(&b).await;
    let rotated = b.token("bob").await;
    assert_ne!(kid_of(&rotated), kid_of(&token));
    profile_ok(&a, &rotated).await;
    let keys_now: Value = b.jwks().await;
    assert_eq!(keys_now["keys"].as_array().unwrap().len(), 3);
    assert!(
        b.services
            .store
            .list_keys()
            .await
            .unwrap()
            .iter()
            .any(|k| k.state() == KeyState::Retired)
    );

    // Restart with only the new key: it works; the old key alone does not.
    a.stop().await;
    b.stop().await;
    let c = a.restart_with(&[("KEYTURN_MASTER_KEY", &new_text)]).await;
    profile_ok(&c, &token).await;
    profile_ok(&c, &c.token("bob").await).await;
    let only_old = [("KEYTURN_MASTER_KEY", old_text.as_str())];
    let out = keyturn_with(&c, &only_old, &["keys", "list"], None);
    assert_refused(&out, "is not the one this store is sealed with", "old only");
    // `serve` logs at info, and sqlx reports PostgreSQL's notices there:
    // the refusal is its one error line.
    let out = keyturn_with(&c, &only_old, &["serve"], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("is not the one this store is sealed with"));
}

#[tokio::test]
async fn a_server_without_the_new_key_says_so_once_and_keeps_serving() {
    use crate::cli::{pairs, serve, store_env};
    let dir = tempfile::tempdir().unwrap();
    let env = store_env(dir.path());
    let env = pairs(&env);
    let mut server = serve(dir.path(), &env, "old-only.log");
    let log_path = dir.path().join("old-only.log");
    let out = keyturn_in(
        dir.path(),
        &env,
        &["users", "add", "carol", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let client = reqwest::Client::new();
    let login = || async {
        let response = client
            .post(format!("{}/login", server.base))
            .json(&serde_json::json!({"username": "carol", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    };
    let token = login().await;

    let out = keyturn_in(dir.path(), &env, &["keys", "new-master-key"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let new_key = dir.path().join("keys").join("master.key.new");
    let out = keyturn_in(
        dir.path(),
        &env,
        &[
            "keys",
            "rewrap",
            "--new-master-key",
            new_key.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The server polls every second; its reload fails for want of the new
    // key, which it says once, however many polls follow.
    let reload_failures = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("keyring reload failed"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    for _ in 0..50 {
        if !reload_failures().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let failures = reload_failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].contains("restart it with the new master key"),
        "{failures:?}"
    );

    // It keeps serving from memory: old tokens verify, logins still sign.
    let profile = |token: String| {
        let client = client.clone();
        let url = format!("{}/profile", server.base);
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(profile(token).await, 200);
    assert_eq!(profile(login().await).await, 200);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
