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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublicJwk {
    /// `RSA` or `OKP`.
    pub kty: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// `RS256` or `EdDSA`.
    pub alg: String,
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// RSA modulus.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA exponent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// `Ed25519` for OKP keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// Ed25519 public key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
}

impl PublicJwk {
    fn rsa(n: &[u8], e: &[u8]) -> Self {
        let mut jwk = Self {
            kty: "RSA".into(),
            use_: "sig".into(),
            alg: SigningAlg::Rs256.as_str().into(),
            kid: String::new(),
            n: Some(B64.encode(n)),
            e: Some(B64.encode(e)),
            crv: None,
            x: None,
        };
        jwk.kid = jwk.thumbprint();
        jwk
    }

    fn ed25519(x: &[u8]) -> Self {
        let mut jwk = Self {
            kty: "OKP".into(),
            use_: "sig".into(),
            alg: SigningAlg::EdDsa.as_str().into(),
            kid: String::new(),
            n: None,
            e: None,
            crv: Some("Ed25519".into()),
            x: Some(B64.encode(x)),
        };
        jwk.kid = jwk.thumbprint();
        jwk
    }

    /// RFC 7638 §3: SHA-256 over the required members, in lexicographic
    /// order, without whitespace; base64url without padding.
    pub fn thumbprint(&self) -> String {
        let empty = String::new();
        let canonical = if self.kty == "RSA" {
            format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                self.e.as_ref().unwrap_or(&empty),
                self.n.as_ref().unwrap_or(&empty)
            )
        } else {
            format!(
                r#"{{"crv":"{}","kty":"{}","x":"{}"}}"#,
                self.crv.as_ref().unwrap_or(&empty),
                self.kty,
                self.x.as_ref().unwrap_or(&empty)
            )
        };
        B64.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// The key in `jsonwebtoken`'s form, for verification.
    pub fn decoding_key(&self) -> Result<jsonwebtoken::DecodingKey, KeyError> {
        let bad = |what: &str| KeyError::Corrupt(format!("public key {}: {what}", self.kid));
        match self.kty.as_str() {
            "RSA" => jsonwebtoken::DecodingKey::from_rsa_components(
                self.n.as_deref().ok_or_else(|| bad("missing n"))?,
                self.e.as_deref().ok_or_else(|| bad("missing e"))?,
            )
            .map_err(|_| bad("bad RSA components")),
            "OKP" => jsonwebtoken::DecodingKey::from_ed_components(
                self.x.as_deref().ok_or_else(|| bad("missing x"))?,
            )
            .map_err(|_| bad("bad Ed25519 key")),
            _ => Err(bad("unknown kty")),
        }
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
                .map_err(|e| KeyError::Generation(e.to_string()))?;
            let public = PublicJwk::rsa(&private.n().to_bytes_be(), &private.e().to_bytes_be());
            let der = private
                .to_pkcs8_der()
                .map_err(|e| KeyError::Generation(e.to_string()))?;
            Ok(GeneratedKey {
                pkcs8: Zeroizing::new(der.as_bytes().to_vec()),
                public,
            })
        }
        SigningAlg::EdDsa => {
            let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| KeyError::Generation("Ed25519 generation failed".into()))?;
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8(doc.as_ref())
                .map_err(|_| KeyError::Generation("Ed25519 generation failed".into()))?;
            use ring::signature::KeyPair as _;
            let public = PublicJwk::ed25519(pair.public_key().as_ref());
            Ok(GeneratedKey {
                pkcs8: Zeroizing::new(doc.as_ref().to_vec()),
                public,
            })
        }
    }
}

