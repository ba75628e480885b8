//! Memory quotas: request bytes in flight, over all callers and per principal, like
//! OVMS's `--grpc_memory_quota` but per principal too. Bytes are reserved as the body
//! streams in; a request that cannot get its bytes is refused at once (never queued),
//! so the gateway's memory stays bounded by the quota plus a fixed base.

use super::Scope;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Quotas are counted in KiB so that a `u32` permit count covers terabytes.
const UNIT: usize = 1024;

fn units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

pub struct Quotas {
    /// None: no total quota (`quota_bytes = 0`, OVMS `--grpc_memory_quota 0`).
    global: Option<Arc<Semaphore>>,
    global_units: u32,
    per_principal_units: u32,
    principals: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Bytes held by one request; released when dropped.
#[derive(Default)]
pub struct Reservation {
    global: Option<OwnedSemaphorePermit>,
    principal: Option<OwnedSemaphorePermit>,
    principal_sem: Option<Arc<Semaphore>>,
    pub bytes: usize,
}

impl Quotas {
    pub fn new(global_bytes: usize, per_principal_bytes: usize) -> Quotas {
        let global_units = units(global_bytes).min(Semaphore::MAX_PERMITS as u32);
        Quotas {
            global: (global_bytes > 0).then(|| Arc::new(Semaphore::new(global_units as usize))),
            global_units,
            per_principal_units: units(per_principal_bytes),
            principals: Mutex::new(HashMap::new()),
        }
    }

    /// Bytes reserved against the server's quota now (in whole KiB units); `None`
    /// when there is no server quota.
    pub fn global_in_flight_bytes(&self) -> Option<usize> {
        let global = self.global.as_ref()?;
        let used = (self.global_units as usize).saturating_sub(global.available_permits());
        Some(used * UNIT)
    }

    /// An empty reservation for `principal` (None: charged to the global quota only).
    pub fn start(&self, principal: Option<&str>) -> Reservation {
        let principal_sem = principal.map(|p| {
            let mut map = self.principals.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() > 10_000 {
                // Forget principals with nothing in flight.
                let full = self.per_principal_units as usize;
                map.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < full);
            }
            Arc::clone(
                map.entry(p.to_owned())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_principal_units as usize))),
            )
        });
        Reservation {
            principal_sem,
            ..Reservation::default()
        }
    }

    /// Grows `r` by `bytes`, or says which quota is spent.
    pub fn grow(&self, r: &mut Reservation, bytes: usize) -> Result<(), Scope> {
        let want = units(r.bytes + bytes) - units(r.bytes);
        if want > 0 {
            // Take both before keeping either, so a refusal holds nothing back.
            let p = match &r.principal_sem {
                Some(sem) => Some(
                    Arc::clone(sem)
                        .try_acquire_many_owned(want)
                        .map_err(|_| Scope::Principal)?,
                ),
                None => None,
            };
            let g = match &self.global {
                Some(global) => Some(
                    Arc::clone(global)
                        .try_acquire_many_owned(want)
                        .map_err(|_| Scope::Total)?,
                ),
                None => None,
            };
            for (held, new) in [(&mut r.principal, p), (&mut r.global, g)] {
                match (held.as_mut(), new) {
                    (Some(h), Some(n)) => h.merge(n),
                    (None, Some(n)) => *held = Some(n),
                    (_, None) => {}
                }
            }
        }
        r.bytes += bytes;
        Ok(())
    }

    /// Percent of the global quota in use.
    pub fn usage_percent(&self) -> u8 {
        let Some(global) = &self.global else {
            return 0;
        };
        let used = self.global_units as usize - global.available_permits();
        (used * 100 / (self.global_units.max(1) as usize)) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_refuse_the_excess_and_release_on_drop() {
        let q = Quotas::new(10 * 1024, 4 * 1024);
        let mut a = q.start(Some("a"));
        assert!(
            q.grow(&mut a, 4 * 1024).is_ok(),
            "exactly the principal quota"
        );
        assert_eq!(q.grow(&mut a, 1), Err(Scope::Principal), "one byte over");
        let mut b = q.start(Some("b"));
        assert!(q.grow(&mut b, 4 * 1024).is_ok());
        let mut c = q.start(Some("c"));
        assert_eq!(
            q.grow(&mut c, 3 * 1024),
            Err(Scope::Total),
            "global spent: 8 of 10 KiB used"
        );
        assert!(q.usage_percent() >= 80);
        drop(a);
        assert!(
            q.grow(&mut c, 2 * 1024).is_ok(),
            "released bytes are available again"
        );
    }

    #[test]
    fn a_zero_total_quota_is_off_and_the_principal_quota_still_holds() {
        let q = Quotas::new(0, 4 * 1024);
        let mut a = q.start(Some("a"));
        assert!(
            q.grow(&mut a, 4 * 1024).is_ok(),
            "0 is no total quota (OVMS)"
        );
        assert_eq!(q.grow(&mut a, 1), Err(Scope::Principal));
        let mut anon = q.start(None);
        assert!(q.grow(&mut anon, 64 << 20).is_ok());
        assert_eq!(q.usage_percent(), 0);
    }

    #[test]
    fn bytes_are_counted_in_whole_kib_and_reported() {
        assert_eq!((units(0), units(1), units(1024), units(1025)), (0, 1, 1, 2));
        let q = Quotas::new(10 * 1024, 1024);
        assert_eq!(q.global_in_flight_bytes(), Some(0));
        let mut a = q.start(Some("a"));
        // Two halves of a KiB take one unit, not two.
        assert!(q.grow(&mut a, 512).is_ok());
        assert!(q.grow(&mut a, 512).is_ok());
        assert_eq!(a.bytes, 1024);
        assert_eq!(q.global_in_flight_bytes(), Some(1024));
        let mut b = q.start(None);
        // Grown in steps, a reservation takes what it holds, no more.
        for _ in 0..3 {
            assert!(q.grow(&mut b, 1024).is_ok());
        }
        assert_eq!(q.global_in_flight_bytes(), Some(4 * 1024));
        assert_eq!(q.usage_percent(), 40);
        drop((a, b));
        assert_eq!(q.global_in_flight_bytes(), Some(0));
        assert_eq!(Quotas::new(0, 1024).global_in_flight_bytes(), None);
    }

    #[test]
    fn idle_principals_are_forgotten_past_ten_thousand_and_busy_ones_kept() {
        let q = Quotas::new(0, 4 * 1024);
        let held = q.start(Some("held"));
        let mut busy = q.start(Some("busy"));
        assert!(q.grow(&mut busy, 1024).is_ok());
        let names = |q: &Quotas| q.principals.lock().unwrap().len();
        for i in 0..9_998 {
            q.start(Some(&format!("idle-{i}")));
        }
        assert_eq!(names(&q), 10_000);
        // Ten thousand is not yet too many.
        q.start(Some("one more"));
        assert_eq!(names(&q), 10_001);
        q.start(Some("the last"));
        assert_eq!(names(&q), 3, "held, busy and the last");
        // A principal kept is the same one: its quota was not reset.
        let again = q.start(Some("held"));
        assert!(Arc::ptr_eq(
            held.principal_sem.as_ref().unwrap(),
            again.principal_sem.as_ref().unwrap()
        ));
        let mut busy_again = q.start(Some("busy"));
        assert_eq!(q.grow(&mut busy_again, 3 * 1024 + 1), Err(Scope::Principal));
    }
}
