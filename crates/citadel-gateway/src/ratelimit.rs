//! Requests-per-minute and tokens-per-minute limits per API key, per
//! principal and per model (layer 5b, after authorization: a refused request
//! never spends anyone's budget). Answers 429 `rate_limited` with
//! `Retry-After`.
//!
//! Counting uses a sliding window estimated from the current and previous
//! minute (the previous count weighted by how much of it still overlaps), so
//! a burst at a minute boundary cannot double the rate. Tokens are known only
//! after the answer (from the upstream's `usage`), so a token limit stops the
//! next request once the budget is spent.

use std::collections::HashMap;
use std::sync::Arc;

use citadel_core::{clock::now_ms, ApiError, ErrorCode};
use parking_lot::Mutex;

use crate::config::{RateLimit, RateLimitConfig};
use crate::context::info_and_trail;
use crate::stage::{call_next, Next, StageLayer};
use crate::state::GatewayState;
use crate::{error_response, GatewayRequest};

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    minute: i64,
    requests: u64,
    previous_requests: u64,
    tokens: u64,
    previous_tokens: u64,
}

impl Window {
    fn roll(&mut self, minute: i64) {
        if minute == self.minute {
            return;
        }
        if minute == self.minute + 1 {
            self.previous_requests = self.requests;
            self.previous_tokens = self.tokens;
        } else {
            self.previous_requests = 0;
            self.previous_tokens = 0;
        }
        self.requests = 0;
        self.tokens = 0;
        self.minute = minute;
    }

    fn estimate(&self, current: u64, previous: u64, now: i64) -> f64 {
        let into_minute = (now % 60_000) as f64 / 60_000.0;
        previous as f64 * (1.0 - into_minute) + current as f64
    }
}

/// The limits that apply to one request, by counter name.
pub type Budgets = Vec<(String, RateLimit)>;

/// Shared counters.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    windows: Mutex<HashMap<String, Window>>,
}

impl RateLimiter {
    /// Counters for a configuration.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any limit can apply to a request made with `key_limit`.
    pub fn any_limit(&self, key_limit: RateLimit) -> bool {
        let c = &self.config;
        key_limit.rpm.is_some()
            || key_limit.tpm.is_some()
            || c.per_key.rpm.is_some()
            || c.per_key.tpm.is_some()
            || c.per_principal.rpm.is_some()
            || c.per_principal.tpm.is_some()
            || !c.per_model.is_empty()
    }

    /// The budgets for a key (its own limits win over the default; none
    /// for a browser session), its principal and the model.
    pub fn budgets(
        &self,
        key_id: Option<&str>,
        key_limit: RateLimit,
        principal: &str,
        model: Option<&str>,
    ) -> Budgets {
        let mut budgets = vec![(format!("principal:{principal}"), self.config.per_principal)];
        if let Some(key_id) = key_id {
            let key = RateLimit {
                rpm: key_limit.rpm.or(self.config.per_key.rpm),
                tpm: key_limit.tpm.or(self.config.per_key.tpm),
            };
            budgets.insert(0, (format!("key:{key_id}"), key));
        }
        if let Some(m) = model {
            if let Some(limit) = self.config.per_model.get(m) {
                budgets.push((format!("model:{m}"), *limit));
            }
        }
        budgets.retain(|(_, l)| l.rpm.is_some() || l.tpm.is_some());
        budgets
    }

    /// Admits one request against every budget, or says which budget is
    /// spent and how many seconds until the window moves.
    pub fn admit(&self, budgets: &Budgets, now: i64) -> Result<(), (String, u64)> {
        if budgets.is_empty() {
            return Ok(());
        }
        let minute = now / 60_000;
        let retry_after = (60 - (now % 60_000) / 1000).max(1) as u64;
        let mut windows = self.windows.lock();
        if windows.len() > 100_000 {
            windows.retain(|_, w| w.minute + 1 >= minute);
        }
        for (name, limit) in budgets {
            let w = windows.entry(name.clone()).or_default();
            w.roll(minute);
            if let Some(rpm) = limit.rpm {
                if w.estimate(w.requests, w.previous_requests, now) + 1.0 > rpm as f64 {
                    return Err((name.clone(), retry_after));
                }
            }
            if let Some(tpm) = limit.tpm {
                if w.estimate(w.tokens, w.previous_tokens, now) >= tpm as f64 {
                    return Err((name.clone(), retry_after));
                }
            }
        }
        for (name, _) in budgets {
            if let Some(w) = windows.get_mut(name) {
                w.requests = w.requests.saturating_add(1);
            }
        }
        Ok(())
    }

    /// Spends tokens an answer used.
    pub fn spend_tokens(&self, budgets: &Budgets, tokens: u64, now: i64) {
        let minute = now / 60_000;
        let mut windows = self.windows.lock();
        for (name, limit) in budgets {
            if limit.tpm.is_some() {
                let w = windows.entry(name.clone()).or_default();
                w.roll(minute);
                w.tokens = w.tokens.saturating_add(tokens);
            }
        }
    }
}

