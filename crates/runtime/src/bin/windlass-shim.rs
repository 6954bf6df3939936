//! `windlass-shim <instance dir>`: supervises one instance's process; see `windlass_runtime::shim`.

use std::process::ExitCode;

fn main() -> ExitCode {
    windlass_runtime::shim::main()
}
