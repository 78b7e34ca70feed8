//! One identity's certificate state machine. Pure: no I/O, no clock reads;
//! the actor feeds it the time and applies the side effects (queueing,
//! publishing, answering waiters) by comparing before and after.
//!
//! ```text
//! state          event                    next
//! (new)          track / get              Initializing (request queued)
//! Initializing   success                  Available
//! Initializing   failure                  Backoff, no cert
//! Available      renew_at                 Renewing (prefetch queued)
//! Renewing       success                  Available, new cert
//! Renewing       failure                  Backoff, old cert
//! Renewing       cert expires             Initializing (request carries on)
//! Backoff        retry_at, cert held      Renewing (prefetch queued)
//! Backoff        retry_at, no cert        Initializing (urgent if a get waits)
//! Backoff        cert expires             Backoff, no cert
//! ```
//!
//! A certificate is served exactly while the state holds one ([`State::cert`]):
//! from a success until its expiry, through any renewal attempts and
//! backoff in between.

use std::sync::Arc;

use tokio::time::Instant;

use super::scheduler::{Backoff, Deadlines, Priority, later};
use crate::WorkloadCertificate;

/// A certificate being served and when it stops being valid.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) cert: Arc<WorkloadCertificate>,
    pub(crate) expires_at: Instant,
}

impl Held {
    fn expired(&self, now: Instant) -> bool {
        now >= self.expires_at
    }
}

/// The CA request of an identity: waiting for a slot, or in flight. The
/// actor keeps at most one per identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fetch {
    Queued { priority: Priority },
    Running,
}

#[derive(Debug, Clone)]
pub(crate) enum State {
    /// No valid certificate (never had one, or it expired); a request is
    /// queued or running. `failures` counts consecutive failed requests.
    Initializing { fetch: Fetch, failures: u32 },
    /// A valid certificate; nothing to do until `renew_at`.
    Available { cert: Held, renew_at: Instant },
    /// A valid certificate, and a request for its successor.
    Renewing { cert: Held, fetch: Fetch, failures: u32 },
    /// The last `failures` requests failed; the next is due at `retry_at`.
    /// `cert` is the previous certificate while it is still valid.
    Backoff { cert: Option<Held>, retry_at: Instant, failures: u32 },
}

impl State {
    /// A new identity, its first request queued.
    pub(crate) fn new(priority: Priority) -> Self {
        Self::Initializing { fetch: Fetch::Queued { priority }, failures: 0 }
    }

    /// The certificate to serve, if any.
    pub(crate) fn cert(&self) -> Option<&Held> {
        match self {
            Self::Initializing { .. } => None,
            Self::Available { cert, .. } | Self::Renewing { cert, .. } => Some(cert),
            Self::Backoff { cert, .. } => cert.as_ref(),
        }
    }

    pub(crate) fn fetch(&self) -> Option<Fetch> {
        match self {
            Self::Initializing { fetch, .. } | Self::Renewing { fetch, .. } => Some(*fetch),
            Self::Available { .. } | Self::Backoff { .. } => None,
        }
    }

