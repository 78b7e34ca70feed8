//! Publishing the trust bundle as ConfigMap `istio-ca-root-cert` (key
//! `root-cert.pem`) in every namespace, as upstream.
//!
//! [`ConfigMapPublisher`] hands the bundle to a [`ConfigMapController`],
//! which watches Namespaces (a new namespace gets the ConfigMap) and the
//! ConfigMaps themselves (an edited or deleted one is restored), and writes
//! with server-side apply. Failed writes are retried on a timer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use crate::ca::CaError;
use crate::ca::publish::{BundlePublisher, ROOT_CERT_KEY, ROOT_CONFIGMAP};

/// Field manager of our server-side applies.
const FIELD_MANAGER: &str = "istiod-ca";
/// How often failed writes are retried.
const RETRY_EVERY: Duration = Duration::from_secs(5);

type Bundle = Option<Arc<str>>;

/// The [`BundlePublisher`] side: cheap, never blocks on the API server.
#[derive(Debug, Clone)]
pub struct ConfigMapPublisher {
    bundle: Arc<watch::Sender<Bundle>>,
}

/// The side that talks to the API server; run it as a task.
pub struct ConfigMapController {
    client: kube::Client,
    bundle: watch::Receiver<Bundle>,
    /// Namespaces that should hold the ConfigMap.
    namespaces: BTreeSet<String>,
    /// Namespaces whose last write failed.
    pending: BTreeSet<String>,
}

impl std::fmt::Debug for ConfigMapController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigMapController")
            .field("namespaces", &self.namespaces.len())
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl ConfigMapPublisher {
    pub fn new(client: kube::Client) -> (Self, ConfigMapController) {
        let (tx, rx) = watch::channel(None);
        let controller = ConfigMapController {
            client,
            bundle: rx,
            namespaces: BTreeSet::new(),
            pending: BTreeSet::new(),
        };
        (Self { bundle: Arc::new(tx) }, controller)
    }
}

impl BundlePublisher for ConfigMapPublisher {
    fn publish<'a>(&'a self, bundle_pem: &'a str) -> BoxFuture<'a, Result<(), CaError>> {
        self.bundle.send_replace(Some(Arc::from(bundle_pem)));
        std::future::ready(Ok(())).boxed()
    }
}

fn is_terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

impl ConfigMapController {
    /// Runs until every [`ConfigMapPublisher`] is dropped.
    pub async fn run(mut self) -> Result<(), CaError> {
        let namespaces = watcher::watcher(
            Api::<Namespace>::all(self.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff();
        let configmaps = watcher::watcher(
            Api::<ConfigMap>::all(self.client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={ROOT_CONFIGMAP}")),
        )
        .default_backoff();
        let mut namespaces = std::pin::pin!(namespaces);
        let mut configmaps = std::pin::pin!(configmaps);
        let mut retry = tokio::time::interval(RETRY_EVERY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = namespaces.next() => match event {
                    Some(Ok(event)) => self.on_namespace(event).await,
                    Some(Err(e)) => tracing::warn!(error = %e, "watching namespaces"),
                    None => return Err(CaError::Config("namespace watch ended".into())),
                },
                event = configmaps.next() => match event {
                    Some(Ok(event)) => self.on_configmap(event).await,
                    Some(Err(e)) => tracing::warn!(error = %e, "watching {ROOT_CONFIGMAP} ConfigMaps"),
                    None => return Err(CaError::Config("ConfigMap watch ended".into())),
                },
                changed = self.bundle.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let all: Vec<String> = self.namespaces.iter().cloned().collect();
                    for ns in all {
                        self.apply(&ns).await;
                    }
                },
                _ = retry.tick() => {
                    let pending = std::mem::take(&mut self.pending);
                    for ns in pending {
                        if self.namespaces.contains(&ns) {
                            self.apply(&ns).await;
                        }
                    }
                },
            }
        }
    }

    async fn on_namespace(&mut self, event: Event<Namespace>) {
        match event {
            Event::Apply(ns) | Event::InitApply(ns) => {
                let Some(name) = ns.metadata.name.clone() else {
                    return;
                };
                if is_terminating(&ns) {
                    self.namespaces.remove(&name);
                } else if self.namespaces.insert(name.clone()) {
                    self.apply(&name).await;
                }
            }
            Event::Delete(ns) => {
                if let Some(name) = ns.metadata.name {
                    self.namespaces.remove(&name);
                    self.pending.remove(&name);
                }
            }
            Event::Init | Event::InitDone => {}
        }
    }

    async fn on_configmap(&mut self, event: Event<ConfigMap>) {
        let (cm, deleted) = match event {
            Event::Apply(cm) | Event::InitApply(cm) => (cm, false),
            Event::Delete(cm) => (cm, true),
            Event::Init | Event::InitDone => return,
        };
        let Some(ns) = cm.metadata.namespace.clone() else {
            return;
        };
        if !self.namespaces.contains(&ns) {
            return;
        }
        let current = self.bundle.borrow().clone();
        let published = cm.data.as_ref().and_then(|d| d.get(ROOT_CERT_KEY));
        let drifted = published.map(String::as_str) != current.as_deref();
        if deleted || drifted {
            self.apply(&ns).await;
        }
    }

    /// Server-side applies the ConfigMap in `ns`; a failure is retried later.
    async fn apply(&mut self, ns: &str) {
        let Some(bundle) = self.bundle.borrow().clone() else {
            return;
        };
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(ROOT_CONFIGMAP.to_owned()),
                namespace: Some(ns.to_owned()),
                labels: Some(BTreeMap::from([("istio.io/config".to_owned(), "true".to_owned())])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(ROOT_CERT_KEY.to_owned(), bundle.as_ref().to_owned())])),
            ..ConfigMap::default()
        };
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch(ROOT_CONFIGMAP, &params, &Patch::Apply(&cm)).await {
            Ok(_) => {
                self.pending.remove(ns);
                tracing::debug!(namespace = ns, "published the trust bundle");
            }
            Err(e) => {
                tracing::warn!(namespace = ns, error = %e, "publishing the trust bundle; will retry");
                self.pending.insert(ns.to_owned());
            }
        }
    }
}
