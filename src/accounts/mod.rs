//! Users and OAuth clients: creation, authentication, changes, and the
//! in-memory views of which users' and clients' tokens are still acceptable.
//!
//! Owns the rules for usernames, passwords and roles. Calls `store`; never
//! imports `http`, `cli` or `token`.

mod clients;
mod password;
mod status;
mod throttle;

pub use clients::{
    Client, ClientCredentials, ClientError, ClientView, Clients, FIRST_PARTY_CLIENT_ID, GrantType,
    NewClient, is_scope_token, normalize_scopes,
};
pub use password::{HashError, HashLoadSnapshot, PasswordHasher};
pub use status::{CutoffView, StatusView};
pub use throttle::{
    AdmitError, Attempt, ClientAuthError, ClientAuthThrottle, LoginAttempt, LoginThrottle,
    MAX_ENTRIES, Throttle, ThrottlePolicy, Throttled,
};

use secrecy::{ExposeSecret as _, SecretString};

use crate::audit::{Actor, AuditLog, Entry, Event, Outcome};
use crate::clock::SharedClock;
use crate::store::{Store, StoreError, UserChange, UserRow};

/// Longest accepted password, in bytes: argon2 takes any length, but a
/// megabyte password is a denial-of-service attempt, not a password.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest accepted password for new users.
pub const MIN_PASSWORD_CHARS: usize = 8;
const MAX_USERNAME_CHARS: usize = 64;
const MAX_ROLE_CHARS: usize = 64;
const MAX_ROLES: usize = 32;
/// The role of `/admin/*`; at least one enabled user keeps it.
pub const ADMIN_ROLE: &str = "admin";

/// Errors of account operations. Display texts are safe to show clients.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Unknown user, wrong password or disabled user: deliberately one error.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// The username breaks the naming rules.
    #[error("username must be 1-64 characters of letters, digits, '.', '_', '-' or '@'")]
    InvalidUsername,
    /// The password breaks the length rules.
    #[error("password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} bytes long")]
    InvalidPassword,
    /// A role breaks the naming rules.
    #[error(
        "roles must be at most 32 names of 1-64 lowercase letters, digits, ':', '_', '.' or '-'"
    )]
    InvalidRole,
    /// The username is taken.
    #[error("a user with this username already exists")]
    UsernameTaken,
    /// No such user.
    #[error("no such user")]
    NotFound,
    /// The change would leave no enabled admin.
    #[error(
        "this is the last enabled admin: it cannot be deleted, disabled or lose the admin role; make another user an admin first"
    )]
    LastAdmin,
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for AccountError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict => Self::UsernameTaken,
            StoreError::NotFound => Self::NotFound,
            other => Self::Store(other),
        }
    }
}

/// A user as the rest of the system sees it (no hash).
#[derive(Debug, Clone)]
pub struct User {
    /// Stable id (`sub`).
    pub id: String,
    /// Login name.
    pub username: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Disabled users cannot log in.
    pub disabled: bool,
    /// Tokens issued at or before this time (Unix seconds) are refused.
    pub tokens_valid_after: i64,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// Last change (Unix seconds).
    pub updated_at: i64,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id,
            username: row.username,
            roles: row.roles,
            disabled: row.disabled,
            tokens_valid_after: row.tokens_valid_after,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A requested change to a user; `None` keeps the field.
#[derive(Debug, Default)]
pub struct UserUpdate {
    /// New roles.
    pub roles: Option<Vec<String>>,
    /// New password.
    pub password: Option<SecretString>,
    /// Disable or enable.
    pub disabled: Option<bool>,
}

/// The one rule for whether a user's token (access or refresh) issued at
/// `issued_at` is still acceptable: the user is enabled and the token
/// postdates their last password change, disable or token revocation.
pub fn accepts_token(disabled: bool, tokens_valid_after: i64, issued_at: i64) -> bool {
    !disabled && issued_at > tokens_valid_after
}

/// User operations.
#[derive(Clone)]
pub struct Accounts {
    store: Store,
    hasher: PasswordHasher,
    clock: SharedClock,
    view: CutoffView,
    /// How long a user's cutoff is kept: the access-token lifetime plus
    /// leeway, after which every token it refuses has expired anyway.
    cutoff_retention: i64,
    audit: AuditLog,
    actor: Actor,
}

impl Accounts {
    /// Binds the operations to a store, hasher and clock; a user's token
    /// cutoff is kept `cutoff_retention` (the access-token lifetime plus
    /// leeway). Changes are audited as made by [`Actor::system`] until
    /// [`Accounts::acting`].
    pub fn new(
        store: Store,
        hasher: PasswordHasher,
        clock: SharedClock,
        cutoff_retention: std::time::Duration,
    ) -> Self {
        Self {
            cutoff_retention: seconds(cutoff_retention),
            audit: AuditLog::new(store.clone(), clock.clone()),
            store,
            hasher,
            clock,
            view: CutoffView::users(),
            actor: Actor::system(),
        }
    }

