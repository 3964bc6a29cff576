//! OAuth clients: registration with a generated secret, authentication, and
//! the in-memory view of which clients exist (so a deleted client's tokens
//! are refused without a database query).
//!
//! Secrets are 256 random bits, shown once and stored as SHA-256: a fast
//! hash is enough for a generated high-entropy secret (PERFORMANCE.md), and
//! keeps client authentication cheap. Calls `store`; never imports `http`,
//! `cli` or `token`.
//!
//! Authentication reads the client from a bounded in-memory cache
//! ([`ClientCache`]) filled from the store on first use. Every change that
//! can make a cached client wrong (secret rotation, deletion, and so a
//! re-registration under the same id) records a client cutoff in the
//! status log; the cutoff view's generation moving drops the cache, on this
//! instance at once and on the others when they follow the log (well
//! under a second on PostgreSQL, the poll interval on SQLite), the same
//! bound as for the tokens those changes refuse. Client ids are not
//! secrets (RFC 6749 §2.2), so a cached client answering faster than an
//! unknown id tells nothing that must be hidden; the secret is compared in
//! constant time either way.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::{SecureRandom as _, SystemRandom};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::CutoffView;
use crate::audit::{Actor, AuditLog, Entry, Event};
use crate::clock::SharedClock;
use crate::store::{ClientRow, ClientStatusRow, Store, StoreError};

/// The built-in client of `POST /login` tokens; it cannot be registered.
pub const FIRST_PARTY_CLIENT_ID: &str = "first-party";
const MAX_CLIENT_ID_CHARS: usize = 64;
const MAX_SCOPE_CHARS: usize = 64;
const MAX_SCOPES: usize = 32;
const MAX_AUDIENCE_CHARS: usize = 256;
/// Presented secrets longer than this are refused before hashing.
const MAX_SECRET_BYTES: usize = 512;
/// Clients kept in the authentication cache; past it, one is dropped for
/// each added (about 300 bytes each).
const MAX_CACHED_CLIENTS: usize = 10_000;

/// Errors of client operations. Display texts are safe to show clients.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The client id breaks the naming rules.
    #[error("client_id must be 1-64 characters of letters, digits, '.', '_', '-' or '@'")]
    InvalidClientId,
    /// `first-party` is the built-in client of `/login`.
    #[error("client_id \"first-party\" is reserved")]
    ReservedClientId,
    /// A scope breaks the naming rules.
    #[error(
        "scopes must be at most 32 names of 1-64 printable ASCII characters without spaces, '\"' or '\\'"
    )]
    InvalidScope,
    /// The audience breaks the rules.
    #[error("audience must be 1-256 printable ASCII characters without spaces")]
    InvalidAudience,
    /// Not a grant type clients can be allowed.
    #[error("grant_types may contain only \"client_credentials\" and \"refresh_token\"")]
    InvalidGrantType,
    /// The id is taken.
    #[error("a client with this client_id already exists")]
    ClientIdTaken,
    /// No such client.
    #[error("no such client")]
    NotFound,
    /// Unknown client or wrong secret: deliberately one error.
    #[error("client authentication failed")]
    InvalidCredentials,
    /// The system's random generator failed.
    #[error("no system randomness")]
    Random,
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ClientError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict => Self::ClientIdTaken,
            StoreError::NotFound => Self::NotFound,
            other => Self::Store(other),
        }
    }
}

/// A grant type a client may be allowed to use at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GrantType {
    /// `client_credentials`: tokens for the client itself.
    ClientCredentials,
    /// `refresh_token`: rotating refresh tokens issued to this client.
    RefreshToken,
}

impl GrantType {
    /// The RFC 6749 name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::RefreshToken => "refresh_token",
        }
    }
}

impl fmt::Display for GrantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GrantType {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "client_credentials" => Ok(Self::ClientCredentials),
            "refresh_token" => Ok(Self::RefreshToken),
            _ => Err(ClientError::InvalidGrantType),
        }
    }
}

