//! A scripted CA: issues real one-hour certificates from a `TestCa`, and can
//! be told to fail, hang or mis-issue. Records every call with its time.

use std::sync::{Arc, Mutex};

use mesh_identity::WorkloadCertificate;
use mesh_identity::manager::{CertificateProvider, FetchError};
use mesh_model::Identity;
use mesh_test_support::{LeafSpec, TestCa};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

/// Validity of the certificates issued, from the moment of issue.
pub(crate) const VALIDITY_SECS: i64 = 3600;

#[derive(Debug, Clone)]
pub struct Call {
    pub identity: Identity,
    pub at: Instant,
}

#[derive(Debug, Default)]
struct Script {
    down: bool,
    fail_next: usize,
    hang_next: usize,
    misissue_next: usize,
}

#[derive(Debug)]
struct Inner {
    ca: TestCa,
    script: Mutex<Script>,
    calls: watch::Sender<Vec<Call>>,
    /// Hung calls wait here for `release`.
    gate: Semaphore,
}

/// Cheap to clone; clones share the script and the call log.
#[derive(Debug, Clone)]
pub struct FakeCa(Arc<Inner>);

enum Step {
    Issue,
    Fail,
    Hang,
    Misissue,
}

impl FakeCa {
    pub fn new() -> Self {
        Self(Arc::new(Inner {
            ca: TestCa::root("fake mesh CA").unwrap(),
            script: Mutex::new(Script::default()),
            calls: watch::Sender::new(Vec::new()),
            gate: Semaphore::new(0),
        }))
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.0.script.lock().unwrap()
    }

    /// Every call fails with `Unavailable` until `set_down(false)`.
    pub fn set_down(&self, down: bool) {
        self.script().down = down;
    }

    pub fn fail_next(&self, n: usize) {
        self.script().fail_next = n;
    }

    /// The next `n` calls wait for `release` (then issue).
    pub fn hang_next(&self, n: usize) {
        self.script().hang_next = n;
    }

    pub fn release(&self, n: usize) {
        self.0.gate.add_permits(n);
    }

    /// The next `n` calls return a certificate for another identity.
    pub fn misissue_next(&self, n: usize) {
        self.script().misissue_next = n;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.0.calls.borrow().clone()
    }

    pub fn watch_calls(&self) -> watch::Receiver<Vec<Call>> {
        self.0.calls.subscribe()
    }

    /// Handles to this fake, the test's own included.
    pub fn holders(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    fn next_step(&self) -> Step {
        let mut s = self.script();
        if s.hang_next > 0 {
            s.hang_next -= 1;
            Step::Hang
        } else if s.down {
            Step::Fail
        } else if s.fail_next > 0 {
            s.fail_next -= 1;
            Step::Fail
        } else if s.misissue_next > 0 {
            s.misissue_next -= 1;
            Step::Misissue
        } else {
            Step::Issue
        }
    }

    fn issue(&self, identity: &Identity) -> Result<WorkloadCertificate, FetchError> {
        let spiffe = identity.to_string();
        let spec =
            LeafSpec { valid_from: 0, valid_until: VALIDITY_SECS, ..LeafSpec::workload(&spiffe) };
        let issued = self.0.ca.issue(&spec).map_err(|e| FetchError::Unavailable(e.to_string()))?;
        Ok(WorkloadCertificate::from_chain_pem(identity, issued.key, &issued.chain_pem)?)
    }
}

impl CertificateProvider for FakeCa {
    async fn fetch(&self, identity: &Identity) -> Result<WorkloadCertificate, FetchError> {
        let step = self.next_step();
        self.0.calls.send_modify(|calls| {
            calls.push(Call { identity: identity.clone(), at: Instant::now() });
        });
        match step {
            Step::Issue => self.issue(identity),
            Step::Fail => Err(FetchError::Unavailable("scripted outage".into())),
            Step::Hang => {
                self.0.gate.acquire().await.unwrap().forget();
                self.issue(identity)
            }
            Step::Misissue => {
                let other =
                    Identity::new(identity.trust_domain(), "elsewhere", "impostor").unwrap();
                self.issue(&other)
            }
        }
    }
}
