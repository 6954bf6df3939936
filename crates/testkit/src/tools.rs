//! The real outside tools the secrets tests talk to, named by the environment `.ci/run` sets:
//! a sops 3.x binary and an OpenBao dev server. Without them a test fails saying how to provide
//! them; it never skips silently.

use std::path::PathBuf;

fn required(var: &str, how: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: {how}"))
}

/// `WINDLASS_TEST_SOPS`: the real sops binary (run it with SOPS_DISABLE_VERSION_CHECK=1).
pub fn sops() -> PathBuf {
    PathBuf::from(required(
        "WINDLASS_TEST_SOPS",
        "set it to the path of a real sops 3.x binary (locally: WINDLASS_TEST_SOPS=$PWD/.venv-tools/bin/sops)",
    ))
}

/// `WINDLASS_TEST_BAO_ADDR`: an OpenBao dev server with KV v2 at `secret/`.
pub fn bao_addr() -> String {
    required(
        "WINDLASS_TEST_BAO_ADDR",
        "start `bao server -dev -dev-root-token-id=root -dev-listen-address=127.0.0.1:18200` and set \
         WINDLASS_TEST_BAO_ADDR=http://127.0.0.1:18200",
    )
}

/// `WINDLASS_TEST_BAO_TOKEN`: that server's root token.
pub fn bao_token() -> String {
    required("WINDLASS_TEST_BAO_TOKEN", "set it to the OpenBao dev server's root token (such as `root`)")
}

/// `WINDLASS_TEST_BAO_BIN`: the `bao` (or `vault`) binary, for tests that run a server of their own.
pub fn bao_bin() -> String {
    required(
        "WINDLASS_TEST_BAO_BIN",
        "set it to the path of the `bao` (or `vault`) binary (locally: WINDLASS_TEST_BAO_BIN=$PWD/.venv-tools/bin/bao)",
    )
}

/// A name no other test (or earlier run) uses: `<tag>-<pid>-<nanos>`, for paths on a shared server.
pub fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{tag}-{}-{nanos}", std::process::id())
}