/// A registered client as the rest of the system sees it (no secret hash).
#[derive(Debug, Clone)]
pub struct Client {
    /// The client id.
    pub id: String,
    /// Scopes it may request (sorted).
    pub scopes: Vec<String>,
    /// Grant types it may use.
    pub grant_types: Vec<GrantType>,
    /// `aud` of its tokens; `None` means the server's default audience.
    pub audience: Option<String>,
    /// Registration time (Unix seconds).
    pub created_at: i64,
    /// Tokens of this client id issued at or before this time (Unix
    /// seconds) are refused: the last secret rotation or deletion.
    pub tokens_valid_after: i64,
}

impl Client {
    /// Whether the client may use this grant.
    pub fn allows(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }
}

impl TryFrom<ClientRow> for Client {
    type Error = ClientError;
    fn try_from(row: ClientRow) -> Result<Self, Self::Error> {
        let grant_types = row
            .grant_types
            .iter()
            .map(|g| g.parse())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                ClientError::Store(StoreError::Corrupt(format!(
                    "grant types of client {}",
                    row.client_id
                )))
            })?;
        Ok(Self {
            id: row.client_id,
            scopes: row.scopes,
            grant_types,
            audience: row.audience,
            created_at: row.created_at,
            tokens_valid_after: row.tokens_valid_after,
        })
    }
}

/// What a client sends to authenticate (RFC 6749 §2.3.1).
pub struct ClientCredentials {
    /// `client_id`.
    pub id: String,
    /// `client_secret`.
    pub secret: SecretString,
}

/// A new client's registration.
#[derive(Debug, Default, Clone)]
pub struct NewClient {
    /// The client id.
    pub id: String,
    /// Allowed scopes.
    pub scopes: Vec<String>,
    /// Allowed grant types; `None` means `client_credentials` only.
    pub grant_types: Option<Vec<String>>,
    /// `aud` of its tokens; `None` means the server's default.
    pub audience: Option<String>,
}

/// In-memory view of the registered clients (for discovery's
/// `scopes_supported`), refreshed from the store when they change. Whether a
/// client's token is still acceptable is the [`CutoffView`]'s answer.
#[derive(Clone, Default)]
pub struct ClientView {
    inner: Arc<ArcSwap<ClientStatus>>,
}

#[derive(Default)]
struct ClientStatus {
    version: i64,
    clients: HashMap<String, ClientStatusRow>,
}

impl ClientView {
    /// Every scope some client may request, sorted.
    pub fn scopes_supported(&self) -> Vec<String> {
        let snapshot = self.snapshot();
        let scopes: BTreeSet<&String> = snapshot
            .clients
            .values()
            .flat_map(|c| c.scopes.iter())
            .collect();
        scopes.into_iter().cloned().collect()
    }

    /// The store version this view reflects.
    pub fn version(&self) -> i64 {
        self.snapshot().version
    }

    fn snapshot(&self) -> Arc<ClientStatus> {
        self.inner.load_full()
    }

    /// Reloads from the store.
    pub async fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let version = store.versions().await?.clients;
        let clients = store
            .client_status_rows()
            .await?
            .into_iter()
            .map(|c| (c.client_id.clone(), c))
            .collect();
        self.inner
            .store(Arc::new(ClientStatus { version, clients }));
        Ok(())
    }
}

/// Registered clients as last read from the store, with their secret
/// hashes, for [`Clients::authenticate`] (see the module's comment).
#[derive(Clone)]
struct ClientCache {
    entries: Arc<RwLock<HashMap<String, Cached>>>,
    /// Moves whenever a client cutoff is applied: what was cached before
    /// is no longer trusted.
    changes: CutoffView,
}

#[derive(Clone)]
struct Cached {
    client: Client,
    secret_hash: [u8; 32],
    /// The cutoff view's generation when the row was read.
    generation: u64,
}

impl Cached {
    /// Whether `presented` (a secret's SHA-256) is this client's, in
    /// constant time.
    fn matches(&self, presented: &[u8; 32]) -> bool {
        self.secret_hash.ct_eq(presented).into()
    }
}

