//! The PostgreSQL driver (`driver`) and what it needs beyond the wire format (which lives in
//! `airlock_decoders::postgres`): the client side of the upstream authentication
//! (SCRAM-SHA-256) the gateway performs with the credential it holds.

mod driver;
mod mask;
pub mod scram;

pub(crate) use driver::{CancelKeys, serve};
