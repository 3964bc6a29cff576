//! Hostile-input property tests: arbitrary and near-valid tokens into the
//! [`Validator`], arbitrary and near-valid JWKS documents into the JWKS
//! parser. Each must answer with a typed error (or, for a token, the
//! original claims when the mutation happened to change nothing), never
//! panic. 256 cases each, so they run in `cargo test`.

use std::sync::OnceLock;

use base64::Engine as _;
use proptest::prelude::*;

use super::*;
use crate::verifier::jwks_cache::{MAX_KEYS, parse_jwks};
use crate::verifier::validate::MAX_KID_LEN;

const ISS: &str = "https://issuer.example";
/// All test tokens are checked at this time (issued just before).
const NOW: u64 = 1_900_000_000;

struct Fixture {
    verifier: Verifier,
    keys: Vec<TestKey>,
    /// A valid token per key, and its claims.
    tokens: Vec<String>,
    claims: Claims<Value>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keys = vec![rsa_key(0), TestKey::ed25519()];
        let refs: Vec<&TestKey> = keys.iter().collect();
        let set: JwkSet = serde_json::from_value(jwks_of(&refs)).unwrap();
        let verifier = Verifier::builder()
            .issuer(ISS)
            .audience([AUD])
            .build_from_jwks(&set)
            .unwrap();
        let body = claims_at(ISS, NOW);
        let tokens: Vec<String> = keys.iter().map(|k| k.sign(&body)).collect();
        let claims = serde_json::from_value(body).unwrap();
        Fixture {
            verifier,
            keys,
            tokens,
            claims,
        }
    })
}

fn validate(token: &str) -> Result<Claims<Value>, VerifyError> {
    let f = fixture();
    let inner = &*f.verifier.inner;
    let now = i64::try_from(NOW).unwrap();
    inner.validator.validate(token, &*inner.cache, now)
}

/// The property for every token built from a valid one: refused, or
/// accepted with exactly the original claims (nothing forged).
fn refused_or_original(token: &str) -> Result<(), TestCaseError> {
    if let Ok(claims) = validate(token) {
        prop_assert_eq!(
            &claims,
            &fixture().claims,
            "a changed token verified: {}",
            token
        );
    }
    Ok(())
}

/// `header.payload.signature`, signed by `key` whatever the parts say.
fn sign_raw(key: &TestKey, header: &str, payload: &str) -> String {
    let message = format!("{header}.{payload}");
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key.encoding, key.alg).unwrap();
    format!("{message}.{signature}")
}

fn b64_bytes(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// JSON nested `depth` levels deep (arrays or objects).
fn deep_json(depth: usize, objects: bool) -> String {
    if objects {
        format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
    } else {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }
}

/// A header value a token might carry for `alg`.
fn alg_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("none")),
        Just(json!("None")),
        Just(json!("HS256")),
        Just(json!("HS512")),
        Just(json!("RS256")),
        Just(json!("EdDSA")),
        Just(json!("ES256")),
        Just(json!("PS256")),
        Just(json!("")),
        Just(Value::Null),
        Just(json!(["RS256"])),
        Just(json!(256)),
        ".{0,12}".prop_map(Value::String),
    ]
}

/// A `kid`: a real one, empty, huge, odd characters, not a string.
fn kid_value() -> impl Strategy<Value = Value> {
    let f = fixture();
    prop_oneof![
        Just(json!(f.keys[0].kid)),
        Just(json!(f.keys[1].kid)),
        Just(json!("")),
        (0usize..20_000).prop_map(|n| json!("k".repeat(n))),
        ".{0,64}".prop_map(Value::String),
        Just(json!("../../etc/passwd")),
        Just(json!("' OR 1=1 --")),
        Just(json!({"kid": "x"})),
        Just(Value::Null),
    ]
}

