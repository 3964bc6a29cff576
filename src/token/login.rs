//! The login policy of `POST /login`: throttling by username and address,
//! the password check, the metrics and audit lines, and the tokens. The
//! handler only parses the request and maps the outcome.

use std::net::IpAddr;
use std::sync::Arc;

use secrecy::SecretString;

use super::{FIRST_PARTY_CLIENT, IssuedTokens, TokenError, Tokens};
use crate::accounts::{AccountError, Accounts, LoginThrottle, Throttled};
use crate::metrics::{IssuedBy, Metrics};

/// Why a login did not give tokens.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Too many recent failures for this username or address.
    #[error("too many failed logins; retry in {} s", .0.retry_after)]
    Throttled(Throttled),
    /// Wrong credentials, disabled user, or the check itself failed.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// The tokens could not be issued.
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// Logs users in.
#[derive(Clone)]
pub struct Login {
    accounts: Accounts,
    throttle: Arc<LoginThrottle>,
    tokens: Tokens,
    metrics: Arc<Metrics>,
}

impl Login {
    /// Binds the policy to its parts.
    pub fn new(
        accounts: Accounts,
        throttle: Arc<LoginThrottle>,
        tokens: Tokens,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            accounts,
            throttle,
            tokens,
            metrics,
        }
    }

    /// Checks `username`/`password` from `address` and issues first-party
    /// tokens. The attempt is counted by the throttle before the password
    /// is hashed (so concurrent guesses count too) and settled after: wrong
    /// credentials stay counted, a success clears the name, and a check
    /// that reached no verdict (hashing pool full, store down) is released.
    /// `csrf`: the cookie transport's CSRF binding claim, if any.
    pub async fn login(
        &self,
        username: &str,
        password: &SecretString,
        address: Option<IpAddr>,
        csrf: Option<String>,
    ) -> Result<IssuedTokens, LoginError> {
        let attempt = match self.throttle.begin(username, address) {
            Ok(attempt) => attempt,
            Err(throttled) => {
                self.metrics.login_failed();
                tracing::warn!(audit = "login_throttled", client_ip = ?address,
                    outcome = "refused", detail = "too many failures", "login throttled");
                return Err(LoginError::Throttled(throttled));
            }
        };
        let user = match self.accounts.authenticate(username, password).await {
            Ok(user) => user,
            Err(err) => {
                if matches!(err, AccountError::InvalidCredentials) {
                    attempt.failed();
                }
                self.metrics.login_failed();
                tracing::info!(audit = "login_failed", client_ip = ?address,
                    outcome = "failure", "login failed");
                return Err(err.into());
            }
        };
        attempt.succeeded();
        let issued = self
            .tokens
            .issue_for_user(&user, FIRST_PARTY_CLIENT, "", csrf)
            .await?;
        self.metrics.token_issued(IssuedBy::Login);
        tracing::info!(audit = "login", user_id = %user.id, "login succeeded");
        Ok(issued)
    }

    /// Throttle entries held: (usernames, addresses).
    pub fn throttle_entries(&self) -> (usize, usize) {
        self.throttle.entries()
    }
}
