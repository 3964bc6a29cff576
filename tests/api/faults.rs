//! Faults (issue 9): instances killed with SIGKILL under a mixed load and in
//! the middle of rotations, PostgreSQL cut off under load. Real `keyturn
//! serve` processes (or an in-process server behind `PgProxy`) on one fresh
//! PostgreSQL database; every test prints its counts as one line.
//!
//! These are the CI-sized versions of `benches/faults.py`, which an operator
//! runs with the full counts (50 rotation kills instead of 12, a 30 s outage
//! instead of 6 s: the behaviour under test is the same, only longer).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keyturn::verifier::{JwkSet, Verifier};
use rand::Rng as _;
use serde_json::{Value, json};

use crate::cli::{Served, keyturn_command, keyturn_in, pairs, serve, store_env};
use crate::helpers::{
    ISSUER, PASSWORD, fresh_pg_database, postgres_available, segment, spawn_app_behind_proxy,
};

/// Rotation kills in the test (the script does 50).
const ROTATION_KILLS: usize = 12;
/// The PostgreSQL outage in the test (the script does 30 s).
const OUTAGE: Duration = Duration::from_secs(6);
/// The longest any answer may take, store down or not: past it, a request
/// counts as hung.
const BOUND: Duration = Duration::from_secs(5);

/// The settings of `keyturn` processes sharing the PostgreSQL database `url`
/// and the master key in `dir/keys`.
fn pg_env(dir: &Path, url: &str) -> Vec<(String, String)> {
    let mut env = store_env(dir);
    env.retain(|(k, _)| k != "KEYTURN_DATABASE_URL");
    env.extend([
        ("KEYTURN_DATABASE_URL".into(), url.to_owned()),
        ("KEYTURN_ISSUER".into(), ISSUER.into()),
        // Every load login opens a session; none may push another out.
        ("KEYTURN_REFRESH_SESSIONS_PER_USER".into(), "1000".into()),
    ]);
    env
}