impl ClientCache {
    fn new(changes: CutoffView) -> Self {
        Self {
            entries: Arc::default(),
            changes,
        }
    }

    /// The cached client, unless a client change was applied since it was
    /// read.
    fn get(&self, client_id: &str) -> Option<Cached> {
        let generation = self.changes.log().generation();
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(client_id)
            .filter(|c| c.generation == generation)
            .cloned()
    }

    /// Reads the client from the store and caches it (with the generation
    /// seen *before* the read, so a change applied meanwhile makes the
    /// entry stale rather than lost).
    async fn load(&self, store: &Store, client_id: &str) -> Result<Option<Cached>, ClientError> {
        let generation = self.changes.log().generation();
        let Some(row) = store.find_client(client_id).await? else {
            return Ok(None);
        };
        let secret_hash = B64
            .decode(&row.secret_hash)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .ok_or_else(|| {
                ClientError::Store(StoreError::Corrupt(format!(
                    "secret hash of client {client_id}"
                )))
            })?;
        let cached = Cached {
            client: row.try_into()?,
            secret_hash,
            generation,
        };
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_CACHED_CLIENTS && !entries.contains_key(client_id) {
            let evicted = entries.keys().next().cloned();
            if let Some(evicted) = evicted {
                entries.remove(&evicted);
            }
        }
        entries.insert(client_id.to_owned(), cached.clone());
        Ok(Some(cached))
    }
}

/// Client operations.
#[derive(Clone)]
pub struct Clients {
    store: Store,
    clock: SharedClock,
    view: ClientView,
    cutoffs: CutoffView,
    cache: ClientCache,
    /// How long a client's cutoff is kept (access-token lifetime + leeway).
    cutoff_retention: i64,
    audit: AuditLog,
    actor: Actor,
}

