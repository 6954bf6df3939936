//! `windlass-shim <instance dir>`: supervises one instance's process; see `windlass_runtime::shim`.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Defence in depth: what the shim writes (`status.json`, `output.log`, `shim.log`) is created
    // 0600 explicitly; the umask also covers anything created without a mode. The instance
    // inherits it.
    windlass_failpoint::private::restrict_umask();
    windlass_runtime::shim::main()
}
