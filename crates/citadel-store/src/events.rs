//! The append-only security event store.

use citadel_core::{EventClass, Outcome, SecurityEvent};
use sqlx::Row;

use crate::{Backend, Result, Store, StoreError};

/// Filters for reading events back. All are optional and combine with AND.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Events at or after this Unix ms.
    pub since: Option<i64>,
    /// Events before this Unix ms.
    pub until: Option<i64>,
    /// Events whose actor is this principal id.
    pub principal: Option<String>,
    /// Events of this class.
    pub class: Option<EventClass>,
    /// Events with this outcome.
    pub outcome: Option<Outcome>,
    /// Events with this request id.
    pub request_id: Option<String>,
    /// Continue after this sequence number (from a previous page's cursor).
    pub after_seq: Option<i64>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<i64>,
}

/// An event ready to be stored: its index columns and its OCSF JSON, encoded
/// by the caller (so the single writer spends no time serializing).
#[derive(Debug, Clone)]
pub struct EventRow {
    /// `metadata.uid`.
    pub id: String,
    /// Unix ms.
    pub time: i64,
    /// OCSF class uid.
    pub class_uid: i64,
    /// `success` / `failure`.
    pub outcome: &'static str,
    /// Actor principal id.
    pub principal: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// The OCSF object as one JSON line.
    pub body: String,
}

impl From<&SecurityEvent> for EventRow {
    fn from(e: &SecurityEvent) -> Self {
        Self {
            id: e.id.clone(),
            time: e.time,
            class_uid: e.class.uid(),
            outcome: e.outcome.as_str(),
            principal: e.principal.clone(),
            request_id: e.request_id.clone(),
            body: e.to_json_line(),
        }
    }
}

/// Rows per INSERT statement; keeps well under SQLite's bound-variable limit.
const ROWS_PER_INSERT: usize = 256;

impl Store {
    /// Appends a batch of events in one transaction: all or none become
    /// durable (group commit). Events already stored (same id) are skipped,
    /// so a retried batch is safe.
    pub async fn append_events(&self, events: &[SecurityEvent]) -> Result<()> {
        let rows: Vec<EventRow> = events.iter().map(EventRow::from).collect();
        self.append_rows(&rows).await
    }

    /// Appends encoded events in one transaction (group commit).
    pub async fn append_rows<R: std::borrow::Borrow<EventRow>>(&self, events: &[R]) -> Result<()> {
        let mut conn = self.pool().acquire().await?;
        append_rows_on(&mut conn, self.backend(), events).await
    }

    /// A connection reserved for appending events. A single writer keeps
    /// one connection so its page cache stays warm (a pooled connection that
    /// another one wrote behind has to re-read the pages it caches).
    pub async fn event_appender(&self) -> Result<EventAppender> {
        Ok(EventAppender {
            conn: self.pool().acquire().await?,
            backend: self.backend(),
        })
    }
}

/// A dedicated connection for the event writer; see [`Store::event_appender`].
#[derive(Debug)]
pub struct EventAppender {
    conn: sqlx::pool::PoolConnection<sqlx::Any>,
    backend: Backend,
}

impl EventAppender {
    /// Appends encoded events in one transaction (group commit).
    pub async fn append_rows<R: std::borrow::Borrow<EventRow>>(
        &mut self,
        events: &[R],
    ) -> Result<()> {
        append_rows_on(&mut self.conn, self.backend, events).await
    }
}

async fn append_rows_on<R: std::borrow::Borrow<EventRow>>(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    events: &[R],
) -> Result<()> {
    {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = sqlx::Connection::begin(conn).await?;
        for chunk in events.chunks(ROWS_PER_INSERT) {
            let mut sql = String::from(
                "INSERT INTO events (id, time, class_uid, outcome, principal, request_id, body) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                match backend {
                    // SQLite resolves `$N` names per bound value, which is
                    // quadratic in a long statement; anonymous `?` is not.
                    Backend::Sqlite => sql.push_str("(?, ?, ?, ?, ?, ?, ?)"),
                    Backend::Postgres => {
                        let b = i * 7;
                        sql.push_str(&format!(
                            "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                            b + 1,
                            b + 2,
                            b + 3,
                            b + 4,
                            b + 5,
                            b + 6,
                            b + 7
                        ));
                    }
                }
            }
            // Appending is idempotent: a batch retried after a commit whose
            // outcome was unknown (connection lost mid-commit) must neither
            // duplicate events nor fail forever on the unique id.
            sql.push_str(" ON CONFLICT (id) DO NOTHING");
            let mut q = sqlx::query(&sql);
            for e in chunk {
                let e = e.borrow();
                q = q
                    .bind(e.id.as_str())
                    .bind(e.time)
                    .bind(e.class_uid)
                    .bind(e.outcome)
                    .bind(e.principal.as_deref())
                    .bind(e.request_id.as_deref())
                    .bind(e.body.as_str());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

impl Store {
    /// Reads events matching `query` in sequence order. Returns the page and
    /// the cursor to pass as `after_seq` for the next page, if there may be one.
    pub async fn query_events(
        &self,
        query: &EventQuery,
    ) -> Result<(Vec<SecurityEvent>, Option<i64>)> {
        let limit = query.limit.unwrap_or(100).clamp(1, 1000);
        let mut sql = String::from("SELECT seq, body FROM events WHERE 1 = 1");
        let mut n = 0;
        let mut next = |sql: &mut String, clause: &str| {
            n += 1;
            sql.push_str(&clause.replace('?', &format!("${n}")));
        };
        if query.since.is_some() {
            next(&mut sql, " AND time >= ?");
        }
        if query.until.is_some() {
            next(&mut sql, " AND time < ?");
        }
        if query.principal.is_some() {
            next(&mut sql, " AND principal = ?");
        }
        if query.class.is_some() {
            next(&mut sql, " AND class_uid = ?");
        }
        if query.outcome.is_some() {
            next(&mut sql, " AND outcome = ?");
        }
        if query.request_id.is_some() {
            next(&mut sql, " AND request_id = ?");
        }
        if query.after_seq.is_some() {
            next(&mut sql, " AND seq > ?");
        }
        next(&mut sql, " ORDER BY seq LIMIT ?");
        let mut q = sqlx::query(&sql);
        if let Some(v) = query.since {
            q = q.bind(v);
        }
        if let Some(v) = query.until {
            q = q.bind(v);
        }
        if let Some(v) = &query.principal {
            q = q.bind(v.clone());
        }
        if let Some(v) = query.class {
            q = q.bind(v.uid());
        }
        if let Some(v) = query.outcome {
            q = q.bind(v.as_str());
        }
        if let Some(v) = &query.request_id {
            q = q.bind(v.clone());
        }
        if let Some(v) = query.after_seq {
            q = q.bind(v);
        }
        q = q.bind(limit);
        let rows = q.fetch_all(self.pool()).await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut last_seq = None;
        for row in &rows {
            let seq: i64 = row.try_get("seq")?;
            let body: String = row.try_get("body")?;
            let value: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let event = SecurityEvent::from_body(value)
                .ok_or_else(|| StoreError::Corrupt(format!("event at seq {seq}")))?;
            out.push(event);
            last_seq = Some(seq);
        }
        let cursor = if rows.len() as i64 == limit {
            last_seq
        } else {
            None
        };
        Ok((out, cursor))
    }

    /// Number of stored events.
    pub async fn count_events(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(self.pool())
            .await?)
    }
}
