//! The login policy of `POST /login`: throttling by username and address,
//! the password check, the metrics and audit lines, and the tokens. The
//! handler only parses the request and maps the outcome.

use std::net::IpAddr;
use std::sync::Arc;

use secrecy::SecretString;

use super::{FIRST_PARTY_CLIENT, IssuedTokens, TokenError, Tokens};
use crate::accounts::{AccountError, Accounts, AdmitError, LoginThrottle, Throttled};
use crate::audit::{Actor, Entry, Event, Outcome};
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
    /// is hashed (so concurrent guesses count too, on every instance that
    /// shares the store) and settled after: wrong credentials stay
    /// counted, a success clears the name, and a check that reached no
    /// verdict (hashing pool full, store down) is released. A throttle
    /// that cannot reach the store refuses the attempt like a store that
    /// is down for the password check would (503), unhashed.
    /// `csrf`: the cookie transport's CSRF binding claim, if any.
    pub async fn login(
        &self,
        username: &str,
        password: &SecretString,
        address: Option<IpAddr>,
        csrf: Option<String>,
    ) -> Result<IssuedTokens, LoginError> {
        let attempt = match self.throttle.admit(username, address).await {
            Ok(attempt) => attempt,
            Err(AdmitError::Store(err)) => {
                self.metrics.login_failed();
                let entry = Entry::new(
                    Event::LoginFailed,
                    &Actor::new("anonymous", address),
                    username,
                )
                .outcome(Outcome::Failure)
                .detail("the check failed (server side)");
                self.tokens.audit.record(entry).await;
                return Err(AccountError::Store(err).into());
            }
            Err(AdmitError::Throttled(throttled)) => {
                self.metrics.login_failed();
                let entry = Entry::new(
                    Event::LoginThrottled,
                    &Actor::new("anonymous", address),
                    username,
                )
                .outcome(Outcome::Refused)
                .detail(format!(
                    "too many failures; retry in {} s",
                    throttled.retry_after
                ));
                self.tokens.audit.record(entry).await;
                return Err(LoginError::Throttled(throttled));
            }
        };
        let user = match self.accounts.authenticate(username, password).await {
            Ok(user) => user,
            Err(err) => {
                if matches!(err, AccountError::InvalidCredentials) {
                    attempt.failed().await;
                }
                self.metrics.login_failed();
                // The name as typed (it may be no user's); never the password.
                let (outcome, detail) = match &err {
                    AccountError::InvalidCredentials => {
                        (Outcome::Failure, "invalid username or password")
                    }
                    _ => (Outcome::Failure, "the check failed (server side)"),
                };
                let entry = Entry::new(
                    Event::LoginFailed,
                    &Actor::new("anonymous", address),
                    username,
                )
                .outcome(outcome)
                .detail(detail);
                self.tokens.audit.record(entry).await;
                return Err(err.into());
            }
        };
        attempt.succeeded().await;
        let issued = self
            .tokens
            .issue_for_user(&user, FIRST_PARTY_CLIENT, "", csrf)
            .await?;
        self.metrics.token_issued(IssuedBy::Login);
        let entry = Entry::new(
            Event::LoginSucceeded,
            &Actor::new(user.id.clone(), address),
            &user.username,
        )
        .detail(if issued.refresh_token.is_some() {
            "first-party tokens issued"
        } else {
            "access token issued"
        });
        self.tokens.audit.record(entry).await;
        Ok(issued)
    }

    /// Throttle entries held: (usernames, addresses).
    pub fn throttle_entries(&self) -> (usize, usize) {
        self.throttle.entries()
    }
}
