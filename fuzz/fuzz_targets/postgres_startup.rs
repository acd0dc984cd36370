//! Peer bytes are untrusted: decode arbitrary bytes as the start of a PostgreSQL client connection
//! (SSLRequest, startup packet, CancelRequest). The logic lives in the library
//! (`airlock_decoders::postgres::startup::fuzz_stream`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    airlock_decoders::postgres::startup::fuzz_stream(data);
});
