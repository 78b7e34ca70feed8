//! ZDS events -> [`PodProxies`]: which pods this node serves, under which
//! identity, and the certificates they hold.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use mesh_cni::zds::{WorkloadInfo, ZdsEvent, ZdsRequest};
use mesh_identity::CertificateManager;
use mesh_identity::contexts::TlsContexts;
use mesh_model::Identity;
use mesh_netns::Netns;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::inpod::{PodProxies, PodWorkload};
use crate::state::StateHandle;

/// A network namespace by identity: the device and inode of its nsfs
/// file, equal for every descriptor of the same namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NetnsId {
    dev: u64,
    ino: u64,
}

impl NetnsId {
    fn of(netns: &OwnedFd) -> Result<Self, String> {
        use std::os::unix::fs::MetadataExt as _;
        let stat = netns
            .try_clone()
            .map(std::fs::File::from)
            .and_then(|file| file.metadata())
            .map_err(|e| format!("reading the netns descriptor: {e}"))?;
        Ok(Self { dev: stat.dev(), ino: stat.ino() })
    }
}

/// The enrolled pods and what a resync has seen.
#[derive(Debug, Default)]
struct Book {
    /// ZDS uid -> the pod's workload.
    pods: HashMap<String, PodWorkload>,
    /// ZDS uid -> the namespace its listeners are in.
    netns: HashMap<String, NetnsId>,
    /// Uids added or kept since the agent (re)connected.
    seen: HashSet<String>,
}

/// How long a DelWorkload waits for the pod's connections to close before
/// it is acknowledged anyway. The pod is out of service before the wait
/// (listeners closed, every task told to stop, resets normally sent within
/// a millisecond); the wait only keeps the ack behind those resets. It is
/// short because requests on the ZDS connection are answered one at a time:
/// a pod whose tasks are slow to end would otherwise hold up every removal
/// queued behind it (upstream: ztunnel acks DelWorkload at once and drains
/// the workload in the background). The tasks end on their own after the
/// ack; the agent keeps the rules `release_grace` longer still.
const DEL_ACK_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Turns ZDS requests into pod proxies.
#[derive(Debug)]
pub(crate) struct Pods {
    pub(crate) proxies: Arc<PodProxies>,
    pub(crate) state: StateHandle,
    pub(crate) manager: CertificateManager,
    pub(crate) tls: Arc<TlsContexts>,
    pub(crate) cluster_id: String,
    pub(crate) trust_domain: String,
    book: Mutex<Book>,
    /// Whether xDS has synced.
    xds_ready: watch::Receiver<bool>,
    /// `/healthz/ready`: xDS synced and every pod certified.
    ready: watch::Sender<bool>,
}

impl Pods {
    pub(crate) fn new(
        proxies: Arc<PodProxies>,
        state: StateHandle,
        manager: CertificateManager,
        tls: Arc<TlsContexts>,
        cluster_id: String,
        trust_domain: String,
        xds_ready: watch::Receiver<bool>,
    ) -> Self {
        Self {
            proxies,
            state,
            manager,
            tls,
            cluster_id,
            trust_domain,
            book: Mutex::default(),
            xds_ready,
            ready: watch::Sender::new(false),
        }
    }

