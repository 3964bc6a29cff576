//! Building and running the server, the same way in production and tests:
//! `Application::build(settings)` binds (port 0 in tests), opens the store,
//! makes sure keys exist, loads the in-memory views and starts the poller
//! that keeps them in step with the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poem::listener::{Acceptor as _, Listener as _, TcpListener};

use crate::accounts::{
    Accounts, ClientAuthThrottle, Clients, HashError, LoginThrottle, PasswordHasher, ThrottlePolicy,
};
use crate::audit::{Actor, AuditLog, Entry, Event};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Settings;
use crate::http::{self, ClientAddr, HttpState};
use crate::keys::rotation::Policy;
use crate::keys::{
    KeyError, KeyManager, KeyScheduler, KeyringHandle, MasterKey, MasterKeyError, MasterKeys,
};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::token::{Login, TokenPolicy, Tokens};

/// How often a server checks the store for changes made by the CLI or by
/// other instances (keys, users, clients, revocations).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often expired entries leave the revocation list.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// How long a store notification waits before the poll it triggers, so a
/// burst of changes is read in one go.
const NOTIFY_COALESCE: Duration = Duration::from_millis(2);

/// Start-up failures; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The database.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The master key. Transparent: the message names the setting or file
    /// already, and a `{0}` here would print it twice in the CLI's one line
    /// (which joins the error's sources).
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
    /// Keys.
    #[error("keys: {0}")]
    Keys(#[from] KeyError),
    /// Password hashing.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The token-check rules built from the settings.
    #[error("token validation: {0}")]
    Validation(#[from] crate::verifier::BuildError),
    /// No master key where one must already exist.
    #[error(
        "no master key: {path} does not exist and KEYTURN_MASTER_KEY is unset (run `keyturn init` \
         for a new store, or point KEYTURN_KEYS_DIR or KEYTURN_MASTER_KEY at this store's key)"
    )]
    NoMasterKey {
        /// The key file looked for.
        path: std::path::PathBuf,
    },
    /// The store holds data but its master key is not here; a new one
    /// would seal keys nobody else can open.
    #[error(
        "the store already holds data but there is no master key at {path} and KEYTURN_MASTER_KEY \
         is unset; refusing to make a new one (point KEYTURN_KEYS_DIR or KEYTURN_MASTER_KEY at \
         this store's key)"
    )]
    MasterKeyMissingForStore {
        /// The key file looked for.
        path: std::path::PathBuf,
    },
    /// The master key is not the one the store was sealed with.
    #[error(
        "the master key from {source_name} is not the one this store is sealed with; refusing to \
         start or write (point KEYTURN_KEYS_DIR or KEYTURN_MASTER_KEY at this store's key)"
    )]
    MasterKeyMismatch {
        /// Where the wrong key came from.
        source_name: String,
    },
    /// `keyturn init` on a store that is in use.
    #[error("the store is already initialised (it has a master key check or data); nothing done")]
    AlreadyInitialised,
    /// Binding the listener.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
}

/// The domain services over one store, shared by the server and the CLI.
#[derive(Clone)]
pub struct Services {
    /// The store.
    pub store: Store,
    /// Key operations.
    pub keys: KeyManager,
    /// User operations.
    pub accounts: Accounts,
    /// OAuth client operations.
    pub clients: Clients,
    /// The audit trail.
    pub audit: AuditLog,
    /// The clock everything reads.
    pub clock: SharedClock,
    /// How long audit events are kept (`KEYTURN_AUDIT_RETENTION`).
    pub audit_retention: Duration,
}

/// Whether opening the services may make a new master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterKeyUse {
    /// `serve`: make `master.key` if there is none and the store is empty.
    CreateForEmptyStore,
    /// `init`: like `CreateForEmptyStore`, and refuse a store in use.
    Initialise,
    /// Every other command: the key must exist; nothing is created.
    MustExist,
}

