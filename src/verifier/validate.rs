//! The one token check: everything a signed access token must satisfy,
//! given where its keys come from ([`KeySource`]) and what time it is.
//!
//! Used by [`Verifier`](super::Verifier) over the JWKS cache in a resource
//! server, and by keyturn's own routes over the server's live keyring, so the
//! two can never disagree on a verdict. Owns: size and shape limits, the
//! header rules (allowed `alg`, `typ`, `crit`), pinning the algorithm to the
//! key, the signature, and the claims rules (`exp`/`nbf`/`iat` with leeway,
//! `iss`, `aud`, required claims). Knows nothing about HTTP or caching.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};

use super::{BuildError, Claims, VerifyError};

/// Longest `kid` looked up; longer ones are unknown keys without a lookup.
pub(crate) const MAX_KID_LEN: usize = 256;
/// Largest encoded header accepted.
const MAX_HEADER_BYTES: usize = 2048;

/// A public key and the only algorithm it may verify.
pub struct VerificationKey {
    key: DecodingKey,
    alg: Algorithm,
    /// The key parsed once, for RS256 and EdDSA. `jsonwebtoken::crypto::verify`
    /// copies the key, builds it again (for RSA: the modulus and its
    /// Montgomery constants) and boxes a verifier for every token; this is
    /// parsed when the key set loads, which keeps a token check to the
    /// signature itself (docs/benchmarks.md, "Where the time goes").
    parsed: Option<Arc<ParsedPublicKey>>,
}

impl VerificationKey {
    /// Pairs a public key with the one algorithm it may verify. A key paired
    /// with an HMAC algorithm never verifies anything: a [`Validator`] refuses
    /// HMAC tokens before it looks a key up.
    pub fn new(key: DecodingKey, alg: Algorithm) -> Self {
        let parsed = parse_once(&key, alg).map(Arc::new);
        Self { key, alg, parsed }
    }

    /// The only algorithm tokens under this key may use.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// The aws-lc key for `key`, for the algorithms keyturn signs with; `None`
/// (the generic path) for the others and for a key aws-lc refuses, which
/// then fails at verification as it always did.
fn parse_once(key: &DecodingKey, alg: Algorithm) -> Option<ParsedPublicKey> {
    match (alg, key.kind()) {
        (Algorithm::RS256, DecodingKeyKind::RsaModulusExponent { n, e }) => {
            RsaPublicKeyComponents { n, e }
                .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
                .ok()
        }
        (Algorithm::RS256, DecodingKeyKind::SecretOrDer(der)) => {
            ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der).ok()
        }
        (Algorithm::EdDSA, DecodingKeyKind::SecretOrDer(raw)) => {
            ParsedPublicKey::new(&signature::ED25519, raw).ok()
        }
        _ => None,
    }
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Where a [`Validator`] finds the key a token names: the JWKS cache of a
/// resource server, or the server's own keyring.
pub trait KeySource {
    /// The key named by `kid` (`None`: the token has no `kid`) as held right
    /// now: [`VerifyError::UnknownKey`] if there is none,
    /// [`VerifyError::JwksUnavailable`] if the keys may not be used now.
    fn key(&self, kid: Option<&str>) -> Result<Arc<VerificationKey>, VerifyError>;
}

/// Claims a verifier can require to be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Required(u8);

impl Required {
    pub(crate) const NAMES: [&'static str; 7] = ["exp", "iat", "nbf", "sub", "iss", "aud", "jti"];
    const MISSING: [&'static str; 7] = [
        "missing required claim `exp`",
        "missing required claim `iat`",
        "missing required claim `nbf`",
        "missing required claim `sub`",
        "missing required claim `iss`",
        "missing required claim `aud`",
        "missing required claim `jti`",
    ];

    pub(crate) fn parse(names: &[String]) -> Result<Self, BuildError> {
        let mut bits = 0u8;
        for name in names {
            let index = Self::NAMES.iter().position(|n| n == name).ok_or_else(|| {
                BuildError::InvalidOption(format!(
                    "required_claims: `{name}` is not one of {:?}",
                    Self::NAMES
                ))
            })?;
            bits |= 1 << index;
        }
        Ok(Required(bits))
    }

    fn check<E>(self, c: &Claims<E>) -> Result<(), VerifyError> {
        let present = [
            c.exp.is_some(),
            c.iat.is_some(),
            c.nbf.is_some(),
            !c.sub.is_empty(),
            !c.iss.is_empty(),
            !c.aud.is_empty(),
            c.jti.is_some(),
        ];
        for (i, ok) in present.into_iter().enumerate() {
            if self.0 & (1 << i) != 0 && !ok {
                return Err(VerifyError::Malformed(Self::MISSING[i]));
            }
        }
        Ok(())
    }
}

/// What a token must satisfy (fixed at build time).
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) issuer: Option<String>,
    /// Empty: any audience (explicitly chosen).
    pub(crate) audiences: Vec<String>,
    pub(crate) leeway: u64,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) required: Required,
    /// Normalised (no `application/` prefix); compared case-insensitively.
    pub(crate) typ: Option<String>,
    pub(crate) max_token_bytes: usize,
}

