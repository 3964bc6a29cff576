//! Key material: generation, the private signing key and the public JWK.
//!
//! Private and public never share a type. [`SigningKey`] has no `Clone`, no
//! `Serialize` and a redacted `Debug`; the only way from it to anything
//! publishable is [`SigningKey::public_jwk`]. Keys are parsed once when the
//! keyring loads and reused for every signature (PERFORMANCE.md: parsing an
//! RSA key per token would double the cost of signing).

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use rsa::pkcs8::EncodePrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::{KeyError, SigningAlg};

/// A public key as published in the JWKS (RFC 7517). Holds no private part.
///
/// Its `kid` is the RFC 7638 thumbprint of [`PublicJwk::key`], computed when
/// the value is made and checked when it is read back, so the two cannot
/// disagree. Serializes to `{"kty","use":"sig","alg","kid",…members}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawJwk")]
pub struct PublicJwk {
    kid: String,
    key: JwkKey,
}

/// The key-type members of a public JWK. Every `match` over it is
/// exhaustive: a new key type cannot be published, thumbprinted or verified
/// until each of those says how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwkKey {
    /// `kty: RSA` (RFC 7518 §6.3): base64url big-endian modulus and exponent.
    Rsa {
        /// Modulus.
        n: String,
        /// Public exponent.
        e: String,
    },
    /// `kty: OKP` (RFC 8037): an Edwards-curve public key.
    Okp {
        /// The curve.
        crv: OkpCurve,
        /// base64url public key.
        x: String,
    },
}

/// Curves of `OKP` keys keyturn signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OkpCurve {
    /// Ed25519 (EdDSA).
    Ed25519,
}

impl OkpCurve {
    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ed25519 => "Ed25519",
        }
    }
}

impl JwkKey {
    /// The JOSE `kty`.
    pub fn kty(&self) -> &'static str {
        match self {
            Self::Rsa { .. } => "RSA",
            Self::Okp { .. } => "OKP",
        }
    }

    /// The algorithm keyturn signs with under this key.
    pub fn alg(&self) -> SigningAlg {
        match self {
            Self::Rsa { .. } => SigningAlg::Rs256,
            Self::Okp {
                crv: OkpCurve::Ed25519,
                ..
            } => SigningAlg::EdDsa,
        }
    }

    /// RFC 7638 §3: SHA-256 over the required members, in lexicographic
    /// order, without whitespace; base64url without padding.
    pub fn thumbprint(&self) -> String {
        // The members are base64url or fixed names: nothing to escape.
        let canonical = match self {
            Self::Rsa { n, e } => format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
            Self::Okp { crv, x } => {
                format!(r#"{{"crv":"{}","kty":"OKP","x":"{x}"}}"#, crv.as_str())
            }
        };
        B64.encode(Sha256::digest(canonical.as_bytes()))
    }
}

