//! The SQLite store's files are private: they hold the ack-link secret, step output and rendered
//! commands.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::backends::{Place, start_time};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o7777
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[tokio::test]
async fn the_database_and_its_wal_and_shm_are_0600_new_or_tightened_on_open() {
    let place = Place::sqlite().await;
    let db = PathBuf::from(place.location());
    let clock = windlass_store::ManualClock::new(start_time());
    let store = place.open(&clock).await;
    store.set_setting("probe", "x").await.unwrap();
    assert_eq!(mode(db.parent().unwrap()), 0o700, "the directory made for the database");
    for file in [db.clone(), with_suffix(&db, "-wal"), with_suffix(&db, "-shm")] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    drop(store);

    // A store made by an older Windlass (world-readable files) is made private when opened.
    for suffix in ["", "-wal", "-shm"] {
        let file = with_suffix(&db, suffix);
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let store = place.open(&clock).await;
    store.set_setting("probe", "y").await.unwrap();
    for file in [db.clone(), with_suffix(&db, "-wal"), with_suffix(&db, "-shm")] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

/// A location with options after `?` (which Windlass sets itself, and which used to hide the file
/// from the checks above) is refused, saying what a location may be; nothing is created.
#[tokio::test]
async fn a_location_with_options_is_refused() {
    let dir = windlass_testkit::tempdir();
    let db = dir.path().join("state").join("windlass.db");
    let location = format!("sqlite://{}?mode=rwc", db.display());
    let clock = windlass_store::ManualClock::new(start_time());
    let Err(err) = windlass_store::SqlStore::open(&location, std::sync::Arc::new(clock)).await else {
        panic!("{location} was accepted")
    };
    assert!(err.to_string().contains("is not a state store location"), "{err}");
    assert!(!dir.path().join("state").exists(), "nothing is created for a refused location");
}
