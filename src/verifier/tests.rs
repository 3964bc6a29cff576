//! Tests of the verifier against a real (tiny) JWKS HTTP server the test
//! controls, with real generated keys and tokens shaped like keyturn's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

// ---------------------------------------------------------------- keys

/// A signing key as keyturn has one: private half, public JWK, kid = RFC 7638 thumbprint.
#[derive(Clone)]
pub(crate) struct TestKey {
    pub(crate) alg: Algorithm,
    pub(crate) kid: String,
    pub(crate) encoding: EncodingKey,
    pub(crate) jwk: Jwk,
}

impl TestKey {
    fn new(alg: Algorithm, encoding: EncodingKey) -> TestKey {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
        let kid = jwk.thumbprint(ThumbprintHash::SHA256).unwrap();
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        TestKey {
            alg,
            kid,
            encoding,
            jwk,
        }
    }

    pub(crate) fn rsa() -> TestKey {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der =
            aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
        let b64 = STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        TestKey::new(
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        )
    }

    pub(crate) fn ed25519() -> TestKey {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(&rng).unwrap();
        TestKey::new(Algorithm::EdDSA, EncodingKey::from_ed_der(doc.as_ref()))
    }

    /// A token signed by this key with keyturn's header.
    pub(crate) fn sign(&self, claims: &Value) -> String {
        self.sign_with(claims, |_| {})
    }

    pub(crate) fn sign_with(&self, claims: &Value, edit: impl FnOnce(&mut Header)) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some("at+jwt".into());
        edit(&mut header);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// RSA generation is slow-ish: share a few keys across tests.
pub(crate) fn rsa_key(n: usize) -> TestKey {
    static KEYS: OnceLock<Vec<TestKey>> = OnceLock::new();
    KEYS.get_or_init(|| (0..3).map(|_| TestKey::rsa()).collect())[n].clone()
}

pub(crate) const AUD: &str = "keyturn";

pub(crate) fn now() -> u64 {
    u64::try_from(SystemClock.now()).unwrap()
}

/// Claims like keyturn's for `iss`, issued now (system time).
pub(crate) fn claims(iss: &str) -> Value {
    claims_at(iss, now())
}

/// Claims like keyturn's for `iss`, issued at `now` (a test clock's time).
fn claims_at(iss: &str, now: u64) -> Value {
    json!({
        "iss": iss, "sub": "user-1", "aud": AUD, "exp": now + 900, "iat": now, "nbf": now,
        "jti": format!("jti-{now}"), "client_id": "first-party", "scope": "reports:read profile",
        "roles": ["user"], "username": "alice",
    })
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn jwks_of(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| serde_json::to_value(&k.jwk).unwrap()).collect::<Vec<_>>() })
}

// ---------------------------------------------------------------- server

/// What the test server answers for one path.
#[derive(Clone)]
pub(crate) struct Reply {
    status: u16,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    /// Omit Content-Length (body ends at connection close).
    no_length: bool,
}

impl Reply {
    pub(crate) fn json(v: &Value) -> Reply {
        Reply {
            status: 200,
            body: serde_json::to_vec(v).unwrap(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            no_length: false,
        }
    }
    fn status(status: u16) -> Reply {
        Reply {
            status,
            body: b"oops".to_vec(),
            headers: vec![],
            no_length: false,
        }
    }
    fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

#[derive(Default)]
struct ServerState {
    routes: HashMap<String, Reply>,
    hits: HashMap<String, usize>,
    /// ETag of the JWKS; answers 304 to a matching If-None-Match.
    etag: Option<String>,
    not_modified: usize,
}

/// A tiny HTTP/1.1 server on 127.0.0.1:0 that counts requests per path.
#[derive(Clone)]
pub(crate) struct TestServer {
    pub(crate) base: String,
    state: Arc<Mutex<ServerState>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub(crate) async fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(ServerState::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let inm = text.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("if-none-match")
                            .then(|| v.trim().to_owned())
                    });
                    let reply = {
                        let mut s = st.lock().unwrap();
                        *s.hits.entry(path.clone()).or_default() += 1;
                        let reply = s.routes.get(&path).cloned();
                        match (reply, &s.etag, inm) {
                            (Some(r), Some(etag), Some(inm)) if r.status == 200 && *etag == inm => {
                                s.not_modified += 1;
                                Some(Reply {
                                    status: 304,
                                    body: vec![],
                                    headers: r.headers.clone(),
                                    no_length: false,
                                })
                            }
                            (Some(mut r), Some(etag), _) => {
                                r.headers.push(("ETag".into(), etag.clone()));
                                Some(r)
                            }
                            (r, _, _) => r,
                        }
                    };
                    let reply = reply.unwrap_or(Reply::status(404));
                    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
                    for (k, v) in &reply.headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    if !reply.no_length {
                        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
                    }
                    head.push_str("\r\n");
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&reply.body).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        TestServer {
            base,
            state,
            task: Arc::new(task),
        }
    }

    pub(crate) fn set(&self, path: &str, reply: Reply) {
        self.state.lock().unwrap().routes.insert(path.into(), reply);
    }

    fn set_etag(&self, etag: &str) {
        self.state.lock().unwrap().etag = Some(etag.into());
    }

    pub(crate) fn hits(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    fn total_hits(&self) -> usize {
        self.state.lock().unwrap().hits.values().sum()
    }

    fn stop(&self) {
        self.task.abort();
    }

    /// A keyturn-like issuer: RFC 8414 metadata and a JWKS with `max-age`.
    pub(crate) async fn issuer(keys: &[&TestKey], max_age: u64) -> TestServer {
        let server = TestServer::start().await;
        let meta = json!({
            "issuer": server.base, "jwks_uri": format!("{}/.well-known/jwks.json", server.base),
        });
        server.set(
            "/.well-known/oauth-authorization-server",
            Reply::json(&meta),
        );
        server.publish(keys, max_age);
        server
    }

    pub(crate) fn publish(&self, keys: &[&TestKey], max_age: u64) {
        self.set(
            "/.well-known/jwks.json",
            Reply::json(&jwks_of(keys))
                .header("Cache-Control", &format!("public, max-age={max_age}")),
        );
    }

    pub(crate) fn jwks_hits(&self) -> usize {
        self.hits("/.well-known/jwks.json")
    }
}

pub(crate) async fn verifier_for(server: &TestServer) -> Verifier {
    Verifier::builder()
        .issuer_url(&server.base)
        .audience([AUD])
        .build()
        .await
        .unwrap()
}

async fn verify(v: &Verifier, token: &str) -> Result<Claims, VerifyError> {
    v.verify::<()>(token).await
}

// ---------------------------------------------------------------- moved clocks

/// Real time the background refresher sleeps between looks at a
/// [`ManualClock`] ([`Clock::poll_interval`]).
const TEST_CLOCK_POLL: Duration = Duration::from_millis(5);

/// A builder for `server` on a frozen [`ManualClock`] the test moves (token
/// times and cache times alike).
fn clocked_builder(server: &TestServer) -> (VerifierBuilder, ManualClock) {
    let clock = ManualClock::default();
    let builder = Verifier::builder()
        .issuer_url(&server.base)
        .audience([AUD])
        .clock(Arc::new(clock.clone()));
    (builder, clock)
}

/// The test clock's time, for token claims.
fn at(clock: &ManualClock) -> u64 {
    u64::try_from(clock.now()).unwrap()
}

/// Waits (a bounded poll, at most 5 s of real time) until the verifier's
/// cache has completed `n` fetch attempts in all (success or failure), and
/// fails if it has completed more.
async fn attempts_reach(v: &Verifier, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while v.inner.cache.attempts() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} fetch attempts, waiting for {n}",
            v.inner.cache.attempts()
        );
        tokio::time::sleep(TEST_CLOCK_POLL).await;
    }
    assert_eq!(v.inner.cache.attempts(), n, "more fetches than expected");
}

