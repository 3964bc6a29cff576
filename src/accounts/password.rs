//! Password hashing: argon2id at OWASP parameters, on blocking threads behind
//! a semaphore, so a login flood queues here instead of starving the reactor
//! (and with it the JWKS and token verification).

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::Semaphore;

/// Hashing could not run; never a wrong password. Each variant keeps its
/// cause as the error's source.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The argon2 parameters were refused.
    #[error("password hashing failed: invalid argon2 parameters")]
    Params(#[source] argon2::Error),
    /// argon2 could not hash the password.
    #[error("password hashing failed")]
    Hash(#[source] argon2::password_hash::Error),
    /// The hashing pool was shut down.
    #[error("password hashing failed: the hashing pool is closed")]
    Closed(#[from] tokio::sync::AcquireError),
    /// The blocking worker panicked or was cancelled.
    #[error("password hashing failed: the hashing worker died")]
    Worker(#[from] tokio::task::JoinError),
}

/// argon2id hasher with bounded concurrency.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    /// Verified against when the user does not exist, so unknown users cost
    /// the same time as wrong passwords.
    dummy_hash: Arc<String>,
}

impl PasswordHasher {
    /// OWASP minimum: m=19456 KiB, t=2, p=1. Concurrency is one below the
    /// core count (at least one), leaving a core for the reactor.
    pub fn owasp() -> Result<Self, HashError> {
        let params = Params::new(19_456, 2, 1, None).map_err(HashError::Params)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with(params, cores.saturating_sub(1).max(1))
    }

    fn with(params: Params, concurrency: usize) -> Result<Self, HashError> {
        let dummy = hash_blocking(&params, b"keyturn dummy password")?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency)),
            dummy_hash: Arc::new(dummy),
        })
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: &SecretString) -> Result<String, HashError> {
        let params = self.params.clone();
        let password = password.clone();
        self.run(move || hash_blocking(&params, password.expose_secret().as_bytes()))
            .await?
    }

    /// Checks `password` against `stored`, or against a dummy hash when there
    /// is no user, taking the same time either way.
    pub async fn verify(
        &self,
        password: &SecretString,
        stored: Option<&str>,
    ) -> Result<bool, HashError> {
        let exists = stored.is_some();
        let hash = stored.map_or_else(|| self.dummy_hash.as_str().to_owned(), str::to_owned);
        let password = password.clone();
        let matches = self
            .run(move || {
                let Ok(parsed) = PasswordHash::new(&hash) else {
                    return false;
                };
                Argon2::default()
                    .verify_password(password.expose_secret().as_bytes(), &parsed)
                    .is_ok()
            })
            .await?;
        Ok(exists && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let _permit = self.permits.acquire().await?;
        Ok(tokio::task::spawn_blocking(work).await?)
    }
}

fn hash_blocking(params: &Params, password: &[u8]) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(HashError::Hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let hasher = PasswordHasher::owasp().unwrap();
        let pw = SecretString::from("correct horse");
        let hash = hasher.hash(&pw).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(hasher.verify(&pw, Some(&hash)).await.unwrap());
        assert!(
            !hasher
                .verify(&SecretString::from("wrong"), Some(&hash))
                .await
                .unwrap()
        );
        assert!(!hasher.verify(&pw, None).await.unwrap());
    }

    #[tokio::test]
    async fn failures_keep_their_cause() {
        use std::error::Error as _;
        let hasher = PasswordHasher::owasp().unwrap();
        hasher.permits.close();
        let err = hasher.hash(&SecretString::from("pw")).await.unwrap_err();
        assert!(matches!(err, HashError::Closed(_)), "{err:?}");
        assert!(err.source().is_some(), "the semaphore's error is kept");

        let hasher = PasswordHasher::owasp().unwrap();
        let dies = || -> u8 { panic!("worker died") };
        let err = hasher.run(dies).await.unwrap_err();
        assert!(matches!(err, HashError::Worker(_)), "{err:?}");
        assert!(err.source().is_some(), "the join error is kept");
    }
}
