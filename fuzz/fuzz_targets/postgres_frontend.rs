//! Peer bytes are untrusted: decode arbitrary bytes as a PostgreSQL client stream. The logic lives in the
//! library (`airlock_decoders::postgres::frontend::fuzz_stream`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    airlock_decoders::postgres::frontend::fuzz_stream(data);
});
