//! Arbitrary input as a JWKS document: parsing and key preparation must
//! answer with a typed error (or a key set), never panic. The body lives in
//! `keyturn::verifier::fuzzing`, where the property tests run it too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = keyturn::verifier::fuzzing::build_from_jwks(data);
});
