//! `/admin/*`: keys, users and OAuth clients. Every route requires the
//! `admin` role.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use secrecy::{ExposeSecret as _, SecretString};

use super::audit::actor;
use super::auth::BearerAuth;
use super::error::{NO_CACHE, NO_STORE};
use super::{ApiError, ApiTags, HttpState};
use crate::accounts::{Client, NewClient, User, UserUpdate};
use crate::keys::{KeyInfo, KeyState, KeysetInfo, SigningAlg};

/// A key's lifecycle state (see docs/key-rotation.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum KeyStateView {
    /// Published, not yet signing.
    Next,
    /// Signing.
    Current,
    /// Published, no longer signing.
    Retired,
    /// Out of the JWKS; its private half destroyed.
    Revoked,
}

impl From<KeyState> for KeyStateView {
    fn from(state: KeyState) -> Self {
        match state {
            KeyState::Next => Self::Next,
            KeyState::Current => Self::Current,
            KeyState::Retired => Self::Retired,
            KeyState::Revoked => Self::Revoked,
        }
    }
}

/// A signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum SigningAlgView {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    #[oai(rename = "RS256")]
    Rs256,
    /// Ed25519.
    #[oai(rename = "EdDSA")]
    EdDsa,
}

impl From<SigningAlg> for SigningAlgView {
    fn from(alg: SigningAlg) -> Self {
        match alg {
            SigningAlg::Rs256 => Self::Rs256,
            SigningAlg::EdDsa => Self::EdDsa,
        }
    }
}

/// A key as operators see it: never private material.
#[derive(Debug, Object)]
#[oai(example)]
pub struct KeyView {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// Signing algorithm.
    pub alg: SigningAlgView,
    /// Lifecycle state.
    pub state: KeyStateView,
    /// Generated or imported.
    pub created_at: DateTime<Utc>,
    /// First published in the JWKS.
    pub published_at: DateTime<Utc>,
    /// Started signing.
    pub activated_at: Option<DateTime<Utc>>,
    /// Stopped signing.
    pub retired_at: Option<DateTime<Utc>>,
    /// Revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Retired keys: when they leave the JWKS (all their tokens expired).
    pub prune_at: Option<DateTime<Utc>>,
}

impl Example for KeyView {
    fn example() -> Self {
        let at = |text: &str| text.parse().expect("an RFC 3339 example time");
        Self {
            kid: "NfKF-7l1_bn74BiT9QlcnGe1NoAmABGpwrJ7Yznxfu8".into(),
            alg: SigningAlgView::Rs256,
            state: KeyStateView::Current,
            created_at: at("2026-11-29T03:00:00Z"),
            published_at: at("2026-11-29T03:00:00Z"),
            activated_at: Some(at("2026-11-29T04:00:00Z")),
            retired_at: None,
            revoked_at: None,
            prune_at: None,
        }
    }
}

impl From<KeyInfo> for KeyView {
    fn from(k: KeyInfo) -> Self {
        Self {
            kid: k.kid,
            alg: k.alg.into(),
            state: k.state.into(),
            created_at: k.created_at,
            published_at: k.published_at,
            activated_at: k.activated_at,
            retired_at: k.retired_at,
            revoked_at: k.revoked_at,
            prune_at: k.prune_at,
        }
    }
}

/// The keyset.
#[derive(Debug, Object)]
pub struct KeyList {
    /// Every key, oldest first.
    pub keys: Vec<KeyView>,
    /// When the next scheduled rotation will happen.
    pub next_rotation_at: Option<DateTime<Utc>>,
}

impl From<KeysetInfo> for KeyList {
    fn from(info: KeysetInfo) -> Self {
        Self {
            keys: info.keys.into_iter().map(KeyView::from).collect(),
            next_rotation_at: info.next_rotation_at,
        }
    }
}

/// A user (never the password hash).
#[derive(Debug, Object)]
pub struct UserView {
    /// Stable id, the `sub` of the user's tokens.
    pub id: String,
    /// Login name.
    pub username: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Disabled users cannot log in and their tokens are refused.
    pub disabled: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

fn timestamp(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            username: u.username,
            roles: u.roles,
            disabled: u.disabled,
            created_at: timestamp(u.created_at),
            updated_at: timestamp(u.updated_at),
        }
    }
}