/// Why a public JWK (or the private key beside it) is unusable.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    /// The stored JSON is not a JWK keyturn publishes.
    #[error("the public JWK does not parse")]
    PublicJwk(#[source] serde_json::Error),
    /// The row's `kid` is not the public key's thumbprint.
    #[error("the kid is not the public key's RFC 7638 thumbprint")]
    KidMismatch,
    /// The PKCS#8 private key does not parse.
    #[error("the private key does not parse")]
    PrivateKey(#[source] aws_lc_rs::error::KeyRejected),
    /// The private key belongs to another public key.
    #[error("the private key does not match the public key")]
    KeyPairMismatch,
    /// The public key cannot be prepared for verification.
    #[error("the public key is unusable for verification")]
    DecodingKey(#[source] jsonwebtoken::errors::Error),
}

/// Why signing a token failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The claims do not serialize.
    #[error("the claims do not serialize")]
    Claims(#[source] serde_json::Error),
    /// The RSA signature failed.
    #[error("the RSA signature failed")]
    Rsa(#[source] aws_lc_rs::error::Unspecified),
}

/// Why a public JWK read back does not parse.
#[derive(Debug, thiserror::Error)]
pub enum JwkError {
    /// An unknown `kty`, `crv`, `alg` or `use`, or one that does not fit the
    /// key type.
    #[error("unsupported {member} {value:?}")]
    Unsupported {
        /// The member.
        member: &'static str,
        /// Its value, truncated.
        value: String,
    },
    /// A member the key type requires is absent.
    #[error("missing {0}")]
    Missing(&'static str),
    /// `kid` is not the thumbprint.
    #[error("the kid is not the RFC 7638 thumbprint")]
    Kid,
}

/// The JSON shape as served, members in this order.
#[derive(Serialize)]
struct JwkOut<'a> {
    kty: &'a str,
    #[serde(rename = "use")]
    use_: &'a str,
    alg: &'a str,
    kid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<&'a str>,
}

/// The JSON shape as read back from the store.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(rename = "use")]
    use_: String,
    alg: String,
    kid: String,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
}

impl Serialize for PublicJwk {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (n, e, crv, x) = match &self.key {
            JwkKey::Rsa { n, e } => (Some(n.as_str()), Some(e.as_str()), None, None),
            JwkKey::Okp { crv, x } => (None, None, Some(crv.as_str()), Some(x.as_str())),
        };
        JwkOut {
            kty: self.key.kty(),
            use_: "sig",
            alg: self.key.alg().as_str(),
            kid: &self.kid,
            n,
            e,
            crv,
            x,
        }
        .serialize(serializer)
    }
}

impl TryFrom<RawJwk> for PublicJwk {
    type Error = JwkError;
    fn try_from(raw: RawJwk) -> Result<Self, JwkError> {
        let unsupported = |member, value: &str| JwkError::Unsupported {
            member,
            value: value.chars().take(16).collect(),
        };
        let key = match raw.kty.as_str() {
            "RSA" => JwkKey::Rsa {
                n: raw.n.ok_or(JwkError::Missing("n"))?,
                e: raw.e.ok_or(JwkError::Missing("e"))?,
            },
            "OKP" => {
                let crv = match raw.crv.as_deref() {
                    Some("Ed25519") => OkpCurve::Ed25519,
                    Some(other) => return Err(unsupported("crv", other)),
                    None => return Err(JwkError::Missing("crv")),
                };
                JwkKey::Okp {
                    crv,
                    x: raw.x.ok_or(JwkError::Missing("x"))?,
                }
            }
            other => return Err(unsupported("kty", other)),
        };
        if raw.use_ != "sig" {
            return Err(unsupported("use", &raw.use_));
        }
        if raw.alg != key.alg().as_str() {
            return Err(unsupported("alg", &raw.alg));
        }
        let jwk = Self::new(key);
        if jwk.kid != raw.kid {
            return Err(JwkError::Kid);
        }
        Ok(jwk)
    }
}

impl PublicJwk {
    /// The JWK of `key`, its `kid` the RFC 7638 thumbprint.
    pub fn new(key: JwkKey) -> Self {
        Self {
            kid: key.thumbprint(),
            key,
        }
    }

    /// An RSA public key from its big-endian modulus and exponent.
    pub fn rsa(n: &[u8], e: &[u8]) -> Self {
        Self::new(JwkKey::Rsa {
            n: B64.encode(n),
            e: B64.encode(e),
        })
    }

    /// An Ed25519 public key.
    pub fn ed25519(x: &[u8]) -> Self {
        Self::new(JwkKey::Okp {
            crv: OkpCurve::Ed25519,
            x: B64.encode(x),
        })
    }

    /// The key id: the RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key-type members.
    pub fn key(&self) -> &JwkKey {
        &self.key
    }

    /// The algorithm tokens under this key use.
    pub fn alg(&self) -> SigningAlg {
        self.key.alg()
    }

    /// The key in `jsonwebtoken`'s form, for verification.
    pub fn decoding_key(&self) -> Result<jsonwebtoken::DecodingKey, MaterialError> {
        match &self.key {
            JwkKey::Rsa { n, e } => jsonwebtoken::DecodingKey::from_rsa_components(n, e),
            JwkKey::Okp {
                crv: OkpCurve::Ed25519,
                x,
            } => jsonwebtoken::DecodingKey::from_ed_components(x),
        }
        .map_err(MaterialError::DecodingKey)
    }
}

/// A freshly generated key: PKCS#8 private half (to be sealed at once) and
/// its public JWK.
pub struct GeneratedKey {
    /// PKCS#8 DER of the private key, wiped on drop.
    pub pkcs8: Zeroizing<Vec<u8>>,
    /// The public half.
    pub public: PublicJwk,
}

/// Generates a key pair. CPU-heavy for RSA (hundreds of milliseconds): call
/// it from a blocking thread.
pub fn generate(alg: SigningAlg, rsa_bits: usize) -> Result<GeneratedKey, KeyError> {
    match alg {
        SigningAlg::Rs256 => {
            let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, rsa_bits)
                .map_err(|e| KeyError::Generation(e.into()))?;
            let public = PublicJwk::rsa(&private.n().to_bytes_be(), &private.e().to_bytes_be());
            let der = private
                .to_pkcs8_der()
                .map_err(|e| KeyError::Generation(e.into()))?;
            Ok(GeneratedKey {
                pkcs8: Zeroizing::new(der.as_bytes().to_vec()),
                public,
            })
        }
        SigningAlg::EdDsa => {
            // ring's errors carry no detail beyond "it failed".
            let failed = || KeyError::Generation("Ed25519 key generation failed".into());
            let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| failed())?;
            let pair =
                ring::signature::Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|_| failed())?;
            use ring::signature::KeyPair as _;
            let public = PublicJwk::ed25519(pair.public_key().as_ref());
            Ok(GeneratedKey {
                pkcs8: Zeroizing::new(doc.as_ref().to_vec()),
                public,
            })
        }
    }
}

