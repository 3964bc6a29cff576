//! Errors of the verifier.
//!
//! [`VerifyError`] says why one token was refused; [`BuildError`] why a
//! [`Verifier`](super::Verifier) could not be built. Both are safe to log and
//! to show to a client: their messages are fixed strings chosen by this crate
//! (never an echo of the token, its `kid` or any other attacker-controlled
//! text) plus, for JWKS problems, a short description of what went wrong
//! while talking to the configured issuer.

/// Why a token was refused.
///
/// Each variant is a distinct, stable reason a caller can match on (for
/// metrics, or to choose between 401 and 503). The `Display` text is short,
/// fixed and safe to log or return in an `error_description`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not a well-formed signed JWT: too large, not three base64url parts,
    /// a header or claims set that is not the expected JSON, an unsupported
    /// `crit` header, or a required claim is missing. The text says which.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The token's `kid` names no signing key of the issuer, even after
    /// checking the JWKS again.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify with the key named by `kid`.
    #[error("invalid signature")]
    BadSignature,
    /// `exp` is in the past (beyond the configured leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` (or `iat`) is in the future (beyond the configured leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is missing or is not the expected issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` is missing or names none of the expected audiences.
    #[error("wrong audience")]
    WrongAudience,
    /// The header's `typ` is missing or is not the expected type
    /// (`at+jwt` by default), e.g. an ID token used as an access token.
    #[error("wrong token type")]
    WrongType,
    /// The header's `alg` is `none`, an HMAC algorithm, not in the allowed
    /// set, or not the algorithm of the key named by `kid`.
    #[error("algorithm not allowed")]
    DisallowedAlgorithm,
    /// The issuer's keys could not be fetched and the cached ones are older
    /// than the configured maximum staleness (or a new `kid` could not be
    /// looked up because the JWKS endpoint is failing). Not the client's
    /// fault: a resource server would answer 503.
    #[error("signing keys unavailable: {0}")]
    JwksUnavailable(String),
}

impl VerifyError {
    /// `true` for [`VerifyError::JwksUnavailable`]: the token may be fine but
    /// could not be checked now (answer 503, not 401).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, VerifyError::JwksUnavailable(_))
    }
}

/// Why a [`Verifier`](super::Verifier) could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Neither `issuer_url`, `jwks_url` nor `build_from_jwks` was used.
    #[error("no key source: use issuer_url(..), jwks_url(..) or build_from_jwks(..)")]
    MissingKeySource,
    /// No expected audience: RFC 9068 requires resource servers to check `aud`.
    #[error("no expected audience: call audience(..) (or danger_accept_any_audience())")]
    MissingAudience,
    /// `audience(..)` was given an empty list: that would accept no token
    /// (or, in older versions, every audience); name at least one.
    #[error("empty audience list: name at least one audience (or danger_accept_any_audience())")]
    EmptyAudience,
    /// A key-source URL that is not safe to fetch keys from: plain HTTP to a
    /// non-loopback host. The text names the URL.
    #[error("insecure key source: {0}")]
    InsecureUrl(String),
    /// No expected issuer (only possible with `jwks_url`/`build_from_jwks`).
    #[error("no expected issuer: call issuer(..) (or danger_accept_any_issuer())")]
    MissingIssuer,
    /// An option has an unusable value; the text names it.
    #[error("invalid verifier option: {0}")]
    InvalidOption(String),
    /// The issuer's metadata (RFC 8414 / OpenID discovery) could not be read.
    #[error("issuer discovery failed: {0}")]
    Discovery(String),
    /// The first JWKS fetch failed or held no usable signing key.
    #[error("JWKS fetch failed: {0}")]
    Jwks(String),
}
