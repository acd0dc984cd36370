//! The `airlock` binary: see `airlock --help`.

use std::process::ExitCode;

/// mimalloc instead of glibc malloc: buffers cross threads here (a worker allocates a record, the
/// journal writer frees it), and glibc's per-arena locks showed up as futex waits under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    airlock::cli::main()
}