/// Why an operator-supplied key cannot be imported. The messages are shown
/// to the operator as they are.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Neither RSA nor a PEM `PRIVATE KEY` block.
    #[error("not a PEM private key (RSA or Ed25519)")]
    NotPem,
    /// A PEM block of another kind.
    #[error("unsupported PEM block {0:?}; expected PRIVATE KEY or RSA PRIVATE KEY")]
    PemLabel(String),
    /// A `PRIVATE KEY` that is neither RSA nor Ed25519.
    #[error("not an RSA or Ed25519 private key")]
    KeyType,
    /// An RSA key too small or too large.
    #[error("RSA keys must have 2048 to 8192 bits, this one has {0}")]
    RsaBits(usize),
    /// An RSA key whose public exponent is not 65537.
    #[error("RSA keys must have the public exponent 65537, this one has {0}")]
    RsaExponent(String),
    /// An RSA key whose parts do not fit together.
    #[error("the RSA key is inconsistent")]
    RsaInconsistent,
    /// The key parses but does not load as a signing key.
    #[error("the key does not load: {0}")]
    Unusable(MaterialError),
    /// The key's algorithm is not the one new tokens are signed with.
    #[error("the key is {key} but KEYTURN_SIGNING_ALG is {policy}; it would never sign")]
    WrongAlgorithm {
        /// The key's algorithm.
        key: SigningAlg,
        /// The configured one.
        policy: SigningAlg,
    },
    /// The key is in the keyset already.
    #[error("this key is already in the keyset")]
    Duplicate,
}

/// The only RSA public exponent accepted for imported keys (F4).
const RSA_EXPONENT: u32 = 65_537;

/// Reads an operator-supplied private key: RSA (PKCS#8 or PKCS#1) or
/// Ed25519 (PKCS#8), PEM-encoded. RSA keys must have 2048 to 8192 bits and
/// the public exponent 65537.
pub fn import_pem(pem: &str) -> Result<GeneratedKey, KeyError> {
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    use rsa::pkcs8::DecodePrivateKey as _;
    let pem = pem.trim();
    let rsa_key = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
        .ok()
        .or_else(|| rsa::RsaPrivateKey::from_pkcs1_pem(pem).ok());
    if let Some(private) = rsa_key {
        let bits = private.n().bits();
        if !(2048..=8192).contains(&bits) {
            return Err(KeyError::Import(ImportError::RsaBits(bits)));
        }
        // Small exponents (e = 3) invite signature-forgery attacks on lax
        // verifiers; every mainstream tool generates 65537.
        if *private.e() != rsa::BigUint::from(RSA_EXPONENT) {
            return Err(KeyError::Import(ImportError::RsaExponent(
                private.e().to_string(),
            )));
        }
        private
            .validate()
            .map_err(|_| KeyError::Import(ImportError::RsaInconsistent))?;
        let public = PublicJwk::rsa(&private.n().to_bytes_be(), &private.e().to_bytes_be());
        let der = private
            .to_pkcs8_der()
            .map_err(|e| KeyError::Generation(e.into()))?;
        return Ok(GeneratedKey {
            pkcs8: Zeroizing::new(der.as_bytes().to_vec()),
            public,
        });
    }
    let (label, document) = rsa::pkcs8::SecretDocument::from_pem(pem)
        .map_err(|_| KeyError::Import(ImportError::NotPem))?;
    if label != "PRIVATE KEY" {
        return Err(KeyError::Import(ImportError::PemLabel(label.to_owned())));
    }
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(document.as_bytes())
        .map_err(|_| KeyError::Import(ImportError::KeyType))?;
    use ring::signature::KeyPair as _;
    let public = PublicJwk::ed25519(pair.public_key().as_ref());
    Ok(GeneratedKey {
        pkcs8: Zeroizing::new(document.as_bytes().to_vec()),
        public,
    })
}

