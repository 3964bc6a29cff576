//! `spawn_app()`: a real keyturn on a random port, with its own database
//! and keys directory in a temp dir, and a clock the test can move.
//!
//! The database is SQLite in the temp dir, or, in the suite's PostgreSQL
//! pass (`KEYTURN_TEST_STORE=postgres`, see `stores.rs`), a fresh
//! PostgreSQL database per server: the same tests on both stores.

use std::collections::BTreeMap;
use std::sync::Arc;

use keyturn::clock::ManualClock;
use keyturn::config::{RawSettings, Settings};
use keyturn::keys::{KeyState, MasterKey};
use keyturn::{Application, Services};
use secrecy::SecretString;
use serde_json::{Value, json};
use tempfile::TempDir;

pub const ISSUER: &str = "http://keyturn.test";
pub const PASSWORD: &str = "correct horse battery";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub dir: Arc<TempDir>,
    pub settings: Settings,
    pub clock: ManualClock,
    pub services: Services,
    pub keyring: keyturn::keys::KeyringHandle,
    pub maintenance: keyturn::app::Maintenance,
    pub env: Vec<(String, String)>,
    server: std::sync::Mutex<Option<tokio::task::JoinHandle<std::io::Result<()>>>>,
}

/// RS256, default durations.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// With extra `KEYTURN_*` settings.
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    spawn_app_clocked(extra, ManualClock::default()).await
}

/// PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth), one fresh
/// database per call, so tests stay independent.
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A server on a fresh PostgreSQL database, with extra settings.
pub async fn spawn_pg_app(extra: &[(&str, &str)]) -> TestApp {
    let url = fresh_pg_database().await;
    let mut settings: Vec<(&str, &str)> = vec![("KEYTURN_DATABASE_URL", url.as_str())];
    settings.extend_from_slice(extra);
    spawn_app_with(&settings).await
}

/// Whether PostgreSQL answers at 127.0.0.1:5432. Every PostgreSQL test
/// starts with `if !postgres_available().await { return; }`: on a machine
/// without it the test passes after one line on the terminal saying the
/// PostgreSQL pass was skipped; in CI (`CI` set) a missing PostgreSQL fails.
pub async fn postgres_available() -> bool {
    static PROBE: tokio::sync::OnceCell<bool> = tokio::sync::OnceCell::const_new();
    let available = *PROBE
        .get_or_init(|| async {
            let probe = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                sqlx::PgPool::connect(PG_ADMIN_URL),
            )
            .await;
            match probe {
                Ok(Ok(pool)) => {
                    pool.close().await;
                    true
                }
                _ => false,
            }
        })
        .await;
    if !available {
        assert!(
            std::env::var_os("CI").is_none(),
            "PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth, database test) is required in CI"
        );
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            use std::io::Write as _;
            // Straight to the terminal: the test harness captures eprintln!.
            let _ = writeln!(
                std::io::stderr(),
                "SKIP the PostgreSQL tests: nothing answers at 127.0.0.1:5432 \
                 (user postgres, trust auth, database test); they pass without running"
            );
        });
    }
    available
}

/// Creates an empty PostgreSQL database and returns its URL.
pub async fn fresh_pg_database() -> String {
    let name = format!("keyturn_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(PG_ADMIN_URL)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 (user postgres, database test) is required");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

/// Whether this run of the suite is its PostgreSQL pass
/// (`KEYTURN_TEST_STORE=postgres`): every server the helpers start gets its
/// own fresh PostgreSQL database instead of an SQLite file.
pub fn postgres_pass() -> bool {
    std::env::var("KEYTURN_TEST_STORE").is_ok_and(|store| store == "postgres")
}

/// With extra settings and a given clock (e.g. one following real time,
/// for tests that run a verifier on the real clock beside the server).
pub async fn spawn_app_clocked(extra: &[(&str, &str)], clock: ManualClock) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("KEYTURN_BIND".into(), "127.0.0.1:0".into());
    env.insert("KEYTURN_ISSUER".into(), ISSUER.into());
    env.insert(
        "KEYTURN_DATABASE_URL".into(),
        format!("sqlite://{}/data/keyturn.db", dir.path().display()),
    );
    env.insert(
        "KEYTURN_KEYS_DIR".into(),
        dir.path().join("keys").display().to_string(),
    );
    let own_store = extra.iter().any(|(k, _)| *k == "KEYTURN_DATABASE_URL");
    if postgres_pass() && !own_store {
        env.insert("KEYTURN_DATABASE_URL".into(), fresh_pg_database().await);
    }
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    start(dir, env, clock).await
}