    /// Readiness as it changes.
    pub(crate) fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Recomputes readiness: xDS synced and every enrolled pod certified.
    pub(crate) fn refresh_readiness(&self) {
        let now = *self.xds_ready.borrow() && self.all_certified();
        self.ready.send_if_modified(|r| std::mem::replace(r, now) != now);
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Handles events until the server's channel closes.
    pub(crate) async fn run(self: Arc<Self>, mut events: mpsc::Receiver<ZdsEvent>) {
        while let Some(event) = events.recv().await {
            let result = self.handle(event.request).await;
            // Before the ack: an enrolled pod without a certificate makes
            // the node unready at once.
            self.refresh_readiness();
            if let Err(e) = &result {
                tracing::warn!(error = %e, "zds request refused");
            }
            event.responder.ack(result);
        }
    }

    async fn handle(&self, request: ZdsRequest) -> Result<(), String> {
        match request {
            ZdsRequest::Add { uid, info, netns } => {
                let netns_id = NetnsId::of(&netns)?;
                let workload = self.workload_of(&info)?;
                {
                    let mut book = self.book();
                    let same = book.netns.get(&uid) == Some(&netns_id)
                        && book.pods.get(&uid) == Some(&workload);
                    if same {
                        // upstream (inpod state manager): an Add for a pod
                        // already served in the same netns is a no-op; a
                        // snapshot replays every pod, and replacing its
                        // listeners would reset all its connections.
                        tracing::debug!(pod = uid, "already served in this netns; unchanged");
                        book.seen.insert(uid);
                        return Ok(());
                    }
                }
                let identity = workload.identity.clone();
                self.proxies
                    .add(&uid, workload.clone(), &Netns::from_fd(netns))
                    .await
                    .map_err(|e| e.to_string())?;
                self.manager.track(&identity);
                let previous = {
                    let mut book = self.book();
                    book.seen.insert(uid.clone());
                    book.netns.insert(uid.clone(), netns_id);
                    book.pods.insert(uid, workload)
                };
                if let Some(previous) = previous.filter(|p| p.identity != identity) {
                    self.release(&previous.identity);
                }
                Ok(())
            }
            ZdsRequest::Keep { uid } => {
                let mut book = self.book();
                if !book.pods.contains_key(&uid) {
                    return Err(format!("pod {uid} is not served here; send Add"));
                }
                book.seen.insert(uid);
                Ok(())
            }
            ZdsRequest::Del { uid } => {
                // Ack only once the pod's connections are closed: the agent
                // removes the capture rules after the ack.
                self.proxies.remove_and_wait(&uid, DEL_ACK_WAIT).await;
                self.remove(&uid);
                Ok(())
            }
            ZdsRequest::Connected => {
                self.book().seen.clear();
                Ok(())
            }
            ZdsRequest::SnapshotSent => {
                let stale: Vec<String> = {
                    let book = self.book();
                    book.pods.keys().filter(|uid| !book.seen.contains(*uid)).cloned().collect()
                };
                for uid in stale {
                    tracing::info!(pod = uid, "not in the agent's snapshot; removing");
                    self.remove(&uid);
                }
                Ok(())
            }
        }
    }

    /// The pod's workload: the one istiod sent, if known, else from what
    /// the agent told us.
    fn workload_of(&self, info: &WorkloadInfo) -> Result<PodWorkload, String> {
        let uid = format!("{}//Pod/{}/{}", self.cluster_id, info.namespace, info.name);
        if let Some(known) = self.state.read().workload_by_uid(&uid) {
            return Ok(PodWorkload { uid, identity: known.identity.clone() });
        }
        let sa = if info.service_account.is_empty() { "default" } else { &info.service_account };
        let identity = Identity::new(&self.trust_domain, &info.namespace, sa)
            .map_err(|e| format!("pod {}/{}: identity: {e}", info.namespace, info.name))?;
        Ok(PodWorkload { uid, identity })
    }

    /// Stops serving `uid`; its identity's certificate is dropped when no
    /// other pod uses it.
    pub(crate) fn remove(&self, uid: &str) {
        self.proxies.remove(uid);
        let removed = {
            let mut book = self.book();
            book.netns.remove(uid);
            book.pods.remove(uid)
        };
        if let Some(pod) = removed {
            self.release(&pod.identity);
        }
    }

    fn release(&self, identity: &Identity) {
        let in_use = self.book().pods.values().any(|p| &p.identity == identity);
        if !in_use {
            self.manager.forget(identity);
            self.tls.forget(identity);
        }
    }

    /// Stops serving every pod.
    pub(crate) fn remove_all(&self) {
        let uids: Vec<String> = self.book().pods.keys().cloned().collect();
        for uid in uids {
            self.remove(&uid);
        }
    }

    /// Whether every enrolled pod's identity has a certificate.
    fn all_certified(&self) -> bool {
        let identities: HashSet<Identity> =
            self.book().pods.values().map(|p| p.identity.clone()).collect();
        identities.iter().all(|id| self.manager.subscribe(id).borrow().is_some())
    }

    /// Pods and the certificates held for them, for `/config_dump`.
    pub(crate) fn dump(&self) -> Value {
        let mut pods: Vec<(String, PodWorkload)> =
            self.book().pods.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        pods.sort_by(|a, b| a.0.cmp(&b.0));
        let mut identities: Vec<Identity> = pods.iter().map(|(_, p)| p.identity.clone()).collect();
        identities.sort_by_key(ToString::to_string);
        identities.dedup();
        let now = SystemTime::now();
        let certificates: Vec<Value> = identities
            .iter()
            .map(|id| {
                let cert = self.manager.subscribe(id).borrow().clone();
                match cert {
                    Some(cert) => {
                        let expiry = cert
                            .not_after()
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map(|d| d.as_secs())
                            .unwrap_or_default();
                        json!({
                            "identity": id.to_string(),
                            "state": "available",
                            "expiry_unix_seconds": expiry,
                            "remaining_seconds": cert.remaining(now).as_secs(),
                        })
                    }
                    None => json!({ "identity": id.to_string(), "state": "pending" }),
                }
            })
            .collect();
        let pods: Vec<Value> = pods
            .iter()
            .map(|(uid, p)| {
                json!({ "uid": uid, "workload": p.uid, "identity": p.identity.to_string() })
            })
            .collect();
        json!({ "pods": pods, "certificates": certificates })
    }
}