    /// The same operations, audited as made by `actor`.
    pub fn acting(&self, actor: Actor) -> Self {
        Self {
            actor,
            ..self.clone()
        }
    }

    /// The password hashing pool's counters (for `/metrics`).
    pub fn hash_load(&self) -> HashLoadSnapshot {
        self.hasher.load()
    }

    /// The users' token cutoffs, kept current by this instance's changes
    /// and by following the store (see `app`).
    pub fn status_view(&self) -> &CutoffView {
        &self.view
    }

    /// Creates a user with an argon2id password hash.
    pub async fn create(
        &self,
        username: &str,
        password: &SecretString,
        roles: Vec<String>,
    ) -> Result<User, AccountError> {
        validate_username(username)?;
        validate_password(password)?;
        let roles = normalize_roles(roles)?;
        let now = self.clock.now();
        let row = UserRow {
            id: uuid::Uuid::new_v4().to_string(),
            username: username.to_owned(),
            password_hash: self.hasher.hash(password).await?,
            roles,
            disabled: false,
            tokens_valid_after: 0,
            created_at: now,
            updated_at: now,
        };
        let entry = Entry::new(Event::UserCreated, &self.actor, &row.username).detail(format!(
            "id={} roles=[{}]",
            row.id,
            row.roles.join(",")
        ));
        self.store
            .insert_user(&row, &self.audit.prepare(&entry))
            .await?;
        entry.log();
        Ok(row.into())
    }

    /// Checks credentials. Unknown user, wrong password and disabled user
    /// all give [`AccountError::InvalidCredentials`] after the same work.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<User, AccountError> {
        let too_long = password.expose_secret().len() > MAX_PASSWORD_BYTES;
        let user = if too_long || validate_username(username).is_err() {
            None
        } else {
            self.store.find_user(username).await?
        };
        let matches = self
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await?;
        match user {
            Some(user) if matches && !too_long && !user.disabled => Ok(user.into()),
            _ => Err(AccountError::InvalidCredentials),
        }
    }

    /// Every user.
    pub async fn list(&self) -> Result<Vec<User>, AccountError> {
        Ok(self
            .store
            .list_users()
            .await?
            .into_iter()
            .map(User::from)
            .collect())
    }

    /// One user by username.
    pub async fn get(&self, username: &str) -> Result<User, AccountError> {
        // A name no user can have is looked up nowhere (a NUL in it is not
        // even storable text on PostgreSQL).
        validate_username(username).map_err(|_| AccountError::NotFound)?;
        self.store
            .find_user(username)
            .await?
            .map(User::from)
            .ok_or(AccountError::NotFound)
    }

    /// Applies a change. A new password, disabling, or removing a role
    /// revokes the user's refresh tokens and every access token issued
    /// until now (so a token can never carry a role its user lost; adding
    /// roles revokes nothing). Refused with [`AccountError::LastAdmin`] if
    /// it would leave no enabled admin; the check and the change happen
    /// under one lock, so two admins demoting each other at once cannot
    /// both succeed.
    pub async fn update(&self, username: &str, update: UserUpdate) -> Result<User, AccountError> {
        validate_username(username).map_err(|_| AccountError::NotFound)?;
        let roles = update.roles.map(normalize_roles).transpose()?;
        let password_hash = match &update.password {
            Some(password) => {
                validate_password(password)?;
                Some(self.hasher.hash(password).await?)
            }
            None => None,
        };
        let now = self.clock.now();
        let password_changed = password_hash.is_some();
        let mut changed = Vec::new();
        if let Some(roles) = &roles {
            changed.push(format!("roles=[{}]", roles.join(",")));
        }
        if password_changed {
            changed.push("password changed".to_owned());
        }
        if let Some(disabled) = update.disabled {
            changed.push(format!("disabled={disabled}"));
        }
        let entry = Entry::new(Event::UserChanged, &self.actor, username).detail(changed.join(" "));
        let mut roles_removed = false;
        let result = self
            .store
            .update_user(
                username,
                ADMIN_ROLE,
                now,
                self.cutoff_retention,
                &self.audit.prepare(&entry),
                |current, other_admins| {
                    let new_roles = roles.as_deref().unwrap_or(&current.roles);
                    let new_disabled = update.disabled.unwrap_or(current.disabled);
                    if is_enabled_admin(&current.roles, current.disabled)
                        && !is_enabled_admin(new_roles, new_disabled)
                        && other_admins == 0
                    {
                        return Err(AccountError::LastAdmin);
                    }
                    roles_removed = current.roles.iter().any(|r| !new_roles.contains(r));
                    let revokes =
                        password_changed || update.disabled == Some(true) || roles_removed;
                    Ok(UserChange {
                        roles,
                        password_hash,
                        disabled: update.disabled,
                        revoke_tokens_at: revokes.then_some(now),
                    })
                },
            )
            .await;
        let user = self.refused_if_last_admin(username, result).await?;
        if password_changed || update.disabled == Some(true) || roles_removed {
            self.view
                .cut_off(&user.id, user.tokens_valid_after, self.cutoff_retention);
        }
        entry.log();
        tracing::info!(
            user_id = %user.id,
            roles_removed,
            password_changed,
            disabled = ?update.disabled,
            tokens_revoked = password_changed || update.disabled == Some(true) || roles_removed,
            "user changed"
        );
        Ok(user.into())
    }

