//! The bodies of the `cargo fuzz` targets in `fuzz/`, kept here so the
//! property tests in `tests/hostile.rs` run exactly the same code on every
//! `cargo test` (the fuzz targets need nightly and are built rarely). Not a
//! stable API.

use std::sync::OnceLock;

use super::{Claims, JwkSet, Verifier, VerifyError};

/// The issuer the fixed verifier expects.
pub const ISSUER: &str = "https://issuer.example";
/// The audience the fixed verifier expects.
pub const AUDIENCE: &str = "api";
/// The one key of the fixed verifier (an Ed25519 public key, `kid` `k1`).
pub const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k1","use":"sig"}]}"#;

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let jwks: JwkSet = serde_json::from_str(JWKS).expect("fixed JWKS");
        Verifier::builder()
            .issuer(ISSUER)
            .audience([AUDIENCE])
            .build_from_jwks(&jwks)
            .expect("fixed verifier")
    })
}

/// Arbitrary input as an access token for a verifier with one fixed key:
/// `None` when the input is not UTF-8, otherwise the verdict (a typed
/// error, or claims). Must never panic.
pub fn verify_token(data: &[u8]) -> Option<Result<Claims<serde_json::Value>, VerifyError>> {
    let token = std::str::from_utf8(data).ok()?;
    Some(block_on(verifier().verify::<serde_json::Value>(token)))
}

/// Arbitrary input as a JWKS document: `None` when it does not parse as
/// one, otherwise whether a verifier accepts the set. Must never panic.
pub fn build_from_jwks(data: &[u8]) -> Option<bool> {
    let set = serde_json::from_slice::<JwkSet>(data).ok()?;
    Some(
        Verifier::builder()
            .issuer(ISSUER)
            .audience([AUDIENCE])
            .build_from_jwks(&set)
            .is_ok(),
    )
}

/// Runs a future that never waits (a static key set does no I/O).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("a static verifier never waits"),
    }
}