enum Pair {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A parsed private key, ready to sign. Shared with `Arc`, never cloned,
/// never serialized; aws-lc wipes the key when it is dropped.
pub struct SigningKey {
    public: PublicJwk,
    pair: Pair,
    /// base64url of the JWS header `{"alg","kid","typ":"at+jwt"}`, built once.
    encoded_header: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.public.kid)
            .field("alg", &self.alg())
            .field("private", &"[redacted]")
            .finish()
    }
}

impl SigningKey {
    /// Parses a PKCS#8 private key and checks it is the private half of
    /// `public` (whose key type decides how it is parsed and how it signs).
    pub fn from_pkcs8(pkcs8: &[u8], public: PublicJwk) -> Result<Self, MaterialError> {
        let pair = match &public.key {
            JwkKey::Rsa { n, e } => {
                let pair = RsaKeyPair::from_pkcs8(pkcs8).map_err(MaterialError::PrivateKey)?;
                let derived = pair.public_key();
                if B64.encode(derived.modulus().big_endian_without_leading_zero()) != *n
                    || B64.encode(derived.exponent().big_endian_without_leading_zero()) != *e
                {
                    return Err(MaterialError::KeyPairMismatch);
                }
                Pair::Rsa(pair)
            }
            JwkKey::Okp {
                crv: OkpCurve::Ed25519,
                x,
            } => {
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
                    .map_err(MaterialError::PrivateKey)?;
                if B64.encode(pair.public_key().as_ref()) != *x {
                    return Err(MaterialError::KeyPairMismatch);
                }
                Pair::Ed25519(pair)
            }
        };
        let header =
            serde_json::json!({"alg": public.alg().as_str(), "kid": public.kid, "typ": "at+jwt"});
        Ok(Self {
            encoded_header: B64.encode(header.to_string()),
            public,
            pair,
        })
    }

    /// The key id (RFC 7638 thumbprint).
    pub fn kid(&self) -> &str {
        &self.public.kid
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> SigningAlg {
        self.public.alg()
    }

    /// The public half, the only bridge to anything publishable.
    pub fn public_jwk(&self) -> &PublicJwk {
        &self.public
    }

    /// Signs `claims` as a compact JWS with header `typ: at+jwt`.
    pub fn sign_jwt(&self, claims: &impl Serialize) -> Result<String, KeyError> {
        let failed = |source| KeyError::Signing {
            kid: self.public.kid.clone(),
            source,
        };
        let payload = serde_json::to_vec(claims).map_err(|e| failed(SignError::Claims(e)))?;
        let mut jws = String::with_capacity(self.encoded_header.len() + payload.len() * 2 + 400);
        jws.push_str(&self.encoded_header);
        jws.push('.');
        B64.encode_string(&payload, &mut jws);
        let signature = match &self.pair {
            Pair::Rsa(pair) => {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &aws_lc_rs::rand::SystemRandom::new(),
                    jws.as_bytes(),
                    &mut sig,
                )
                .map_err(|e| failed(SignError::Rsa(e)))?;
                sig
            }
            Pair::Ed25519(pair) => pair.sign(jws.as_bytes()).as_ref().to_vec(),
        };
        jws.push('.');
        B64.encode_string(&signature, &mut jws);
        Ok(jws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_sign_and_verify_with_jsonwebtoken() {
        let generated = generate(SigningAlg::EdDsa, 2048).unwrap();
        let key = SigningKey::from_pkcs8(&generated.pkcs8, generated.public.clone()).unwrap();
        assert_eq!(key.alg(), SigningAlg::EdDsa);
        let token = key
            .sign_jwt(&serde_json::json!({"sub": "x", "exp": 4_000_000_000u64}))
            .unwrap();
        let decoding = generated.public.decoding_key().unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.validate_aud = false;
        let data =
            jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap();
        assert_eq!(data.claims["sub"], "x");
        assert_eq!(data.header.kid.as_deref(), Some(key.kid()));
        assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));
    }

