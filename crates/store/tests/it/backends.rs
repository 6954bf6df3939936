//! Opening a store of each kind for a test, and running one story against both.

use std::sync::Arc;

use jiff::Timestamp;
use windlass_store::{ManualClock, Store};
use windlass_testkit::TempDir;
use windlass_testkit::postgres::TestDatabase;

/// Where a test's store lives; dropping it removes the file or database.
pub enum Place {
    Sqlite(TempDir),
    Postgres(TestDatabase),
}

impl Place {
    pub async fn sqlite() -> Self {
        Place::Sqlite(windlass_testkit::tempdir())
    }

    pub async fn postgres() -> Self {
        Place::Postgres(TestDatabase::create().await)
    }

    pub fn location(&self) -> String {
        match self {
            Place::Sqlite(dir) => dir.path().join("state").join("windlass.db").display().to_string(),
            Place::Postgres(db) => db.url.clone(),
        }
    }

    pub async fn open(&self, clock: &ManualClock) -> Arc<dyn Store> {
        windlass_store::open(&self.location(), Arc::new(clock.clone())).await.expect("open the store")
    }
}

/// 2026-11-23 15:00:00 UTC, a Monday.
pub fn start_time() -> Timestamp {
    "2026-11-23T15:00:00Z".parse().unwrap()
}

/// Runs each named story (an `async fn(Place)` in `stories`) once per backend.
macro_rules! stories {
    ($($story:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $story() {
                    super::$story(crate::backends::Place::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $story() {
                    super::$story(crate::backends::Place::postgres().await).await;
                }
            )*
        }
    };
}
pub(crate) use stories;