    /// When [`State::tick`] next has something to do.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self {
            Self::Initializing { .. } => None,
            Self::Available { cert, renew_at } => Some((*renew_at).min(cert.expires_at)),
            Self::Renewing { cert, .. } => Some(cert.expires_at),
            Self::Backoff { cert, retry_at, .. } => {
                Some(cert.as_ref().map_or(*retry_at, |c| (*retry_at).min(c.expires_at)))
            }
        }
    }

    /// A `get` is waiting: a queued prefetch becomes urgent.
    pub(crate) fn urgent(self) -> Self {
        match self {
            Self::Initializing { fetch: Fetch::Queued { .. }, failures } => {
                Self::Initializing { fetch: Fetch::Queued { priority: Priority::Urgent }, failures }
            }
            other => other,
        }
    }

    /// The queued request got a slot.
    pub(crate) fn started(self) -> Self {
        match self {
            Self::Initializing { failures, .. } => {
                Self::Initializing { fetch: Fetch::Running, failures }
            }
            Self::Renewing { cert, failures, .. } => {
                Self::Renewing { cert, fetch: Fetch::Running, failures }
            }
            other => other,
        }
    }

    /// The request succeeded with a checked certificate.
    pub(crate) fn succeeded(self, cert: Arc<WorkloadCertificate>, deadlines: Deadlines) -> Self {
        Self::Available {
            cert: Held { cert, expires_at: deadlines.expires_at },
            renew_at: deadlines.renew_at,
        }
    }

    /// The request failed: wait, keeping the current certificate.
    pub(crate) fn failed(self, now: Instant, backoff: Backoff) -> Self {
        let (cert, failures) = match self {
            Self::Initializing { failures, .. } => (None, failures),
            Self::Renewing { cert, failures, .. } => (Some(cert), failures),
            other => return other,
        };
        let failures = failures.saturating_add(1);
        Self::Backoff {
            cert: cert.filter(|c| !c.expired(now)),
            retry_at: later(now, backoff.delay(failures)),
            failures,
        }
    }

    /// Time has passed: expire the certificate, start a due renewal or
    /// retry. A retry without a certificate uses `retry_priority` (urgent
    /// when someone waits); with one it is a prefetch.
    pub(crate) fn tick(self, now: Instant, retry_priority: Priority) -> Self {
        let renewal = Fetch::Queued { priority: Priority::Prefetch };
        match self {
            Self::Available { cert, .. } if cert.expired(now) => Self::Initializing {
                fetch: Fetch::Queued { priority: retry_priority },
                failures: 0,
            },
            Self::Available { cert, renew_at } if now >= renew_at => {
                Self::Renewing { cert, fetch: renewal, failures: 0 }
            }
            Self::Renewing { cert, fetch, failures } if cert.expired(now) => {
                Self::Initializing { fetch, failures }
            }
            Self::Backoff { cert, retry_at, failures } => {
                let cert = cert.filter(|c| !c.expired(now));
                match cert {
                    _ if now < retry_at => Self::Backoff { cert, retry_at, failures },
                    Some(cert) => Self::Renewing { cert, fetch: renewal, failures },
                    None => Self::Initializing {
                        fetch: Fetch::Queued { priority: retry_priority },
                        failures,
                    },
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::manager::Config;
    use crate::manager::scheduler::Schedule;

    fn cert() -> Arc<WorkloadCertificate> {
        let ca = mesh_test_support::TestCa::root("state test").unwrap();
        let spiffe = "spiffe://cluster.local/ns/ns/sa/sa";
        let issued = ca.issue(&mesh_test_support::LeafSpec::workload(spiffe)).unwrap();
        let cert = WorkloadCertificate::from_chain_pem(
            &spiffe.parse().unwrap(),
            issued.key,
            &issued.chain_pem,
        )
        .unwrap();
        Arc::new(cert)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Available with renewal at t0+100s and expiry at t0+200s.
    fn available(t0: Instant) -> State {
        State::new(Priority::Prefetch)
            .started()
            .succeeded(cert(), Deadlines { renew_at: t0 + secs(100), expires_at: t0 + secs(200) })
    }

    fn backoff() -> Backoff {
        Schedule::new(&Config::default()).backoff
    }

    #[test]
    fn renewal_starts_at_renew_at_as_a_prefetch() {
        let t0 = Instant::now();
        let s = available(t0);
        assert_eq!(s.deadline(), Some(t0 + secs(100)));
        let s = s.tick(t0 + secs(99), Priority::Urgent);
        assert!(matches!(s, State::Available { .. }));
        let s = s.tick(t0 + secs(100), Priority::Urgent);
        assert!(matches!(
            s,
            State::Renewing {
                fetch: Fetch::Queued { priority: Priority::Prefetch },
                failures: 0,
                ..
            }
        ));
        assert!(s.cert().is_some());
    }

    #[test]
    fn failed_renewal_keeps_the_cert_until_it_expires() {
        let t0 = Instant::now();
        let s = available(t0)
            .tick(t0 + secs(100), Priority::Prefetch)
            .started()
            .failed(t0 + secs(100), backoff());
        let State::Backoff { cert: Some(_), retry_at, failures: 1 } = s else {
            panic!("expected backoff with the cert, got {s:?}");
        };
        assert_eq!(retry_at, t0 + secs(100) + Duration::from_millis(100));
        assert!(matches!(
            s.clone().tick(retry_at - Duration::from_millis(1), Priority::Prefetch),
            State::Backoff { .. }
        ));
        let s = s.tick(retry_at, Priority::Prefetch).started();
        let s = s.failed(t0 + secs(150), backoff());
        assert!(matches!(s, State::Backoff { failures: 2, .. }));
        assert!(s.cert().is_some());
        // Expiry while backing off drops the cert but keeps counting.
        let s = State::Backoff { cert: s.cert().cloned(), retry_at: t0 + secs(300), failures: 2 };
        assert_eq!(s.deadline(), Some(t0 + secs(200)));
        let s = s.tick(t0 + secs(200), Priority::Prefetch);
        assert!(s.cert().is_none());
        assert_eq!(s.deadline(), Some(t0 + secs(300)));
        let s = s.tick(t0 + secs(300), Priority::Urgent);
        assert!(matches!(
            s,
            State::Initializing {
                fetch: Fetch::Queued { priority: Priority::Urgent },
                failures: 2
            }
        ));
    }

    #[test]
    fn a_renewal_still_running_at_expiry_drops_the_cert() {
        let t0 = Instant::now();
        let s = available(t0).tick(t0 + secs(100), Priority::Prefetch).started();
        let s = s.tick(t0 + secs(200), Priority::Prefetch);
        assert!(matches!(s, State::Initializing { fetch: Fetch::Running, .. }));
        assert!(s.cert().is_none());
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn only_a_queued_first_request_is_upgraded() {
        let queued = State::new(Priority::Prefetch).urgent();
        assert_eq!(queued.fetch(), Some(Fetch::Queued { priority: Priority::Urgent }));
        let running = State::new(Priority::Prefetch).started().urgent();
        assert_eq!(running.fetch(), Some(Fetch::Running));
    }

    #[test]
    fn success_resets_the_failure_count() {
        let t0 = Instant::now();
        let s = State::new(Priority::Urgent)
            .started()
            .failed(t0, backoff())
            .tick(t0 + secs(1), Priority::Urgent)
            .started()
            .failed(t0 + secs(1), backoff());
        assert!(matches!(s, State::Backoff { failures: 2, .. }));
        let s = s
            .tick(t0 + secs(2), Priority::Urgent)
            .started()
            .succeeded(cert(), Deadlines { renew_at: t0 + secs(100), expires_at: t0 + secs(200) });
        let s = s.tick(t0 + secs(100), Priority::Prefetch);
        assert!(matches!(s, State::Renewing { failures: 0, .. }));
    }
}
