//! The `airlock` binary: see `airlock --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    airlock::cli::main()
}