/// The users.
#[derive(Debug, Object)]
pub struct UserList {
    /// Every user, by username.
    pub users: Vec<UserView>,
}

/// A new user.
#[derive(Object)]
#[oai(example)]
pub struct CreateUser {
    /// 1-64 letters, digits, `.`, `_`, `-` or `@`.
    pub username: String,
    /// 8 to 1024 bytes.
    #[oai(write_only)]
    pub password: String,
    /// Role names, e.g. `admin`.
    #[oai(default)]
    pub roles: Vec<String>,
}

impl Example for CreateUser {
    fn example() -> Self {
        Self {
            username: "bob".into(),
            password: "correct horse battery".into(),
            roles: vec!["admin".into()],
        }
    }
}

/// Changes to a user; omitted fields stay as they are. A new password,
/// `disabled: true` or removing a role revokes the user's refresh tokens
/// and every access token issued before the change. 409 if the change
/// would leave no enabled admin.
#[derive(Object)]
pub struct UpdateUser {
    /// New roles (replace the old ones); effective in new tokens. Removing
    /// a role revokes the user's tokens; adding one revokes nothing.
    pub roles: Option<Vec<String>>,
    /// New password.
    #[oai(write_only)]
    pub password: Option<String>,
    /// Disable or enable the user.
    pub disabled: Option<bool>,
}

/// A registered OAuth client (never its secret).
#[derive(Debug, Object)]
pub struct ClientView {
    /// The client id: `sub` and `client_id` of its tokens.
    pub client_id: String,
    /// Scopes it may request.
    pub scopes: Vec<String>,
    /// Grant types it may use.
    pub grant_types: Vec<String>,
    /// `aud` of its tokens, when not the server's default.
    pub audience: Option<String>,
    /// Registered.
    pub created_at: DateTime<Utc>,
}

impl From<Client> for ClientView {
    fn from(c: Client) -> Self {
        Self {
            client_id: c.id,
            scopes: c.scopes,
            grant_types: c
                .grant_types
                .iter()
                .map(|g| g.as_str().to_owned())
                .collect(),
            audience: c.audience,
            created_at: timestamp(c.created_at),
        }
    }
}

/// The OAuth clients.
#[derive(Debug, Object)]
pub struct ClientList {
    /// Every client, by id.
    pub clients: Vec<ClientView>,
}

/// A new OAuth client.
#[derive(Object)]
#[oai(example)]
pub struct CreateClient {
    /// 1-64 letters, digits, `.`, `_`, `-` or `@`; `first-party` is reserved.
    pub client_id: String,
    /// Scopes the client may request (RFC 6749 scope tokens).
    #[oai(default)]
    pub scopes: Vec<String>,
    /// `aud` of its tokens; default `KEYTURN_AUDIENCE`.
    pub audience: Option<String>,
    /// Grant types it may use: `client_credentials` (the default) and/or
    /// `refresh_token`. An empty list makes a client that can only
    /// introspect and revoke (a resource server or gateway).
    pub grant_types: Option<Vec<String>>,
}

impl Example for CreateClient {
    fn example() -> Self {
        Self {
            client_id: "billing".into(),
            scopes: vec!["invoices:read".into(), "invoices:write".into()],
            audience: None,
            grant_types: None,
        }
    }
}

/// A registered client with its secret, shown this once.
#[derive(Debug, Object)]
pub struct CreatedClient {
    /// The client id.
    pub client_id: String,
    /// The secret (256 random bits, base64url). Only its SHA-256 is kept:
    /// store it now, it cannot be shown again.
    pub client_secret: String,
    /// Scopes it may request.
    pub scopes: Vec<String>,
    /// Grant types it may use.
    pub grant_types: Vec<String>,
    /// `aud` of its tokens, when not the server's default.
    pub audience: Option<String>,
    /// Registered.
    pub created_at: DateTime<Utc>,
}