/// Validates tokens against fixed rules, with keys from a [`KeySource`] and
/// the time given by the caller. Built by
/// [`VerifierBuilder::build_validator`](super::VerifierBuilder::build_validator)
/// (or inside every [`Verifier`](super::Verifier)).
///
/// What it checks, in order: size, shape (three base64url parts), header
/// (`alg` allowed — never `none` or HMAC —, `typ`, no `crit`), the key named
/// by `kid` (the header `alg` must be that key's algorithm), the signature,
/// then the claims: required claims present; expired when
/// `now >= exp + leeway` (RFC 7519 §4.1.4: the token is valid only *before*
/// `exp`); not yet valid when `nbf` or `iat` is later than `now + leeway`;
/// `iss`; `aud`. `jku`, `jwk`, `x5u` and `x5c` headers are never followed.
#[derive(Debug, Clone)]
pub struct Validator {
    policy: Policy,
}

impl Validator {
    pub(crate) fn new(policy: Policy) -> Self {
        Self { policy }
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Validates `token` (the compact JWS, without `Bearer `) at `now` (Unix
    /// seconds) with keys from `keys`, and returns its claims, the
    /// non-standard ones deserialized as `E`.
    pub fn validate<E: DeserializeOwned>(
        &self,
        token: &str,
        keys: &(impl KeySource + ?Sized),
        now: i64,
    ) -> Result<Claims<E>, VerifyError> {
        let policy = &self.policy;
        let parts = split(token, policy.max_token_bytes)?;
        let header_bytes = decode_header(parts.header)?;
        let header = parse_header(&header_bytes)?;
        let alg = parse_alg(&header.alg).ok_or(VerifyError::DisallowedAlgorithm)?;
        if !policy.algorithms.contains(&alg) {
            return Err(VerifyError::DisallowedAlgorithm);
        }
        if let Some(expected) = &policy.typ {
            match header.typ.as_deref().map(normalise_typ) {
                Some(typ) if typ.eq_ignore_ascii_case(expected) => {}
                _ => return Err(VerifyError::WrongType),
            }
        }
        // RFC 7515 §4.1.11: extensions we do not understand must be refused,
        // and we understand none.
        if header.crit.is_some() {
            return Err(VerifyError::Malformed("unsupported critical header"));
        }
        let kid = header.kid.as_deref();
        if kid.is_some_and(|k| k.len() > MAX_KID_LEN) {
            return Err(VerifyError::UnknownKey);
        }
        let key = keys.key(kid)?;
        self.check(&parts, alg, &key, u64::try_from(now).unwrap_or(0))
    }

    fn check<E: DeserializeOwned>(
        &self,
        parts: &Parts<'_>,
        alg: Algorithm,
        key: &VerificationKey,
        now: u64,
    ) -> Result<Claims<E>, VerifyError> {
        let policy = &self.policy;
        // The algorithm comes from the key; the header must agree with it.
        if key.alg != alg {
            return Err(VerifyError::DisallowedAlgorithm);
        }
        let verified = match &key.parsed {
            Some(parsed) => {
                let signature = URL_SAFE_NO_PAD
                    .decode(parts.signature)
                    .map_err(|_| VerifyError::Malformed("signature is not base64url"))?;
                Ok(parsed
                    .verify_sig(parts.message.as_bytes(), &signature)
                    .is_ok())
            }
            None => jsonwebtoken::crypto::verify(
                parts.signature,
                parts.message.as_bytes(),
                &key.key,
                alg,
            ),
        };
        match verified {
            Ok(true) => {}
            Ok(false) => return Err(VerifyError::BadSignature),
            Err(e) => {
                return Err(match e.kind() {
                    jsonwebtoken::errors::ErrorKind::Base64(_) => {
                        VerifyError::Malformed("signature is not base64url")
                    }
                    _ => VerifyError::BadSignature,
                });
            }
        }
        let payload = URL_SAFE_NO_PAD
            .decode(parts.payload)
            .map_err(|_| VerifyError::Malformed("claims are not base64url"))?;
        let claims: Claims<E> = serde_json::from_slice(&payload)
            .map_err(|_| VerifyError::Malformed("claims are not the expected JSON"))?;
        policy.required.check(&claims)?;
        self.check_times(claims.exp, claims.nbf, claims.iat, now)?;
        if let Some(issuer) = &policy.issuer
            && claims.iss != *issuer
        {
            return Err(VerifyError::WrongIssuer);
        }
        if !policy.audiences.is_empty()
            && !claims
                .aud
                .iter()
                .any(|aud| policy.audiences.iter().any(|want| want == aud))
        {
            return Err(VerifyError::WrongAudience);
        }
        Ok(claims)
    }
}

impl Validator {
    /// The time rules alone, at `now`: expired when `now >= exp + leeway`;
    /// not yet valid when `nbf` or `iat` is later than `now + leeway`. Also
    /// what the server re-checks for a token it has verified before.
    pub(crate) fn check_times(
        &self,
        exp: Option<u64>,
        nbf: Option<u64>,
        iat: Option<u64>,
        now: u64,
    ) -> Result<(), VerifyError> {
        let leeway = self.policy.leeway;
        if let Some(exp) = exp
            && now >= exp.saturating_add(leeway)
        {
            return Err(VerifyError::Expired);
        }
        if let Some(nbf) = nbf
            && nbf > now.saturating_add(leeway)
        {
            return Err(VerifyError::NotYetValid);
        }
        if let Some(iat) = iat
            && iat > now.saturating_add(leeway)
        {
            return Err(VerifyError::NotYetValid);
        }
        Ok(())
    }
}

pub(crate) fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

pub(crate) fn normalise_typ(typ: &str) -> &str {
    let t = typ.trim();
    match (t.get(..12), t.get(12..)) {
        (Some(prefix), Some(rest)) if prefix.eq_ignore_ascii_case("application/") => rest,
        _ => t,
    }
}

/// The header fields we read; everything else (`jku`, `jwk`, `x5u`, `x5c`…)
/// is ignored, never followed.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    typ: Option<Cow<'a, str>>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

fn parse_alg(alg: &str) -> Option<Algorithm> {
    Some(match alg {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        // `none`, HS*, and anything unknown.
        _ => return None,
    })
}

/// The three parts of a compact JWS.
struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// `header.payload`, what the signature covers.
    message: &'a str,
}

fn split(token: &str, max_bytes: usize) -> Result<Parts<'_>, VerifyError> {
    if token.len() > max_bytes {
        return Err(VerifyError::Malformed("token too large"));
    }
    let token = token.trim();
    let mut dots = token.match_indices('.').map(|(i, _)| i);
    let (Some(first), Some(second), None) = (dots.next(), dots.next(), dots.next()) else {
        return Err(VerifyError::Malformed("not a compact JWS (three parts)"));
    };
    let header = &token[..first];
    let payload = &token[first + 1..second];
    let signature = &token[second + 1..];
    if header.is_empty() || payload.is_empty() {
        return Err(VerifyError::Malformed("empty header or claims"));
    }
    Ok(Parts {
        header,
        payload,
        signature,
        message: &token[..second],
    })
}