/// Gives the background refresher twenty looks at the clock, for checks
/// that it did *not* fetch.
async fn let_the_refresher_look() {
    tokio::time::sleep(TEST_CLOCK_POLL * 20).await;
}

// ---------------------------------------------------------------- happy path

#[tokio::test]
async fn valid_rs256_and_eddsa_tokens_verify_via_discovery() {
    let rsa = rsa_key(0);
    let ed = TestKey::ed25519();
    let server = TestServer::issuer(&[&rsa, &ed], 300).await;
    let v = verifier_for(&server).await;
    assert_eq!(v.issuer(), Some(server.base.as_str()));
    assert_eq!(
        v.jwks_url(),
        Some(format!("{}/.well-known/jwks.json", server.base).as_str())
    );
    let mut kids = v.key_ids();
    kids.sort();
    let mut want = vec![rsa.kid.clone(), ed.kid.clone()];
    want.sort();
    assert_eq!(kids, want);

    for key in [&rsa, &ed] {
        let c = verify(&v, &key.sign(&claims(&server.base))).await.unwrap();
        assert_eq!(c.sub, "user-1");
        assert_eq!(c.iss, server.base);
        assert_eq!(c.aud, [AUD]);
        assert_eq!(c.client_id.as_deref(), Some("first-party"));
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert!(c.has_scope("reports:read") && c.has_scope("profile") && !c.has_scope("report"));
        assert!(c.has_role("user") && !c.has_role("admin"));
    }
    assert_eq!(server.jwks_hits(), 1);
}

#[tokio::test]
async fn typed_extra_claims_and_aud_array() {
    #[derive(serde::Deserialize, Clone, Debug)]
    struct Extra {
        tenant: String,
    }
    let ed = TestKey::ed25519();
    let server = TestServer::issuer(&[&ed], 300).await;
    let v = verifier_for(&server).await;
    let mut c = claims(&server.base);
    c["aud"] = json!(["other", AUD]);
    c["tenant"] = json!("acme");
    let got: Claims<Extra> = v.verify(&ed.sign(&c)).await.unwrap();
    assert_eq!(got.extra.tenant, "acme");
    assert_eq!(got.aud, ["other", AUD]);
    let all: Claims<Value> = v.verify(&ed.sign(&c)).await.unwrap();
    assert_eq!(all.extra["tenant"], "acme");
    // E does not match → malformed, not a panic.
    c.as_object_mut().unwrap().remove("tenant");
    assert!(matches!(
        v.verify::<Extra>(&ed.sign(&c)).await,
        Err(VerifyError::Malformed(_))
    ));
}

#[tokio::test]
async fn openid_configuration_fallback_and_issuer_mismatch() {
    let ed = TestKey::ed25519();
    let server = TestServer::start().await;
    server.publish(&[&ed], 300);
    // Only OpenID discovery.
    let meta = json!({"issuer": server.base, "jwks_uri": format!("{}/.well-known/jwks.json", server.base)});
    server.set("/.well-known/openid-configuration", Reply::json(&meta));
    let v = verifier_for(&server).await;
    verify(&v, &ed.sign(&claims(&server.base))).await.unwrap();

    // Metadata naming another issuer is refused (RFC 8414 §3.3).
    let evil = json!({"issuer": "https://evil.example", "jwks_uri": format!("{}/.well-known/jwks.json", server.base)});
    server.set("/.well-known/openid-configuration", Reply::json(&evil));
    let err = Verifier::builder()
        .issuer_url(&server.base)
        .audience([AUD])
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::Discovery(_)), "{err}");
}

#[tokio::test]
async fn builder_requires_audience_issuer_and_source() {
    let ed = TestKey::ed25519();
    let set: JwkSet = serde_json::from_value(jwks_of(&[&ed])).unwrap();
    assert_eq!(
        Verifier::builder()
            .issuer("i")
            .build_from_jwks(&set)
            .unwrap_err(),
        BuildError::MissingAudience
    );
    assert_eq!(
        Verifier::builder()
            .audience(["a"])
            .build_from_jwks(&set)
            .unwrap_err(),
        BuildError::MissingIssuer
    );
    assert_eq!(
        Verifier::builder().build().await.unwrap_err(),
        BuildError::MissingKeySource
    );
    assert!(matches!(
        Verifier::builder()
            .issuer("i")
            .audience(["a"])
            .algorithms([Algorithm::HS256])
            .build_from_jwks(&set),
        Err(BuildError::InvalidOption(_))
    ));
    assert!(matches!(
        Verifier::builder()
            .issuer("i")
            .audience(["a"])
            .required_claims(["exp", "bogus"])
            .build_from_jwks(&set),
        Err(BuildError::InvalidOption(_))
    ));
    // Only unusable keys → error.
    let oct: JwkSet =
        serde_json::from_value(json!({"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]})).unwrap();
    assert!(matches!(
        Verifier::builder()
            .issuer("i")
            .audience(["a"])
            .build_from_jwks(&oct),
        Err(BuildError::Jwks(_))
    ));
}

// ---------------------------------------------------------------- attacks

#[tokio::test]
async fn alg_none_is_refused() {
    let rsa = rsa_key(0);
    let server = TestServer::issuer(&[&rsa], 300).await;
    let v = verifier_for(&server).await;
    let c = claims(&server.base);
    for alg in ["none", "None", "NONE", ""] {
        let header = json!({"alg": alg, "kid": rsa.kid, "typ": "at+jwt"});
        for sig in ["", "AAAA"] {
            let token = format!("{}.{}.{sig}", b64(&header), b64(&c));
            assert_eq!(
                verify(&v, &token).await.unwrap_err(),
                VerifyError::DisallowedAlgorithm,
                "alg {alg:?}"
            );
        }
    }
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused_even_if_listed() {
    let rsa = rsa_key(0);
    let server = TestServer::issuer(&[&rsa], 300).await;
    let v = Verifier::builder()
        .issuer_url(&server.base)
        .audience([AUD])
        .algorithms([
            Algorithm::RS256,
            Algorithm::HS256,
            Algorithm::HS384,
            Algorithm::HS512,
        ])
        .build()
        .await
        .unwrap();
    let jwk_json = serde_json::to_vec(&rsa.jwk).unwrap();
    let jsonwebtoken::jwk::AlgorithmParameters::RSA(p) = &rsa.jwk.algorithm else {
        unreachable!()
    };
    let n = URL_SAFE_NO_PAD.decode(&p.n).unwrap();
    for secret in [jwk_json.as_slice(), n.as_slice(), p.n.as_bytes()] {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some(rsa.kid.clone());
            header.typ = Some("at+jwt".into());
            let token = jsonwebtoken::encode(
                &header,
                &claims(&server.base),
                &EncodingKey::from_secret(secret),
            )
            .unwrap();
            assert_eq!(
                verify(&v, &token).await.unwrap_err(),
                VerifyError::DisallowedAlgorithm
            );
        }
    }
}

#[tokio::test]
async fn tampered_tokens_fail_the_signature() {
    let rsa = rsa_key(0);
    let ed = TestKey::ed25519();
    let server = TestServer::issuer(&[&rsa, &ed], 300).await;
    let v = verifier_for(&server).await;
    for key in [&rsa, &ed] {
        let token = key.sign(&claims(&server.base));
        let parts: Vec<&str> = token.split('.').collect();
        // Payload swapped for one granting admin.
        let mut evil = claims(&server.base);
        evil["roles"] = json!(["admin"]);
        let forged = format!("{}.{}.{}", parts[0], b64(&evil), parts[2]);
        assert_eq!(
            verify(&v, &forged).await.unwrap_err(),
            VerifyError::BadSignature
        );
        // Signature of another token.
        let other = key.sign(&evil);
        let sig = other.rsplit('.').next().unwrap();
        let spliced = format!("{}.{}.{sig}", parts[0], parts[1]);
        assert_eq!(
            verify(&v, &spliced).await.unwrap_err(),
            VerifyError::BadSignature
        );
        // Flipped bit in the signature.
        let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        sig[5] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&sig));
        assert_eq!(
            verify(&v, &flipped).await.unwrap_err(),
            VerifyError::BadSignature
        );
        // Empty signature.
        let empty = format!("{}.{}.", parts[0], parts[1]);
        assert_eq!(
            verify(&v, &empty).await.unwrap_err(),
            VerifyError::BadSignature
        );
    }
    // An EdDSA header pointing at the RSA key: the key decides the algorithm.
    let token = ed.sign_with(&claims(&server.base), |h| h.kid = Some(rsa.kid.clone()));
    assert_eq!(
        verify(&v, &token).await.unwrap_err(),
        VerifyError::DisallowedAlgorithm
    );
}

#[tokio::test]
async fn kid_injection_strings_are_unknown_keys_and_never_panic() {
    let ed = TestKey::ed25519();
    let server = TestServer::issuer(&[&ed], 300).await;
    // A frozen clock: the 10 s cooldown does not run out during the test
    // unless the test moves it.
    let (builder, clock) = clocked_builder(&server);
    let v = builder.build().await.unwrap();
    let nasty = [
        "../../etc/passwd".to_owned(),
        "/dev/null".to_owned(),
        "' OR '1'='1".to_owned(),
        "1; DROP TABLE keys; --".to_owned(),
        "$(curl evil)".to_owned(),
        "\0\u{202e}\r\n".to_owned(),
        "http://127.0.0.1:1/jwks.json".to_owned(),
        "".to_owned(),
        "k".repeat(300),
        "ü".repeat(1000),
    ];
    let all_refused = async || {
        for kid in &nasty {
            let token = ed.sign_with(&claims(&server.base), |h| h.kid = Some(kid.clone()));
            let err = verify(&v, &token).await.unwrap_err();
            assert!(
                matches!(err, VerifyError::UnknownKey | VerifyError::Malformed(_)),
                "{err:?}"
            );
            // The error never echoes the kid.
            assert!(!err.to_string().contains("etc/passwd") && !err.to_string().contains("DROP"));
        }
        // Non-string kids are malformed headers.
        for kid in [json!(5), json!(["a"]), json!({"a": 1})] {
            let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid});
            let token = format!("{}.{}.AAAA", b64(&header), b64(&claims(&server.base)));
            let err = verify(&v, &token).await.unwrap_err();
            assert!(matches!(err, VerifyError::Malformed(_)), "{err:?}");
        }
        // A null kid is no kid: the single key is tried, the signature fails.
        let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": null});
        let token = format!("{}.{}.AAAA", b64(&header), b64(&claims(&server.base)));
        assert_eq!(
            verify(&v, &token).await.unwrap_err(),
            VerifyError::BadSignature
        );
    };
    // Within the cooldown of the initial fetch: no refetch at all.
    all_refused().await;
    assert_eq!(server.jwks_hits(), 1);
    // Once it has passed, all of them together cost exactly one refetch.
    clock.advance(10);
    all_refused().await;
    assert_eq!(server.jwks_hits(), 2);
}