async fn start(dir: Arc<TempDir>, env: BTreeMap<String, String>, clock: ManualClock) -> TestApp {
    let settings = RawSettings::gather(None, |k| env.get(k).cloned())
        .expect("settings")
        .parse()
        .expect("valid settings");
    let app = Application::build_with_clock(settings.clone(), Arc::new(clock.clone()))
        .await
        .expect("app builds");
    let base = format!("http://{}", app.local_addr());
    let services = app.services().clone();
    let keyring = app.keyring().clone();
    let maintenance = app.maintenance().clone();
    let server = tokio::spawn(app.run_until(std::future::pending()));
    TestApp {
        base,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        dir,
        settings,
        clock,
        services,
        keyring,
        maintenance,
        env: env.into_iter().collect(),
        server: std::sync::Mutex::new(Some(server)),
    }
}

impl TestApp {
    /// Stops this server and its background loop, as a crash would: once
    /// this returns, it does nothing more.
    pub async fn stop(&self) {
        let handle = self.server.lock().unwrap().take();
        if let Some(handle) = handle {
            handle.abort();
            let _ = handle.await;
        }
    }

    /// Another server on the same store, keys directory and clock, with
    /// some settings changed: a restart (after `stop`) or a second instance.
    pub async fn restart_with(&self, changes: &[(&str, &str)]) -> TestApp {
        let mut env: BTreeMap<String, String> = self.env.iter().cloned().collect();
        for (k, v) in changes {
            env.insert((*k).into(), (*v).into());
        }
        start(Arc::clone(&self.dir), env, self.clock.clone()).await
    }

    /// One pass of the server's background loop, now (instead of waiting
    /// for the next one-second tick after moving the clock).
    pub async fn tick(&self) {
        self.maintenance.run_once().await;
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Creates a user through the same domain code the CLI uses.
    pub async fn create_user(&self, name: &str, roles: &[&str]) {
        self.services
            .accounts
            .create(
                name,
                &SecretString::from(PASSWORD),
                roles.iter().map(|r| (*r).to_owned()).collect(),
            )
            .await
            .expect("user created");
    }

    pub async fn login(&self, name: &str, password: &str) -> reqwest::Response {
        self.client
            .post(self.url("/login"))
            .json(&json!({"username": name, "password": password}))
            .send()
            .await
            .expect("request")
    }

    /// Logs in and returns the access token.
    pub async fn token(&self, name: &str) -> String {
        let response = self.login(name, PASSWORD).await;
        assert_eq!(response.status(), 200, "login of {name}");
        let body: Value = response.json().await.expect("json");
        body["access_token"].as_str().expect("token").to_owned()
    }

    /// A user with `roles` and a token for them.
    pub async fn user_token(&self, name: &str, roles: &[&str]) -> String {
        self.create_user(name, roles).await;
        self.token(name).await
    }

    /// `POST path` with a bearer token and no body.
    pub async fn post(&self, path: &str, token: &str) -> reqwest::Response {
        self.send(reqwest::Method::POST, path, token, None).await
    }

    /// `POST path` with a bearer token and a JSON body.
    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.send(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    /// `PATCH path` with a bearer token and a JSON body.
    pub async fn patch_json(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.send(reqwest::Method::PATCH, path, token, Some(body))
            .await
    }

    /// `DELETE path` with a bearer token.
    pub async fn delete(&self, path: &str, token: &str) -> reqwest::Response {
        self.send(reqwest::Method::DELETE, path, token, None).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request")
    }

    pub async fn jwks(&self) -> Value {
        self.get("/.well-known/jwks.json", None)
            .await
            .json()
            .await
            .expect("jwks json")
    }

    /// The PKCS#8 private key of the current signing key, opened with the
    /// master key the way the server does: lets tests forge tokens that are
    /// validly signed but wrong in one respect.
    pub async fn current_private_key(&self) -> (String, Vec<u8>) {
        let master = MasterKey::load_or_create(&self.settings.keys_dir).expect("master key");
        let rows = self.services.store.list_keys().await.expect("keys");
        let row = rows
            .into_iter()
            .find(|r| r.state() == KeyState::Current)
            .expect("a current key");
        let pkcs8 = master
            .open(&row.kid, row.lifecycle.sealed().expect("sealed"))
            .expect("opens");
        (row.kid, pkcs8.to_vec())
    }

    /// Runs the real `keyturn` binary against this app's store.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        use std::io::Write as _;
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyturn"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("keyturn binary runs");
        {
            let mut input = child.stdin.take().expect("stdin");
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).expect("write stdin");
            }
        }
        child.wait_with_output().expect("keyturn exits")
    }
}

