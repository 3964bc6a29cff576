//! Arbitrary input as an access token: the validator must answer with a
//! typed error (or valid claims), never panic. The body lives in
//! `keyturn::verifier::fuzzing`, where the property tests run it too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = keyturn::verifier::fuzzing::verify_token(data);
});