#[tokio::test]
async fn jku_jwk_x5u_x5c_headers_are_never_followed() {
    let legit = TestKey::ed25519();
    let attacker_key = TestKey::ed25519();
    let server = TestServer::issuer(&[&legit], 300).await;
    let attacker = TestServer::start().await;
    attacker.set("/jwks.json", Reply::json(&jwks_of(&[&attacker_key])));
    attacker.set("/cert.pem", Reply::json(&json!({})));
    let v = verifier_for(&server).await;
    let c = claims(&server.base);
    for kid in [attacker_key.kid.clone(), legit.kid.clone()] {
        let token = attacker_key.sign_with(&c, |h| {
            h.kid = Some(kid.clone());
            h.jku = Some(format!("{}/jwks.json", attacker.base));
            h.x5u = Some(format!("{}/cert.pem", attacker.base));
            h.jwk = Some(attacker_key.jwk.clone());
            h.x5c = Some(vec![STANDARD.encode(b"not a cert")]);
        });
        let err = verify(&v, &token).await.unwrap_err();
        if kid == legit.kid {
            assert_eq!(err, VerifyError::BadSignature);
        } else {
            assert_eq!(err, VerifyError::UnknownKey);
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        attacker.total_hits(),
        0,
        "the attacker's server was contacted"
    );
}

#[tokio::test]
async fn wrong_typ_is_refused_and_media_type_form_accepted() {
    let ed = TestKey::ed25519();
    let server = TestServer::issuer(&[&ed], 300).await;
    let v = verifier_for(&server).await;
    let c = claims(&server.base);
    for typ in [Some("JWT"), Some("id+jwt"), Some("at+jwt2"), None] {
        let token = ed.sign_with(&c, |h| h.typ = typ.map(str::to_owned));
        assert_eq!(
            verify(&v, &token).await.unwrap_err(),
            VerifyError::WrongType,
            "{typ:?}"
        );
    }
    for typ in ["application/at+jwt", "AT+JWT", "Application/AT+JWT"] {
        let token = ed.sign_with(&c, |h| h.typ = Some(typ.into()));
        verify(&v, &token).await.unwrap();
    }
    // typ(None) accepts plain JWT access tokens from other issuers.
    let lax = Verifier::builder()
        .issuer_url(&server.base)
        .audience([AUD])
        .typ(None)
        .build()
        .await
        .unwrap();
    verify(&lax, &ed.sign_with(&c, |h| h.typ = Some("JWT".into())))
        .await
        .unwrap();
    // `crit` is never understood.
    let token = ed.sign_with(&c, |h| h.crit = Some(vec!["exp".into()]));
    assert!(matches!(
        verify(&v, &token).await,
        Err(VerifyError::Malformed(_))
    ));
}

#[tokio::test]
async fn wrong_issuer_and_audience() {
    let ed = TestKey::ed25519();
    let server = TestServer::issuer(&[&ed], 300).await;
    let v = verifier_for(&server).await;
    let base = claims(&server.base);

    for iss in [
        json!("https://evil.example"),
        json!(format!("{}/", server.base)),
    ] {
        let mut c = base.clone();
        c["iss"] = iss;
        assert_eq!(
            verify(&v, &ed.sign(&c)).await.unwrap_err(),
            VerifyError::WrongIssuer
        );
    }
    let mut c = base.clone();
    c.as_object_mut().unwrap().remove("iss");
    assert_eq!(
        verify(&v, &ed.sign(&c)).await.unwrap_err(),
        VerifyError::WrongIssuer
    );

    for aud in [
        json!("other"),
        json!(["a", "b"]),
        json!([]),
        json!("KEYTURN"),
    ] {
        let mut c = base.clone();
        c["aud"] = aud;
        assert_eq!(
            verify(&v, &ed.sign(&c)).await.unwrap_err(),
            VerifyError::WrongAudience
        );
    }
    let mut c = base.clone();
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        verify(&v, &ed.sign(&c)).await.unwrap_err(),
        VerifyError::WrongAudience
    );

    // Explicitly accepting any audience.
    let any = Verifier::builder()
        .issuer_url(&server.base)
        .danger_accept_any_audience()
        .build()
        .await
        .unwrap();
    let mut c = base.clone();
    c["aud"] = json!("someone-else");
    verify(&any, &ed.sign(&c)).await.unwrap();
}

