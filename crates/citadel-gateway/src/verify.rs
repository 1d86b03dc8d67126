//! Layer 4, verify: is this still them, from where they were, at an
//! acceptable risk? Run on every request after authentication, it finds:
//!
//! - `risk_score`: the principal's current risk score (0..100; operators
//!   and detection set it, failed sign-ins raise it, it decays);
//! - `network_changed`: the client's network (/24 for IPv4, /64 for IPv6)
//!   differs from the one the browser session was made on, or — for other
//!   credentials — from the principal's previous request's;
//! - `country` and `travel_kmh`: from a GeoIP database (MaxMind DB format),
//!   the client's country, and the speed implied by the distance between
//!   this and the principal's previous request's locations (impossible
//!   travel).
//!
//! It refuses nothing itself: the findings are Cedar context attributes,
//! and policy (`policies/verify.cedar`) decides whether a finding means
//! allow, step-up (an RFC 9470 challenge) or deny. It sits before routing
//! so the facts are there for every decision, and it does no I/O: the
//! risk scores are an in-memory snapshot and the GeoIP database is held in
//! memory. The previous request of each principal is remembered per
//! replica, once policy has let it through (the authorize layer calls
//! [`Verifier::remember`]), so a challenged request does not become the
//! reference the next one is measured against.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use citadel_core::clock::now_ms;
use citadel_identity::risk::{RiskBoard, VerifyConfig};
use parking_lot::Mutex;

use crate::context::{info_and_trail, Verified};
use crate::stage::{call_next, Next, StageLayer};
use crate::state::GatewayState;
use crate::{GatewayRequest, GatewayResponse};

/// Where a request came from, as GeoIP places it.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    /// Latitude, degrees.
    pub latitude: f64,
    /// Longitude, degrees.
    pub longitude: f64,
    /// ISO country code.
    pub country: String,
}

#[derive(Debug, Clone)]
struct LastSeen {
    network: String,
    /// The last place GeoIP knew, and when the principal was there.
    place: Option<((f64, f64), i64)>,
    at: i64,
}

/// Where a request came from, remembered once policy lets it through (so a
/// challenged request does not become the "previous" one).
#[derive(Debug, Clone)]
pub struct Sighting {
    principal_id: String,
    network: String,
    place: Option<(f64, f64)>,
    at: i64,
}

/// Remembered principals at most (per replica); the oldest half is dropped past it.
const LAST_SEEN_MAX: usize = 200_000;

/// Continuous verification's state: GeoIP, risk scores, each principal's
/// previous request.
pub struct Verifier {
    geo: Option<maxminddb::Reader<Vec<u8>>>,
    /// Risk scores.
    pub risk: Arc<RiskBoard>,
    /// Risk added when sign-ins to an account lock.
    pub failed_sign_in_risk: i64,
    last: Mutex<HashMap<String, LastSeen>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("geoip", &self.geo.is_some())
            .finish_non_exhaustive()
    }
}

