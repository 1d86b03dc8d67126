//! Sign-in throttling: failed sign-ins are counted per account *and*
//! address, per address, and per account, and each counter past its
//! threshold locks with exponential back-off (`base × 2^(failures −
//! threshold)`, capped). The counters live in the database, so every
//! replica sees the same locks.
//!
//! The tightest counter is the (account, address) pair: guessing one
//! account's password from one place locks that place out of that account,
//! while the account's owner signing in from elsewhere is unaffected. An
//! address that fails across many accounts (password spraying) is locked
//! for all of them; an account failing from very many addresses
//! (distributed guessing) is locked for everyone, which is the one case
//! where an attacker can lock a user out, deliberately set high.
//! While a counter is locked, attempts are refused without checking the
//! password and are not counted; the first failure after a lock ends
//! locks again, for twice as long. A counter with no failure for
//! `forget_after` (24 h) starts again from zero. Account names are stored
//! only as digests.

use std::net::IpAddr;
use std::time::Duration;

use citadel_store::Store;
use serde::Deserialize;

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    citadel_core::clock::parse_duration(&text).map_err(serde::de::Error::custom)
}

/// `[identity.lockout]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    /// Failures of one account from one address before it locks.
    pub per_account_address: i64,
    /// Failures from one address (any account) before it locks.
    pub per_address: i64,
    /// Failures of one account (any address) before it locks.
    pub per_account: i64,
    /// The first lock's length; each further failure doubles it.
    #[serde(deserialize_with = "duration")]
    pub base_lock: Duration,
    /// The longest lock.
    #[serde(deserialize_with = "duration")]
    pub max_lock: Duration,
    /// A counter with no failure for this long starts again from zero, so
    /// old failures (a shared NAT's, a forgetful user's) stop counting;
    /// well above `max_lock`, so back-off keeps doubling through a
    /// sustained attack.
    #[serde(deserialize_with = "duration")]
    pub forget_after: Duration,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        Self {
            per_account_address: 5,
            per_address: 20,
            per_account: 100,
            base_lock: Duration::from_secs(30),
            max_lock: Duration::from_secs(3600),
            forget_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl LockoutConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.per_account_address < 1 || self.per_address < 1 || self.per_account < 1 {
            return Err("identity.lockout: thresholds must be at least 1".into());
        }
        if self.base_lock.is_zero() || self.max_lock < self.base_lock {
            return Err("identity.lockout: base_lock must be > 0 and max_lock ≥ base_lock".into());
        }
        if self.forget_after < self.max_lock {
            return Err("identity.lockout.forget_after: at least max_lock, or a lock would be forgotten while it lasts".into());
        }
        Ok(())
    }

    /// The lock, in ms, earned by `failures` on a counter with `threshold`.
    pub fn lock_ms(&self, failures: i64, threshold: i64) -> i64 {
        if failures < threshold {
            return 0;
        }
        let doublings = (failures - threshold).min(40) as u32;
        let base = self.base_lock.as_millis() as i64;
        base.saturating_mul(1i64 << doublings)
            .min(self.max_lock.as_millis() as i64)
    }
}

/// The counters a sign-in attempt touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counter {
    Pair,
    Address,
    Account,
}

/// Counts failures and answers whether a sign-in may be tried.
#[derive(Debug, Clone)]
pub struct Throttle {
    store: Store,
    config: LockoutConfig,
}

/// An account name as the throttle stores it: a digest, because a name
/// that matches no user may be a password typed in the wrong field.
pub fn account_key(account: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("citadel/throttle/{}", account.to_lowercase()));
    hex::encode(&digest[..16])
}

/// An address as the throttle counts it: IPv4 whole, IPv6 by its /64 (one
/// host usually holds a whole /64, so counting single addresses would let
/// it rotate freely).
fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

impl Throttle {
    /// A throttle over `store`.
    pub fn new(store: Store, config: LockoutConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(Self { store, config })
    }

    fn keys(account: &str, ip: IpAddr) -> [(Counter, String); 3] {
        let account = account_key(account);
        let address = address_key(ip);
        [
            (Counter::Pair, format!("pair:{account}|{address}")),
            (Counter::Address, format!("addr:{address}")),
            (Counter::Account, format!("acct:{account}")),
        ]
    }

    fn threshold(&self, counter: Counter) -> i64 {
        match counter {
            Counter::Pair => self.config.per_account_address,
            Counter::Address => self.config.per_address,
            Counter::Account => self.config.per_account,
        }
    }

    /// Until when sign-in to `account` from `ip` is refused, if it is now.
    pub async fn locked_until(
        &self,
        account: &str,
        ip: IpAddr,
        now: i64,
    ) -> citadel_store::Result<Option<i64>> {
        let keys: Vec<String> = Self::keys(account, ip)
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        Ok(self
            .store
            .throttle_states(&keys)
            .await?
            .into_iter()
            .map(|(_, s)| s.locked_until)
            .filter(|&until| until > now)
            .max())
    }