#[tokio::test]
async fn expired_and_not_yet_valid_with_leeway() {
    let ed = TestKey::ed25519();
    let server = TestServer::issuer(&[&ed], 300).await;
    let v = verifier_for(&server).await; // leeway 30 s
    let now = now();
    let with = |k: &str, val: u64| {
        let mut c = claims(&server.base);
        c[k] = json!(val);
        ed.sign(&c)
    };
    assert_eq!(
        verify(&v, &with("exp", now - 31)).await.unwrap_err(),
        VerifyError::Expired
    );
    assert_eq!(
        verify(&v, &with("exp", 0)).await.unwrap_err(),
        VerifyError::Expired
    );
    verify(&v, &with("exp", now - 10)).await.unwrap(); // within leeway
    assert_eq!(
        verify(&v, &with("nbf", now + 120)).await.unwrap_err(),
        VerifyError::NotYetValid
    );
    verify(&v, &with("nbf", now + 10)).await.unwrap();
    assert_eq!(
        verify(&v, &with("iat", now + 120)).await.unwrap_err(),
        VerifyError::NotYetValid
    );

    let strict = Verifier::builder()
        .issuer_url(&server.base)
        .audience([AUD])
        .leeway(Duration::ZERO)
        .build()
        .await
        .unwrap();
    assert_eq!(
        verify(&strict, &with("exp", now - 1)).await.unwrap_err(),
        VerifyError::Expired
    );

    // Float dates are accepted, negative/strings are malformed.
    let mut c = claims(&server.base);
    c["exp"] = json!((now + 100) as f64 + 0.5);
    verify(&v, &ed.sign(&c)).await.unwrap();
    for bad in [json!(-5), json!("tomorrow"), json!(1e300)] {
        let mut c = claims(&server.base);
        c["exp"] = bad;
        assert!(matches!(
            verify(&v, &ed.sign(&c)).await,
            Err(VerifyError::Malformed(_))
        ));
    }
}

#[tokio::test]
async fn required_claims() {
    let ed = TestKey::ed25519();
    let server = TestServer::issuer(&[&ed], 300).await;
    let v = verifier_for(&server).await;
    for missing in ["exp", "iat", "sub"] {
        let mut c = claims(&server.base);
        c.as_object_mut().unwrap().remove(missing);
        let err = verify(&v, &ed.sign(&c)).await.unwrap_err();
        assert!(
            matches!(err, VerifyError::Malformed(m) if m.contains(missing)),
            "{err}"
        );
    }
    let v2 = Verifier::builder()
        .issuer_url(&server.base)
        .audience([AUD])
        .required_claims(["exp", "jti"])
        .build()
        .await
        .unwrap();
    let mut c = claims(&server.base);
    c.as_object_mut().unwrap().remove("iat");
    c.as_object_mut().unwrap().remove("sub");
    verify(&v2, &ed.sign(&c)).await.unwrap();
    c.as_object_mut().unwrap().remove("jti");
    assert!(matches!(
        verify(&v2, &ed.sign(&c)).await,
        Err(VerifyError::Malformed(_))
    ));
}

#[tokio::test]
async fn oversized_and_garbage_tokens_are_malformed_without_panic() {
    let ed = TestKey::ed25519();
    let server = TestServer::issuer(&[&ed], 300).await;
    let v = verifier_for(&server).await;
    let mut big = claims(&server.base);
    big["pad"] = json!("x".repeat(9000));
    assert_eq!(
        verify(&v, &ed.sign(&big)).await.unwrap_err(),
        VerifyError::Malformed("token too large")
    );
    let good = ed.sign(&claims(&server.base));
    let (h, rest) = good.split_once('.').unwrap();
    let inputs = [
        String::new(),
        ".".into(),
        "..".into(),
        "...".into(),
        "a.b.c".into(),
        "a.b.c.d.e".into(),
        format!("{h}.{rest}.extra"),
        format!("{h}=.{rest}"),
        format!("{}.e30.", b64(&json!("str"))),
        format!("{}.e30.", b64(&json!([1, 2]))),
        format!("{}.e30.", b64(&json!({"alg": 5}))),
        format!("{}.e30.", b64(&json!({"kid": "x"}))),
        format!(
            "{}.e30.",
            b64(&json!({"alg":"EdDSA","alg":"EdDSA","typ":"at+jwt"}))
        ),
        "eyJ".into(),
        "\u{0}.\u{0}.\u{0}".into(),
        "🦀.🦀.🦀".into(),
        format!("{h}.!!!.{}", rest.rsplit('.').next().unwrap()),
        format!("{}.{}", "A".repeat(4000), "B".repeat(4000)),
    ];
    for input in &inputs {
        let err = verify(&v, input).await.unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::Malformed(_)
                    | VerifyError::DisallowedAlgorithm
                    | VerifyError::WrongType
                    | VerifyError::BadSignature
            ),
            "{input:?} -> {err:?}"
        );
    }
    // Payload that is not JSON / not an object, correctly signed.
    for payload in [b"not json".as_slice(), b"[1,2]", b"null", b"{\"exp\":"] {
        let header = b64(&json!({"alg":"EdDSA","kid":ed.kid,"typ":"at+jwt"}));
        let msg = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
        let sig =
            jsonwebtoken::crypto::sign(msg.as_bytes(), &ed.encoding, Algorithm::EdDSA).unwrap();
        let err = verify(&v, &format!("{msg}.{sig}")).await.unwrap_err();
        assert!(matches!(err, VerifyError::Malformed(_)), "{err:?}");
    }
    // Fixed texts only: nothing from the input.
    assert_eq!(VerifyError::UnknownKey.to_string(), "unknown signing key");
}

// ---------------------------------------------------------------- JWKS handling

#[tokio::test]
async fn jwk_without_alg_gets_the_only_safe_algorithm() {
    let rsa = rsa_key(1);
    let ed = TestKey::ed25519();
    let mut rsa_jwk = serde_json::to_value(&rsa.jwk).unwrap();
    rsa_jwk.as_object_mut().unwrap().remove("alg");
    let mut ed_jwk = serde_json::to_value(&ed.jwk).unwrap();
    ed_jwk.as_object_mut().unwrap().remove("alg");
    ed_jwk.as_object_mut().unwrap().remove("use");
    let server = TestServer::issuer(&[], 300).await;
    server.set(
        "/.well-known/jwks.json",
        Reply::json(&json!({"keys": [rsa_jwk, ed_jwk]})),
    );
    let v = Verifier::builder()
        .issuer_url(&server.base)
        .audience([AUD])
        .algorithms([Algorithm::RS256, Algorithm::RS384, Algorithm::EdDSA])
        .build()
        .await
        .unwrap();
    let c = claims(&server.base);
    verify(&v, &rsa.sign(&c)).await.unwrap();
    verify(&v, &ed.sign(&c)).await.unwrap();
    // RS384 with the same RSA key: not the inferred algorithm.
    let mut rs384 = rsa.clone();
    rs384.alg = Algorithm::RS384;
    assert_eq!(
        verify(&v, &rs384.sign(&c)).await.unwrap_err(),
        VerifyError::DisallowedAlgorithm
    );
}