/// Reads an operator-supplied private key: RSA (PKCS#8 or PKCS#1) or
/// Ed25519 (PKCS#8), PEM-encoded. RSA keys must have 2048 to 8192 bits.
pub fn import_pem(pem: &str) -> Result<(SigningAlg, GeneratedKey), KeyError> {
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    use rsa::pkcs8::DecodePrivateKey as _;
    let pem = pem.trim();
    let rsa_key = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
        .ok()
        .or_else(|| rsa::RsaPrivateKey::from_pkcs1_pem(pem).ok());
    if let Some(private) = rsa_key {
        let bits = private.n().bits();
        if !(2048..=8192).contains(&bits) {
            return Err(KeyError::Import(format!(
                "RSA keys must have 2048 to 8192 bits, this one has {bits}"
            )));
        }
        private
            .validate()
            .map_err(|_| KeyError::Import("the RSA key is inconsistent".into()))?;
        let public = PublicJwk::rsa(&private.n().to_bytes_be(), &private.e().to_bytes_be());
        let der = private
            .to_pkcs8_der()
            .map_err(|e| KeyError::Import(e.to_string()))?;
        return Ok((
            SigningAlg::Rs256,
            GeneratedKey {
                pkcs8: Zeroizing::new(der.as_bytes().to_vec()),
                public,
            },
        ));
    }
    let (label, document) = rsa::pkcs8::SecretDocument::from_pem(pem)
        .map_err(|_| KeyError::Import("not a PEM private key (RSA or Ed25519)".into()))?;
    if label != "PRIVATE KEY" {
        return Err(KeyError::Import(format!(
            "unsupported PEM block {label:?}; expected PRIVATE KEY or RSA PRIVATE KEY"
        )));
    }
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(document.as_bytes())
        .map_err(|_| KeyError::Import("not an RSA or Ed25519 private key".into()))?;
    use ring::signature::KeyPair as _;
    let public = PublicJwk::ed25519(pair.public_key().as_ref());
    Ok((
        SigningAlg::EdDsa,
        GeneratedKey {
            pkcs8: Zeroizing::new(document.as_bytes().to_vec()),
            public,
        },
    ))
}

enum Pair {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A parsed private key, ready to sign. Shared with `Arc`, never cloned,
/// never serialized; aws-lc wipes the key when it is dropped.
pub struct SigningKey {
    alg: SigningAlg,
    public: PublicJwk,
    pair: Pair,
    /// base64url of the JWS header `{"alg","kid","typ":"at+jwt"}`, built once.
    encoded_header: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.public.kid)
            .field("alg", &self.alg)
            .field("private", &"[redacted]")
            .finish()
    }
}

impl SigningKey {
    /// Parses a PKCS#8 private key and checks it matches `public`.
    pub fn from_pkcs8(alg: SigningAlg, pkcs8: &[u8], public: PublicJwk) -> Result<Self, KeyError> {
        let corrupt = || KeyError::Corrupt(format!("private key {} does not parse", public.kid));
        let pair = match alg {
            SigningAlg::Rs256 => Pair::Rsa(RsaKeyPair::from_pkcs8(pkcs8).map_err(|_| corrupt())?),
            SigningAlg::EdDsa => Pair::Ed25519(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map_err(|_| corrupt())?,
            ),
        };
        let derived = match &pair {
            Pair::Rsa(pair) => B64.encode(
                pair.public_key()
                    .modulus()
                    .big_endian_without_leading_zero(),
            ),
            Pair::Ed25519(pair) => B64.encode(pair.public_key().as_ref()),
        };
        let expected = match alg {
            SigningAlg::Rs256 => public.n.as_deref(),
            SigningAlg::EdDsa => public.x.as_deref(),
        };
        if expected != Some(derived.as_str()) {
            return Err(KeyError::Corrupt(format!(
                "private key {} does not match its public key",
                public.kid
            )));
        }
        let header = serde_json::json!({"alg": alg.as_str(), "kid": public.kid, "typ": "at+jwt"});
        Ok(Self {
            alg,
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
        self.alg
    }

    /// The public half, the only bridge to anything publishable.
    pub fn public_jwk(&self) -> &PublicJwk {
        &self.public
    }

    /// Signs `claims` as a compact JWS with header `typ: at+jwt`.
    pub fn sign_jwt(&self, claims: &impl Serialize) -> Result<String, KeyError> {
        let payload =
            serde_json::to_vec(claims).map_err(|e| KeyError::Corrupt(format!("claims: {e}")))?;
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
                .map_err(|_| KeyError::Corrupt("RSA signing failed".into()))?;
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
        let key = SigningKey::from_pkcs8(
            SigningAlg::EdDsa,
            &generated.pkcs8,
            generated.public.clone(),
        )
        .unwrap();
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
            let jwk: jsonwebtoken::jwk::Jwk =
                serde_json::from_value(serde_json::to_value(&generated.public).unwrap()).unwrap();
            assert_eq!(
                jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
                    .unwrap(),
                generated.public.kid
            );
        }
    }

    #[test]
    fn mismatched_private_key_is_refused() {
        let a = generate(SigningAlg::EdDsa, 2048).unwrap();
        let b = generate(SigningAlg::EdDsa, 2048).unwrap();
        assert!(SigningKey::from_pkcs8(SigningAlg::EdDsa, &a.pkcs8, b.public).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let generated = generate(SigningAlg::EdDsa, 2048).unwrap();
        let key =
            SigningKey::from_pkcs8(SigningAlg::EdDsa, &generated.pkcs8, generated.public).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("[redacted]"));
        assert!(!shown.contains("pair"));
    }
}
