//! Arbitrary input as a JWKS document: parsing and key preparation must
//! answer with a typed error (or a key set), never panic.
#![no_main]

use keyturn::verifier::{JwkSet, Verifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(set) = serde_json::from_slice::<JwkSet>(data) else {
        return;
    };
    let _ = Verifier::builder()
        .issuer("https://issuer.example")
        .audience(["api"])
        .build_from_jwks(&set);
});