/// Base64url-decode the header (bounded), to be parsed by [`parse_header`].
fn decode_header(encoded: &str) -> Result<Vec<u8>, VerifyError> {
    if encoded.len() > MAX_HEADER_BYTES {
        return Err(VerifyError::Malformed("header too large"));
    }
    URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| VerifyError::Malformed("header is not base64url"))
}

fn parse_header(bytes: &[u8]) -> Result<Header<'_>, VerifyError> {
    serde_json::from_slice(bytes)
        .map_err(|_| VerifyError::Malformed("header is not the expected JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verifier::tests::{TestKey, claims, rsa_key};

    /// The keys keyturn signs with are parsed once, and the parsed path
    /// gives jsonwebtoken's verdict on the signature for every variant of a
    /// token: as signed, each byte of the signature flipped in turn (a
    /// sample), signed by another key, and a signature cut short.
    #[test]
    fn preparsed_keys_agree_with_jsonwebtoken_on_every_signature() {
        for (key, other) in [
            (rsa_key(0), rsa_key(1)),
            (TestKey::ed25519(), TestKey::ed25519()),
        ] {
            let decoding = DecodingKey::from_jwk(&key.jwk).unwrap();
            let verification = VerificationKey::new(decoding.clone(), key.alg);
            assert!(
                verification.parsed.is_some(),
                "{:?} is parsed once",
                key.alg
            );
            let token = key.sign(&claims("https://issuer.example"));
            let (message, signature) = token.rsplit_once('.').unwrap();
            let raw = URL_SAFE_NO_PAD.decode(signature).unwrap();
            let mut signatures = vec![signature.to_owned()];
            for i in (0..raw.len()).step_by(7) {
                let mut flipped = raw.clone();
                flipped[i] ^= 0x01;
                signatures.push(URL_SAFE_NO_PAD.encode(flipped));
            }
            let foreign = other.sign(&claims("https://issuer.example"));
            signatures.push(foreign.rsplit_once('.').unwrap().1.to_owned());
            signatures.push(URL_SAFE_NO_PAD.encode(&raw[..raw.len() - 1]));
            for (n, signature) in signatures.iter().enumerate() {
                let parts = Parts {
                    header: message.split_once('.').unwrap().0,
                    payload: message.split_once('.').unwrap().1,
                    signature,
                    message,
                };
                let generic =
                    jsonwebtoken::crypto::verify(signature, message.as_bytes(), &decoding, key.alg)
                        .unwrap();
                assert_eq!(generic, n == 0, "only the signature as made verifies");
                let validator = Validator::new(Policy {
                    issuer: None,
                    audiences: Vec::new(),
                    leeway: 0,
                    algorithms: vec![key.alg],
                    required: Required(0),
                    typ: None,
                    max_token_bytes: 16 * 1024,
                });
                let ours = validator.check::<IgnoredAny>(&parts, key.alg, &verification, 0);
                assert_eq!(
                    !matches!(ours, Err(VerifyError::BadSignature)),
                    generic,
                    "{:?} signature {n}",
                    key.alg
                );
            }
        }
    }
}