#[test]
fn key_algorithm_inference_refuses_ambiguity() {
    let parse = |v: Value| -> Jwk { serde_json::from_value(v).unwrap() };
    let ec = |crv: &str, alg: Option<&str>| {
        let mut v = json!({"kty":"EC","crv":crv,"x":"AA","y":"AA"});
        if let Some(a) = alg {
            v["alg"] = json!(a);
        }
        parse(v)
    };
    use jwks_cache::key_algorithm;
    assert_eq!(key_algorithm(&ec("P-256", None)), Ok(Algorithm::ES256));
    assert_eq!(key_algorithm(&ec("P-384", None)), Ok(Algorithm::ES384));
    assert!(key_algorithm(&ec("P-521", None)).is_err());
    assert!(key_algorithm(&ec("P-256", Some("ES384"))).is_err());
    assert!(key_algorithm(&ec("P-256", Some("RS256"))).is_err());
    let oct = parse(json!({"kty":"oct","k":"c2VjcmV0","alg":"HS256"}));
    assert!(key_algorithm(&oct).is_err());
    let rsa_hs = parse(json!({"kty":"RSA","n":"AQAB","e":"AQAB","alg":"HS256"}));
    assert!(key_algorithm(&rsa_hs).is_err());
    let rsa_none = parse(json!({"kty":"RSA","n":"AQAB","e":"AQAB","alg":"none"}));
    assert!(key_algorithm(&rsa_none).is_err());
    let rsa_ps = parse(json!({"kty":"RSA","n":"AQAB","e":"AQAB","alg":"PS256"}));
    assert_eq!(key_algorithm(&rsa_ps), Ok(Algorithm::PS256));
    let okp_x448 = parse(json!({"kty":"OKP","crv":"X448","x":"AA"}));
    assert!(key_algorithm(&okp_x448).is_err());
}