impl TestApp {
    /// A connection pool of its own to the app's store (SQLite file or
    /// PostgreSQL database), as another writer would have.
    pub async fn store_pool(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.settings.database_url)
            .await
            .expect("store")
    }

    /// Runs a statement on the app's store, as another writer would.
    pub async fn sql(&self, statement: &'static str) {
        let pool = self.store_pool().await;
        sqlx::query(statement)
            .execute(&pool)
            .await
            .expect("statement");
        pool.close().await;
    }

    /// Polls `probe` until `done` holds (at most ~5 s: the server polls the
    /// store every second), returning the last value.
    pub async fn eventually<T, F, Fut>(&self, probe: F, done: impl Fn(&T) -> bool) -> T
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let mut value = probe().await;
        for _ in 0..50 {
            if done(&value) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            value = probe().await;
        }
        value
    }

    /// The value of one `/metrics` series, e.g.
    /// `keyturn_tokens_issued_total{grant="login"}`.
    pub async fn metric(&self, series: &str) -> u64 {
        let metrics = self.get("/metrics", None).await.text().await.unwrap();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in {metrics}"))
    }

    /// Asserts that `/profile` answers `status` for `token` once this
    /// instance's background poll has caught up with a change made
    /// elsewhere (the CLI, another instance), within the poll's few seconds.
    pub async fn assert_profile_becomes(&self, token: &str, status: u16) {
        let seen = self
            .eventually(
                || async { self.get("/profile", Some(token)).await.status() },
                |s| *s == status,
            )
            .await;
        assert_eq!(seen, status, "/profile never answered {status}");
    }
}

/// Decodes a JWT segment (header or claims) without verifying anything.
pub fn segment(token: &str, index: usize) -> Value {
    use base64::Engine as _;
    let part = token.split('.').nth(index).expect("segment");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json")
}

/// Asserts the SPEC's error body and returns its `error` code.
pub async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("JSON error body");
    assert!(
        body["error_description"].is_string(),
        "error_description in {body}"
    );
    body["error"].as_str().expect("error code").to_owned()
}

impl TestApp {
    pub fn clock_now(&self) -> i64 {
        use keyturn::clock::Clock as _;
        self.clock.now()
    }

    /// Whether this server's store is PostgreSQL.
    pub fn on_postgres(&self) -> bool {
        self.settings.database_url.starts_with("postgres")
    }

    /// Everything the store holds: every byte of the SQLite database (WAL
    /// and shared memory included), or every row of every PostgreSQL table
    /// as text.
    pub async fn database_bytes(&self) -> Vec<u8> {
        if self.on_postgres() {
            return self.postgres_rows().await;
        }
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(self.dir.path().join("data")).expect("data dir") {
            let path = entry.expect("entry").path();
            bytes.extend(std::fs::read(&path).expect("readable"));
        }
        bytes
    }