    /// Counts a failure; returns the lock now in force, if any.
    pub async fn failed(
        &self,
        account: &str,
        ip: IpAddr,
        now: i64,
    ) -> citadel_store::Result<Option<i64>> {
        let mut until = None;
        for (counter, key) in Self::keys(account, ip) {
            let threshold = self.threshold(counter);
            let state = self
                .store
                .record_throttle_failure(
                    &key,
                    now,
                    now - self.config.forget_after.as_millis() as i64,
                    |n| self.config.lock_ms(n, threshold),
                )
                .await?;
            if state.locked_until > now {
                until = until.max(Some(state.locked_until));
            }
        }
        Ok(until)
    }

    /// Forgets the account's counters after a successful sign-in (the
    /// address's counter stays: it may be spraying other accounts).
    pub async fn succeeded(&self, account: &str, ip: IpAddr) -> citadel_store::Result<()> {
        let keys: Vec<String> = Self::keys(account, ip)
            .into_iter()
            .filter(|(c, _)| *c != Counter::Address)
            .map(|(_, k)| k)
            .collect();
        self.store.clear_throttle(&keys).await
    }

    /// An operator's unlock of an account (every address).
    pub async fn unlock_account(&self, account: &str) -> citadel_store::Result<u64> {
        let key = account_key(account);
        self.store
            .clear_throttle_prefix(&format!("pair:{key}|"), &format!("acct:{key}"))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_from_the_threshold_and_is_capped() {
        let c = LockoutConfig::default();
        assert_eq!(c.lock_ms(4, 5), 0);
        assert_eq!(c.lock_ms(5, 5), 30_000);
        assert_eq!(c.lock_ms(6, 5), 60_000);
        assert_eq!(c.lock_ms(7, 5), 120_000);
        assert_eq!(c.lock_ms(50, 5), 3_600_000);
        assert_eq!(c.lock_ms(i64::MAX, 5), 3_600_000);
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.7");
    }

    #[tokio::test]
    async fn a_guessed_account_locks_for_the_guesser_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("c.db").display()))
            .await
            .unwrap();
        let t = Throttle::new(store, LockoutConfig::default()).unwrap();
        let attacker: IpAddr = "192.0.2.1".parse().unwrap();
        let owner: IpAddr = "198.51.100.7".parse().unwrap();
        let now = 1_000_000;
        for i in 0..4 {
            assert_eq!(t.failed("Alice", attacker, now + i).await.unwrap(), None);
        }
        let until = t.failed("alice", attacker, now + 4).await.unwrap().unwrap();
        assert_eq!(until, now + 4 + 30_000);
        assert_eq!(
            t.locked_until("alice", attacker, now + 5).await.unwrap(),
            Some(until)
        );
        assert_eq!(t.locked_until("alice", owner, now + 5).await.unwrap(), None);
        assert_eq!(
            t.locked_until("bob", attacker, now + 5).await.unwrap(),
            None
        );
        assert_eq!(
            t.locked_until("alice", attacker, until).await.unwrap(),
            None,
            "lock ends"
        );
        // The next failure after the lock doubles it.
        let again = t
            .failed("alice", attacker, until + 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again, until + 1 + 60_000);
        // The owner's success clears the account's counters, not the attacker's address.
        t.succeeded("alice", attacker).await.unwrap();
        assert_eq!(
            t.locked_until("alice", attacker, until + 2).await.unwrap(),
            None
        );
        // Spraying: one address failing across many accounts.
        for i in 0..20 {
            t.failed(&format!("user{i}"), attacker, now).await.unwrap();
        }
        assert!(t
            .locked_until("carol", attacker, now + 1)
            .await
            .unwrap()
            .is_some());
        assert!(t
            .locked_until("carol", owner, now + 1)
            .await
            .unwrap()
            .is_none());
        // Failures older than forget_after no longer count.
        let later = now + 24 * 3_600_000 + 1;
        for _ in 0..4 {
            t.failed("erin", owner, now).await.unwrap();
        }
        assert_eq!(
            t.failed("erin", owner, later).await.unwrap(),
            None,
            "counting starts again"
        );
        // An operator's unlock.
        for _ in 0..5 {
            t.failed("dave", owner, now).await.unwrap();
        }
        assert!(t
            .locked_until("dave", owner, now + 1)
            .await
            .unwrap()
            .is_some());
        assert_eq!(t.unlock_account("dave").await.unwrap(), 2);
        assert!(t
            .locked_until("dave", owner, now + 1)
            .await
            .unwrap()
            .is_none());
    }
}