#[tokio::test]
async fn keys_not_for_signatures_are_ignored() {
    let sig = TestKey::ed25519();
    let enc = TestKey::ed25519();
    let ops = TestKey::ed25519();
    let mut enc_jwk = serde_json::to_value(&enc.jwk).unwrap();
    enc_jwk["use"] = json!("enc");
    let mut ops_jwk = serde_json::to_value(&ops.jwk).unwrap();
    ops_jwk.as_object_mut().unwrap().remove("use");
    ops_jwk["key_ops"] = json!(["encrypt"]);
    let server = TestServer::issuer(&[], 300).await;
    server.set(
        "/.well-known/jwks.json",
        Reply::json(&json!({"keys": [
            enc_jwk, ops_jwk, serde_json::to_value(&sig.jwk).unwrap(),
            {"kty":"oct","k":"c2VjcmV0","kid":"hmac","alg":"HS256"},
            {"kty":"weird","kid":"w"},
            {"kid": 7},
            "not even an object",
        ]})),
    );
    let v = verifier_for(&server).await;
    assert_eq!(v.key_ids(), vec![sig.kid.clone()]);
    let c = claims(&server.base);
    verify(&v, &sig.sign(&c)).await.unwrap();
    assert_eq!(
        verify(&v, &enc.sign(&c)).await.unwrap_err(),
        VerifyError::UnknownKey
    );
    assert_eq!(
        verify(&v, &ops.sign(&c)).await.unwrap_err(),
        VerifyError::UnknownKey
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_refetch_is_coalesced_across_50_concurrent_requests() {
    let old = TestKey::ed25519();
    let new = rsa_key(2);
    let server = TestServer::issuer(&[&old], 300).await;
    // The shortest cooldown, over on the test clock: only single-flight
    // coalescing limits the fetches here.
    let (builder, clock) = clocked_builder(&server);
    let v = builder
        .unknown_kid_cooldown(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    assert_eq!(server.jwks_hits(), 1);
    clock.advance(1);
    // The issuer publishes a new key; 50 requests carrying it arrive at once.
    server.publish(&[&old, &new], 300);
    let token = new.sign(&claims_at(&server.base, at(&clock)));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let v = v.clone();
            let token = token.clone();
            tokio::spawn(async move { v.verify::<()>(&token).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(server.jwks_hits(), 2, "exactly one refetch for 50 requests");
}

#[tokio::test]
async fn unknown_kid_refetch_respects_the_cooldown() {
    let key = TestKey::ed25519();
    let stranger = TestKey::ed25519();
    let server = TestServer::issuer(&[&key], 300).await;
    // The default cooldown, 10 s, on the test clock.
    let (builder, clock) = clocked_builder(&server);
    let v = builder.build().await.unwrap();
    let token = stranger.sign(&claims_at(&server.base, at(&clock)));
    let unknown = async || {
        for _ in 0..20 {
            assert_eq!(
                verify(&v, &token).await.unwrap_err(),
                VerifyError::UnknownKey
            );
        }
    };
    // The initial fetch is within the cooldown: no refetch at all yet.
    unknown().await;
    assert_eq!(server.jwks_hits(), 1);
    clock.advance(9);
    unknown().await;
    assert_eq!(server.jwks_hits(), 1, "9 s is within the 10 s cooldown");
    clock.advance(1);
    unknown().await;
    assert_eq!(server.jwks_hits(), 2, "one refetch per cooldown");
    clock.advance(9);
    unknown().await;
    assert_eq!(server.jwks_hits(), 2);
    clock.advance(1);
    unknown().await;
    assert_eq!(server.jwks_hits(), 3);
    // Known keys never wait for or trigger fetches.
    for _ in 0..20 {
        verify(&v, &key.sign(&claims_at(&server.base, at(&clock))))
            .await
            .unwrap();
    }
    assert_eq!(server.jwks_hits(), 3);
    // A sub-second cooldown counts as a whole second of the clock.
    let (builder, clock) = clocked_builder(&server);
    let v = builder
        .unknown_kid_cooldown(Duration::from_millis(400))
        .build()
        .await
        .unwrap();
    assert_eq!(server.jwks_hits(), 4);
    assert_eq!(
        verify(&v, &token).await.unwrap_err(),
        VerifyError::UnknownKey
    );
    assert_eq!(server.jwks_hits(), 4);
    clock.advance(1);
    assert_eq!(
        verify(&v, &token).await.unwrap_err(),
        VerifyError::UnknownKey
    );
    assert_eq!(server.jwks_hits(), 5);
}

#[tokio::test]
async fn a_clock_jumping_backwards_costs_one_refetch_and_never_panics() {
    let key = TestKey::ed25519();
    let stranger = TestKey::ed25519();
    let server = TestServer::issuer(&[&key], 300).await;
    let (builder, clock) = clocked_builder(&server);
    let v = builder.build().await.unwrap();
    let token = stranger.sign(&claims_at(&server.base, at(&clock)));
    // An hour back: the cooldown (measured from the future) is over, and
    // the background refresher refetches at once instead of waiting an hour
    // past the `max-age`.
    clock.advance(-3600);
    attempts_reach(&v, 2).await;
    assert_eq!(server.jwks_hits(), 2);
    // From then on every window runs from the new time.
    for _ in 0..20 {
        assert_eq!(
            verify(&v, &token).await.unwrap_err(),
            VerifyError::UnknownKey
        );
    }
    let_the_refresher_look().await;
    assert_eq!(server.jwks_hits(), 2, "one refetch, then the cooldown");
    clock.advance(10);
    assert_eq!(
        verify(&v, &token).await.unwrap_err(),
        VerifyError::UnknownKey
    );
    assert_eq!(server.jwks_hits(), 3);
    // Known keys still verify (their token times read the same clock).
    verify(&v, &key.sign(&claims_at(&server.base, at(&clock))))
        .await
        .unwrap();
    // Clocks at the ends of time saturate instead of overflowing.
    for extreme in [i64::MAX, i64::MIN] {
        let clock = ManualClock::at(extreme);
        let builder = Verifier::builder()
            .issuer_url(&server.base)
            .audience([AUD])
            .max_staleness(Duration::MAX)
            .refresh_bounds(Duration::from_secs(30), Duration::MAX)
            .unknown_kid_cooldown(Duration::MAX)
            .clock(Arc::new(clock.clone()));
        let v = builder.build().await.unwrap();
        assert_eq!(
            verify(&v, &token).await.unwrap_err(),
            VerifyError::UnknownKey
        );
        clock.advance(-1);
        let_the_refresher_look().await;
        assert!(matches!(
            verify(&v, &key.sign(&claims(&server.base))).await,
            Err(VerifyError::Expired | VerifyError::NotYetValid)
        ));
    }
}

#[tokio::test]
async fn refreshes_in_the_background_when_max_age_runs_out() {
    let a = TestKey::ed25519();
    let b = TestKey::ed25519();
    let server = TestServer::issuer(&[&a], 60).await;
    let (builder, clock) = clocked_builder(&server);
    let v = builder
        .unknown_kid_cooldown(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    assert_eq!(server.jwks_hits(), 1);
    server.publish(&[&a, &b], 60);
    let b_token = || b.sign(&claims_at(&server.base, at(&clock)));
    // Not yet: the new key is unknown, and the cooldown of 1 h forbids an
    // unknown-kid refetch.
    clock.advance(59);
    let_the_refresher_look().await;
    assert_eq!(server.jwks_hits(), 1, "max-age 60 s has not run out");
    assert_eq!(
        verify(&v, &b_token()).await.unwrap_err(),
        VerifyError::UnknownKey
    );
    // At 60 s the background refresh fetches the new key.
    clock.advance(1);
    attempts_reach(&v, 2).await;
    assert_eq!(server.jwks_hits(), 2);
    verify(&v, &b_token()).await.unwrap();
    // Dropping the verifier frees the cache and stops the refresh.
    let cache = Arc::downgrade(&v.inner.cache);
    drop(v);
    assert!(cache.upgrade().is_none(), "the refresher holds no cache");
    clock.advance(3600);
    let_the_refresher_look().await;
    assert_eq!(
        server.jwks_hits(),
        2,
        "dropping the verifier stops the refresh"
    );
}

#[tokio::test]
async fn max_age_is_clamped_to_the_refresh_bounds() {
    let a = TestKey::ed25519();
    // A tiny max-age waits for the floor (30 s by default)…
    let server = TestServer::issuer(&[&a], 1).await;
    let (builder, clock) = clocked_builder(&server);
    let v = builder.build().await.unwrap();
    clock.advance(29);
    let_the_refresher_look().await;
    assert_eq!(server.jwks_hits(), 1, "max-age 1 s is raised to 30 s");
    clock.advance(1);
    attempts_reach(&v, 2).await;
    assert_eq!(server.jwks_hits(), 2);
    drop(v);

    // …a huge one is cut to the ceiling (a sub-second bound rounds up).
    let server = TestServer::issuer(&[&a], 10_000_000).await;
    let (builder, clock) = clocked_builder(&server);
    let v = builder
        .refresh_bounds(Duration::from_millis(500), Duration::from_millis(119_500))
        .build()
        .await
        .unwrap();
    clock.advance(119);
    let_the_refresher_look().await;
    assert_eq!(server.jwks_hits(), 1, "max-age cut to 120 s");
    clock.advance(1);
    attempts_reach(&v, 2).await;
    assert_eq!(server.jwks_hits(), 2);
    drop(v);

    // No max-age at all: the default 300 s.
    let server = TestServer::issuer(&[&a], 0).await;
    server.set("/.well-known/jwks.json", Reply::json(&jwks_of(&[&a])));
    let (builder, clock) = clocked_builder(&server);
    let v = builder.build().await.unwrap();
    clock.advance(299);
    let_the_refresher_look().await;
    assert_eq!(server.jwks_hits(), 1, "300 s without max-age");
    clock.advance(1);
    attempts_reach(&v, 2).await;
    assert_eq!(server.jwks_hits(), 2);
}

#[tokio::test]
async fn etag_revalidation_keeps_the_keys() {
    let a = TestKey::ed25519();
    let server = TestServer::issuer(&[&a], 0).await;
    server.set_etag("\"v1\"");
    let (builder, clock) = clocked_builder(&server);
    let v = builder
        .refresh_bounds(Duration::from_secs(1), Duration::from_secs(3600))
        .max_staleness(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    // Fetched at t (refreshed from t+1 on, refused from t+2 on); each
    // revalidation at the next second answers 304 and renews both.
    for n in 1..=3 {
        clock.advance(1);
        attempts_reach(&v, 1 + n).await;
        assert_eq!(server.state.lock().unwrap().not_modified, n as usize);
        assert_eq!(v.key_ids(), std::slice::from_ref(&a.kid));
    }
    // Three seconds past the first fetch: without the renewals the keys
    // would be past their staleness limit.
    verify(&v, &a.sign(&claims_at(&server.base, at(&clock))))
        .await
        .unwrap();
}

#[tokio::test]
async fn stale_if_error_keeps_cached_keys_up_to_max_staleness() {
    let a = TestKey::ed25519();
    let server = TestServer::issuer(&[&a], 0).await;
    let (builder, clock) = clocked_builder(&server);
    // Fetched at t: refreshed from t+1 on, refused from t+11 on.
    let v = builder
        .refresh_bounds(Duration::from_secs(1), Duration::from_secs(3600))
        .max_staleness(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let token = a.sign(&claims_at(&server.base, at(&clock)));
    verify(&v, &token).await.unwrap();

    // The endpoint starts failing: 500, then garbage; the keys keep working.
    server.set("/.well-known/jwks.json", Reply::status(500));
    clock.advance(1);
    attempts_reach(&v, 2).await;
    assert_eq!(server.jwks_hits(), 2);
    verify(&v, &token).await.unwrap();
    server.set(
        "/.well-known/jwks.json",
        Reply::json(&json!({"keys": "garbage"})),
    );
    // Retried every `min` refresh interval (1 s).
    clock.advance(1);
    attempts_reach(&v, 3).await;
    assert_eq!(server.jwks_hits(), 3);
    verify(&v, &token).await.unwrap();
    assert!(matches!(
        v.refresh().await,
        Err(VerifyError::JwksUnavailable(m)) if m.contains("not a JSON Web Key Set")
    ));
    verify(&v, &token).await.unwrap();

    // Then it goes away entirely; until t+11 the keys still work, from
    // then on nothing verifies.
    server.stop();
    clock.advance(8);
    verify(&v, &token).await.unwrap();
    clock.advance(1);
    let err = verify(&v, &token).await.unwrap_err();
    assert!(
        matches!(err, VerifyError::JwksUnavailable(_)) && err.is_unavailable(),
        "{err:?}"
    );
}

#[tokio::test]
async fn recovers_after_the_jwks_endpoint_comes_back() {
    let a = TestKey::ed25519();
    let server = TestServer::issuer(&[&a], 0).await;
    let (builder, clock) = clocked_builder(&server);
    // Fetched at t: refreshed from t+1 on, refused from t+2 on.
    let v = builder
        .refresh_bounds(Duration::from_secs(1), Duration::from_secs(3600))
        .max_staleness(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let token = a.sign(&claims_at(&server.base, at(&clock)));
    server.set("/.well-known/jwks.json", Reply::status(503));
    clock.advance(2);
    attempts_reach(&v, 2).await;
    assert!(matches!(
        verify(&v, &token).await.unwrap_err(),
        VerifyError::JwksUnavailable(m) if m.contains("503")
    ));
    // Back up: the next retry (1 s later) restores the keys.
    server.publish(&[&a], 0);
    clock.advance(1);
    attempts_reach(&v, 3).await;
    assert_eq!(server.jwks_hits(), 3);
    verify(&v, &token).await.unwrap();
}

#[tokio::test]
async fn one_clock_moves_token_times_and_cache_times_together() {
    let a = TestKey::ed25519();
    let server = TestServer::issuer(&[&a], 300).await;
    let (builder, clock) = clocked_builder(&server);
    let v = builder.build().await.unwrap();
    let token = a.sign(&claims_at(&server.base, at(&clock))); // exp: +900 s
    verify(&v, &token).await.unwrap();
    // 1000 s later (system time has hardly moved): the token has expired
    // and the keys, past their max-age, have been refreshed.
    clock.advance(1000);
    attempts_reach(&v, 2).await;
    assert_eq!(server.jwks_hits(), 2);
    assert_eq!(verify(&v, &token).await.unwrap_err(), VerifyError::Expired);
    verify(&v, &a.sign(&claims_at(&server.base, at(&clock))))
        .await
        .unwrap();
}

#[test]
fn clocks_say_how_often_to_look_at_them() {
    assert_eq!(SystemClock.poll_interval(), Duration::from_secs(1));
    assert_eq!(ManualClock::default().poll_interval(), TEST_CLOCK_POLL);
    assert_eq!(
        ManualClock::following_system().poll_interval(),
        TEST_CLOCK_POLL
    );
}

#[test]
fn cache_durations_round_up_to_whole_seconds() {
    use jwks_cache::secs;
    assert_eq!(secs(Duration::ZERO), 0);
    assert_eq!(secs(Duration::from_nanos(1)), 1);
    assert_eq!(secs(Duration::from_millis(400)), 1);
    assert_eq!(secs(Duration::from_secs(10)), 10);
    assert_eq!(secs(Duration::from_millis(10_001)), 11);
    assert_eq!(secs(Duration::MAX), i64::MAX);
}

#[tokio::test]
async fn jwks_body_size_and_status_are_bounded() {
    let a = TestKey::ed25519();
    let server = TestServer::issuer(&[&a], 300).await;
    let mut huge = jwks_of(&[&a]);
    huge["padding"] = json!("x".repeat(2 * 1024 * 1024));
    // With an honest Content-Length…
    server.set("/.well-known/jwks.json", Reply::json(&huge));
    let err = Verifier::builder()
        .issuer_url(&server.base)
        .audience([AUD])
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BuildError::Jwks(m) if m.contains("larger")),
        "{err}"
    );
    // …and without one (streamed, counted).
    let mut reply = Reply::json(&huge);
    reply.no_length = true;
    server.set("/.well-known/jwks.json", reply);
    let err = Verifier::builder()
        .issuer_url(&server.base)
        .audience([AUD])
        .max_jwks_size(64 * 1024)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BuildError::Jwks(m) if m.contains("larger")),
        "{err}"
    );
    server.set("/.well-known/jwks.json", Reply::status(404));
    assert!(matches!(
        Verifier::builder()
            .issuer_url(&server.base)
            .audience([AUD])
            .build()
            .await,
        Err(BuildError::Jwks(_))
    ));
}

#[tokio::test]
async fn jwks_fetch_times_out() {
    // A server that accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let started = std::time::Instant::now();
    let err = Verifier::builder()
        .jwks_url(url)
        .issuer("i")
        .audience([AUD])
        .http_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::Jwks(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    hold.abort();
}

#[tokio::test]
async fn jwks_url_and_static_sets() {
    let a = TestKey::ed25519();
    let server = TestServer::issuer(&[&a], 300).await;
    let v = Verifier::builder()
        .jwks_url(format!("{}/.well-known/jwks.json", server.base))
        .issuer(&server.base)
        .audience([AUD])
        .build()
        .await
        .unwrap();
    verify(&v, &a.sign(&claims(&server.base))).await.unwrap();
    assert_eq!(server.hits("/.well-known/oauth-authorization-server"), 0);

    let set: JwkSet = serde_json::from_value(jwks_of(&[&a])).unwrap();
    let offline = Verifier::builder()
        .issuer("https://auth.example")
        .audience([AUD])
        .build_from_jwks(&set)
        .unwrap();
    verify(&offline, &a.sign(&claims("https://auth.example")))
        .await
        .unwrap();
    let other = TestKey::ed25519();
    assert_eq!(
        verify(&offline, &other.sign(&claims("https://auth.example")))
            .await
            .unwrap_err(),
        VerifyError::UnknownKey
    );
    // A token without kid is accepted only when the set has a single key.
    let no_kid = a.sign_with(&claims("https://auth.example"), |h| h.kid = None);
    verify(&offline, &no_kid).await.unwrap();
    let two: JwkSet = serde_json::from_value(jwks_of(&[&a, &other])).unwrap();
    let offline2 = Verifier::builder()
        .issuer("https://auth.example")
        .audience([AUD])
        .build_from_jwks(&two)
        .unwrap();
    assert_eq!(
        verify(&offline2, &no_kid).await.unwrap_err(),
        VerifyError::UnknownKey
    );
}

#[test]
fn claims_serialize_round_trip() {
    let c: Claims = serde_json::from_value(json!({"sub":"s","aud":"a","exp":5})).unwrap();
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(v["aud"], json!(["a"]));
    assert_eq!(v["exp"], json!(5));
    assert!(v.get("nbf").is_none());
}

// ---------------------------------------------------------------- refusals (M4, M5, L4, L5)

mod hostile;

/// A builder over a JWKS at `url` with a short fetch timeout.
fn jwks_builder(url: &str) -> VerifierBuilder {
    Verifier::builder()
        .jwks_url(url)
        .issuer("https://issuer.example")
        .audience([AUD])
        .http_timeout(Duration::from_millis(300))
}

#[tokio::test]
async fn plain_http_key_sources_are_refused_off_loopback() {
    for url in [
        "http://auth.example.com/.well-known/jwks.json",
        "http://10.0.0.1/jwks",
        "http://[2001:db8::1]/jwks",
        "http://localhost.evil.example/jwks",
    ] {
        let err = jwks_builder(url).build().await.unwrap_err();
        assert!(matches!(err, BuildError::InsecureUrl(_)), "{url}: {err:?}");
        let err = Verifier::builder()
            .issuer_url(url)
            .audience([AUD])
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, BuildError::InsecureUrl(_)), "{url}: {err:?}");
    }
    // Loopback hosts pass the check (and then fail to connect: port 1).
    for url in [
        "http://127.0.0.1:1/jwks",
        "http://127.9.8.7:1/jwks",
        "http://[::1]:1/jwks",
        "http://LOCALHOST:1/jwks",
    ] {
        let err = jwks_builder(url).build().await.unwrap_err();
        assert!(matches!(err, BuildError::Jwks(_)), "{url}: {err:?}");
    }
    // The loud opt-in lets plain HTTP through to the fetch.
    let err = jwks_builder("http://auth.invalid/jwks")
        .danger_accept_plain_http()
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::Jwks(_)), "{err:?}");
    // Other schemes stay refused.
    let err = jwks_builder("ftp://127.0.0.1/jwks")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::InvalidOption(_)), "{err:?}");
}

