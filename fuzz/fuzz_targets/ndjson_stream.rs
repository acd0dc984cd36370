//! Upstream and caller bytes are untrusted: decode arbitrary bytes as an NDJSON stream. The logic lives
//! in the library (`airlock_decoders::ndjson::fuzz_stream`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    airlock_decoders::ndjson::fuzz_stream(data);
});
