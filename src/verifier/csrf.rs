//! The CSRF binding of cookie-carried access tokens (SPEC §5a), shared by
//! the server (which mints the binding) and the verifier's poem
//! integration (which checks it).
//!
//! Contract: an access token delivered in the `keyturn_access` cookie
//! carries a claim `csrf` = base64url (no padding) of SHA-256 of the CSRF
//! value the page sends back in `X-CSRF-Token`. Only the hash is in the
//! token, so the token alone does not reveal the CSRF value, and the
//! comparison is over fixed-length digests, in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// The claim name carrying the binding in the access token.
pub const CLAIM: &str = "csrf";
/// The request header carrying the CSRF value.
pub const HEADER: &str = "X-CSRF-Token";

/// The `csrf` claim value binding a token to `csrf_value`.
///
/// ```
/// use keyturn::verifier::csrf;
///
/// let claim = csrf::binding("s3cr3t-csrf");
/// assert_eq!(claim.len(), 43);
/// assert!(csrf::matches(&claim, "s3cr3t-csrf"));
/// assert!(!csrf::matches(&claim, "s3cr3t-csrF"));
/// ```
pub fn binding(csrf_value: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(csrf_value.as_bytes()))
}

/// Whether `header_value` is the CSRF value bound by `claim` (a token's
/// `csrf` claim). Constant time in the contents; an empty header value
/// never matches.
pub fn matches(claim: &str, header_value: &str) -> bool {
    if header_value.is_empty() {
        return false;
    }
    constant_time_eq(binding(header_value).as_bytes(), claim.as_bytes())
}

/// Byte equality whose time depends only on the lengths (which are public
/// here: a binding is always 43 characters).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_is_the_unpadded_base64url_sha256() {
        // SHA-256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 b00361a3 96177a9c b410ff61 f20015ad
        assert_eq!(
            binding("abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
    }

    #[test]
    fn matches_only_the_bound_value() {
        let claim = binding("value-1");
        assert!(matches(&claim, "value-1"));
        for wrong in ["", "value-2", "value-1 ", "VALUE-1"] {
            assert!(!matches(&claim, wrong), "{wrong:?}");
        }
        // A claim that is the value itself (not its hash) does not match.
        assert!(!matches("value-1", "value-1"));
        assert!(!matches("", "x"));
        assert!(!matches(&claim[..42], "value-1"));
    }

    #[test]
    fn constant_time_eq_compares_whole_slices() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