#[tokio::test]
async fn discovered_jwks_uri_must_be_safe_and_on_the_issuers_origin() {
    let ed = TestKey::ed25519();
    let issuer = TestServer::issuer(&[&ed], 300).await;
    let elsewhere = TestServer::issuer(&[&ed], 300).await;
    let build = |danger: bool| {
        let builder = Verifier::builder().issuer_url(&issuer.base).audience([AUD]);
        let builder = if danger {
            builder.danger_accept_jwks_on_other_origin()
        } else {
            builder
        };
        builder.build()
    };
    let meta =
        |jwks_uri: String| Reply::json(&json!({"issuer": issuer.base, "jwks_uri": jwks_uri}));

    // Plain HTTP off loopback: refused even with the origin opt-in.
    issuer.set(
        "/.well-known/oauth-authorization-server",
        meta("http://keys.example.com/jwks.json".into()),
    );
    let err = build(true).await.unwrap_err();
    assert!(
        matches!(&err, BuildError::Discovery(m) if m.contains("plain HTTP")),
        "{err:?}"
    );

    // Another origin (same host, other port): refused unless opted in.
    issuer.set(
        "/.well-known/oauth-authorization-server",
        meta(format!("{}/.well-known/jwks.json", elsewhere.base)),
    );
    let err = build(false).await.unwrap_err();
    assert!(
        matches!(&err, BuildError::Discovery(m) if m.contains("origin")),
        "{err:?}"
    );
    assert_eq!(elsewhere.jwks_hits(), 0, "the foreign JWKS was fetched");
    let v = build(true).await.unwrap();
    assert_eq!(elsewhere.jwks_hits(), 1);
    verify(&v, &ed.sign(&claims(&issuer.base))).await.unwrap();
}