/// The network an address belongs to for "did it move": its /24 or /64.
pub fn network_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network_of(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Great-circle distance, km (haversine, mean Earth radius).
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

impl Verifier {
    /// Builds from config: reads the GeoIP database if one is configured.
    pub fn new(config: &VerifyConfig, risk: Arc<RiskBoard>) -> Result<Self, String> {
        let geo = match &config.geoip_db {
            Some(path) => Some(
                maxminddb::Reader::open_readfile(path)
                    .map_err(|e| format!("identity.verify.geoip_db: {}: {e}", path.display()))?,
            ),
            None => None,
        };
        Ok(Self {
            geo,
            risk,
            failed_sign_in_risk: config.failed_sign_in_risk,
            last: Mutex::new(HashMap::new()),
        })
    }

    /// Where `ip` is, if the GeoIP database knows.
    pub fn locate(&self, ip: IpAddr) -> Option<Place> {
        let city: maxminddb::geoip2::City<'_> = self.geo.as_ref()?.lookup(ip).ok()??;
        let location = city.location?;
        Some(Place {
            latitude: location.latitude?,
            longitude: location.longitude?,
            country: city
                .country
                .and_then(|c| c.iso_code)
                .unwrap_or_default()
                .to_owned(),
        })
    }

    /// The findings for `principal_id` calling from `ip` at `now`;
    /// `session_ip` is the address its browser session was made from.
    pub fn verify(
        &self,
        principal_id: &str,
        ip: IpAddr,
        session_ip: Option<&str>,
        now: i64,
    ) -> (Verified, Sighting) {
        let network = network_of(ip);
        let place = self.locate(ip);
        let here = place.as_ref().map(|p| (p.latitude, p.longitude));
        let previous = self.last.lock().get(principal_id).cloned();
        let network_changed = match session_ip.and_then(|s| s.parse::<IpAddr>().ok()) {
            Some(origin) => network_of(origin) != network,
            None => previous.as_ref().is_some_and(|p| p.network != network),
        };
        let travel_kmh = match (previous.as_ref().and_then(|p| p.place), here) {
            (Some((from, at)), Some(to)) => {
                // At least a minute apart, so two requests in the same
                // second from neighbouring cities are not "impossible".
                let hours = ((now - at).max(60_000)) as f64 / 3_600_000.0;
                (distance_km(from, to) / hours).round() as i64
            }
            _ => 0,
        };
        let found = Verified {
            risk_score: self.risk.score(principal_id, now),
            network_changed,
            travel_kmh,
            country: place.map(|p| p.country).unwrap_or_default(),
        };
        let sighting = Sighting {
            principal_id: principal_id.to_owned(),
            network,
            place: here,
            at: now,
        };
        (found, sighting)
    }

    /// Remembers a request policy let through as the principal's previous one.
    pub fn remember(&self, sighting: &Sighting) {
        let mut last = self.last.lock();
        if last.len() >= LAST_SEEN_MAX {
            let mut ages: Vec<i64> = last.values().map(|s| s.at).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            last.retain(|_, s| s.at > cutoff);
        }
        let previous_place = last.get(&sighting.principal_id).and_then(|p| p.place);
        last.insert(
            sighting.principal_id.clone(),
            LastSeen {
                network: sighting.network.clone(),
                // An address GeoIP cannot place keeps the last known place
                // and the time the principal was there.
                place: sighting.place.map(|p| (p, sighting.at)).or(previous_place),
                at: sighting.at,
            },
        );
    }
}

/// Raises a principal's risk score (to at most `cap`, if given) because
/// of something Citadel saw itself, and records it as an event, so a score
/// that changes what someone may do always has its reason on record.
pub(crate) async fn raise_risk(
    state: &GatewayState,
    principal_id: &str,
    delta: i64,
    cap: Option<i64>,
    reason: &str,
    request_id: &str,
) {
    let now = now_ms();
    let raised = match cap {
        Some(cap) => {
            state
                .verifier
                .risk
                .raise_capped(principal_id, delta, cap, reason, now)
                .await
        }
        None => state
            .verifier
            .risk
            .raise(principal_id, delta, reason, now)
            .await
            .map(|r| r.score),
    };
    match raised {
        Ok(score) => {
            let event = citadel_core::SecurityEvent::change(
                "risk.raise",
                "gateway",
                serde_json::json!({"type": "Principal", "uid": principal_id, "score": score, "reason": reason}),
            )
            .actor_named("system", "citadel", "system")
            .request_id(request_id)
            .build();
            if let Err(e) = crate::events::record_decision(&state.sink, event).await {
                tracing::error!(error = %e, "a risk score was raised but could not be recorded");
            }
        }
        Err(e) => tracing::warn!(error = %e, reason, "could not raise a risk score"),
    }
}

/// The verify layer.
pub fn layer(state: Arc<GatewayState>) -> StageLayer {
    StageLayer::new("verify", state, |s, r, n| Box::pin(verify(s, r, n)))
}

async fn verify(state: Arc<GatewayState>, req: GatewayRequest, next: Next) -> GatewayResponse {
    let (info, trail) = info_and_trail(&req);
    if let Some(principal) = trail.principal() {
        let session_ip = req
            .extensions()
            .get::<citadel_identity::LiveSession>()
            .map(|s| s.source_ip.clone());
        let (found, sighting) = state.verifier.verify(
            &principal.id,
            info.client.ip(),
            session_ip.as_deref(),
            now_ms(),
        );
        trail.update(|t| t.verified = found);
        let mut req = req;
        req.extensions_mut().insert(sighting);
        return call_next(next, req).await;
    }
    call_next(next, req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_and_networks() {
        // New York to London, about 5570 km.
        let d = distance_km((40.7128, -74.0060), (51.5074, -0.1278));
        assert!((5500.0..5650.0).contains(&d), "{d}");
        assert_eq!(distance_km((1.0, 2.0), (1.0, 2.0)), 0.0);
        assert_eq!(network_of("192.0.2.77".parse().unwrap()), "192.0.2.0/24");
        assert_eq!(
            network_of("2001:db8:1:2::99".parse().unwrap()),
            network_of("2001:db8:1:2:ffff::1".parse().unwrap())
        );
    }
}
