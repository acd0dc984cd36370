//! Airlock: a Layer-7 gateway that stands between callers and the systems that hold protected
//! health information, and proves afterwards exactly what crossed it.
//!
//! This crate holds the runtime, the protocol drivers, the journal, the admin API, the config and
//! the CLI. The data path of a session: [`listener`] accepts, a driver in [`proto`] journals the
//! session-open record (write-ahead), connects the upstream, and streams both ways, recording each
//! chunk in the [`journal`] before (strict) or as (batched) it is forwarded.

pub mod admin;
pub mod cli;
pub mod config;
pub mod deny;
mod error;
pub mod filter;
pub mod gateway;
pub mod identity;
pub mod journal;
pub mod listener;
pub mod mask;
pub mod outbound;
pub mod policy;
pub mod proto;
mod shards;
pub mod time;
pub mod tls;

pub use error::Error;
pub use gateway::Gateway;

/// The seed corpus of a fuzz target, for the tests that run it: found from the directory cargo
/// runs the test in (a test binary reused from a build in another checkout would otherwise look
/// in that checkout).
#[cfg(test)]
pub(crate) fn fuzz_corpus(target: &str) -> std::path::PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    std::path::Path::new(&manifest).join("../fuzz/corpus").join(target)
}
