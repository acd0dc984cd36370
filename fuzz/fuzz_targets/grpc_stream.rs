//! Upstream and caller bytes are untrusted: decode arbitrary bytes as a gRPC message stream. The logic lives
//! in the library (`airlock_decoders::grpc::fuzz_stream`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    airlock_decoders::grpc::fuzz_stream(data);
});