    #[test]
    fn thumbprint_matches_jsonwebtoken() {
        for alg in [SigningAlg::EdDsa, SigningAlg::Rs256] {
            let generated = generate(alg, 2048).unwrap();
            assert_eq!(generated.public.alg(), alg);
            let jwk: jsonwebtoken::jwk::Jwk =
                serde_json::from_value(serde_json::to_value(&generated.public).unwrap()).unwrap();
            assert_eq!(
                jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
                    .unwrap(),
                generated.public.kid()
            );
        }
    }

    /// RFC 7638 §3.1: the example RSA key and its thumbprint.
    const RFC7638_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

    #[test]
    fn rsa_thumbprint_is_the_rfc_7638_example() {
        let jwk = PublicJwk::new(JwkKey::Rsa {
            n: RFC7638_N.into(),
            e: "AQAB".into(),
        });
        assert_eq!(jwk.kid(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn ed25519_thumbprint_is_the_rfc_8037_example() {
        // RFC 8037 Appendix A.2/A.3.
        let jwk = PublicJwk::new(JwkKey::Okp {
            crv: OkpCurve::Ed25519,
            x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
        });
        assert_eq!(jwk.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn jwk_json_is_unchanged_and_round_trips() {
        let rsa = PublicJwk::new(JwkKey::Rsa {
            n: RFC7638_N.into(),
            e: "AQAB".into(),
        });
        let text = serde_json::to_string(&rsa).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"kty":"RSA","use":"sig","alg":"RS256","kid":"NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs","n":"{RFC7638_N}","e":"AQAB"}}"#
            )
        );
        assert_eq!(serde_json::from_str::<PublicJwk>(&text).unwrap(), rsa);
        let ed = PublicJwk::ed25519(&[7; 32]);
        let text = serde_json::to_string(&ed).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"kty":"OKP","use":"sig","alg":"EdDSA","kid":"{}","crv":"Ed25519","x":"{}"}}"#,
                ed.kid(),
                B64.encode([7; 32])
            )
        );
        assert_eq!(serde_json::from_str::<PublicJwk>(&text).unwrap(), ed);
    }

    #[test]
    fn stored_jwk_that_does_not_fit_is_refused() {
        let ed = serde_json::to_value(PublicJwk::ed25519(&[7; 32])).unwrap();
        let variants = [
            ("kid", serde_json::json!("not-the-thumbprint")),
            ("kty", serde_json::json!("EC")),
            ("crv", serde_json::json!("X25519")),
            ("alg", serde_json::json!("RS256")),
            ("use", serde_json::json!("enc")),
        ];
        for (member, value) in variants {
            let mut jwk = ed.clone();
            jwk[member] = value;
            assert!(
                serde_json::from_value::<PublicJwk>(jwk).is_err(),
                "{member} changed"
            );
        }
        let mut jwk = ed.clone();
        jwk.as_object_mut().unwrap().remove("x");
        assert!(serde_json::from_value::<PublicJwk>(jwk).is_err(), "no x");
    }

    #[test]
    fn mismatched_private_key_is_refused() {
        let a = generate(SigningAlg::EdDsa, 2048).unwrap();
        let b = generate(SigningAlg::EdDsa, 2048).unwrap();
        assert!(matches!(
            SigningKey::from_pkcs8(&a.pkcs8, b.public),
            Err(MaterialError::KeyPairMismatch)
        ));
        // A private key of another type than the public key does not parse.
        let rsa = generate(SigningAlg::Rs256, 2048).unwrap();
        assert!(matches!(
            SigningKey::from_pkcs8(&a.pkcs8, rsa.public),
            Err(MaterialError::PrivateKey(_))
        ));
    }

    #[test]
    fn generation_and_material_errors_keep_their_cause() {
        // RSA generation below the crate's minimum fails; the rsa crate's
        // error is the source, not a copied string.
        let Err(err) = generate(SigningAlg::Rs256, 16) else {
            panic!("a 16-bit RSA key was generated");
        };
        assert!(matches!(err, KeyError::Generation(_)), "{err:?}");
        assert!(std::error::Error::source(&err).is_some());
        let a = generate(SigningAlg::EdDsa, 2048).unwrap();
        let err = SigningKey::from_pkcs8(b"junk", a.public).unwrap_err();
        assert!(std::error::Error::source(&err).is_some(), "{err:?}");
    }

    #[test]
    fn debug_is_redacted() {
        let generated = generate(SigningAlg::EdDsa, 2048).unwrap();
        let key = SigningKey::from_pkcs8(&generated.pkcs8, generated.public).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("[redacted]"));
        assert!(!shown.contains("pair"));
    }
}