/// A header edited toward a valid one: each field original, odd, or absent.
fn header_value() -> impl Strategy<Value = Value> {
    (
        prop::option::of(alg_value()),
        prop::option::of(kid_value()),
        prop::option::of(prop_oneof![
            Just(json!("at+jwt")),
            Just(json!("JWT")),
            Just(json!("application/AT+JWT")),
            Just(json!(1)),
        ]),
        prop::option::of(prop_oneof![
            Just(json!(["exp"])),
            Just(json!([])),
            Just(json!("b64"))
        ]),
        prop::option::of(prop_oneof![
            Just(json!("https://evil.example/jwks")),
            Just(json!({"kty": "oct", "k": "c2VjcmV0"})),
        ]),
    )
        .prop_map(|(alg, kid, typ, crit, jku)| {
            let mut header = serde_json::Map::new();
            for (name, value) in [
                ("alg", alg),
                ("kid", kid),
                ("typ", typ),
                ("crit", crit),
                ("jku", jku),
            ] {
                if let Some(value) = value {
                    header.insert(name.into(), value);
                }
            }
            Value::Object(header)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_are_refused(token in ".{0,600}") {
        prop_assert!(validate(&token).is_err());
    }

    #[test]
    fn arbitrary_dotted_segments_are_refused(
        parts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..5),
    ) {
        // Each part base64url of arbitrary (often non-UTF-8) bytes.
        let token = parts.iter().map(|p| b64_bytes(p)).collect::<Vec<_>>().join(".");
        prop_assert!(validate(&token).is_err());
    }

    #[test]
    fn mutated_characters_never_forge(which in 0usize..2, at in any::<prop::sample::Index>(), c in any::<char>()) {
        let original = &fixture().tokens[which];
        let mut chars: Vec<char> = original.chars().collect();
        let i = at.index(chars.len());
        chars[i] = c;
        refused_or_original(&chars.into_iter().collect::<String>())?;
    }

    #[test]
    fn truncated_or_extended_tokens_never_forge(which in 0usize..2, cut in any::<prop::sample::Index>(), tail in "[A-Za-z0-9_.=-]{0,8}") {
        let original = &fixture().tokens[which];
        let token = format!("{}{tail}", &original[..cut.index(original.len())]);
        refused_or_original(&token)?;
    }

    #[test]
    fn replaced_segments_never_forge(
        which in 0usize..2,
        segment in 0usize..3,
        bytes in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let original = &fixture().tokens[which];
        let mut parts: Vec<String> = original.split('.').map(str::to_owned).collect();
        parts[segment] = b64_bytes(&bytes);
        refused_or_original(&parts.join("."))?;
    }

    #[test]
    fn swapped_signatures_and_payloads_never_forge(a in 0usize..2, b in 0usize..2, keep_payload in any::<bool>()) {
        let f = fixture();
        let pa: Vec<&str> = f.tokens[a].split('.').collect();
        let pb: Vec<&str> = f.tokens[b].split('.').collect();
        let token = if keep_payload {
            format!("{}.{}.{}", pb[0], pa[1], pa[2])
        } else {
            format!("{}.{}.{}", pa[0], pa[1], pb[2])
        };
        let result = validate(&token);
        if a == b {
            prop_assert!(result.is_ok());
        } else {
            prop_assert!(result.is_err(), "{token}");
        }
    }

    #[test]
    fn edited_headers_never_forge(which in 0usize..2, header in header_value()) {
        // The header changes what is signed, so the original signature
        // must not verify whatever the header says (and nothing panics on
        // huge kids, odd algs, crit or jku).
        let original = &fixture().tokens[which];
        let mut parts: Vec<String> = original.split('.').map(str::to_owned).collect();
        parts[0] = b64_bytes(&serde_json::to_vec(&header).unwrap());
        refused_or_original(&parts.join("."))?;
    }

    #[test]
    fn headers_signed_by_the_real_key_are_checked(which in 0usize..2, header in header_value()) {
        // Same edits, but validly signed: only a header with the key's own
        // alg and kid, the right typ and no crit may verify.
        let f = fixture();
        let key = &f.keys[which];
        let header_b64 = b64_bytes(&serde_json::to_vec(&header).unwrap());
        let payload = f.tokens[which].split('.').nth(1).unwrap();
        let token = sign_raw(key, &header_b64, payload);
        let alg = serde_json::to_value(key.alg).unwrap();
        let typ_ok = matches!(header.get("typ").and_then(Value::as_str), Some("at+jwt" | "application/AT+JWT"));
        let acceptable = header.get("alg") == Some(&alg)
            && header.get("kid") == Some(&json!(key.kid))
            && typ_ok
            && header.get("crit").is_none();
        match validate(&token) {
            Ok(claims) => {
                prop_assert!(acceptable, "accepted {header}");
                prop_assert_eq!(&claims, &f.claims);
            }
            Err(_) => prop_assert!(!acceptable, "refused {header}"),
        }
    }

    #[test]
    fn deep_json_in_header_or_claims_is_malformed(depth in 1usize..3000, objects in any::<bool>(), in_header in any::<bool>()) {
        // Validly signed, so a deep claims set reaches the JSON parser too.
        let f = fixture();
        let parts: Vec<&str> = f.tokens[0].split('.').collect();
        let deep = b64_bytes(deep_json(depth, objects).as_bytes());
        let token = if in_header {
            sign_raw(&f.keys[0], &deep, parts[1])
        } else {
            sign_raw(&f.keys[0], parts[0], &deep)
        };
        prop_assert!(matches!(validate(&token), Err(VerifyError::Malformed(_))), "{depth}");
    }

    #[test]
    fn arbitrary_bytes_are_not_a_jwks(body in prop::collection::vec(any::<u8>(), 0..2000)) {
        prop_assert!(parse_jwks(&body).is_err());
    }

    #[test]
    fn near_valid_jwks_documents_parse_or_fail_cleanly(
        edits in prop::collection::vec((0usize..2, jwk_field(), json_value()), 0..6),
        copies in 0usize..80,
        huge_kid in any::<bool>(),
    ) {
        let f = fixture();
        let mut keys: Vec<Value> = f.keys.iter().map(|k| serde_json::to_value(&k.jwk).unwrap()).collect();
        for (which, field, value) in edits {
            keys[which][field] = value;
        }
        if huge_kid {
            keys[1]["kid"] = json!("k".repeat(MAX_KID_LEN + 1));
        }
        let mut all = keys.clone();
        for i in 0..copies {
            let mut copy = keys[i % 2].clone();
            copy["kid"] = json!(format!("copy-{i}"));
            all.push(copy);
        }
        let body = serde_json::to_vec(&json!({ "keys": all })).unwrap();
        if let Ok(parsed) = parse_jwks(&body) {
            prop_assert!(!parsed.is_empty() && parsed.len() <= MAX_KEYS);
            for (kid, _) in &parsed {
                prop_assert!(kid.as_deref().is_none_or(|k| k.len() <= MAX_KID_LEN));
            }
        }
    }

    #[test]
    fn deep_or_odd_jwks_shapes_fail_cleanly(depth in 1usize..5000, objects in any::<bool>(), wrap in any::<bool>()) {
        let deep = deep_json(depth, objects);
        let body = if wrap { format!(r#"{{"keys":[{deep}]}}"#) } else { deep };
        prop_assert!(parse_jwks(body.as_bytes()).is_err());
    }
}

fn jwk_field() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "kty", "alg", "kid", "use", "key_ops", "n", "e", "crv", "x", "y", "k",
    ])
}