    async fn postgres_rows(&self) -> Vec<u8> {
        let pool = sqlx::PgPool::connect(&self.settings.database_url)
            .await
            .expect("postgres");
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_all(&pool)
        .await
        .expect("tables");
        let mut bytes = Vec::new();
        for table in tables {
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT t::text FROM \"{table}\" t"
            )))
            .fetch_all(&pool)
            .await
            .expect("rows");
            for row in rows {
                bytes.extend(row.into_bytes());
                bytes.push(b'\n');
            }
        }
        // Binary columns read as text are hex; add their raw bytes too, so
        // a key stored in clear would show up as itself.
        let binary: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND data_type = 'bytea'",
        )
        .fetch_all(&pool)
        .await
        .expect("columns");
        for (table, column) in binary {
            let values: Vec<Option<Vec<u8>>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT \"{column}\" FROM \"{table}\""
            )))
            .fetch_all(&pool)
            .await
            .expect("binary values");
            for value in values.into_iter().flatten() {
                bytes.extend(value);
            }
        }
        pool.close().await;
        bytes
    }

    /// `SELECT COUNT(*) …` on the app's store, whichever it is.
    pub async fn store_count(&self, query: &'static str) -> i64 {
        let pool = self.store_pool().await;
        let count: i64 = sqlx::query_scalar(query)
            .fetch_one(&pool)
            .await
            .expect("count");
        pool.close().await;
        count
    }
}

/// A server whose `KEYTURN_ISSUER` is its own address, so the URLs in its
/// discovery metadata resolve (third-party clients follow them).
pub async fn spawn_app_at_own_issuer(extra: &[(&str, &str)]) -> TestApp {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let bind = format!("127.0.0.1:{port}");
    let issuer = format!("http://{bind}");
    let mut settings: Vec<(&str, &str)> =
        vec![("KEYTURN_BIND", &bind), ("KEYTURN_ISSUER", &issuer)];
    settings.extend_from_slice(extra);
    spawn_app_with(&settings).await
}

impl TestApp {
    /// Registers an OAuth client allowed `scopes` (client_credentials only)
    /// and returns its secret.
    pub async fn create_client(&self, id: &str, scopes: &[&str]) -> String {
        self.create_client_with(id, scopes, None, None).await
    }

    /// Registers an OAuth client with every option; returns its secret.
    pub async fn create_client_with(
        &self,
        id: &str,
        scopes: &[&str],
        grant_types: Option<&[&str]>,
        audience: Option<&str>,
    ) -> String {
        use secrecy::ExposeSecret as _;
        let (_, secret) = self
            .services
            .clients
            .create(keyturn::accounts::NewClient {
                id: id.to_owned(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                grant_types: grant_types.map(|g| g.iter().map(|s| (*s).to_owned()).collect()),
                audience: audience.map(str::to_owned),
            })
            .await
            .expect("client created");
        secret.expose_secret().to_owned()
    }

    /// POSTs a form, optionally with HTTP Basic client credentials.
    pub async fn post_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> reqwest::Response {
        let mut request = self.client.post(self.url(path)).form(form);
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, Some(secret));
        }
        request.send().await.expect("request")
    }

    /// `client_credentials` with HTTP Basic; returns the response.
    pub async fn client_credentials(
        &self,
        id: &str,
        secret: &str,
        scope: Option<&str>,
    ) -> reqwest::Response {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        self.post_form("/oauth/token", &form, Some((id, secret)))
            .await
    }

    /// A client token (HTTP Basic, all allowed scopes).
    pub async fn client_token(&self, id: &str, secret: &str) -> String {
        let response = self.client_credentials(id, secret, None).await;
        assert_eq!(response.status(), 200, "client_credentials for {id}");
        let body: Value = response.json().await.expect("json");
        body["access_token"].as_str().expect("token").to_owned()
    }

    /// Logs in; returns (access token, refresh token).
    pub async fn login_tokens(&self, name: &str) -> (String, String) {
        let response = self.login(name, PASSWORD).await;
        assert_eq!(response.status(), 200, "login of {name}");
        let body: Value = response.json().await.expect("json");
        (
            body["access_token"].as_str().expect("access").to_owned(),
            body["refresh_token"].as_str().expect("refresh").to_owned(),
        )
    }

    /// `grant_type=refresh_token` without client authentication.
    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.post_form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
            None,
        )
        .await
    }

    /// Refreshes, expecting success; returns (access token, refresh token).
    pub async fn refreshed(&self, refresh_token: &str) -> (String, String) {
        let response = self.refresh(refresh_token).await;
        assert_eq!(response.status(), 200, "refresh");
        let body: Value = response.json().await.expect("json");
        (
            body["access_token"].as_str().expect("access").to_owned(),
            body["refresh_token"].as_str().expect("refresh").to_owned(),
        )
    }

    /// Introspects `token` as client `(id, secret)`; returns the JSON.
    pub async fn introspect(&self, token: &str, client: (&str, &str)) -> Value {
        let response = self
            .post_form("/oauth/introspect", &[("token", token)], Some(client))
            .await;
        assert_eq!(response.status(), 200, "introspection");
        response.json().await.expect("json")
    }
}

