//! Everything Windlass writes may hold a secret (rendered specs, step output, tokens, the store),
//! so after a real deploy every file under its state directories is its owner's only.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::platform::Platform;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o7777
}

/// Walks `root`: every directory must be 0700, every file 0600 (a frozen executable 0700).
/// Returns how many files it checked.
pub(crate) fn assert_private_tree(root: &Path) -> usize {
    let mut problems = Vec::new();
    let mut files = 0;
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        if mode(&dir) != 0o700 {
            problems.push(format!("directory {} is {:o}", dir.display(), mode(&dir)));
        }
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                continue;
            }
            if meta.is_dir() {
                pending.push(path);
                continue;
            }
            files += 1;
            let mode = meta.permissions().mode() & 0o7777;
            if mode != 0o600 && !(mode == 0o700 && path.components().any(|c| c.as_os_str() == "artifacts")) {
                problems.push(format!("file {} is {mode:o}", path.display()));
            }
        }
    }
    assert!(problems.is_empty(), "not private:\n{}", problems.join("\n"));
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_deploy_every_file_windlass_wrote_is_0600_and_every_directory_0700() {
    let mut platform = Platform::maily("staging");
    // A state directory left world-readable (by an older Windlass, or by hand) is tightened on
    // the next start, with its store.
    platform.kill_server();
    let state = platform.state_dir();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(state.join("windlass.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    platform.start_server(&[]);
    platform.deploy(&["--reason", "private files"]);
    // A second deploy rewrites what the first wrote (specs, edge state, artifacts reused).
    platform.deploy(&["--reason", "again"]);

    let state_files = assert_private_tree(&state);
    for expected in ["windlass.db", "server-id", "instances", "artifacts"] {
        assert!(state.join(expected).exists(), "{expected} in {}", state.display());
    }
    assert!(state_files > 20, "instances' spec, shim, status and logs: {state_files} files");
    for name in ["spec.json", "shim.json", "status.json", "output.log", "shim.log"] {
        let instance = std::fs::read_dir(state.join("instances")).unwrap().next().unwrap().unwrap().path();
        assert_eq!(mode(&instance.join(name)), 0o600, "{}", instance.join(name).display());
    }
    // The project's own state beside the config: the app's SQLite database and its backups.
    assert_private_tree(&platform.path().join(".windlass"));
    // The edge's state file (outside the state directory here).
    assert_eq!(mode(&platform.path().join("edge.json")), 0o600);
}