/// Small arbitrary JSON values.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        Just(json!("RSA")),
        Just(json!("OKP")),
        Just(json!("oct")),
        Just(json!("EC")),
        Just(json!("HS256")),
        Just(json!("Ed25519")),
        Just(json!("AQAB")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::hash_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The `cargo fuzz` target bodies (`verifier::fuzzing`), run here on every
/// `cargo test` so they are never dead code: arbitrary bytes, and inputs
/// near what they parse.
mod fuzz_bodies {
    use super::*;
    use crate::verifier::fuzzing;

    fn fixed_jwks() -> Value {
        serde_json::from_str(fuzzing::JWKS).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn the_token_target_refuses_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..800)) {
            if let Some(verdict) = fuzzing::verify_token(&data) {
                prop_assert!(verdict.is_err());
            }
        }

        #[test]
        fn the_token_target_refuses_tokens_for_its_key_it_cannot_have_signed(
            header in header_value(),
            payload in json_value(),
            signature in prop::collection::vec(any::<u8>(), 0..80),
        ) {
            // The fixed key's kid and alg in most headers, so the signature
            // check is reached; nothing but the key's holder can pass it.
            let mut header = header;
            if let Value::Object(map) = &mut header {
                map.entry("kid").or_insert(json!("k1"));
            }
            let token = format!(
                "{}.{}.{}",
                b64_bytes(header.to_string().as_bytes()),
                b64_bytes(payload.to_string().as_bytes()),
                b64_bytes(&signature),
            );
            prop_assert!(fuzzing::verify_token(token.as_bytes()).unwrap().is_err());
        }

        #[test]
        fn the_jwks_target_survives_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..2000)) {
            let _ = fuzzing::build_from_jwks(&data);
        }

        #[test]
        fn the_jwks_target_survives_edited_key_sets(
            edits in prop::collection::vec((jwk_field(), json_value()), 0..6),
            copies in 0usize..80,
        ) {
            let mut set = fixed_jwks();
            for (field, value) in edits {
                set["keys"][0][field] = value;
            }
            let key = set["keys"][0].clone();
            for i in 0..copies {
                let mut copy = key.clone();
                copy["kid"] = json!(format!("copy-{i}"));
                set["keys"].as_array_mut().unwrap().push(copy);
            }
            let _ = fuzzing::build_from_jwks(set.to_string().as_bytes());
        }
    }

    #[test]
    fn the_jwks_target_accepts_its_own_fixed_set() {
        assert_eq!(
            fuzzing::build_from_jwks(fuzzing::JWKS.as_bytes()),
            Some(true)
        );
    }
}
