//! Records read back from disk are untrusted: decode arbitrary bytes as a stored journal value.
//! The logic lives in the library (`airlock::journal::record::fuzz_decode`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    airlock::journal::record::fuzz_decode(data);
});
