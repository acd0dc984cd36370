//! The PostgreSQL driver's building blocks. The wire format itself lives in
//! `airlock_decoders::postgres`; this module holds what needs I/O or cryptography: the client side
//! of the upstream authentication (SCRAM-SHA-256) the gateway performs with the credential it
//! holds.

pub mod scram;
