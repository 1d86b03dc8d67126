//! Persistence for Citadel behind one [`Store`] type with two backends:
//! SQLite (the embedded default, WAL mode, `synchronous=FULL` so a commit is
//! durable) and PostgreSQL (cluster mode). Both run the same queries through
//! sqlx's `Any` driver; only the DDL differs, kept side by side in
//! `migrations/sqlite` and `migrations/postgres` with the same versions.
//!
//! Non-features: no caching (callers keep hot state in memory and watch
//! [`Store::enforcement_version`]), no business rules (who may create a key is
//! policy's concern), and no encryption (that belongs to `citadel-crypto`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod captures;
mod consent;
mod data_keys;
mod devices;
mod events;
mod identity;
mod keys;
mod log;
mod migrate;
mod users;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

pub use captures::{CaptureRecord, PseudonymRecord};
pub use consent::ConsentRecord;
pub use data_keys::DataKeyRecord;
pub use devices::{DeviceRecord, RiskRecord, WorkloadRecord};
pub use events::{EventAppender, EventQuery, EventRow, LoggedEvent};
pub use identity::{PasskeyRecord, SessionRecord, ThrottleState, TotpRecord, UserCredentials};
pub use keys::ApiKeyRecord;
pub use log::{BundleText, EntryColumns, LogEntry, StoredCheckpoint};
pub use users::{RoleRecord, UserRecord};

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// Errors from the store. `Conflict` and `NotFound` are the caller's
/// business; `Database` is an operational failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique name or id is taken.
    #[error("already exists: {0}")]
    Conflict(String),
    /// The addressed record does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The database URL is not one Citadel supports.
    #[error("unsupported database URL (use sqlite://PATH or postgres://…): {0}")]
    UnsupportedUrl(String),
    /// A stored value could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, StoreError>;

/// The handle to Citadel's database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `postgres://…`), creating a
    /// SQLite file if needed, and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        let url = if backend == Backend::Sqlite && !url.contains("mode=") {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}mode=rwc")
        } else {
            url.to_owned()
        };
        let options = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        if backend == Backend::Sqlite {
            pool.execute("PRAGMA journal_mode = WAL").await?;
        }
        let store = Self { pool, backend };
        migrate::run(&store).await?;
        Ok(store)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The counter of enforcement-state changes (keys, users, roles). Readers
    /// poll it and reload their caches when it moves.
    pub async fn enforcement_version(&self) -> Result<i64> {
        let v: i64 = sqlx::query_scalar("SELECT version FROM enforcement_state WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(v)
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

impl Store {
    /// Runs one change to enforcement state and moves the enforcement
    /// version in the same transaction, so every replica notices it;
    /// returns the rows the change touched.
    pub(crate) async fn change_enforcement<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<u64> {
        let mut tx = self.pool().begin().await?;
        let n = query.execute(&mut *tx).await?.rows_affected();
        bump_enforcement_version(&mut *tx).await?;
        tx.commit().await?;
        Ok(n)
    }
}

pub(crate) async fn bump_enforcement_version<'c, E>(executor: E) -> Result<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query("UPDATE enforcement_state SET version = version + 1 WHERE id = 1")
        .execute(executor)
        .await?;
    Ok(())
}

pub(crate) fn map_unique(err: sqlx::Error, what: &str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(what.to_owned())
        }
        _ => StoreError::Database(err),
    }
}

pub(crate) fn json_list(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Hides the password of a database URL, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:****{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;

pub mod testing {
    //! Helpers for test suites of this and other crates that need a real database.

    /// Says on the terminal that a test was skipped. Written to stderr
    /// directly, because the test harness hides what `eprintln!` prints in a
    /// passing test.
    pub fn say_skipped(what: &str) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped: {what}");
    }

    /// Creates a new, empty database on the PostgreSQL server at `base_url`
    /// and returns its URL. Used by tests so that each test has its own.
    pub async fn fresh_postgres_database(base_url: &str) -> String {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let now = citadel_core::clock::now_ms() / 1000;
        let name = format!("citadel_test_{now}_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::AnyConnection::connect(base_url)
            .await
            .expect("connect to CITADEL_TEST_PG");
        // Drop what earlier runs left behind (older than an hour), so test
        // databases do not pile up on a long-lived server.
        let old: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datname LIKE 'citadel\\_test\\_%'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
        for db in old {
            let created = db
                .split('_')
                .nth(2)
                .and_then(|t| t.parse::<i64>().ok())
                .unwrap_or(0);
            if now - created > 3600 {
                let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let (head, tail) = match base_url.find('?') {
            Some(q) => base_url.split_at(q),
            None => (base_url, ""),
        };
        let cut = head
            .rfind('/')
            .filter(|&i| i > head.find("://").unwrap_or(0) + 2);
        match cut {
            Some(i) => format!("{}/{}{}", &head[..i], name, tail),
            None => format!("{head}/{name}{tail}"),
        }
    }
}

impl Store {
    /// Runs raw SQL. For tests that need to break the database on purpose
    /// (e.g. make writes fail); not used by Citadel itself.
    #[doc(hidden)]
    pub async fn execute_raw_for_tests(&self, sql: &str) -> Result<()> {
        sqlx::raw_sql(sql).execute(&self.pool).await?;
        Ok(())
    }
}

impl Store {
    /// `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}
