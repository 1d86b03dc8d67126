//! Fixtures for storage tests: a fresh SQLite file, and a fresh PostgreSQL
//! database when `CITADEL_TEST_PG` names a server.

use crate::Store;

/// A store that is dropped together with its backing database or file.
pub(crate) struct TestStore {
    pub(crate) store: Store,
    _dir: Option<tempfile::TempDir>,
}

pub(crate) async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("citadel.db").display());
    TestStore {
        store: Store::open(&url).await.unwrap(),
        _dir: Some(dir),
    }
}

/// A fresh database on the server named by `CITADEL_TEST_PG`, or `None`
/// (and a note on stderr) when it is not set.
pub(crate) async fn postgres() -> Option<TestStore> {
    let Ok(base) = std::env::var("CITADEL_TEST_PG") else {
        crate::testing::say_skipped("CITADEL_TEST_PG is not set, PostgreSQL storage test not run");
        return None;
    };
    let url = crate::testing::fresh_postgres_database(&base).await;
    Some(TestStore {
        store: Store::open(&url).await.unwrap(),
        _dir: None,
    })
}

/// Runs `check` against SQLite, then against PostgreSQL if configured.
macro_rules! on_both_backends {
    ($check:ident) => {
        $check(&crate::test_util::sqlite().await.store).await;
        if let Some(pg) = crate::test_util::postgres().await {
            $check(&pg.store).await;
        }
    };
}
pub(crate) use on_both_backends;
