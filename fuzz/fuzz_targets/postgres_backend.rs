//! Peer bytes are untrusted: decode arbitrary bytes as a PostgreSQL server stream. The logic lives in the
//! library (`airlock_decoders::postgres::backend::fuzz_stream`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    airlock_decoders::postgres::backend::fuzz_stream(data);
});
