//! Response text reaches the masker in pieces the upstream chooses: arbitrary bytes, cut at an
//! input-chosen size, through the streaming text masker (whose output must not depend on the
//! cut) and the SSE body masker, or whole through the JSON document masker. The logic lives in
//! the library (`airlock::mask::fuzz_stream`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    airlock::mask::fuzz_stream(data);
});
