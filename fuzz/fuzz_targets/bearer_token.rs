//! Bearer credentials come straight from callers: parse arbitrary bytes as a token header and
//! claims. The logic lives in the library (`airlock::identity::jwt::fuzz_peek`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    airlock::identity::jwt::fuzz_peek(data);
});
