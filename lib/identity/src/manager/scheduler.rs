//! When to ask the CA: the two-level request queue, renewal deadlines with
//! jitter, and exponential backoff after failures.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::time::{Duration, SystemTime};

use mesh_model::Identity;
use tokio::time::Instant;

use super::Config;
use crate::WorkloadCertificate;

/// Deadlines further out than this are clamped (a certificate valid for
/// centuries must not overflow an `Instant`).
const MAX_HORIZON: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How soon a CA request is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Priority {
    /// A `get` is waiting and no valid certificate is held.
    Urgent,
    /// Nobody waits: a newly tracked identity, or the renewal of a
    /// certificate that is still valid.
    Prefetch,
}

impl Priority {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Urgent => "urgent",
            Self::Prefetch => "prefetch",
        }
    }
}

/// Identities waiting for a free request slot, urgent ones first, each level
/// first come first served. Entries may be stale (the identity was forgotten
/// or upgraded to urgent since); the actor skips those when it pops them.
#[derive(Debug, Default)]
pub(crate) struct FetchQueue {
    urgent: VecDeque<Identity>,
    prefetch: VecDeque<Identity>,
}

impl FetchQueue {
    pub(crate) fn push(&mut self, identity: Identity, priority: Priority) {
        match priority {
            Priority::Urgent => self.urgent.push_back(identity),
            Priority::Prefetch => self.prefetch.push_back(identity),
        }
    }

    pub(crate) fn pop(&mut self) -> Option<(Identity, Priority)> {
        if let Some(identity) = self.urgent.pop_front() {
            return Some((identity, Priority::Urgent));
        }
        self.prefetch.pop_front().map(|identity| (identity, Priority::Prefetch))
    }
}

/// A certificate's deadlines in tokio time, fixed when it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadlines {
    pub(crate) renew_at: Instant,
    pub(crate) expires_at: Instant,
}

/// Exponential backoff after failed requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// The wait before the next request after `failures` consecutive
    /// failures (at least one): the initial backoff, doubled per further
    /// failure, capped.
    pub(crate) fn delay(self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1);
        let factor = 2u32.checked_pow(doublings).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Renewal and retry timing, with its own source of jitter.
#[derive(Debug)]
pub(crate) struct Schedule {
    pub(crate) backoff: Backoff,
    jitter: f64,
    random: RandomState,
    draws: u64,
}

impl Schedule {
    pub(crate) fn new(config: &Config) -> Self {
        let jitter = if config.renewal_jitter.is_finite() {
            config.renewal_jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Self {
            backoff: Backoff { initial: config.initial_backoff, max: config.max_backoff },
            jitter,
            random: RandomState::new(),
            draws: 0,
        }
    }

    /// Converts `cert`'s wall-clock validity into tokio deadlines, measured
    /// from now: expiry, and renewal at half life moved earlier by a random
    /// part (up to the jitter fraction) of the time until then.
    pub(crate) fn deadlines(
        &mut self,
        cert: &WorkloadCertificate,
        now: Instant,
        wall_now: SystemTime,
    ) -> Deadlines {
        let until_refresh = cert.refresh_at().duration_since(wall_now).unwrap_or_default();
        let until_expiry = cert.remaining(wall_now);
        let unit = self.unit();
        let delay =
            renewal_delay(until_refresh, until_expiry, self.jitter * unit, self.backoff.initial);
        Deadlines { renew_at: later(now, delay), expires_at: later(now, until_expiry) }
    }

    /// A pseudo-random number in [0, 1): SipHash with per-process random
    /// keys over a counter.
    fn unit(&mut self) -> f64 {
        let mut hasher = self.random.build_hasher();
        hasher.write_u64(self.draws);
        self.draws = self.draws.wrapping_add(1);
        // The top 53 bits fit an f64's mantissa exactly.
        (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Time until renewal: `until_refresh` shortened by `early` (a fraction in
/// [0, 1]), never past expiry, and not sooner than `floor` (so a CA that
/// hands out certificates already past half life is not asked in a tight
/// loop) unless expiry is sooner still.
fn renewal_delay(
    until_refresh: Duration,
    until_expiry: Duration,
    early: f64,
    floor: Duration,
) -> Duration {
    let keep = (1.0 - early).clamp(0.0, 1.0);
    let delay = Duration::try_from_secs_f64(until_refresh.as_secs_f64() * keep).unwrap_or_default();
    delay.max(floor).min(until_expiry)
}

/// `now + delay`, clamped to the horizon.
pub(crate) fn later(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay.min(MAX_HORIZON)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sa: &str) -> Identity {
        Identity::new("cluster.local", "ns", sa).unwrap()
    }

    fn schedule(jitter: f64) -> Schedule {
        Schedule::new(&Config { renewal_jitter: jitter, ..Config::default() })
    }

    #[test]
    fn urgent_requests_leave_first_then_arrival_order() {
        let mut q = FetchQueue::default();
        q.push(id("a"), Priority::Prefetch);
        q.push(id("b"), Priority::Urgent);
        q.push(id("c"), Priority::Prefetch);
        q.push(id("d"), Priority::Urgent);
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            vec![
                (id("b"), Priority::Urgent),
                (id("d"), Priority::Urgent),
                (id("a"), Priority::Prefetch),
                (id("c"), Priority::Prefetch),
            ]
        );
    }

    #[test]
    fn backoff_doubles_from_the_initial_value_and_is_capped() {
        let b = schedule(0.0).backoff;
        let ms: Vec<u128> = (1..=12).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(30));
        assert_eq!(b.delay(0), Duration::from_millis(100));
    }

    #[test]
    fn renewal_is_at_most_the_jitter_fraction_early_and_never_past_expiry() {
        let half = Duration::from_secs(1800);
        let full = Duration::from_secs(3600);
        let floor = Duration::from_millis(100);
        assert_eq!(renewal_delay(half, full, 0.0, floor), half);
        assert_eq!(renewal_delay(half, full, 0.1, floor), Duration::from_secs(1620));
        // Nonsense fractions are clamped rather than panicking.
        assert_eq!(renewal_delay(half, full, 7.0, floor), floor);
        assert_eq!(renewal_delay(half, full, -3.0, floor), half);
        // Already past half life: after the floor, but never past expiry.
        assert_eq!(renewal_delay(Duration::ZERO, full, 0.0, floor), floor);
        let tiny = Duration::from_millis(10);
        assert_eq!(renewal_delay(Duration::ZERO, tiny, 0.0, floor), tiny);
    }

    #[test]
    fn jitter_draws_stay_in_range_and_vary() {
        let mut s = schedule(0.1);
        let draws: Vec<f64> = (0..1000).map(|_| s.unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let low = draws.iter().filter(|u| **u < 0.5).count();
        assert!((300..700).contains(&low), "{low} of 1000 below one half");
        assert!(!schedule(f64::NAN).jitter.is_nan());
        assert!((schedule(5.0).jitter - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn deadlines_beyond_the_horizon_are_clamped() {
        let now = Instant::now();
        assert_eq!(later(now, Duration::MAX), now + MAX_HORIZON);
    }
}