#[derive(ApiResponse)]
pub enum ClientCreated {
    /// Registered. The response is not cacheable: it holds the secret.
    #[oai(status = 201)]
    Client(
        Json<CreatedClient>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
}

/// A client's new secret, shown this once.
#[derive(Debug, Object)]
pub struct RotatedSecret {
    /// The client id.
    pub client_id: String,
    /// The new secret (256 random bits, base64url). Only its SHA-256 is
    /// kept: store it now, it cannot be shown again.
    pub client_secret: String,
}

#[derive(ApiResponse)]
pub enum SecretRotated {
    /// Rotated: the old secret no longer authenticates and every token
    /// issued to the client until now is refused. Not cacheable: it holds
    /// the secret.
    #[oai(status = 200)]
    Secret(
        Json<RotatedSecret>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
}

#[derive(ApiResponse)]
pub enum ClientDeleted {
    /// Deleted; its tokens are refused and its refresh tokens revoked.
    #[oai(status = 204)]
    Done,
}

#[derive(ApiResponse)]
pub enum Created {
    /// Created.
    #[oai(status = 201)]
    User(Json<UserView>),
}

#[derive(ApiResponse)]
pub enum Deleted {
    /// Deleted; the user's tokens are revoked.
    #[oai(status = 204)]
    Done,
}

pub struct AdminApi {
    state: Arc<HttpState>,
}

impl AdminApi {
    pub fn new(state: Arc<HttpState>) -> Self {
        Self { state }
    }

    /// The keyset after a change (this instance already signs with it;
    /// others follow within a second).
    async fn key_list(&self) -> Result<Json<KeyList>, ApiError> {
        let now = self.state.clock.now();
        Ok(Json(self.state.keys.list(now).await?.into()))
    }
}

#[OpenApi(tag = "ApiTags::Admin")]
impl AdminApi {
    /// The signing keys: kids, algorithms, states and timestamps.
    #[oai(path = "/admin/keys", method = "get")]
    async fn list_keys(&self, auth: BearerAuth) -> Result<Json<KeyList>, ApiError> {
        auth.admin(&self.state.tokens)?;
        let keys = self.state.keys.list(self.state.clock.now()).await?;
        Ok(Json(keys.into()))
    }

    /// Rotate the signing keys now.
    ///
    /// The `next` key becomes `current`, the old `current` is retired (still
    /// published until its tokens expire), a new `next` is generated. 409 `rotation_too_early` while `next` has been published
    /// for less than `KEYTURN_KEY_PREPUBLISH`, unless `force=true` (verifiers
    /// holding an older JWKS then refetch on the unknown `kid`).
    #[oai(path = "/admin/keys/rotate", method = "post")]
    async fn rotate_keys(
        &self,
        req: &Request,
        auth: BearerAuth,
        #[oai(default)] force: Query<bool>,
    ) -> Result<Json<KeyList>, ApiError> {
        let admin = auth.admin(&self.state.tokens)?;
        let by = actor(&self.state, &admin, req);
        self.state.key_schedule.acting(by).rotate(force.0).await?;
        self.key_list().await
    }

    /// Revoke a key (emergency).
    ///
    /// The key leaves the JWKS at once, its private half is destroyed, and
    /// every token it signed is refused. If it was signing, the
    /// `next` key is promoted (or a key generated) so signing never stops.
    #[oai(path = "/admin/keys/:kid/revoke", method = "post")]
    async fn revoke_key(
        &self,
        req: &Request,
        auth: BearerAuth,
        kid: Path<String>,
    ) -> Result<Json<KeyList>, ApiError> {
        let admin = auth.admin(&self.state.tokens)?;
        let by = actor(&self.state, &admin, req);
        self.state.key_schedule.acting(by).revoke(&kid.0).await?;
        self.key_list().await
    }

    /// Every user.
    #[oai(path = "/admin/users", method = "get")]
    async fn list_users(&self, auth: BearerAuth) -> Result<Json<UserList>, ApiError> {
        auth.admin(&self.state.tokens)?;
        let users = self.state.accounts.list().await?;
        Ok(Json(UserList {
            users: users.into_iter().map(UserView::from).collect(),
        }))
    }

    /// Create a user. 409 if the username is taken.
    #[oai(path = "/admin/users", method = "post")]
    async fn create_user(
        &self,
        req: &Request,
        auth: BearerAuth,
        body: Json<CreateUser>,
    ) -> Result<Created, ApiError> {
        let admin = auth.admin(&self.state.tokens)?;
        let Json(CreateUser {
            username,
            password,
            roles,
        }) = body;
        let user = self
            .state
            .accounts
            .acting(actor(&self.state, &admin, req))
            .create(&username, &SecretString::from(password), roles)
            .await?;
        Ok(Created::User(Json(user.into())))
    }

