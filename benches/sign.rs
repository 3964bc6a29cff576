//! Token signing as keyturn does it (`keyturn::keys::SigningKey::sign_jwt`,
//! private key parsed once) against `jsonwebtoken::encode` with an
//! `EncodingKey` (which parses the private key again on every call), same
//! run, same claims, for RS256 (RSA-2048) and EdDSA (Ed25519).
//!
//! ```text
//! cargo bench --bench sign
//! ```
//!
//! Also timed, as reference rows: the bare aws-lc-rs signature over the
//! same signing input (the floor `sign_jwt` can approach), parsing the
//! private key (`SigningKey::from_pkcs8`, paid once per keyring load), and
//! one argon2id hash at the OWASP parameters keyturn uses (m=19456 KiB, t=2,
//! p=1), the cost that bounds `POST /login`.
//!
//! Keys are generated the way keyturn generates them: `rsa` for RSA-2048,
//! `ring` for Ed25519, both as PKCS#8.

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHasher as _, SaltString};
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{EncodingKey, Header, Validation};
use keyturn::keys::{PublicJwk, SigningAlg, SigningKey};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::EncodePrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use serde::Serialize;

/// Field for field the shape of `keyturn::token::AccessClaims`, so the
/// serialization cost is the server's (kept local so the bench does not
/// break when the claims grow).
#[derive(Serialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: String,
    client_id: String,
    scope: String,
    roles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
}

struct Key {
    alg: SigningAlg,
    /// What keyturn stores (sealed) and parses at keyring load.
    pkcs8: Vec<u8>,
    public: PublicJwk,
    /// What `jsonwebtoken` wants: PKCS#1 DER for RSA, PKCS#8 for Ed25519.
    encoding: EncodingKey,
}

fn key(alg: SigningAlg) -> Key {
    let (pkcs8, public, encoding) = match alg {
        SigningAlg::Rs256 => {
            let private =
                rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("RSA generation");
            let public = PublicJwk::rsa(&private.n().to_bytes_be(), &private.e().to_bytes_be());
            let pkcs8 = private.to_pkcs8_der().expect("PKCS#8").as_bytes().to_vec();
            let pkcs1 = private.to_pkcs1_der().expect("PKCS#1");
            let encoding = EncodingKey::from_rsa_der(pkcs1.as_bytes());
            (pkcs8, public, encoding)
        }
        SigningAlg::EdDsa => {
            use ring::signature::KeyPair as _;
            let doc =
                ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                    .expect("Ed25519 generation");
            let pair =
                ring::signature::Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("Ed25519 parse");
            let public = PublicJwk::ed25519(pair.public_key().as_ref());
            let encoding = EncodingKey::from_ed_der(doc.as_ref());
            (doc.as_ref().to_vec(), public, encoding)
        }
    };
    Key {
        alg,
        pkcs8,
        public,
        encoding,
    }
}

fn claims() -> Claims {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    Claims {
        iss: "http://127.0.0.1:8080".into(),
        sub: "6f1c2a9e-0b7d-4c39-9d3e-2f0a1b4c5d6e".into(),
        aud: "keyturn".into(),
        exp: now + 900,
        iat: now,
        nbf: now,
        jti: "0f8b1f0e-5a3c-4d2b-8e1f-7a6b5c4d3e2f".into(),
        client_id: "first-party".into(),
        scope: String::new(),
        roles: vec!["admin".into(), "user".into()],
        username: Some("alice".into()),
    }
}

/// Both paths must produce tokens `jsonwebtoken` accepts before we time them.
fn check(token: &str, key: &Key) {
    let decoding = key.public.decoding_key().expect("decoding key");
    let mut validation = Validation::new(key.alg.jwt_algorithm());
    validation.set_audience(&["keyturn"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &decoding, &validation)
        .expect("token verifies");
    assert_eq!(data.header.kid.as_deref(), Some(key.public.kid()));
}

/// Signs a message, returning the signature bytes.
type RawSigner = Box<dyn Fn(&[u8]) -> Vec<u8>>;

/// The bare signature with a key pair parsed here, once.
fn raw_signer(alg: SigningAlg, pkcs8: &[u8]) -> RawSigner {
    use aws_lc_rs::signature::{Ed25519KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
    match alg {
        SigningAlg::Rs256 => {
            let pair = RsaKeyPair::from_pkcs8(pkcs8).expect("RSA PKCS#8");
            let rng = aws_lc_rs::rand::SystemRandom::new();
            Box::new(move |msg| {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .expect("RSA sign");
                sig
            })
        }
        SigningAlg::EdDsa => {
            let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).expect("Ed25519 PKCS#8");
            Box::new(move |msg| pair.sign(msg).as_ref().to_vec())
        }
    }
}

fn bench_sign(c: &mut Criterion) {
    let claims = claims();
    for key in [key(SigningAlg::Rs256), key(SigningAlg::EdDsa)] {
        let signer =
            SigningKey::from_pkcs8(&key.pkcs8, key.public.clone()).expect("keyturn parses its key");
        let mut header = Header::new(key.alg.jwt_algorithm());
        header.kid = Some(key.public.kid().to_owned());
        header.typ = Some("at+jwt".into());

        check(&signer.sign_jwt(&claims).expect("sign"), &key);
        check(
            &jsonwebtoken::encode(&header, &claims, &key.encoding).expect("encode"),
            &key,
        );

        let mut group = c.benchmark_group(format!("sign/{}", key.alg));
        group.bench_function("jsonwebtoken_encode", |b| {
            b.iter(|| {
                jsonwebtoken::encode(&header, black_box(&claims), &key.encoding).expect("encode")
            })
        });
        group.bench_function("keyturn_sign_jwt", |b| {
            b.iter(|| signer.sign_jwt(black_box(&claims)).expect("sign"))
        });
        // The floor: the signature alone over the same signing input, with a
        // pre-parsed aws-lc-rs key pair (no serialization, no base64).
        let token = signer.sign_jwt(&claims).expect("sign");
        let input = token.rsplit_once('.').expect("compact JWS").0.as_bytes();
        let sign_only = raw_signer(key.alg, &key.pkcs8);
        group.bench_function("aws_lc_rs_signature_only", |b| {
            b.iter(|| sign_only(black_box(input)))
        });
        group.bench_function("keyturn_parse_pkcs8_once", |b| {
            b.iter(|| {
                SigningKey::from_pkcs8(black_box(&key.pkcs8), key.public.clone()).expect("parse")
            })
        });
        group.finish();
    }
}

fn bench_argon2(c: &mut Criterion) {
    let params = argon2::Params::new(19_456, 2, 1, None).expect("OWASP params");
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut group = c.benchmark_group("argon2id");
    group.sample_size(10);
    group.bench_function("hash_m19456_t2_p1", |b| {
        b.iter(|| {
            argon2
                .hash_password(black_box(b"correct horse battery"), &salt)
                .expect("hash")
                .to_string()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_sign, bench_argon2);
criterion_main!(benches);
