//! The crate's error type. Each variant says which side failed; callers never see these texts —
//! drivers turn failures into closes and journal records.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::journal::JournalError;

/// A failure to start or run the gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid (internal: fix the file).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The journal failed (internal).
    #[error(transparent)]
    Journal(Arc<JournalError>),
    /// An address could not be bound (internal: the port is taken or not permitted).
    #[error("{what}: cannot listen on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: String,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The session runtimes could not be started (internal: threads or the OS's limits).
    #[error("cannot start the session runtimes: {0}")]
    Runtime(std::io::Error),
}

impl From<JournalError> for Error {
    fn from(e: JournalError) -> Self {
        Self::Journal(Arc::new(e))
    }
}

impl From<Arc<JournalError>> for Error {
    fn from(e: Arc<JournalError>) -> Self {
        Self::Journal(e)
    }
}
