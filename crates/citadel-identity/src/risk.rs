//! Per-principal risk scores: 0 (nothing known against them) to 100. A
//! score is set by an operator (admin API, CLI), raised by Citadel itself
//! when sign-ins against a person's account lock (a burst of failures), and
//! — later — by threat detection through [`RiskBoard::raise`]. It decays
//! with a half-life, so an old suspicion fades unless renewed. Continuous
//! verification hands the current score to policy as
//! `context.risk_score`; policy decides what a score means.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use citadel_store::{RiskRecord, Store};
use parking_lot::Mutex;

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    use serde::Deserialize;
    let text = String::deserialize(d)?;
    citadel_core::clock::parse_duration(&text).map_err(serde::de::Error::custom)
}

/// `[identity.verify]`: continuous verification.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// A GeoIP database (MaxMind DB format, e.g. GeoLite2-City.mmdb) for
    /// countries and impossible travel; without one both are unknown.
    pub geoip_db: Option<std::path::PathBuf>,
    /// A risk score halves in this time.
    #[serde(deserialize_with = "duration")]
    pub risk_half_life: Duration,
    /// Added to a person's risk score each time sign-ins to their account lock.
    pub failed_sign_in_risk: i64,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            geoip_db: None,
            risk_half_life: Duration::from_secs(3600),
            failed_sign_in_risk: 25,
        }
    }
}

impl VerifyConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.risk_half_life < Duration::from_secs(60) {
            return Err("identity.verify.risk_half_life: at least 1m".into());
        }
        if !(0..=100).contains(&self.failed_sign_in_risk) {
            return Err("identity.verify.failed_sign_in_risk: 0 to 100".into());
        }
        Ok(())
    }
}

/// A principal a risk score is about.
#[derive(Debug, Clone)]
pub struct RiskSubject {
    /// Its id.
    pub id: String,
    /// Its roles when it is a Citadel user (for checks on who may change them).
    pub user_roles: Option<Vec<String>>,
}

/// Finds the principal `name_or_id` names: a user (by name or id), a
/// service account of an API key (`sa-…`), a workload (`spiffe://…`), or a
/// JWT caller (`jwt:<issuer>:<sub>`, which Citadel keeps no list of).
/// `NotFound` otherwise, so a misspelt name is not given a score.
pub async fn resolve_subject(
    store: &Store,
    name_or_id: &str,
) -> citadel_store::Result<RiskSubject> {
    match store.find_user(name_or_id).await {
        Ok(user) => {
            return Ok(RiskSubject {
                id: user.id,
                user_roles: Some(user.roles),
            })
        }
        Err(citadel_store::StoreError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let known = if name_or_id.starts_with("sa-") {
        store
            .list_api_keys()
            .await?
            .iter()
            .any(|k| k.owner_id == name_or_id)
    } else if name_or_id.starts_with("spiffe://") {
        store
            .list_workloads()
            .await?
            .iter()
            .any(|w| w.spiffe_id == name_or_id)
    } else {
        name_or_id.starts_with("jwt:") && name_or_id.matches(':').count() >= 2
    };
    if known {
        Ok(RiskSubject {
            id: name_or_id.to_owned(),
            user_roles: None,
        })
    } else {
        Err(citadel_store::StoreError::NotFound(format!(
            "principal {name_or_id}"
        )))
    }
}

/// The scores in force, following the store.
pub struct RiskBoard {
    store: Store,
    half_life: Duration,
    scores: ArcSwap<HashMap<String, RiskRecord>>,
    version: Mutex<i64>,
}

impl std::fmt::Debug for RiskBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RiskBoard")
            .field("half_life", &self.half_life)
            .finish_non_exhaustive()
    }
}

/// A score `score` set at `at`, decayed to `now` with `half_life`.
pub fn decayed(score: i64, at: i64, now: i64, half_life: Duration) -> i64 {
    let elapsed = (now - at).max(0) as f64;
    let half = half_life.as_millis().max(1) as f64;
    let value = score.clamp(0, 100) as f64 * 0.5f64.powf(elapsed / half);
    value.round() as i64
}