/// Where the master key comes from, for messages (never the key).
pub fn master_key_location(settings: &Settings) -> String {
    if settings.master_key.is_some() {
        "KEYTURN_MASTER_KEY".to_owned()
    } else {
        let path = MasterKey::file_in(&settings.keys_dir);
        std::path::absolute(&path)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

/// The master keys from `KEYTURN_MASTER_KEY` (one, or a comma-separated
/// list during a master-key change) or else `keys_dir/master.key` and
/// `keys_dir/master.key.new`, if any is there; reads no store and creates
/// nothing.
fn existing_master_keys(settings: &Settings) -> Result<Option<MasterKeys>, MasterKeyError> {
    match &settings.master_key {
        Some(encoded) => MasterKeys::from_list(encoded, "KEYTURN_MASTER_KEY").map(Some),
        None => MasterKeys::load_dir(&settings.keys_dir),
    }
}

/// The master keys, checked against the store's check value (recorded on
/// first use, from the first key listed): one of them must be the store's.
/// A store without a check value that already holds keys (made before check
/// values existed) must have a key one of them opens.
async fn open_master_key(
    settings: &Settings,
    store: &Store,
    found: Option<MasterKeys>,
    usage: MasterKeyUse,
    now: i64,
) -> Result<MasterKeys, AppError> {
    let recorded = store.master_check().await?;
    let fresh = recorded.is_none() && store.is_empty().await?;
    if usage == MasterKeyUse::Initialise && !fresh {
        return Err(AppError::AlreadyInitialised);
    }
    let path = MasterKey::file_in(&settings.keys_dir);
    let master = match found {
        Some(master) => master,
        None if usage == MasterKeyUse::MustExist => return Err(AppError::NoMasterKey { path }),
        None if !fresh => return Err(AppError::MasterKeyMissingForStore { path }),
        None => MasterKey::create(&settings.keys_dir)?.into(),
    };
    let mismatch = || AppError::MasterKeyMismatch {
        source_name: master_key_location(settings),
    };
    let check = match recorded {
        Some(check) => check,
        None => {
            let keys = store.list_keys().await?;
            let sealed = keys
                .iter()
                .find_map(|row| Some((&row.kid, row.lifecycle.sealed()?)));
            let recording = match sealed {
                // The key that opens the store's keys, whichever is listed.
                Some((kid, sealed)) => master
                    .iter()
                    .find(|key| key.open(kid, sealed).is_ok())
                    .ok_or_else(mismatch)?,
                None => master.first(),
            };
            store
                .record_master_check(&recording.check_value(), now)
                .await?
        }
    };
    if master.holds(&check) {
        Ok(master)
    } else {
        Err(mismatch())
    }
}

impl Services {
    /// Opens the store (applying migrations) and the master key, which
    /// must exist already (see [`MasterKeyUse::MustExist`]).
    pub async fn open(settings: &Settings, clock: SharedClock) -> Result<Self, AppError> {
        Self::open_with(settings, clock, MasterKeyUse::MustExist).await
    }

    /// Opens the store and the master key as `usage` allows. Without a
    /// master key where one must exist, the store is not even opened, so
    /// nothing (no database file) is created.
    pub async fn open_with(
        settings: &Settings,
        clock: SharedClock,
        usage: MasterKeyUse,
    ) -> Result<Self, AppError> {
        let found = existing_master_keys(settings)?;
        if found.is_none() && usage == MasterKeyUse::MustExist {
            return Err(AppError::NoMasterKey {
                path: MasterKey::file_in(&settings.keys_dir),
            });
        }
        let store = Store::connect(&settings.database_url).await?;
        let audit = AuditLog::new(store.clone(), Arc::clone(&clock));
        let created = found.is_none();
        let master = open_master_key(settings, &store, found, usage, clock.now()).await?;
        if created {
            // Only reached when a new master key was made for an empty store.
            let actor = match usage {
                MasterKeyUse::Initialise => Actor::cli(),
                _ => Actor::system(),
            };
            let location = master_key_location(settings);
            let entry = Entry::new(Event::MasterKeyCreated, &actor, "master_key").detail(format!(
                "new master key at {location}; check value recorded"
            ));
            audit.record(entry).await;
        }
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let policy = Policy {
            alg: settings.signing_alg,
            schedule: settings.rotation_schedule.clone(),
            prepublish: secs(settings.key_prepublish),
            // A retired key stays until every token it signed has expired.
            retire_after: secs(settings.access_token_ttl).saturating_add(secs(settings.leeway)),
        };
        let keys = KeyManager::new(store.clone(), Arc::new(master), policy, settings.rsa_bits);
        // A cutoff is kept until every token it refuses has expired anyway.
        let cutoff_retention = settings.access_token_ttl + settings.leeway;
        let accounts = Accounts::new(
            store.clone(),
            PasswordHasher::owasp()?,
            Arc::clone(&clock),
            cutoff_retention,
        );
        let clients = Clients::new(store.clone(), Arc::clone(&clock), cutoff_retention);
        Ok(Self {
            store,
            keys,
            accounts,
            clients,
            audit,
            clock,
            audit_retention: settings.audit_retention,
        })
    }
}

/// A built server, bound and ready to run.
pub struct Application {
    local_addr: SocketAddr,
    acceptor: poem::listener::TcpAcceptor,
    endpoint: poem::endpoint::BoxEndpoint<'static>,
    services: Services,
    keyring: KeyringHandle,
    metrics: Arc<Metrics>,
    maintenance: Maintenance,
    background: AbortOnDrop,
    first_start: bool,
}

/// Aborts the background loop when the application (or the future serving
/// it) is dropped, even if it was never polled.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Application {
    /// Builds with the system clock.
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Builds with an injected clock (tests move time with it).
    pub async fn build_with_clock(
        settings: Settings,
        clock: SharedClock,
    ) -> Result<Self, AppError> {
        let services = Services::open_with(
            &settings,
            Arc::clone(&clock),
            MasterKeyUse::CreateForEmptyStore,
        )
        .await?;
        let first_start = services.store.list_keys().await?.is_empty();
        let metrics = Arc::new(Metrics::default());
        let keyring = KeyringHandle::default();
        let key_schedule = KeyScheduler::new(
            services.keys.clone(),
            keyring.clone(),
            Arc::clone(&metrics),
            Arc::clone(&clock),
        );
        // First keys, or the one rotation a server that was down has missed;
        // a failure here stops start-up.
        key_schedule.start().await?;
        services.clients.view().reload(&services.store).await?;

        let tokens = Tokens::new(
            keyring.clone(),
            services.accounts.status_view().clone(),
            services.clients.cutoffs().clone(),
            services.store.clone(),
            Arc::clone(&clock),
            TokenPolicy {
                issuer: settings.issuer.clone(),
                audience: settings.audience.clone(),
                access_ttl: settings.access_token_ttl,
                refresh_ttl: settings.refresh_token_ttl,
                refresh_absolute_ttl: settings.refresh_absolute_ttl,
                refresh_sessions_per_user: settings.refresh_sessions_per_user,
                leeway: settings.leeway,
                max_staleness: settings.max_staleness,
            },
        )?;
        tokens.follow_status().await?;
        let state = Arc::new(HttpState {
            store: services.store.clone(),
            keys: services.keys.clone(),
            key_schedule: key_schedule.clone(),
            keyring: keyring.clone(),
            accounts: services.accounts.clone(),
            clients: services.clients.clone(),
            tokens: tokens.clone(),
            issuer: settings.issuer.clone(),
            jwks_max_age: settings.jwks_max_age,
            clock: Arc::clone(&clock),
            metrics: Arc::clone(&metrics),
            login: Login::new(
                services.accounts.clone(),
                Arc::new(LoginThrottle::with_store(
                    services.store.clone(),
                    ThrottlePolicy::default(),
                    Arc::clone(&clock),
                )),
                tokens.clone(),
                Arc::clone(&metrics),
            ),
            client_auth: Arc::new(ClientAuthThrottle::new(
                services.clients.clone(),
                ThrottlePolicy::default(),
                Arc::clone(&clock),
            )),
            client_addr: ClientAddr::new(settings.trusted_proxies.clone()),
            cookies: crate::http::CookiePolicy {
                enabled: settings.cookies,
                secure: settings.cookie_secure,
                domain: settings.cookie_domain.clone(),
            },
            cors: crate::http::CorsPolicy::new(settings.cors_origins.clone()),
            audit: services.audit.clone(),
        });
        let acceptor = TcpListener::bind(settings.bind)
            .into_acceptor()
            .await
            .map_err(|error| AppError::Bind {
                addr: settings.bind,
                error,
            })?;
        let local_addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .unwrap_or(settings.bind);
        let endpoint =
            poem::EndpointExt::boxed(http::routes(state, &settings.issuer, settings.access_log));
        let maintenance = Maintenance {
            services: services.clone(),
            key_schedule,
            tokens,
        };
        let background = AbortOnDrop(tokio::spawn(maintenance.clone().run_forever()));
        Ok(Self {
            local_addr,
            acceptor,
            endpoint,
            services,
            keyring,
            metrics,
            maintenance,
            background,
            first_start,
        })
    }

    /// The background work, for running one pass on demand (tests that
    /// move the clock).
    pub fn maintenance(&self) -> &Maintenance {
        &self.maintenance
    }

    /// Whether this start created the keyset (the store had no keys).
    pub fn first_start(&self) -> bool {
        self.first_start
    }

    /// The bound address (the real port when built with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The domain services (tests and tools).
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The live keyring.
    pub fn keyring(&self) -> &KeyringHandle {
        &self.keyring
    }

    /// This instance's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Serves until Ctrl-C / SIGTERM, then drains for up to 10 seconds.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes. Dropping the returned future stops
    /// the background loop too (tests use that to stop a server).
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let _background = self.background;
        // Slow clients are bounded per request (headers and body); idle
        // keep-alive connections are closed after a minute.
        let served =
            poem::Server::new_with_acceptor(crate::http::SlowClientGuard::new(self.acceptor))
                .idle_timeout(Duration::from_secs(60))
                .run_with_graceful_shutdown(self.endpoint, shutdown, Some(Duration::from_secs(10)))
                .await;
        // Events queued by the last requests reach the trail before exit
        // (bounded: a store that is down has had its say in the log).
        let _ = tokio::time::timeout(Duration::from_secs(5), self.services.audit.flush()).await;
        served
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
}

/// The server's background work: the key schedule (rotation, pruning),
/// keeping the in-memory views (keyring, users, clients, revocations) in
/// step with the store, and dropping expired revocations.
#[derive(Clone)]
pub struct Maintenance {
    services: Services,
    key_schedule: KeyScheduler,
    tokens: Tokens,
}

impl Maintenance {
    /// Every [`POLL_INTERVAL`], one [`Maintenance::run_once`]; expired
    /// status entries are dropped every [`PRUNE_INTERVAL`]. On PostgreSQL a
    /// change committed anywhere also wakes the store poll at once (LISTEN/
    /// NOTIFY), so other instances see it within milliseconds; the timer
    /// stays as the fallback for notifications lost with a connection.
    async fn run_forever(self) {
        let wake = Arc::new(tokio::sync::Notify::new());
        let listen = wake_on_changes(self.services.store.clone(), Arc::clone(&wake));
        let work = async {
            let mut interval = tokio::time::interval(POLL_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_prune = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = interval.tick() => {
                        if last_prune.elapsed() >= PRUNE_INTERVAL {
                            last_prune = tokio::time::Instant::now();
                            self.prune().await;
                        }
                        self.run_once().await;
                    }
                    () = wake.notified() => {
                        // A burst of changes (many logouts) costs one poll.
                        tokio::time::sleep(NOTIFY_COALESCE).await;
                        self.poll_store().await;
                    }
                }
            }
        };
        tokio::select! {
            () = listen => {}
            () = work => {}
        }
    }

    /// Drops expired revocations, dead refresh-token families, ended login
    /// throttle windows, and audit events older than `KEYTURN_AUDIT_RETENTION`.
    pub async fn prune(&self) {
        match self
            .services
            .audit
            .prune(self.services.audit_retention)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "old audit events pruned"),
            Err(err) => tracing::warn!(error = %err, "audit pruning failed"),
        }
        match self.tokens.prune_status().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "expired status entries pruned"),
            Err(err) => tracing::warn!(error = %err, "status pruning failed"),
        }
        match self.tokens.prune_refresh_tokens().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "dead refresh tokens pruned"),
            Err(err) => tracing::warn!(error = %err, "refresh token pruning failed"),
        }
        let ended_by = self.services.clock.now() - ThrottlePolicy::default().window;
        match self.services.store.prune_login_throttle(ended_by).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "ended login throttle windows pruned"),
            Err(err) => tracing::warn!(error = %err, "login throttle pruning failed"),
        }
    }

    /// One pass: runs the key schedule, then reloads every view whose store
    /// version moved, so changes from the CLI or other instances are seen.
    /// Returns the time a due rotation was postponed to, if any.
    pub async fn run_once(&self) -> Option<i64> {
        let postponed = self.key_schedule.run_scheduled().await;
        self.poll_store().await;
        postponed
    }

    async fn poll_store(&self) {
        let services = &self.services;
        let versions = match services.store.versions().await {
            Ok(v) => v,
            Err(err) => {
                tracing::warn!(error = %err, "store poll failed; serving from memory");
                return;
            }
        };
        self.key_schedule.follow_store(versions.keys).await;
        let clients = services.clients.view();
        if versions.clients != clients.version()
            && let Err(err) = clients.reload(&services.store).await
        {
            tracing::warn!(error = %err, "client view reload failed");
        }
        if versions.status == self.tokens.status_version() {
            // Reached the store and nothing changed: the views are current.
            self.tokens.mark_synced();
        } else if let Err(err) = self.tokens.follow_status().await {
            tracing::warn!(error = %err, "status views could not catch up");
        }
    }
}

/// Wakes the store poll whenever the store announces a committed change
/// (PostgreSQL only; on SQLite it waits forever and the timer polls).
/// Reconnects after a lost connection, waking once then, since what was
/// announced meanwhile is lost.
async fn wake_on_changes(store: Store, wake: Arc<tokio::sync::Notify>) {
    loop {
        match store.listen_for_changes().await {
            Ok(None) => return std::future::pending().await,
            Ok(Some(mut listener)) => {
                wake.notify_one();
                while listener.changed().await.is_ok() {
                    wake.notify_one();
                }
                tracing::debug!("change listener lost the store; the timer polls meanwhile");
            }
            Err(err) => tracing::debug!(error = %err, "cannot listen for store changes yet"),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
