//! Schema migrations. Each version is one SQL file per backend, embedded at
//! build time and applied once, in order, inside a transaction. On
//! PostgreSQL an advisory lock keeps replicas starting together from racing.

use crate::{Backend, Result, Store};

struct Migration {
    version: i64,
    description: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "initial schema",
        sqlite: include_str!("../migrations/sqlite/0001_init.sql"),
        postgres: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        description: "Merkle audit log",
        sqlite: include_str!("../migrations/sqlite/0002_merkle_log.sql"),
        postgres: include_str!("../migrations/postgres/0002_merkle_log.sql"),
    },
    Migration {
        version: 3,
        description: "SIEM export cursors",
        sqlite: include_str!("../migrations/sqlite/0003_export_cursors.sql"),
        postgres: include_str!("../migrations/postgres/0003_export_cursors.sql"),
    },
    Migration {
        version: 4,
        description: "per-subject keys",
        sqlite: include_str!("../migrations/sqlite/0004_subject_keys.sql"),
        postgres: include_str!("../migrations/postgres/0004_subject_keys.sql"),
    },
    Migration {
        version: 5,
        description: "passwords, authenticators, sessions, sign-in throttling",
        sqlite: include_str!("../migrations/sqlite/0005_identity.sql"),
        postgres: include_str!("../migrations/postgres/0005_identity.sql"),
    },
    Migration {
        version: 6,
        description: "devices and workload identities",
        sqlite: include_str!("../migrations/sqlite/0006_devices_workloads.sql"),
        postgres: include_str!("../migrations/postgres/0006_devices_workloads.sql"),
    },
    Migration {
        version: 7,
        description: "risk scores",
        sqlite: include_str!("../migrations/sqlite/0007_risk.sql"),
        postgres: include_str!("../migrations/postgres/0007_risk.sql"),
    },
    Migration {
        version: 8,
        description: "WebAuthn passkeys",
        sqlite: include_str!("../migrations/sqlite/0008_webauthn.sql"),
        postgres: include_str!("../migrations/postgres/0008_webauthn.sql"),
    },
    Migration {
        version: 9,
        description: "external identities (OIDC)",
        sqlite: include_str!("../migrations/sqlite/0009_external_identities.sql"),
        postgres: include_str!("../migrations/postgres/0009_external_identities.sql"),
    },
    Migration {
        version: 10,
        description: "consent",
        sqlite: include_str!("../migrations/sqlite/0010_consent.sql"),
        postgres: include_str!("../migrations/postgres/0010_consent.sql"),
    },
    Migration {
        version: 11,
        description: "data keys",
        sqlite: include_str!("../migrations/sqlite/0011_data_keys.sql"),
        postgres: include_str!("../migrations/postgres/0011_data_keys.sql"),
    },
    Migration {
        version: 12,
        description: "captures and pseudonyms",
        sqlite: include_str!("../migrations/sqlite/0012_captures.sql"),
        postgres: include_str!("../migrations/postgres/0012_captures.sql"),
    },
];

/// Applies every migration newer than the database's version.
pub(crate) async fn run(store: &Store) -> Result<()> {
    let mut tx = store.pool().begin().await?;
    if store.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(7415201)")
            .execute(&mut *tx)
            .await?;
    }
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
           version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&mut *tx)
        .await?;
    let current = current.unwrap_or(0);
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let sql = match store.backend() {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        };
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, description, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.description)
        .bind(citadel_core::clock::now_ms())
        .execute(&mut *tx)
        .await?;
        tracing::info!(version = m.version, "applied schema migration");
    }
    tx.commit().await?;
    Ok(())
}