/// Asserts an OAuth error response: status, RFC 6749 code, and the
/// no-store headers every token endpoint response carries.
pub async fn assert_oauth_error(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status, "status for {code}");
    assert_no_store(&response);
    if status == 401 {
        assert_eq!(
            response.headers()["www-authenticate"],
            "Basic realm=\"keyturn\"",
            "{code}"
        );
    }
    assert_eq!(error_code(response).await, code);
}

/// `Cache-Control: no-store` and `Pragma: no-cache`.
pub fn assert_no_store(response: &reqwest::Response) {
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
}

// --- Browser transport (cookies, CSRF, CORS, strict HTTP) ---------------------

/// One `Set-Cookie` header, parsed: name, value and attributes in order
/// (names as sent, e.g. `Path=/`, `HttpOnly`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookie {
    pub name: String,
    pub value: String,
    pub attributes: Vec<String>,
}

impl SetCookie {
    pub fn parse(header: &str) -> SetCookie {
        let mut parts = header.split(';').map(str::trim);
        let (name, value) = parts
            .next()
            .and_then(|p| p.split_once('='))
            .expect("name=value");
        SetCookie {
            name: name.to_owned(),
            value: value.to_owned(),
            attributes: parts.map(str::to_owned).collect(),
        }
    }

    /// The attributes, sorted, for comparing as a set.
    pub fn attribute_set(&self) -> Vec<String> {
        let mut attributes = self.attributes.clone();
        attributes.sort();
        attributes
    }
}

/// Every `Set-Cookie` of a response, by cookie name.
pub fn set_cookies(response: &reqwest::Response) -> BTreeMap<String, SetCookie> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| SetCookie::parse(v.to_str().expect("ascii")))
        .map(|c| (c.name.clone(), c))
        .collect()
}

/// What a browser holds after a cookie login or refresh.
#[derive(Debug, Clone)]
pub struct BrowserSession {
    pub access: String,
    pub refresh: String,
    pub csrf: String,
}

impl BrowserSession {
    /// The `Cookie` header a browser sends to `/` routes.
    pub fn access_cookie(&self) -> String {
        format!("keyturn_access={}; keyturn_csrf={}", self.access, self.csrf)
    }

    /// The `Cookie` header a browser sends to `/oauth/token`.
    pub fn refresh_cookie(&self) -> String {
        format!(
            "keyturn_access={}; keyturn_refresh={}; keyturn_csrf={}",
            self.access, self.refresh, self.csrf
        )
    }

    /// Reads the session from a login or refresh response's cookies.
    pub fn from_response(response: &reqwest::Response) -> BrowserSession {
        let cookies = set_cookies(response);
        BrowserSession {
            access: cookies["keyturn_access"].value.clone(),
            refresh: cookies["keyturn_refresh"].value.clone(),
            csrf: cookies["keyturn_csrf"].value.clone(),
        }
    }
}