impl RiskBoard {
    /// Loads the scores.
    pub async fn load(store: Store, half_life: Duration) -> citadel_store::Result<Arc<Self>> {
        let board = Arc::new(Self {
            store,
            half_life,
            scores: ArcSwap::from_pointee(HashMap::new()),
            version: Mutex::new(-1),
        });
        board.refresh().await?;
        Ok(board)
    }

    /// Rebuilds the snapshot.
    pub async fn refresh(&self) -> citadel_store::Result<()> {
        let version = self.store.enforcement_version().await?;
        let map = self
            .store
            .risk_scores()
            .await?
            .into_iter()
            .map(|r| (r.principal_id.clone(), r))
            .collect();
        self.scores.store(Arc::new(map));
        *self.version.lock() = version;
        Ok(())
    }

    /// Refreshes if the enforcement version moved.
    pub async fn refresh_if_changed(&self) -> citadel_store::Result<()> {
        if self.store.enforcement_version().await? != *self.version.lock() {
            self.refresh().await?;
        }
        Ok(())
    }

    /// Runs forever, following the store every `poll`. Spawn it.
    pub async fn watch(self: Arc<Self>, poll: Duration) {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.refresh_if_changed().await {
                tracing::warn!(error = %e, "risk score refresh failed; keeping the last snapshot");
            }
        }
    }

    /// The principal's score at `now` (0 if none).
    pub fn score(&self, principal_id: &str, now: i64) -> i64 {
        self.scores
            .load()
            .get(principal_id)
            .map_or(0, |r| decayed(r.score, r.updated_at, now, self.half_life))
    }

    /// Sets a score (0..100).
    pub async fn set(
        &self,
        principal_id: &str,
        score: i64,
        reason: &str,
        now: i64,
    ) -> citadel_store::Result<RiskRecord> {
        let record = RiskRecord {
            principal_id: principal_id.to_owned(),
            score: score.clamp(0, 100),
            updated_at: now,
            reason: reason.chars().take(256).collect(),
        };
        self.store.set_risk(&record).await?;
        self.refresh().await?;
        Ok(record)
    }

    /// Raises a score by `delta`, but not above `cap` (a score already
    /// above `cap` is left as it is).
    pub async fn raise_capped(
        &self,
        principal_id: &str,
        delta: i64,
        cap: i64,
        reason: &str,
        now: i64,
    ) -> citadel_store::Result<i64> {
        let current = self.score(principal_id, now);
        if current >= cap {
            return Ok(current);
        }
        let new = (current + delta.max(0)).min(cap);
        self.set(principal_id, new, reason, now).await?;
        Ok(new)
    }

    /// Raises a score by `delta` from its current (decayed) value, capped at 100.
    pub async fn raise(
        &self,
        principal_id: &str,
        delta: i64,
        reason: &str,
        now: i64,
    ) -> citadel_store::Result<RiskRecord> {
        let current = self.score(principal_id, now);
        self.set(principal_id, current + delta.max(0), reason, now)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_halve_every_half_life() {
        let h = Duration::from_secs(3600);
        assert_eq!(decayed(80, 0, 0, h), 80);
        assert_eq!(decayed(80, 0, 3_600_000, h), 40);
        assert_eq!(decayed(80, 0, 7_200_000, h), 20);
        assert_eq!(decayed(150, 0, 0, h), 100, "clamped");
    }

    #[tokio::test]
    async fn set_raise_and_replicas_agree() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("c.db").display()))
            .await
            .unwrap();
        let a = RiskBoard::load(store.clone(), Duration::from_secs(3600))
            .await
            .unwrap();
        let b = RiskBoard::load(store, Duration::from_secs(3600))
            .await
            .unwrap();
        a.set("u-1", 40, "operator", 1_000).await.unwrap();
        a.raise("u-1", 30, "failed_sign_ins", 1_000).await.unwrap();
        assert_eq!(a.score("u-1", 1_000), 70);
        b.refresh_if_changed().await.unwrap();
        assert_eq!(b.score("u-1", 1_000 + 3_600_000), 35);
        assert_eq!(b.score("u-2", 0), 0);
        a.raise("u-1", 90, "more", 1_000).await.unwrap();
        assert_eq!(a.score("u-1", 1_000), 100);
    }
}