impl Clients {
    /// Binds the operations to a store and clock; a client's token cutoff is
    /// kept `cutoff_retention` (access-token lifetime + leeway). Changes are
    /// audited as made by [`Actor::system`] until [`Clients::acting`].
    pub fn new(store: Store, clock: SharedClock, cutoff_retention: std::time::Duration) -> Self {
        let cutoffs = CutoffView::clients();
        Self {
            cutoff_retention: super::seconds(cutoff_retention),
            audit: AuditLog::new(store.clone(), clock.clone()),
            store,
            clock,
            view: ClientView::default(),
            cache: ClientCache::new(cutoffs.clone()),
            cutoffs,
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

    /// The view kept current by this instance's changes and by polling.
    pub fn view(&self) -> &ClientView {
        &self.view
    }

    /// The client ids' token cutoffs, kept current by this instance's
    /// changes and by following the store (see `app`).
    pub fn cutoffs(&self) -> &CutoffView {
        &self.cutoffs
    }

    /// Registers a client and returns it with its secret, which is not
    /// stored and cannot be shown again.
    pub async fn create(&self, new: NewClient) -> Result<(Client, SecretString), ClientError> {
        validate_client_id(&new.id)?;
        let scopes = normalize_scopes(new.scopes)?;
        let grant_types = match new.grant_types {
            None => vec![GrantType::ClientCredentials],
            Some(names) => {
                let set: BTreeSet<GrantType> = names
                    .iter()
                    .map(|n| n.trim().parse())
                    .collect::<Result<_, _>>()?;
                set.into_iter().collect()
            }
        };
        let audience = new.audience.map(|a| a.trim().to_owned());
        if let Some(audience) = &audience {
            validate_audience(audience)?;
        }
        let secret = generate_secret()?;
        let row = ClientRow {
            client_id: new.id,
            secret_hash: secret_hash(&secret),
            scopes,
            grant_types: grant_types.iter().map(|g| g.as_str().to_owned()).collect(),
            audience,
            created_at: self.clock.now(),
            // Not written: a cutoff left by an earlier client of this id stays.
            tokens_valid_after: 0,
        };
        let entry = Entry::new(Event::ClientCreated, &self.actor, &row.client_id).detail(format!(
            "scopes=[{}] grant_types=[{}]",
            row.scopes.join(","),
            row.grant_types.join(",")
        ));
        self.store
            .insert_client(&row, &self.audit.prepare(&entry))
            .await?;
        self.refresh_view().await;
        entry.log();
        let client = self.get(&row.client_id).await?;
        Ok((client, secret))
    }

    /// Gives a client a new secret, returned this once. The old secret stops
    /// authenticating at once, and every token issued to the client until
    /// now is refused (on this instance at once, on others at their next
    /// view refresh).
    pub async fn rotate_secret(
        &self,
        client_id: &str,
    ) -> Result<(Client, SecretString), ClientError> {
        validate_client_id(client_id).map_err(|_| ClientError::NotFound)?;
        let secret = generate_secret()?;
        let entry = Entry::new(Event::ClientSecretRotated, &self.actor, client_id)
            .detail("new secret issued; earlier tokens refused");
        let now = self.clock.now();
        let row = self
            .store
            .rotate_client_secret(
                client_id,
                &secret_hash(&secret),
                now,
                self.cutoff_retention,
                &self.audit.prepare(&entry),
            )
            .await?;
        self.cutoffs.cut_off(client_id, now, self.cutoff_retention);
        self.refresh_view().await;
        entry.log();
        Ok((row.try_into()?, secret))
    }

    /// Checks a client's credentials in constant time, from the cache when
    /// it holds the client and the secret matches. Anything else (not
    /// cached, or a secret other than the cached one, which may have been
    /// rotated on another instance a moment ago) is checked against the
    /// store, so a new secret works everywhere at once. Unknown client and
    /// wrong secret both give [`ClientError::InvalidCredentials`].
    pub async fn authenticate(
        &self,
        credentials: &ClientCredentials,
    ) -> Result<Client, ClientError> {
        let Some(presented) = presented_hash(credentials) else {
            return Err(ClientError::InvalidCredentials);
        };
        if let Some(client) = self.cached_match(&credentials.id, &presented) {
            return Ok(client);
        }
        if validate_client_id(&credentials.id).is_err() {
            return Err(ClientError::InvalidCredentials);
        }
        match self.cache.load(&self.store, &credentials.id).await? {
            Some(loaded) if loaded.matches(&presented) => Ok(loaded.client),
            // Unknown client and wrong secret: both cost one store read.
            _ => Err(ClientError::InvalidCredentials),
        }
    }

    /// The client, if the cache holds it and `credentials` carry its
    /// secret (compared in constant time); `None` says only that the store
    /// must be asked. No I/O: a correct secret presented for a cached
    /// client needs no throttle (see `ClientAuthThrottle`).
    pub fn authenticate_cached(&self, credentials: &ClientCredentials) -> Option<Client> {
        self.cached_match(&credentials.id, &presented_hash(credentials)?)
    }

    fn cached_match(&self, client_id: &str, presented: &[u8; 32]) -> Option<Client> {
        let cached = self.cache.get(client_id)?;
        cached.matches(presented).then_some(cached.client)
    }

    /// Every client.
    pub async fn list(&self) -> Result<Vec<Client>, ClientError> {
        self.store
            .list_clients()
            .await?
            .into_iter()
            .map(Client::try_from)
            .collect()
    }

    /// One client by id.
    pub async fn get(&self, client_id: &str) -> Result<Client, ClientError> {
        validate_client_id(client_id).map_err(|_| ClientError::NotFound)?;
        self.store
            .find_client(client_id)
            .await?
            .ok_or(ClientError::NotFound)?
            .try_into()
    }

    /// Deletes a client: its refresh tokens are revoked and its access
    /// tokens refused from now on.
    pub async fn delete(&self, client_id: &str) -> Result<(), ClientError> {
        validate_client_id(client_id).map_err(|_| ClientError::NotFound)?;
        let entry = Entry::new(Event::ClientDeleted, &self.actor, client_id)
            .detail("tokens refused, refresh tokens revoked");
        let now = self.clock.now();
        self.store
            .delete_client(
                client_id,
                now,
                self.cutoff_retention,
                &self.audit.prepare(&entry),
            )
            .await?;
        self.cutoffs.cut_off(client_id, now, self.cutoff_retention);
        self.refresh_view().await;
        entry.log();
        Ok(())
    }

    async fn refresh_view(&self) {
        if let Err(err) = self.view.reload(&self.store).await {
            // The poller will catch up; the change itself is committed.
            tracing::warn!(error = %err, "could not refresh the client view");
        }
    }
}

/// SHA-256 of the presented secret, hashed once per authentication; `None`
/// for a secret too long to be one of ours (refused before hashing).
fn presented_hash(credentials: &ClientCredentials) -> Option<[u8; 32]> {
    let secret = credentials.secret.expose_secret();
    (secret.len() <= MAX_SECRET_BYTES).then(|| Sha256::digest(secret.as_bytes()).into())
}

/// What the store keeps of a secret: base64url SHA-256.
fn secret_hash(secret: &SecretString) -> String {
    B64.encode(Sha256::digest(secret.expose_secret().as_bytes()))
}

/// 256 random bits, base64url.
fn generate_secret() -> Result<SecretString, ClientError> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(bytes.as_mut())
        .map_err(|_| ClientError::Random)?;
    Ok(SecretString::from(B64.encode(bytes.as_ref())))
}

fn validate_client_id(id: &str) -> Result<(), ClientError> {
    let ok = !id.is_empty()
        && id.chars().count() <= MAX_CLIENT_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !ok {
        Err(ClientError::InvalidClientId)
    } else if id == FIRST_PARTY_CLIENT_ID {
        Err(ClientError::ReservedClientId)
    } else {
        Ok(())
    }
}

/// Whether `scope` is a valid RFC 6749 §3.3 scope token of sane length.
pub fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope.len() <= MAX_SCOPE_CHARS
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// Validates scope names, sorts them and removes duplicates.
pub fn normalize_scopes(scopes: Vec<String>) -> Result<Vec<String>, ClientError> {
    if scopes.len() > MAX_SCOPES {
        return Err(ClientError::InvalidScope);
    }
    let set: BTreeSet<String> = scopes.into_iter().map(|s| s.trim().to_owned()).collect();
    if set.iter().all(|s| is_scope_token(s)) {
        Ok(set.into_iter().collect())
    } else {
        Err(ClientError::InvalidScope)
    }
}

fn validate_audience(audience: &str) -> Result<(), ClientError> {
    let ok = !audience.is_empty()
        && audience.len() <= MAX_AUDIENCE_CHARS
        && audience.bytes().all(|b| (0x21..=0x7E).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ClientError::InvalidAudience)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids() {
        assert!(validate_client_id("billing-service").is_ok());
        assert!(matches!(
            validate_client_id("first-party"),
            Err(ClientError::ReservedClientId)
        ));
        for bad in ["", "a b", "a:b", "ü", &"c".repeat(65)] {
            assert!(validate_client_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scopes_are_normalized() {
        assert_eq!(
            normalize_scopes(vec!["b".into(), "a:read".into(), "b".into()]).unwrap(),
            vec!["a:read", "b"]
        );
        for bad in ["", "a b", "a\"b", "a\\b", "é"] {
            assert!(normalize_scopes(vec![bad.into()]).is_err(), "{bad}");
        }
        assert!(normalize_scopes(vec!["x".into(); 33]).is_err());
    }

    #[test]
    fn secrets_are_256_bits() {
        let secret = generate_secret().unwrap();
        assert_eq!(B64.decode(secret.expose_secret()).unwrap().len(), 32);
        assert_ne!(
            secret.expose_secret(),
            generate_secret().unwrap().expose_secret()
        );
    }
}