    /// Deletes a user and revokes all their tokens; refused with
    /// [`AccountError::LastAdmin`] for the last enabled admin.
    pub async fn delete(&self, username: &str) -> Result<(), AccountError> {
        validate_username(username).map_err(|_| AccountError::NotFound)?;
        let entry =
            Entry::new(Event::UserDeleted, &self.actor, username).detail("refresh tokens revoked");
        let now = self.clock.now();
        let result = self
            .store
            .delete_user(
                username,
                ADMIN_ROLE,
                now,
                self.cutoff_retention,
                &self.audit.prepare(&entry),
                |user, other_admins| {
                    if is_enabled_admin(&user.roles, user.disabled) && other_admins == 0 {
                        Err(AccountError::LastAdmin)
                    } else {
                        Ok(())
                    }
                },
            )
            .await;
        let user = self.refused_if_last_admin(username, result).await?;
        self.view.cut_off(&user.id, now, self.cutoff_retention);
        entry.log();
        Ok(())
    }

    /// Audits a change refused because it would leave no enabled admin.
    async fn refused_if_last_admin<T>(
        &self,
        username: &str,
        result: Result<T, AccountError>,
    ) -> Result<T, AccountError> {
        if let Err(AccountError::LastAdmin) = &result {
            let entry = Entry::new(Event::LastAdminProtected, &self.actor, username)
                .outcome(Outcome::Refused)
                .detail("would leave no enabled admin");
            self.audit.record(entry).await;
        }
        result
    }
}

/// A duration in whole seconds, saturating.
pub(crate) fn seconds(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn is_enabled_admin(roles: &[String], disabled: bool) -> bool {
    !disabled && roles.iter().any(|r| r == ADMIN_ROLE)
}

fn validate_username(username: &str) -> Result<(), AccountError> {
    let ok = !username.is_empty()
        && username.chars().count() <= MAX_USERNAME_CHARS
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AccountError::InvalidUsername)
    }
}

fn validate_password(password: &SecretString) -> Result<(), AccountError> {
    let password = password.expose_secret();
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        Err(AccountError::InvalidPassword)
    } else {
        Ok(())
    }
}

/// Validates role names, sorts them and removes duplicates.
pub fn normalize_roles(roles: Vec<String>) -> Result<Vec<String>, AccountError> {
    if roles.len() > MAX_ROLES {
        return Err(AccountError::InvalidRole);
    }
    let mut roles: Vec<String> = roles.into_iter().map(|r| r.trim().to_owned()).collect();
    for role in &roles {
        let ok = !role.is_empty()
            && role.len() <= MAX_ROLE_CHARS
            && role.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, ':' | '_' | '.' | '-')
            });
        if !ok {
            return Err(AccountError::InvalidRole);
        }
    }
    roles.sort();
    roles.dedup();
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(validate_username("alice").is_ok());
        assert!(validate_username("a.b-c_d@example.com").is_ok());
        for bad in ["", "a b", "ü", "x'; DROP TABLE users;--", &"a".repeat(65)] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roles_are_normalized() {
        assert_eq!(
            normalize_roles(vec!["b".into(), "admin".into(), "b".into()]).unwrap(),
            vec!["admin", "b"]
        );
        assert!(normalize_roles(vec!["Admin".into()]).is_err());
        assert!(normalize_roles(vec!["".into()]).is_err());
        assert!(normalize_roles(vec!["x".into(); 33]).is_err());
    }
}
