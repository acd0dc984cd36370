//! Upstream and caller bytes are untrusted: decode arbitrary bytes as a JSON-RPC body. The logic lives
//! in the library (`airlock_decoders::jsonrpc::fuzz_body`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    airlock_decoders::jsonrpc::fuzz_body(data);
});