    /// Change a user's roles, password or disabled flag. 409 if no enabled
    /// admin would be left.
    #[oai(path = "/admin/users/:username", method = "patch")]
    async fn update_user(
        &self,
        req: &Request,
        auth: BearerAuth,
        username: Path<String>,
        body: Json<UpdateUser>,
    ) -> Result<Json<UserView>, ApiError> {
        let admin = auth.admin(&self.state.tokens)?;
        let Json(UpdateUser {
            roles,
            password,
            disabled,
        }) = body;
        let user = self
            .state
            .accounts
            .acting(actor(&self.state, &admin, req))
            .update(
                &username.0,
                UserUpdate {
                    roles,
                    password: password.map(SecretString::from),
                    disabled,
                },
            )
            .await?;
        Ok(Json(user.into()))
    }

    /// Delete a user and revoke all their tokens. 409 for the last
    /// enabled admin.
    #[oai(path = "/admin/users/:username", method = "delete")]
    async fn delete_user(
        &self,
        req: &Request,
        auth: BearerAuth,
        username: Path<String>,
    ) -> Result<Deleted, ApiError> {
        let admin = auth.admin(&self.state.tokens)?;
        let by = actor(&self.state, &admin, req);
        self.state.accounts.acting(by).delete(&username.0).await?;
        Ok(Deleted::Done)
    }

    /// Every OAuth client (without secrets).
    #[oai(path = "/admin/clients", method = "get")]
    async fn list_clients(&self, auth: BearerAuth) -> Result<Json<ClientList>, ApiError> {
        auth.admin(&self.state.tokens)?;
        let clients = self.state.clients.list().await?;
        Ok(Json(ClientList {
            clients: clients.into_iter().map(ClientView::from).collect(),
        }))
    }

    /// Register an OAuth client. The response holds its secret, shown only
    /// this once. 409 if the client id is taken.
    #[oai(path = "/admin/clients", method = "post")]
    async fn create_client(
        &self,
        req: &Request,
        auth: BearerAuth,
        body: Json<CreateClient>,
    ) -> Result<ClientCreated, ApiError> {
        let admin = auth.admin(&self.state.tokens)?;
        let Json(CreateClient {
            client_id,
            scopes,
            audience,
            grant_types,
        }) = body;
        let (client, secret) = self
            .state
            .clients
            .acting(actor(&self.state, &admin, req))
            .create(NewClient {
                id: client_id,
                scopes,
                grant_types,
                audience,
            })
            .await?;
        let view = ClientView::from(client);
        Ok(ClientCreated::Client(
            Json(CreatedClient {
                client_id: view.client_id,
                client_secret: secret.expose_secret().to_owned(),
                scopes: view.scopes,
                grant_types: view.grant_types,
                audience: view.audience,
                created_at: view.created_at,
            }),
            NO_STORE.into(),
            NO_CACHE.into(),
        ))
    }

    /// Give an OAuth client a new secret, shown only this once. The old
    /// secret stops authenticating and every token issued to the client
    /// until now is refused.
    #[oai(path = "/admin/clients/:client_id/secret", method = "post")]
    async fn rotate_client_secret(
        &self,
        req: &Request,
        auth: BearerAuth,
        client_id: Path<String>,
    ) -> Result<SecretRotated, ApiError> {
        let admin = auth.admin(&self.state.tokens)?;
        let (client, secret) = self
            .state
            .clients
            .acting(actor(&self.state, &admin, req))
            .rotate_secret(&client_id.0)
            .await?;
        Ok(SecretRotated::Secret(
            Json(RotatedSecret {
                client_id: client.id,
                client_secret: secret.expose_secret().to_owned(),
            }),
            NO_STORE.into(),
            NO_CACHE.into(),
        ))
    }

    /// Delete an OAuth client: its access tokens are refused from now on
    /// and its refresh tokens revoked.
    #[oai(path = "/admin/clients/:client_id", method = "delete")]
    async fn delete_client(
        &self,
        req: &Request,
        auth: BearerAuth,
        client_id: Path<String>,
    ) -> Result<ClientDeleted, ApiError> {
        let admin = auth.admin(&self.state.tokens)?;
        let by = actor(&self.state, &admin, req);
        self.state.clients.acting(by).delete(&client_id.0).await?;
        Ok(ClientDeleted::Done)
    }
}
