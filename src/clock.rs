//! Time as an input: the verifier's [`Clock`] (one clock for token times on
//! the server's routes and in the verifier library), and the shared handle
//! the server passes around.

pub use crate::verifier::clock::{Clock, ManualClock, SystemClock};

/// Shared clock handle.
pub type SharedClock = std::sync::Arc<dyn Clock>;