/// Budgets attached to a request for the proxy to spend tokens on.
#[derive(Clone, Debug)]
pub(crate) struct RequestBudgets(pub(crate) Arc<Budgets>);

/// The rate-limit layer.
pub fn layer(state: Arc<GatewayState>) -> StageLayer {
    StageLayer::new("ratelimit", state, |s, r, n| Box::pin(limit(s, r, n)))
}

async fn limit(
    state: Arc<GatewayState>,
    mut req: GatewayRequest,
    next: Next,
) -> crate::GatewayResponse {
    let key_limit = req
        .extensions()
        .get::<crate::authenticate::KeyLimits>()
        .map(|k| k.0)
        .unwrap_or_default();
    if !state.limiter.any_limit(key_limit) {
        return call_next(next, req).await;
    }
    let (info, trail) = info_and_trail(&req);
    let t = trail.snapshot();
    // Every authenticated caller: API keys and browser sessions alike.
    let Some(principal) = t.principal else {
        return call_next(next, req).await;
    };
    let budgets = state.limiter.budgets(
        t.key_id.as_deref(),
        key_limit,
        &principal.id,
        t.model.as_deref(),
    );
    if let Err((budget, retry_after)) = state.limiter.admit(&budgets, now_ms()) {
        tracing::info!(request_id = %info.id, %budget, "rate limited");
        trail.update(|t| t.error = Some(ErrorCode::RateLimited));
        let mut e = ApiError::new(
            ErrorCode::RateLimited,
            "rate limit reached; retry after the number of seconds in Retry-After",
        );
        e.retry_after = Some(retry_after);
        return error_response(&e, Some(&info.id));
    }
    req.extensions_mut()
        .insert(RequestBudgets(Arc::new(budgets)));
    call_next(next, req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_per_minute_are_enforced_per_budget() {
        let limiter = RateLimiter::new(RateLimitConfig::default());
        let budgets = limiter.budgets(
            Some("k"),
            RateLimit {
                rpm: Some(3),
                tpm: None,
            },
            "p",
            None,
        );
        let t0 = 10 * 60_000; // start of a minute
        for _ in 0..3 {
            limiter.admit(&budgets, t0).unwrap();
        }
        let (name, retry) = limiter.admit(&budgets, t0 + 1000).unwrap_err();
        assert_eq!(name, "key:k");
        assert_eq!(retry, 59);
        // Another key is unaffected.
        let other = limiter.budgets(
            Some("k2"),
            RateLimit {
                rpm: Some(3),
                tpm: None,
            },
            "p",
            None,
        );
        limiter.admit(&other, t0 + 1000).unwrap();
        // Well into the next minute the previous minute's weight has decayed.
        limiter.admit(&budgets, t0 + 60_000 + 50_000).unwrap();
    }

    #[test]
    fn a_browser_session_without_a_key_is_limited_per_principal() {
        let limiter = RateLimiter::new(RateLimitConfig {
            per_principal: RateLimit {
                rpm: Some(2),
                tpm: None,
            },
            ..Default::default()
        });
        let budgets = limiter.budgets(None, RateLimit::default(), "u-1", None);
        let t0 = 60_000 * 3;
        limiter.admit(&budgets, t0).unwrap();
        limiter.admit(&budgets, t0).unwrap();
        assert_eq!(limiter.admit(&budgets, t0).unwrap_err().0, "principal:u-1");
    }

    #[test]
    fn sliding_window_stops_boundary_bursts() {
        let limiter = RateLimiter::new(RateLimitConfig::default());
        let budgets = limiter.budgets(
            Some("k"),
            RateLimit {
                rpm: Some(10),
                tpm: None,
            },
            "p",
            None,
        );
        let end_of_minute = 60_000 * 5 + 59_000;
        for _ in 0..10 {
            limiter.admit(&budgets, end_of_minute).unwrap();
        }
        // Two seconds later a fixed window would allow 10 more; the sliding one does not.
        assert!(limiter.admit(&budgets, end_of_minute + 2_000).is_err());
    }

    #[test]
    fn tokens_per_minute_block_after_the_budget_is_spent() {
        let mut config = RateLimitConfig::default();
        config.per_model.insert(
            "m".into(),
            RateLimit {
                rpm: None,
                tpm: Some(100),
            },
        );
        let limiter = RateLimiter::new(config);
        let budgets = limiter.budgets(Some("k"), RateLimit::default(), "p", Some("m"));
        assert_eq!(budgets.len(), 1);
        let t0 = 60_000 * 7;
        limiter.admit(&budgets, t0).unwrap();
        limiter.spend_tokens(&budgets, 150, t0 + 10);
        assert_eq!(limiter.admit(&budgets, t0 + 20).unwrap_err().0, "model:m");
        let other_model = limiter.budgets(Some("k"), RateLimit::default(), "p", Some("n"));
        assert!(other_model.is_empty());
    }
}