impl TestApp {
    /// `POST /login` with `"transport":"cookie"`.
    pub async fn cookie_login_response(&self, name: &str) -> reqwest::Response {
        self.client
            .post(self.url("/login"))
            .json(&json!({"username": name, "password": PASSWORD, "transport": "cookie"}))
            .send()
            .await
            .expect("request")
    }

    /// A user with `roles`, logged in by cookie.
    pub async fn browser_session(&self, name: &str, roles: &[&str]) -> BrowserSession {
        self.create_user(name, roles).await;
        let response = self.cookie_login_response(name).await;
        assert_eq!(response.status(), 200, "cookie login of {name}");
        BrowserSession::from_response(&response)
    }

    /// A request as the browser sends it: the access cookie, and
    /// `X-CSRF-Token` if given.
    pub fn browser(
        &self,
        method: reqwest::Method,
        path: &str,
        session: &BrowserSession,
        csrf: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .request(method, self.url(path))
            .header("cookie", session.access_cookie());
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request
    }

    /// `grant_type=refresh_token` by the refresh cookie.
    pub async fn cookie_refresh(
        &self,
        session: &BrowserSession,
        csrf: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/oauth/token"))
            .header("cookie", session.refresh_cookie())
            .form(&[("grant_type", "refresh_token")]);
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.send().await.expect("request")
    }
}

// --- sessions (refresh hygiene, races, store down) ---

/// Two instances A and B on one fresh PostgreSQL database (same keys
/// directory, same clock), with extra settings.
pub async fn spawn_pg_pair(extra: &[(&str, &str)]) -> (TestApp, TestApp) {
    let a = spawn_pg_app(extra).await;
    let b = a.restart_with(&[]).await;
    (a, b)
}

/// A TCP proxy in front of the machine's PostgreSQL that the test can
/// switch off (every forwarded connection is cut, new ones are refused)
/// and on again: "the database is down" at the network level, without
/// touching the real server.
pub struct PgProxy {
    pub port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    stalled: tokio::sync::watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl PgProxy {
    pub async fn start() -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy port");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (stalled, _) = tokio::sync::watch::channel(false);
        let accept = {
            let up = Arc::clone(&up);
            let cut = cut.clone();
            let stalled = stalled.clone();
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: the client sees the connection close
                    }
                    let mut cut_seen = cut.subscribe();
                    let mut stall_seen = stalled.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) =
                            tokio::net::TcpStream::connect("127.0.0.1:5432").await
                        else {
                            return;
                        };
                        let stall = async {
                            let _ = stall_seen.wait_for(|stalled| *stalled).await;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut_seen.changed() => {}
                            () = stall => {
                                // Silence: both sockets stay open, nothing
                                // moves, until the connection is cut.
                                let _ = cut_seen.changed().await;
                            }
                        }
                    });
                }
            })
        };
        Self {
            port,
            up,
            cut,
            stalled,
            accept,
        }
    }

    /// The URL of `database` through this proxy.
    pub fn url_for(&self, direct_url: &str) -> String {
        direct_url.replace("127.0.0.1:5432", &format!("127.0.0.1:{}", self.port))
    }

    /// Cuts every open connection and refuses new ones.
    pub fn switch_off(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    pub fn switch_on(&self) {
        self.stalled.send_replace(false);
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// A network that drops packets: every connection, open or new, stays
    /// open and carries nothing (no reset, no answer) until
    /// [`PgProxy::switch_off`] cuts them.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }
}

/// A server on a fresh PostgreSQL database that it reaches through a new
/// [`PgProxy`], with extra settings: the test can cut or stall its store.
pub async fn spawn_app_behind_proxy(extra: &[(&str, &str)]) -> (PgProxy, TestApp) {
    let proxy = PgProxy::start().await;
    let url = proxy.url_for(&fresh_pg_database().await);
    let mut settings: Vec<(&str, &str)> = vec![("KEYTURN_DATABASE_URL", url.as_str())];
    settings.extend_from_slice(extra);
    let app = spawn_app_with(&settings).await;
    (proxy, app)
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
