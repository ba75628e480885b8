//! Request-rate limits: over all callers, per principal (with per-principal overrides
//! from the policy), per model, and per client IP for unauthenticated traffic. Over a
//! limit the caller is told when to come back (`Retry-After`), never queued.

use super::Scope;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use warden_shared::config::LimitsConfig;

/// A refusal: which limit, and how many seconds until a retry can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub scope: Scope,
    pub retry_after_secs: u64,
}

pub struct RateLimits {
    total: Option<DefaultDirectRateLimiter>,
    per_principal: Option<DefaultKeyedRateLimiter<String>>,
    per_model: Option<DefaultKeyedRateLimiter<String>>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Limiters for principals with an override, by their rate.
    overrides: Mutex<HashMap<u32, std::sync::Arc<DefaultKeyedRateLimiter<String>>>>,
    burst_seconds: u32,
}

fn quota(rps: u32, burst_seconds: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rps)?;
    let burst = NonZeroU32::new(rps.saturating_mul(burst_seconds.max(1))).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

fn retry_after(not_until: governor::NotUntil<<DefaultClock as Clock>::Instant>) -> u64 {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

impl RateLimits {
    pub fn new(c: &LimitsConfig) -> RateLimits {
        let b = c.rate_burst_seconds;
        RateLimits {
            total: quota(c.rate_total_rps, b).map(RateLimiter::direct),
            per_principal: quota(c.rate_per_principal_rps, b).map(RateLimiter::keyed),
            per_model: quota(c.rate_per_model_rps, b).map(RateLimiter::keyed),
            per_ip: quota(c.rate_per_ip_unauthenticated_rps, b).map(RateLimiter::keyed),
            overrides: Mutex::new(HashMap::new()),
            burst_seconds: b,
        }
    }

    /// Unauthenticated traffic (open endpoints, failed authentication), per IP.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Limited> {
        match &self.per_ip {
            Some(l) => l.check_key(&ip).map_err(|n| Limited {
                scope: Scope::Ip,
                retry_after_secs: retry_after(n),
            }),
            None => Ok(()),
        }
    }

    /// An authenticated call: total, then the principal (or its override). The model's
    /// own budget is spent later, by [`RateLimits::check_model`], once the call is known
    /// to be authorized for that model: a principal that may not use a model cannot
    /// spend its budget.
    pub fn check_principal(
        &self,
        principal: &str,
        override_rps: Option<u32>,
    ) -> Result<(), Limited> {
        if let Some(l) = &self.total {
            l.check().map_err(|n| Limited {
                scope: Scope::Total,
                retry_after_secs: retry_after(n),
            })?;
        }
        let key = principal.to_owned();
        let principal_result = match override_rps {
            Some(rps) => {
                let limiter = {
                    let mut map = self.overrides.lock().unwrap_or_else(|e| e.into_inner());
                    match quota(rps, self.burst_seconds) {
                        Some(q) => {
                            Some(std::sync::Arc::clone(map.entry(rps).or_insert_with(|| {
                                std::sync::Arc::new(RateLimiter::keyed(q))
                            })))
                        }
                        None => None,
                    }
                };
                limiter.map(|l| l.check_key(&key)).unwrap_or(Ok(()))
            }
            None => self
                .per_principal
                .as_ref()
                .map(|l| l.check_key(&key))
                .unwrap_or(Ok(())),
        };
        principal_result.map_err(|n| Limited {
            scope: Scope::Principal,
            retry_after_secs: retry_after(n),
        })
    }

    /// A model's own budget, for a call already authorized on it. `model` is a name from
    /// the repository (never a client's unchecked string), so the keyed map stays bounded.
    pub fn check_model(&self, model: &str) -> Result<(), Limited> {
        match &self.per_model {
            Some(l) => l.check_key(&model.to_owned()).map_err(|n| Limited {
                scope: Scope::Model,
                retry_after_secs: retry_after(n),
            }),
            None => Ok(()),
        }
    }

    /// Forgets keys that are back to a full bucket, so the maps stay bounded.
    pub fn housekeeping(&self) {
        if let Some(l) = &self.per_principal {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_model {
            l.retain_recent();
        }
        if let Some(l) = &self.per_ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
        for l in self
            .overrides
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            l.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_over_its_rate_is_refused_and_others_are_not() {
        let c = LimitsConfig {
            rate_per_principal_rps: 2,
            rate_burst_seconds: 1,
            ..LimitsConfig::default()
        };
        let r = RateLimits::new(&c);
        assert!(r.check_principal("a", None).is_ok());
        assert!(r.check_principal("a", None).is_ok());
        let refused = r.check_principal("a", None).unwrap_err();
        assert_eq!(refused.scope, Scope::Principal);
        assert!(refused.retry_after_secs >= 1);
        assert!(
            r.check_principal("b", None).is_ok(),
            "another principal is unaffected"
        );
        assert!(
            r.check_principal("a", Some(100)).is_ok(),
            "an override has its own bucket"
        );
    }

    #[test]
    fn zero_means_no_limit() {
        let c = LimitsConfig {
            rate_per_principal_rps: 0,
            rate_per_ip_unauthenticated_rps: 0,
            ..LimitsConfig::default()
        };
        let r = RateLimits::new(&c);
        for _ in 0..10_000 {
            assert!(r.check_principal("a", None).is_ok());
            assert!(r.check_model("m").is_ok());
            assert!(r.check_ip(IpAddr::from([127, 0, 0, 1])).is_ok());
        }
    }

    /// Keys whose bucket is full again are forgotten, so strangers cycling client
    /// addresses or principals cannot grow the maps without bound.
    #[test]
    fn housekeeping_forgets_keys_that_recovered() {
        let c = LimitsConfig {
            rate_per_principal_rps: 1000,
            rate_per_ip_unauthenticated_rps: 1000,
            rate_per_model_rps: 1000,
            rate_burst_seconds: 1,
            ..LimitsConfig::default()
        };
        let r = RateLimits::new(&c);
        for i in 0..100u8 {
            r.check_ip(IpAddr::from([10, 0, 0, i])).unwrap();
            r.check_principal(&format!("p{i}"), None).unwrap();
            r.check_model(&format!("m{i}")).unwrap();
        }
        let sizes = |r: &RateLimits| {
            [
                r.per_ip.as_ref().map(|l| l.len()),
                r.per_principal.as_ref().map(|l| l.len()),
                r.per_model.as_ref().map(|l| l.len()),
            ]
        };
        assert_eq!(sizes(&r), [Some(100); 3]);
        // One call of a 1000-request bucket is back within a millisecond.
        std::thread::sleep(std::time::Duration::from_millis(20));
        r.housekeeping();
        assert_eq!(sizes(&r), [Some(0); 3]);
    }
}