/// Runs `keyturn args` on that store; asserts success, returns stdout.
fn keyturn(dir: &Path, env: &[(String, String)], args: &[&str], stdin: Option<&str>) -> String {
    let out = keyturn_in(dir, &pairs(env), args, stdin);
    assert!(
        out.status.success(),
        "keyturn {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A fresh database with its master key and keyset, an admin `root`, users
/// `names` and a client_credentials client per user (`c-NAME`, scope
/// `read`); returns the clients' secrets in the order of `names`.
fn provision(dir: &Path, env: &[(String, String)], names: &[String]) -> Vec<String> {
    keyturn(dir, env, &["init"], None);
    let password = format!("{PASSWORD}\n");
    let add = |name: &str, roles: &[&str]| {
        let mut args = vec!["users", "add", name, "--password-stdin"];
        for role in roles {
            args.extend(["--role", role]);
        }
        keyturn(dir, env, &args, Some(&password));
    };
    add("root", &["admin"]);
    names
        .iter()
        .map(|name| {
            add(name, &[]);
            let id = format!("c-{name}");
            let out = keyturn(dir, env, &["clients", "add", &id, "--scope", "read"], None);
            out.lines()
                .find_map(|l| l.strip_prefix("client_secret: "))
                .expect("the secret is printed once")
                .trim()
                .to_owned()
        })
        .collect()
}

/// A `keyturn serve` process, SIGKILLed when dropped: a failing test
/// leaves none behind.
struct Instance(Served);

impl Instance {
    fn start(dir: &Path, env: &[(String, String)], log_name: &str) -> Self {
        Self(serve(dir, &pairs(env), log_name))
    }

    fn base(&self) -> &str {
        &self.0.base
    }

    /// `kill -9`, and the process reaped.
    fn kill(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a balancer or a client saw for one request.
struct Answer {
    status: u16,
    body: Value,
    /// It was sent again to another instance after a connection error.
    retried: bool,
}

/// A round-robin load balancer in front of the instances, as a real one is
/// configured: a request that got no HTTP answer (connection refused or
/// reset, the answer cut off) is sent to the next instance; an HTTP answer,
/// whatever its status, is final.
struct Balancer {
    bases: Vec<String>,
    turn: AtomicUsize,
    client: reqwest::Client,
    requests: AtomicU64,
    retries: AtomicU64,
    server_errors: AtomicU64,
    max_latency_ms: AtomicU64,
}

impl Balancer {
    fn new(bases: Vec<String>) -> Self {
        Self {
            bases,
            turn: AtomicUsize::new(0),
            client: reqwest::Client::builder()
                .timeout(BOUND)
                .build()
                .expect("client"),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            max_latency_ms: AtomicU64::new(0),
        }
    }

    async fn send(
        &self,
        request: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Answer {
        let first = self.turn.fetch_add(1, Ordering::Relaxed);
        let mut retried = false;
        for attempt in 0..self.bases.len() * 2 {
            let base = &self.bases[(first + attempt) % self.bases.len()];
            self.requests.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let outcome = match request(&self.client, base).send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    response.bytes().await.map(|bytes| (status, bytes))
                }
                Err(err) => Err(err),
            };
            let took = started.elapsed();
            self.max_latency_ms
                .fetch_max(took.as_millis() as u64, Ordering::Relaxed);
            match outcome {
                Ok((status, bytes)) => {
                    if status >= 500 {
                        self.server_errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("{status} from {base}: {}", String::from_utf8_lossy(&bytes));
                    }
                    return Answer {
                        status,
                        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                        retried,
                    };
                }
                Err(err) => {
                    assert!(!err.is_timeout(), "{base} hung for {took:?}");
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    retried = true;
                }
            }
        }
        panic!("no instance answered");
    }

    async fn login(&self, username: &str) -> Answer {
        let body = json!({"username": username, "password": PASSWORD});
        self.send(|c, base| c.post(format!("{base}/login")).json(&body))
            .await
    }

    async fn refresh(&self, token: &str) -> Answer {
        let form = [("grant_type", "refresh_token"), ("refresh_token", token)];
        self.send(|c, base| c.post(format!("{base}/oauth/token")).form(&form))
            .await
    }

    async fn client_credentials(&self, id: &str, secret: &str) -> Answer {
        let form = [("grant_type", "client_credentials")];
        self.send(|c, base| {
            c.post(format!("{base}/oauth/token"))
                .basic_auth(id, Some(secret))
                .form(&form)
        })
        .await
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: &Value,
    ) -> Answer {
        self.send(|c, base| {
            c.request(method.clone(), format!("{base}{path}"))
                .bearer_auth(token)
                .json(body)
        })
        .await
    }
}

fn field(answer: &Answer, name: &str) -> String {
    answer.body[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} in {}", answer.body))
        .to_owned()
}

/// What one load worker leaves: the refresh token at the end of every chain
/// it started, answers lost with a killed instance, and anything wrong.
#[derive(Default)]
struct Worked {
    chains: Vec<String>,
    lost_answers: u64,
    problems: Vec<String>,
}

/// Logins, each followed by a chain of refreshes, and client_credentials
/// grants, until `deadline`.
async fn user_load(lb: Arc<Balancer>, user: String, secret: String, deadline: Instant) -> Worked {
    let mut worked = Worked::default();
    let client = format!("c-{user}");
    while Instant::now() < deadline {
        let login = lb.login(&user).await;
        if login.status != 200 {
            worked
                .problems
                .push(format!("login {}: {}", login.status, login.body));
            continue;
        }
        let mut chain = Some(field(&login, "refresh_token"));
        for _ in 0..3 {
            let Some(token) = chain.take() else { break };
            let answer = lb.refresh(&token).await;
            match answer.status {
                200 => chain = Some(field(&answer, "refresh_token")),
                // The killed instance rotated the token and died before
                // answering: the retry presents a spent token, which reuse
                // detection refuses. The write was not lost; its answer was.
                400 if answer.retried => worked.lost_answers += 1,
                status => {
                    worked
                        .problems
                        .push(format!("refresh {status}: {}", answer.body));
                }
            }
        }
        worked.chains.extend(chain);
        let grant = lb.client_credentials(&client, &secret).await;
        if grant.status != 200 {
            worked.problems.push(format!(
                "client_credentials {}: {}",
                grant.status, grant.body
            ));
        }
    }
    worked
}

/// What the admin worker created (with a 2xx answer) until `deadline`.
#[derive(Default)]
struct Administered {
    users: Vec<String>,
    clients: Vec<(String, String)>,
    /// The signing kid each forced rotation answered with.
    rotations: Vec<String>,
    lost_answers: u64,
    problems: Vec<String>,
}

/// Creates users and clients and forces rotations, until `deadline`.
async fn admin_load(lb: Arc<Balancer>, token: String, deadline: Instant) -> Administered {
    use reqwest::Method;
    let mut done = Administered::default();
    let mut n = 0;
    while Instant::now() < deadline {
        n += 1;
        let name = format!("made{n}");
        let body = json!({"username": name, "password": PASSWORD});
        let created = lb.admin(Method::POST, "/admin/users", &token, &body).await;
        match created.status {
            201 => done.users.push(name),
            // Created by the killed instance, answer lost: it must exist.
            409 if created.retried => {
                done.lost_answers += 1;
                done.users.push(name);
            }
            status => done
                .problems
                .push(format!("create user {status}: {}", created.body)),
        }
        let id = format!("mc{n}");
        let body = json!({"client_id": id, "scopes": ["read"]});
        let created = lb
            .admin(Method::POST, "/admin/clients", &token, &body)
            .await;
        match created.status {
            201 => done.clients.push((id, field(&created, "client_secret"))),
            409 if created.retried => done.lost_answers += 1,
            status => done
                .problems
                .push(format!("create client {status}: {}", created.body)),
        }
        // Rotations a few seconds apart: a forced one promotes the `next`
        // key every instance already holds.
        if n % 4 == 1 {
            let rotated = lb
                .admin(
                    Method::POST,
                    "/admin/keys/rotate?force=true",
                    &token,
                    &json!({}),
                )
                .await;
            match rotated.status {
                200 => {
                    let current = rotated.body["keys"]
                        .as_array()
                        .expect("keys")
                        .iter()
                        .find(|k| k["state"] == "current")
                        .expect("a current key");
                    done.rotations
                        .push(current["kid"].as_str().unwrap().to_owned());
                }
                status => done
                    .problems
                    .push(format!("rotate {status}: {}", rotated.body)),
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_of_three_instances_under_load_loses_no_write() {
    if !postgres_available().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let env = pg_env(dir.path(), &fresh_pg_database().await);
    let users: Vec<String> = (0..4).map(|n| format!("load{n}")).collect();
    let secrets = provision(dir.path(), &env, &users);
    let mut instances: Vec<Instance> = (0..3)
        .map(|n| Instance::start(dir.path(), &env, &format!("instance{n}.log")))
        .collect();
    let lb = Arc::new(Balancer::new(
        instances.iter().map(|s| s.base().to_owned()).collect(),
    ));
    let admin = lb.login("root").await;
    assert_eq!(admin.status, 200);
    let admin = field(&admin, "access_token");

    let deadline = Instant::now() + Duration::from_secs(5);
    let workers: Vec<_> = users
        .iter()
        .zip(&secrets)
        .map(|(user, secret)| {
            tokio::spawn(user_load(
                lb.clone(),
                user.clone(),
                secret.clone(),
                deadline,
            ))
        })
        .collect();
    let administration = tokio::spawn(admin_load(lb.clone(), admin.clone(), deadline));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    instances[1].kill();
    let during = lb.requests.load(Ordering::Relaxed);

    let mut worked = Worked::default();
    for worker in workers {
        let w = worker.await.unwrap();
        worked.chains.extend(w.chains);
        worked.lost_answers += w.lost_answers;
        worked.problems.extend(w.problems);
    }
    let done = administration.await.unwrap();
    worked.problems.extend(done.problems.iter().cloned());
    let requests = lb.requests.load(Ordering::Relaxed);

    // Every write that was answered 2xx is there, on the survivors.
    let mut lost = Vec::new();
    for chain in &worked.chains {
        let answer = lb.refresh(chain).await;
        if answer.status != 200 {
            lost.push(format!(
                "refresh chain ends in {}: {}",
                answer.status, answer.body
            ));
        }
    }
    let listed = lb
        .admin(reqwest::Method::GET, "/admin/users", &admin, &Value::Null)
        .await;
    assert_eq!(listed.status, 200);
    let names: Vec<&str> = listed.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    lost.extend(
        done.users
            .iter()
            .filter(|u| !names.contains(&u.as_str()))
            .map(|u| format!("user {u} created, then missing")),
    );
    for (id, secret) in &done.clients {
        let grant = lb.client_credentials(id, secret).await;
        if grant.status != 200 {
            lost.push(format!("client {id} created, then {}", grant.status));
        }
    }
    let keys = lb
        .admin(reqwest::Method::GET, "/admin/keys", &admin, &Value::Null)
        .await;
    for kid in &done.rotations {
        let key = keys.body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == *kid);
        if !key.is_some_and(|k| k["state"] == "current" || k["state"] == "retired") {
            lost.push(format!("rotation to {kid} answered, then {key:?}"));
        }
    }
    drop(instances);
    let server_errors = lb.server_errors.load(Ordering::Relaxed);
    eprintln!(
        "faults: kill -9 of 1 of 3 instances under load: {requests} requests ({during} before \
         the kill returned), {} retried on another instance, {server_errors} 5xx, {} lost \
         writes, {} answers lost with the instance, {} chains, {} users, {} clients, {} \
         rotations checked, max latency {} ms",
        lb.retries.load(Ordering::Relaxed),
        lost.len(),
        worked.lost_answers + done.lost_answers,
        worked.chains.len(),
        done.users.len(),
        done.clients.len(),
        done.rotations.len(),
        lb.max_latency_ms.load(Ordering::Relaxed),
    );
    assert_eq!(server_errors, 0, "no 5xx");
    assert!(lost.is_empty(), "lost writes: {lost:?}");
    assert!(worked.problems.is_empty(), "{:?}", worked.problems);
    assert!(
        lb.retries.load(Ordering::Relaxed) > 0,
        "the balancer met the killed instance"
    );
    assert!(!worked.chains.is_empty() && !done.users.is_empty() && !done.rotations.is_empty());
}

/// The keyset as `keyturn keys list -o json` prints it.
fn keyset(dir: &Path, env: &[(String, String)]) -> Vec<Value> {
    let listing: Value =
        serde_json::from_str(&keyturn(dir, env, &["keys", "list", "-o", "json"], None)).unwrap();
    listing["keys"].as_array().unwrap().clone()
}

fn kids_in(keys: &[Value], state: &str) -> Vec<String> {
    keys.iter()
        .filter(|k| k["state"] == state)
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Exactly one `current` and one `next` per algorithm in use, and no key
/// signed before it was published.
fn keyset_problems(keys: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    if !keys.iter().any(|k| k["state"] == "current") {
        problems.push("no current key".to_owned());
    }
    let mut algs: Vec<&str> = keys.iter().filter_map(|k| k["alg"].as_str()).collect();
    algs.sort_unstable();
    algs.dedup();
    for alg in algs {
        let of = |state: &str| {
            keys.iter()
                .filter(|k| k["alg"] == alg && k["state"] == state)
                .count()
        };
        if of("current") > 0 && (of("current"), of("next")) != (1, 1) {
            problems.push(format!(
                "{alg}: {} current, {} next",
                of("current"),
                of("next")
            ));
        }
    }
    for key in keys {
        let time = |name: &str| {
            key[name]
                .as_str()
                .map(|t| chrono::DateTime::parse_from_rfc3339(t).expect("a time"))
        };
        if let (Some(published), Some(activated)) = (time("published_at"), time("activated_at"))
            && activated < published
        {
            problems.push(format!("{} signed before it was published", key["kid"]));
        }
    }
    problems
}

/// A verifier that knows only the keys of `jwks` and never fetches.
fn cache_only_verifier(jwks: &Value) -> Verifier {
    let jwks: JwkSet = serde_json::from_value(jwks.clone()).expect("a JWKS");
    Verifier::builder()
        .issuer(ISSUER)
        .audience(["keyturn"])
        .build_from_jwks(&jwks)
        .expect("verifier")
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn login_token(client: &reqwest::Client, base: &str) -> String {
    let answer = client
        .post(format!("{base}/login"))
        .json(&json!({"username": "root", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "login at {base}");
    let body: Value = answer.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

fn kid_of(token: &str) -> String {
    segment(token, 0)["kid"].as_str().unwrap().to_owned()
}

/// Who is rotating when the kill comes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Cli,
    Admin,
    Scheduled,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Cli, Kind::Admin, Kind::Scheduled];
}

/// Seconds a key is published before a scheduled rotation may promote it,
/// on the server with `FAST_SCHEDULE`.
const FAST_PREPUBLISH: i64 = 2;
const FAST_SCHEDULE: [(&str, &str); 3] = [
    ("KEYTURN_ROTATION_SCHEDULE", "* * * * * *"),
    ("KEYTURN_KEY_PREPUBLISH", "2s"),
    ("KEYTURN_JWKS_MAX_AGE", "1s"),
];

/// Starts `command` and sends it SIGKILL `delay_ms` later.
async fn kill_after(mut command: Command, delay_ms: u64) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("keyturn runs");
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    let _ = child.kill();
    child.wait().expect("reaped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_rotations_leaves_a_consistent_keyset() {
    if !postgres_available().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let env = pg_env(dir.path(), &fresh_pg_database().await);
    provision(dir.path(), &env, &[]);
    let survivor = Instance::start(dir.path(), &env, "survivor.log");
    let client = reqwest::Client::builder().timeout(BOUND).build().unwrap();
    let admin = login_token(&client, survivor.base()).await;
    let jwks_url = format!("{}/.well-known/jwks.json", survivor.base());
    let (mut committed, mut tokens, mut failures) = ([0; 3], 0, Vec::new());
    // How long one rotation takes here (process start, RSA key generation,
    // the transaction): the kills land anywhere in 0..1.5 times the longest
    // of three (RSA key generation time varies a lot).
    let mut longest = Duration::ZERO;
    for _ in 0..3 {
        let started = Instant::now();
        keyturn(dir.path(), &env, &["keys", "rotate", "--force"], None);
        longest = longest.max(started.elapsed());
    }
    let window = longest.as_millis() as u64 * 3 / 2 + 1;

    for round in 0..ROTATION_KILLS {
        // The verifier follows the JWKS between rounds, as one does on
        // max-age; during a round it has only what it fetched before.
        let stored = keyturn(dir.path(), &env, &["keys", "jwks"], None);
        let stored: Value = serde_json::from_str(&stored).unwrap();
        let mut served = get_json(&client, &jwks_url).await;
        let started = Instant::now();
        while served != stored && started.elapsed() < BOUND {
            tokio::time::sleep(Duration::from_millis(100)).await;
            served = get_json(&client, &jwks_url).await;
        }
        assert_eq!(
            served, stored,
            "round {round}: the survivor serves the stored keyset"
        );
        let verifier = cache_only_verifier(&served);
        let before = keyset(dir.path(), &env);
        let (current, next) = (kids_in(&before, "current"), kids_in(&before, "next"));

        // Kill whoever is rotating, at a random point of the rotation (key
        // generation, the transaction, the answer), by turns: the CLI, a
        // server answering POST /admin/keys/rotate, a server doing its
        // start-up rotation on a schedule due every second.
        let kind = Kind::ALL[round % 3];
        let mut delay = rand::thread_rng().gen_range(0..window);
        let restarted = match kind {
            Kind::Cli => {
                let args = ["keys", "rotate", "--force"];
                kill_after(keyturn_command(dir.path(), &pairs(&env), &args), delay).await;
                None
            }
            Kind::Admin => {
                let mut victim = Instance::start(dir.path(), &env, &format!("victim{round}.log"));
                let rotate = client
                    .post(format!("{}/admin/keys/rotate?force=true", victim.base()))
                    .bearer_auth(&admin)
                    .send();
                let rotating = tokio::spawn(rotate);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                victim.kill();
                if let Ok(answer) = rotating.await.unwrap() {
                    assert_eq!(answer.status(), 200, "round {round}");
                }
                Some(Instance::start(
                    dir.path(),
                    &env,
                    &format!("restarted{round}.log"),
                ))
            }
            Kind::Scheduled => {
                // Due at once: `next` has been published for the prepublish
                // time. Killed before that time passes again, the server
                // cannot promote the key it generates itself, which the
                // verifier has not seen.
                let published = before
                    .iter()
                    .find(|k| k["state"] == "next")
                    .and_then(|k| k["published_at"].as_str())
                    .map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp())
                    .unwrap();
                let ready = published + FAST_PREPUBLISH + 1;
                while chrono::Utc::now().timestamp() < ready {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                delay = delay.min(FAST_PREPUBLISH as u64 * 1000 - 200);
                let mut fast = env.clone();
                fast.extend(FAST_SCHEDULE.map(|(k, v)| (k.to_owned(), v.to_owned())));
                kill_after(
                    keyturn_command(dir.path(), &pairs(&fast), &["serve"]),
                    delay,
                )
                .await;
                Some(Instance::start(
                    dir.path(),
                    &env,
                    &format!("restarted{round}.log"),
                ))
            }
        };

        let after = keyset(dir.path(), &env);
        let problems = keyset_problems(&after);
        assert!(
            problems.is_empty(),
            "round {round}: {problems:?} in {after:#?}"
        );
        let now_current = kids_in(&after, "current");
        if now_current == next {
            committed[round % 3] += 1;
            if kind == Kind::Scheduled {
                let key = after.iter().find(|k| k["kid"] == now_current[0]).unwrap();
                let time = |name: &str| {
                    chrono::DateTime::parse_from_rfc3339(key[name].as_str().unwrap())
                        .unwrap()
                        .timestamp()
                };
                assert!(
                    time("activated_at") - time("published_at") >= FAST_PREPUBLISH,
                    "round {round}: a scheduled rotation promoted a key published for less than \
                     {FAST_PREPUBLISH} s: {key}"
                );
            }
        } else {
            assert_eq!(
                now_current, current,
                "round {round}: neither before nor after"
            );
        }

        // Tokens from the survivor until it signs with the new keyset, and
        // from the restarted server: all valid for the cached verifier.
        let mut issued = Vec::new();
        let started = Instant::now();
        loop {
            let token = login_token(&client, survivor.base()).await;
            let caught_up = kid_of(&token) == now_current[0];
            issued.push(token);
            if caught_up || started.elapsed() > BOUND {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if let Some(restarted) = restarted {
            let token = login_token(&client, restarted.base()).await;
            assert_eq!(
                kid_of(&token),
                now_current[0],
                "round {round}: a restart signs"
            );
            issued.push(token);
        }
        assert_eq!(
            kid_of(issued.last().unwrap()),
            now_current[0],
            "round {round}: the survivor signs with the new key"
        );
        for token in &issued {
            tokens += 1;
            if let Err(err) = verifier.verify::<Value>(token).await {
                failures.push(format!("round {round}: {err}"));
            }
        }
    }
    drop(survivor);
    eprintln!(
        "faults: {ROTATION_KILLS} rotations killed with SIGKILL at 0..{window} ms ({committed:?} \
         had committed, by the CLI, POST /admin/keys/rotate, the schedule): 0 inconsistent keysets, {tokens} tokens checked by a cache-only \
         verifier, {} failures",
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:?}");
}

/// Counts of the outage test, shared by its workers.
#[derive(Default)]
struct Outage {
    requests: AtomicU64,
    unavailable: AtomicU64,
    server_errors: AtomicU64,
    max_store_ms: AtomicU64,
    max_memory_ms: AtomicU64,
    lost_answers: AtomicU64,
    problems: std::sync::Mutex<Vec<String>>,
    /// When the proxy cut the database off.
    cut: std::sync::OnceLock<Instant>,
    /// Set once the store is back and `/ready` says so: from then on only
    /// 200s, counted here by kind.
    recovered: AtomicBool,
    ok_after: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Outage {
    fn problem(&self, what: String) {
        self.problems.lock().unwrap().push(what);
    }

    /// Sends, times and classifies one request that needs the store: 200,
    /// or 503 `temporarily_unavailable` with `Retry-After` within `BOUND`
    /// (and only 200 once the store is back); `tolerated` is the caller's.
    async fn store(
        &self,
        what: &'static str,
        request: reqwest::RequestBuilder,
        tolerated: &[u16],
    ) -> Answer {
        let started = Instant::now();
        let response = request.timeout(BOUND).send().await;
        let took = started.elapsed();
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.max_store_ms
            .fetch_max(took.as_millis() as u64, Ordering::Relaxed);
        let response = match response {
            Ok(response) => response,
            Err(err) => {
                self.problem(format!("{what} after {took:?}: {err}"));
                return Answer {
                    status: 0,
                    body: Value::Null,
                    retried: false,
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key("retry-after");
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let recovered = self.recovered.load(Ordering::Relaxed);
        match status {
            200 if recovered => *self.ok_after.lock().unwrap().entry(what).or_default() += 1,
            200 => {}
            503 if retry_after && body["error"] == "temporarily_unavailable" && !recovered => {
                self.unavailable.fetch_add(1, Ordering::Relaxed);
            }
            s if tolerated.contains(&s) => {}
            _ => {
                if status >= 500 {
                    self.server_errors.fetch_add(1, Ordering::Relaxed);
                }
                let when = if recovered { " after recovery" } else { "" };
                self.problem(format!("{what}{when}: {status} {body}"));
            }
        }
        Answer {
            status,
            body,
            retried: false,
        }
    }
}

async fn outage_worker(
    app: Arc<crate::helpers::TestApp>,
    counts: Arc<Outage>,
    user: String,
    secret: String,
    stop: Arc<AtomicBool>,
) {
    let client = format!("c-{user}");
    let mut chain: Option<String> = None;
    // When the request that first got 503 for the current token was sent,
    // if it did: its rotation may have committed with the answer lost.
    let mut unavailable_since: Option<Instant> = None;
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let mut unavailable = false;
        // A new session now and then: logins are part of the load too.
        if round % 4 == 0 && unavailable_since.is_none() {
            chain = None;
        }
        let token = match chain.take() {
            Some(token) => token,
            None => {
                let body = json!({"username": user, "password": PASSWORD});
                let login = counts
                    .store("login", app.client.post(app.url("/login")).json(&body), &[])
                    .await;
                if login.status != 200 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                field(&login, "refresh_token")
            }
        };
        let form = [("grant_type", "refresh_token"), ("refresh_token", &token)];
        let request = app.client.post(app.url("/oauth/token")).form(&form);
        // After a 503 the same token again: if the lost answer's rotation had
        // committed, reuse detection refuses it (400), which is no lost write.
        let tolerated: &[u16] = if unavailable_since.is_some() {
            &[400]
        } else {
            &[]
        };
        let sent = Instant::now();
        let answer = counts.store("refresh", request, tolerated).await;
        match answer.status {
            200 => {
                chain = Some(field(&answer, "refresh_token"));
                unavailable_since = None;
            }
            503 => {
                chain = Some(token);
                unavailable_since.get_or_insert(sent);
                unavailable = true;
            }
            400 => {
                // Only a request sent before the cut can have committed (the
                // 50 ms: the proxy's connections close just after the switch).
                let cut = counts.cut.get().copied();
                match (unavailable_since.take(), cut) {
                    (Some(sent), Some(cut)) if sent < cut + Duration::from_millis(50) => {
                        counts.lost_answers.fetch_add(1, Ordering::Relaxed);
                    }
                    (Some(sent), _) => counts.problem(format!(
                        "refresh refused after a 503 to a request sent {:?} after the cut: a \
                         lost write",
                        cut.map(|c| sent.saturating_duration_since(c))
                    )),
                    (None, _) => {}
                }
            }
            _ => {}
        }
        let grant = [("grant_type", "client_credentials")];
        let request = app
            .client
            .post(app.url("/oauth/token"))
            .basic_auth(&client, Some(&secret))
            .form(&grant);
        unavailable |= counts
            .store("client_credentials", request, &[])
            .await
            .status
            == 503;
        if unavailable {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// JWKS and `/profile`: from memory, 200 throughout.
async fn memory_reader(
    app: Arc<crate::helpers::TestApp>,
    counts: Arc<Outage>,
    access: String,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        for (path, token) in [
            ("/.well-known/jwks.json", None),
            ("/profile", Some(&access)),
        ] {
            let mut request = app.client.get(app.url(path)).timeout(BOUND);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let started = Instant::now();
            let status = request.send().await.map(|r| r.status().as_u16());
            counts.requests.fetch_add(1, Ordering::Relaxed);
            counts
                .max_memory_ms
                .fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            match status {
                Ok(200) => {}
                Ok(status) => {
                    if status >= 500 {
                        counts.server_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    counts.problem(format!("{path}: {status}"));
                }
                Err(err) => counts.problem(format!("{path}: {err}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// When `/ready` first answers `status` from `since` on, polling every
/// 100 ms for at most `within` (each probe itself bounded).
async fn ready_becomes(app: &crate::helpers::TestApp, status: u16, within: Duration) -> Duration {
    let since = Instant::now();
    loop {
        let answer = app
            .client
            .get(app.url("/ready"))
            .timeout(BOUND)
            .send()
            .await
            .map(|r| r.status().as_u16());
        if answer.as_ref().is_ok_and(|s| *s == status) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < within,
            "/ready not {status} within {within:?}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_under_load_answers_503_in_bounded_time_and_recovers() {
    if !postgres_available().await {
        return;
    }
    let (proxy, app) =
        spawn_app_behind_proxy(&[("KEYTURN_REFRESH_SESSIONS_PER_USER", "1000")]).await;
    let app = Arc::new(app);
    let reader = app.user_token("reader", &[]).await;
    let counts = Arc::new(Outage::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for n in 0..3 {
        let user = format!("load{n}");
        app.create_user(&user, &[]).await;
        let secret = app.create_client(&format!("c-{user}"), &["read"]).await;
        tasks.push(tokio::spawn(outage_worker(
            app.clone(),
            counts.clone(),
            user,
            secret,
            stop.clone(),
        )));
    }
    tasks.push(tokio::spawn(memory_reader(
        app.clone(),
        counts.clone(),
        reader,
        stop.clone(),
    )));
    tokio::time::sleep(Duration::from_secs(1)).await;

    proxy.switch_off();
    let cut = Instant::now();
    counts.cut.set(cut).unwrap();
    let ready_503 = ready_becomes(&app, 503, Duration::from_secs(2)).await;
    let unavailable_before = counts.unavailable.load(Ordering::Relaxed);
    tokio::time::sleep(OUTAGE.saturating_sub(cut.elapsed())).await;
    let unavailable = counts.unavailable.load(Ordering::Relaxed);
    proxy.switch_on();
    let ready_200 = ready_becomes(&app, 200, BOUND).await;
    // Everything works again, without a restart: from a moment after /ready
    // says so (requests already in flight may still meet the outage), only
    // 200s.
    tokio::time::sleep(Duration::from_millis(500)).await;
    counts.recovered.store(true, Ordering::Relaxed);
    let recovered = Instant::now();
    let healed = counts.requests.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let after = crate::helpers::TestApp::login(&app, "reader", PASSWORD).await;
    assert_eq!(after.status(), 200, "login after the outage");

    let problems = counts.problems.lock().unwrap().clone();
    let server_errors = counts.server_errors.load(Ordering::Relaxed);
    eprintln!(
        "faults: PostgreSQL cut for {OUTAGE:?} under load: {} requests, {} answered 503 \
         temporarily_unavailable ({} once /ready said 503), {server_errors} other 5xx, {} \
         refresh answers lost with the connection, /ready 503 after {ready_503:?} and 200 \
         {ready_200:?} after the store came back, max latency {} ms (store) {} ms (memory), \
         {} requests in the {:?} after recovery",
        counts.requests.load(Ordering::Relaxed),
        counts.unavailable.load(Ordering::Relaxed),
        unavailable - unavailable_before,
        counts.lost_answers.load(Ordering::Relaxed),
        counts.max_store_ms.load(Ordering::Relaxed),
        counts.max_memory_ms.load(Ordering::Relaxed),
        counts.requests.load(Ordering::Relaxed) - healed,
        recovered.elapsed(),
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(server_errors, 0);
    assert!(unavailable > 0, "the load met the outage");
    let ok_after = counts.ok_after.lock().unwrap().clone();
    for what in ["login", "refresh", "client_credentials"] {
        assert!(
            ok_after.get(what).is_some_and(|n| *n > 0),
            "{what} after recovery: {ok_after:?}"
        );
    }
    assert!(
        counts.max_store_ms.load(Ordering::Relaxed) < BOUND.as_millis() as u64,
        "bounded answers"
    );
}

/// A database that goes silent (packets dropped: no reset, no answer) is
/// the case a client-side timeout must bound: a query already sent when the
/// network went quiet would otherwise wait until the connection's 10 s
/// deadline closes it with no answer at all. Under load (so queries are in
/// flight at the moment of the stall), every request gets an HTTP answer,
/// 503 for the store-bound ones, within the 8 s handler deadline; `/ready`
/// says 503, bearer checks keep answering from memory, and everything works
/// again once the network is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_database_gets_answered_503_within_the_handler_deadline() {
    if !postgres_available().await {
        return;
    }
    let (proxy, app) = spawn_app_behind_proxy(&[("KEYTURN_SIGNING_ALG", "EdDSA")]).await;
    let app = Arc::new(app);
    app.create_user("alice", &[]).await;
    let secret = app.create_client("svc", &[]).await;
    let access = app.token("alice").await;

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (app, secret, stop) = (Arc::clone(&app), secret.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let response = app
                        .post_form(
                            "/oauth/token",
                            &[("grant_type", "client_credentials")],
                            Some(("svc", &secret)),
                        )
                        .await;
                    answers.push((response.status().as_u16(), started.elapsed()));
                }
                answers
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.stall();
    let stalled = Instant::now();
    let ready = app.get("/ready", None).await;
    assert_eq!(ready.status(), 503, "/ready");
    assert!(
        stalled.elapsed() < Duration::from_secs(2),
        "/ready took long"
    );
    assert_eq!(app.get("/profile", Some(&access)).await.status(), 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let mut answers = Vec::new();
    for worker in workers {
        answers.extend(worker.await.expect("every request got an HTTP answer"));
    }
    let slowest = answers.iter().map(|(_, took)| *took).max().unwrap();
    let unavailable = answers.iter().filter(|(status, _)| *status == 503).count();
    let other: Vec<u16> = answers
        .iter()
        .map(|(status, _)| *status)
        // 429: the client's attempts still hanging in the store count as
        // in flight, so the throttle turns the rest away (with Retry-After).
        .filter(|status| ![200, 429, 503].contains(status))
        .collect();
    eprintln!(
        "faults: silent database: {} requests, {unavailable} answered 503, slowest {slowest:?}",
        answers.len()
    );
    assert!(
        other.is_empty(),
        "answers other than 200/429/503: {other:?}"
    );
    assert!(unavailable > 0, "the load met the stall");
    assert!(
        slowest < Duration::from_secs(9),
        "slowest answer {slowest:?}"
    );

    proxy.switch_off();
    proxy.switch_on();
    let ready = ready_becomes(&app, 200, Duration::from_secs(10)).await;
    eprintln!("faults: ready again {ready:?} after the network came back");
    let response = app.client_credentials("svc", &secret, None).await;
    assert_eq!(response.status(), 200, "client_credentials after recovery");
}