#[tokio::test]
async fn redirects_are_followed_only_within_the_origin() {
    let ed = TestKey::ed25519();
    let server = TestServer::issuer(&[&ed], 300).await;
    let other = TestServer::issuer(&[&ed], 300).await;
    // Same origin: followed.
    server.set(
        "/moved",
        Reply::status(302).header("Location", "/.well-known/jwks.json"),
    );
    let v = jwks_builder(&format!("{}/moved", server.base))
        .build()
        .await
        .unwrap();
    assert_eq!(v.key_ids(), vec![ed.kid.clone()]);
    // Another origin: not followed, the 302 fails the fetch.
    server.set(
        "/away",
        Reply::status(302).header("Location", &format!("{}/.well-known/jwks.json", other.base)),
    );
    let err = jwks_builder(&format!("{}/away", server.base))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BuildError::Jwks(m) if m.contains("302")),
        "{err:?}"
    );
    assert_eq!(other.jwks_hits(), 0);
    // A redirect loop within the origin stops after a few hops.
    server.set("/loop", Reply::status(302).header("Location", "/loop"));
    let err = jwks_builder(&format!("{}/loop", server.base))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::Jwks(_)), "{err:?}");
    assert!(server.hits("/loop") <= 4, "{} hops", server.hits("/loop"));
}

#[tokio::test]
async fn an_empty_audience_list_zero_refresh_bounds_and_zero_cooldown_are_build_errors() {
    let ed = TestKey::ed25519();
    let set: JwkSet = serde_json::from_value(jwks_of(&[&ed])).unwrap();
    let base = || Verifier::builder().issuer("i");
    assert_eq!(
        base()
            .audience(Vec::<String>::new())
            .build_from_jwks(&set)
            .unwrap_err(),
        BuildError::EmptyAudience
    );
    assert!(matches!(
        base().audience(["api", " "]).build_from_jwks(&set),
        Err(BuildError::InvalidOption(_))
    ));
    assert!(matches!(
        base().audience(Vec::<String>::new()).build_validator(),
        Err(BuildError::EmptyAudience)
    ));
    // The explicit opt-in still means "any audience".
    let any = base()
        .danger_accept_any_audience()
        .build_from_jwks(&set)
        .unwrap();
    let mut other = claims("i");
    other["aud"] = json!("billing");
    verify(&any, &ed.sign(&other)).await.unwrap();

    // Zero refresh bounds or unknown-kid cooldown: refused before any
    // request goes out.
    let server = TestServer::issuer(&[&ed], 300).await;
    let err = Verifier::builder()
        .issuer_url(&server.base)
        .audience([AUD])
        .unknown_kid_cooldown(Duration::ZERO)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BuildError::InvalidOption(m) if m.contains("unknown_kid_cooldown")),
        "{err:?}"
    );
    assert!(matches!(
        base()
            .audience([AUD])
            .unknown_kid_cooldown(Duration::ZERO)
            .build_from_jwks(&set),
        Err(BuildError::InvalidOption(_))
    ));
    for (min, max) in [(0, 3600), (0, 0), (1, 0)] {
        let err = Verifier::builder()
            .issuer_url(&server.base)
            .audience([AUD])
            .refresh_bounds(Duration::from_secs(min), Duration::from_secs(max))
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(err, BuildError::InvalidOption(_)),
            "{min},{max}: {err:?}"
        );
    }
    assert_eq!(server.total_hits(), 0);
    let err = Verifier::builder()
        .issuer_url(&server.base)
        .audience(Vec::<String>::new())
        .build()
        .await
        .unwrap_err();
    assert_eq!(err, BuildError::EmptyAudience);
    assert_eq!(server.total_hits(), 0);
}

#[tokio::test]
async fn failed_fetches_back_off_from_the_floor() {
    let a = TestKey::ed25519();
    let server = TestServer::issuer(&[&a], 0).await;
    let (builder, clock) = clocked_builder(&server);
    let v = builder
        .refresh_bounds(Duration::from_secs(1), Duration::from_secs(3600))
        .max_staleness(Duration::from_secs(600))
        .build()
        .await
        .unwrap();
    server.set("/.well-known/jwks.json", Reply::status(500));
    // Fetched at t (attempt 1). Due at t+1: fails (1 failure, retry after
    // 1 s), t+2 fails (retry after 2 s), t+4 fails (retry after 4 s), t+8.
    let mut attempts = 1;
    for (advance, fetches) in [
        (1, true),
        (1, true),
        (1, false),
        (1, true),
        (3, false),
        (1, true),
    ] {
        clock.advance(advance);
        if fetches {
            attempts += 1;
            attempts_reach(&v, attempts).await;
        } else {
            let_the_refresher_look().await;
            assert_eq!(v.inner.cache.attempts(), attempts, "fetched too early");
        }
    }
    assert_eq!(server.jwks_hits(), 5);

    // The backoff doubles from `min` and is capped at 5 min (or `max`).
    let cache = &v.inner.cache;
    let waits: Vec<i64> = (1..=11).map(|n| cache.retry_backoff(n)).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    assert_eq!(cache.retry_backoff(u32::MAX), 300);
    // Defaults: from 30 s; and never above `max`.
    server.publish(&[&a], 0);
    let defaults = verifier_for(&server).await;
    let waits: Vec<i64> = (1..=6)
        .map(|n| defaults.inner.cache.retry_backoff(n))
        .collect();
    assert_eq!(waits, [30, 60, 120, 240, 300, 300]);
    let low_max = Verifier::builder()
        .issuer_url(&server.base)
        .audience([AUD])
        .refresh_bounds(Duration::from_secs(5), Duration::from_secs(20))
        .build()
        .await
        .unwrap();
    assert_eq!(low_max.inner.cache.retry_backoff(3), 20);
}

#[tokio::test]
async fn a_revoked_key_is_dropped_at_the_next_successful_fetch() {
    let kept = TestKey::ed25519();
    let revoked = TestKey::ed25519();
    let server = TestServer::issuer(&[&kept, &revoked], 300).await;
    let v = verifier_for(&server).await;
    let kept_token = kept.sign(&claims(&server.base));
    let revoked_token = revoked.sign(&claims(&server.base));
    verify(&v, &revoked_token).await.unwrap();

    server.publish(&[&kept], 300);
    v.refresh().await.unwrap();
    assert_eq!(v.key_ids(), vec![kept.kid.clone()]);
    assert_eq!(
        verify(&v, &revoked_token).await.unwrap_err(),
        VerifyError::UnknownKey
    );
    verify(&v, &kept_token).await.unwrap();
}

#[tokio::test]
async fn by_default_cached_keys_stop_verifying_15_minutes_past_max_age() {
    let a = TestKey::ed25519();
    let server = TestServer::issuer(&[&a], 60).await;
    let (builder, clock) = clocked_builder(&server);
    let v = builder.build().await.unwrap();
    // The issuer goes away (and the key with it, say it was revoked):
    // fresh until t+60, usable until t+60+900.
    server.stop();
    verify(&v, &a.sign(&claims_at(&server.base, at(&clock))))
        .await
        .unwrap();
    clock.advance(60 + 899);
    let token = a.sign(&claims_at(&server.base, at(&clock)));
    verify(&v, &token).await.unwrap();
    clock.advance(1);
    let err = verify(&v, &token).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}
