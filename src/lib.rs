//! keyturn: an authentication server that signs JWT access tokens with
//! asymmetric keys that rotate on a schedule, publishes them as a JWKS, and a
//! verifier library for resource servers.
//!
//! | feature    | what it brings |
//! |------------|----------------|
//! | `verifier` | [`verifier`]: validate tokens from a JWKS by `kid` |
//! | `poem`     | the verifier's poem extractor/middleware |
//! | `server` (default) | the server, CLI and everything they need |
//!
//! A resource server depends on
//! `keyturn = { default-features = false, features = ["verifier"] }`.

#![forbid(unsafe_code)]

#[cfg(feature = "verifier")]
pub mod verifier;

#[cfg(feature = "server")]
pub mod accounts;
#[cfg(feature = "server")]
pub mod app;
#[cfg(feature = "server")]
pub mod audit;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod clock;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod keys;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod telemetry;
#[cfg(feature = "server")]
pub mod token;

#[cfg(feature = "server")]
pub use app::{Application, Services};
#[cfg(feature = "server")]
pub use config::Settings;
