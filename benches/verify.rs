//! Warm-cache verification through `keyturn::verifier::Verifier` against a
//! raw `jsonwebtoken::decode` with a prepared `DecodingKey`, same run, same
//! tokens, same claims type. The goal (issue 4) is a ratio ≤ 1.10.
//!
//! ```text
//! cargo bench --no-default-features --features verifier --bench verify
//! ```
//!
//! The verifier is built the way a resource server builds it: from a JWKS
//! served over HTTP (a tiny server on 127.0.0.1:0), so the timed path
//! includes the cache lookup and staleness check.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use keyturn::verifier::{Claims, Verifier};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const AUD: &str = "keyturn";

struct Key {
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Jwk,
}

fn key(alg: Algorithm) -> Key {
    let encoding = match alg {
        Algorithm::RS256 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .expect("RSA generation");
            let der = AsDer::<Pkcs8V1Der>::as_der(&pair).expect("PKCS#8");
            let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
            let body: Vec<&str> = b64
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
                .collect();
            let pem = format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                body.join("\n")
            );
            EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA PEM")
        }
        _ => {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let doc = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(&rng)
                .expect("Ed25519 generation");
            EncodingKey::from_ed_der(doc.as_ref())
        }
    };
    let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("JWK");
    jwk.common.key_id = Some(jwk.thumbprint(ThumbprintHash::SHA256).expect("thumbprint"));
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Key { alg, encoding, jwk }
}

/// Serve `body` as the JWKS (and RFC 8414 metadata) on 127.0.0.1:0.
async fn serve_issuer(jwks: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let meta = json!({"issuer": base, "jwks_uri": format!("{base}/jwks.json")}).to_string();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (jwks, meta) = (jwks.clone(), meta.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let body = if req.starts_with("GET /jwks.json") {
                    jwks
                } else {
                    meta
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: max-age=3600\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    base
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let keys = [key(Algorithm::RS256), key(Algorithm::EdDSA)];
    let jwks = json!({"keys": keys.iter().map(|k| &k.jwk).collect::<Vec<_>>()}).to_string();
    let issuer = rt.block_on(serve_issuer(jwks));
    let verifier = rt
        .block_on(
            Verifier::builder()
                .issuer_url(&issuer)
                .audience([AUD])
                .build(),
        )
        .expect("verifier");

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = json!({
        "iss": issuer, "sub": "user-1", "aud": AUD, "exp": now + 3600, "iat": now, "nbf": now,
        "jti": "0f8b1f0e-bench", "client_id": "first-party", "scope": "reports:read profile",
        "roles": ["user", "admin"], "username": "alice",
    });

    for key in &keys {
        let mut header = Header::new(key.alg);
        header.kid = key.jwk.common.key_id.clone();
        header.typ = Some("at+jwt".into());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding).expect("sign");

        // The baseline: what a careful hand-written check does per request.
        let decoding = DecodingKey::from_jwk(&key.jwk).expect("decoding key");
        let mut validation = Validation::new(key.alg);
        validation.set_audience(&[AUD]);
        validation.set_issuer(&[&issuer]);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);

        // Both must accept the token before we time them.
        jsonwebtoken::decode::<Claims>(&token, &decoding, &validation).expect("raw decode");
        rt.block_on(verifier.verify::<()>(&token))
            .expect("verifier");

        let mut group = c.benchmark_group(format!("verify/{:?}", key.alg));
        group.bench_function("raw_jsonwebtoken_decode", |b| {
            b.iter(|| {
                jsonwebtoken::decode::<Claims>(std::hint::black_box(&token), &decoding, &validation)
                    .expect("raw decode")
            })
        });
        group.bench_function("keyturn_verifier", |b| {
            b.to_async(&rt).iter(|| async {
                verifier
                    .verify::<()>(std::hint::black_box(&token))
                    .await
                    .expect("verifier")
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
