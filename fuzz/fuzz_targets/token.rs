//! Arbitrary input as an access token: the validator must answer with a
//! typed error (or valid claims), never panic.
#![no_main]

use std::sync::OnceLock;

use keyturn::verifier::{Claims, JwkSet, Verifier};
use libfuzzer_sys::fuzz_target;

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let jwks: JwkSet = serde_json::from_str(
            r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k1","use":"sig"}]}"#,
        )
        .expect("fixed JWKS");
        Verifier::builder()
            .issuer("https://issuer.example")
            .audience(["api"])
            .build_from_jwks(&jwks)
            .expect("fixed verifier")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    // A static key set never awaits: poll the future to completion here.
    let future = verifier().verify::<serde_json::Value>(token);
    let result: Result<Claims<serde_json::Value>, _> = block_on(future);
    let _ = result;
});

/// Runs a future that never waits (a static key set does no I/O).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a static verifier never waits"),
    }
}
