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
    /// tokens. A throttled attempt is refused before the password is hashed;
    /// only wrong credentials count as failures. `csrf`: the cookie
    /// transport's CSRF binding claim, if any.
    pub async fn login(
        &self,
        username: &str,
        password: &SecretString,
        address: Option<IpAddr>,
        csrf: Option<String>,
    ) -> Result<IssuedTokens, LoginError> {
        if let Err(throttled) = self.throttle.check(username, address) {
            self.metrics.login_failed();
            tracing::warn!(audit = "login_throttled", client = ?address, "login throttled");
            return Err(LoginError::Throttled(throttled));
        }
        let user = match self.accounts.authenticate(username, password).await {
            Ok(user) => user,
            Err(err) => {
                if matches!(err, AccountError::InvalidCredentials) {
                    self.throttle.failed(username, address);
                }
                self.metrics.login_failed();
                tracing::info!(audit = "login_failed", client = ?address, "login failed");
                return Err(err.into());
            }
        };
        self.throttle.succeeded(username);
        let issued = self
            .tokens
            .issue_for_user(&user, FIRST_PARTY_CLIENT, "", csrf)
            .await?;
        self.metrics.token_issued(IssuedBy::Login);
        tracing::info!(audit = "login", user_id = %user.id, "login succeeded");
        Ok(issued)
    }
}
