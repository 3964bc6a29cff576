//! The crypto limit of token issuing: how many access tokens per second
//! this machine can sign, on every core, the way the server signs them
//! (`keyturn::keys::SigningKey::sign_jwt`, the private key parsed once).
//! `benches/load.py` runs it in the same run as the HTTP load, so
//! `POST /oauth/token` can be reported as a ratio of it.
//!
//! ```text
//! cargo run --release --example sign_rate -- [--seconds 3] [--threads N] [--alg RS256|EdDSA|all]
//! ```
//!
//! Prints one JSON line per algorithm:
//! `{"alg":"RS256","threads":2,"seconds":3.0,"signatures":…,"signatures_per_s":…}`.
//! The threads default to `std::thread::available_parallelism()`. Each
//! token is shaped like a `client_credentials` access token (the fields of
//! `keyturn::token::AccessClaims`, a fresh `jti` per token, no username),
//! and is signed with RSA-2048 or Ed25519 keys generated as keyturn
//! generates them (`rsa`, `ring`, both as PKCS#8).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyturn::keys::{PublicJwk, SigningAlg, SigningKey};
use rsa::pkcs8::EncodePrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use serde::Serialize;

/// Field for field the shape of `keyturn::token::AccessClaims` (kept local,
/// as in `benches/sign.rs`, so the example does not break when the claims
/// grow).
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

struct Options {
    seconds: f64,
    threads: usize,
    algs: Vec<SigningAlg>,
}

const USAGE: &str = "usage: sign_rate [--seconds S] [--threads N] [--alg RS256|EdDSA|all]";

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        seconds: 3.0,
        threads: std::thread::available_parallelism().map_or(1, usize::from),
        algs: vec![SigningAlg::Rs256, SigningAlg::EdDsa],
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => {
                options.seconds = value()?
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0 && s.is_finite())
                    .ok_or("--seconds: expected a positive number")?;
            }
            "--threads" => {
                options.threads = value()?
                    .parse()
                    .ok()
                    .filter(|n: &usize| *n > 0)
                    .ok_or("--threads: expected a positive whole number")?;
            }
            "--alg" => {
                options.algs = match value()?.as_str() {
                    "RS256" => vec![SigningAlg::Rs256],
                    "EdDSA" => vec![SigningAlg::EdDsa],
                    "all" => vec![SigningAlg::Rs256, SigningAlg::EdDsa],
                    other => return Err(format!("--alg: unknown algorithm {other:?}")),
                };
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}

/// A fresh key, as keyturn generates it, parsed once.
fn signing_key(alg: SigningAlg) -> Result<SigningKey, String> {
    let (pkcs8, public) = match alg {
        SigningAlg::Rs256 => {
            let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
                .map_err(|e| format!("RSA generation: {e}"))?;
            let public = PublicJwk::rsa(&private.n().to_bytes_be(), &private.e().to_bytes_be());
            let der = private.to_pkcs8_der().map_err(|e| format!("PKCS#8: {e}"))?;
            (der.as_bytes().to_vec(), public)
        }
        SigningAlg::EdDsa => {
            use ring::signature::KeyPair as _;
            let doc =
                ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                    .map_err(|_| "Ed25519 generation failed".to_owned())?;
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8(doc.as_ref())
                .map_err(|_| "Ed25519 parse failed".to_owned())?;
            let public = PublicJwk::ed25519(pair.public_key().as_ref());
            (doc.as_ref().to_vec(), public)
        }
    };
    SigningKey::from_pkcs8(&pkcs8, public).map_err(|e| format!("SigningKey::from_pkcs8: {e}"))
}

fn claims(now: i64) -> Claims {
    Claims {
        iss: "http://127.0.0.1:8080".into(),
        sub: "bench-client".into(),
        aud: "keyturn".into(),
        exp: now + 900,
        iat: now,
        nbf: now,
        jti: uuid::Uuid::new_v4().to_string(),
        client_id: "bench-client".into(),
        scope: "read".into(),
        roles: Vec::new(),
        username: None,
    }
}

/// Signs on `threads` threads until `seconds` have passed; returns the
/// number of tokens signed and the time it took.
fn measure(key: &Arc<SigningKey>, threads: usize, seconds: f64) -> Result<(u64, Duration), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| format!("clock: {e}"))?
        .as_secs() as i64;
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let key = Arc::clone(key);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || -> Result<u64, String> {
                let mut signed = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let token = key
                        .sign_jwt(&claims(now))
                        .map_err(|e| format!("sign_jwt: {e}"))?;
                    std::hint::black_box(token);
                    signed += 1;
                }
                Ok(signed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for worker in workers {
        total += worker
            .join()
            .map_err(|_| "a signing thread panicked".to_owned())??;
    }
    Ok((total, start.elapsed()))
}

fn run(options: &Options) -> Result<(), String> {
    for &alg in &options.algs {
        let key = Arc::new(signing_key(alg)?);
        // Warm-up: page in the code, fill the allocator's caches.
        measure(&key, options.threads, (options.seconds / 10.0).min(0.5))?;
        let (signed, elapsed) = measure(&key, options.threads, options.seconds)?;
        let line = serde_json::json!({
            "alg": alg.as_str(),
            "threads": options.threads,
            "seconds": elapsed.as_secs_f64(),
            "signatures": signed,
            "signatures_per_s": signed as f64 / elapsed.as_secs_f64(),
        });
        println!("{line}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("sign_rate: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sign_rate: {message}");
            ExitCode::FAILURE
        }
    }
}
