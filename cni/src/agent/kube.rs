//! The Kubernetes pod source: a watch on this node's Pods (field selector
//! `spec.nodeName=<node>`) and one on Namespaces (their labels enrol), with
//! kube-rs' watcher (list, then watch, relisting with backoff). A relist
//! reports what vanished meanwhile as gone. [`SourceEvent::Synced`] follows
//! the first complete listing of both.

use std::collections::BTreeSet;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::pod::PodInfo;
use super::source::{PodSource, SourceError, SourceEvent};

/// Pods of one node and all namespaces, from the API server.
#[derive(Clone)]
pub struct KubePods {
    pub client: kube::Client,
    pub node_name: String,
}

impl std::fmt::Debug for KubePods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubePods").field("node_name", &self.node_name).finish_non_exhaustive()
    }
}

/// The agent's view of a Kubernetes pod.
pub fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let mut ips: Vec<std::net::IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
            .into_iter()
            .collect();
    }
    let containers = spec
        .map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .map(|c| c.name.clone())
                .collect()
        })
        .unwrap_or_default();
    Some(PodInfo {
        uid: meta.uid.clone()?,
        name: meta.name.clone()?,
        namespace: meta.namespace.clone()?,
        service_account: spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        labels: meta.labels.clone().unwrap_or_default(),
        annotations: meta.annotations.clone().unwrap_or_default(),
        containers,
        ips,
        netns: None,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        finished: matches!(status.and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")),
    })
}

impl PodSource for KubePods {
    async fn run(self, events: mpsc::Sender<SourceEvent>) -> Result<(), SourceError> {
        let (listed_tx, mut listed) = mpsc::channel::<()>(2);
        let pods: Api<Pod> = Api::all(self.client.clone());
        let selector = format!("spec.nodeName={}", self.node_name);
        let pod_cfg = watcher::Config::default().fields(&selector);
        let namespaces: Api<Namespace> = Api::all(self.client);
        let pod_watch = watch(pods, pod_cfg, events.clone(), listed_tx.clone());
        let ns_watch = watch(namespaces, watcher::Config::default(), events.clone(), listed_tx);
        let synced = async {
            // One first listing from each watch.
            for _ in 0..2 {
                if listed.recv().await.is_none() {
                    return;
                }
            }
            let _ = events.send(SourceEvent::Synced).await;
        };
        tokio::join!(pod_watch, ns_watch, synced);
        Ok(())
    }
}

/// A watched kind: its key (pod uid, namespace name) and its events.
trait Watched:
    kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static
{
    const KIND: &'static str;
    fn key(&self) -> Option<String>;
    fn applied(self) -> Option<SourceEvent>;
    fn gone(key: String) -> SourceEvent;
}

impl Watched for Pod {
    const KIND: &'static str = "pod";
    fn key(&self) -> Option<String> {
        self.metadata.uid.clone()
    }
    fn applied(self) -> Option<SourceEvent> {
        pod_info(&self).map(SourceEvent::Pod)
    }
    fn gone(uid: String) -> SourceEvent {
        SourceEvent::PodGone { uid }
    }
}

impl Watched for Namespace {
    const KIND: &'static str = "namespace";
    fn key(&self) -> Option<String> {
        self.metadata.name.clone()
    }
    fn applied(self) -> Option<SourceEvent> {
        let name = self.metadata.name?;
        Some(SourceEvent::Namespace { name, labels: self.metadata.labels.unwrap_or_default() })
    }
    fn gone(name: String) -> SourceEvent {
        SourceEvent::NamespaceGone { name }
    }
}

/// What a relist saw, to report the vanished as gone.
#[derive(Debug, Default)]
struct Relist {
    known: BTreeSet<String>,
    relisted: BTreeSet<String>,
    first_done: bool,
}

impl Relist {
    /// Keys known before the relist and not seen in it.
    fn finish(&mut self) -> Vec<String> {
        let vanished = self.known.difference(&self.relisted).cloned().collect();
        self.known = std::mem::take(&mut self.relisted);
        vanished
    }

    /// The events for one watch event.
    fn step<K: Watched>(&mut self, event: Event<K>) -> (Vec<SourceEvent>, bool) {
        let mut listed = false;
        let events = match event {
            Event::Init => {
                self.relisted.clear();
                Vec::new()
            }
            Event::InitApply(object) => {
                self.relisted.extend(object.key());
                object.applied().into_iter().collect()
            }
            Event::InitDone => {
                listed = !std::mem::replace(&mut self.first_done, true);
                self.finish().into_iter().map(K::gone).collect()
            }
            Event::Apply(object) => {
                self.known.extend(object.key());
                object.applied().into_iter().collect()
            }
            Event::Delete(object) => object
                .key()
                .map(|key| {
                    self.known.remove(&key);
                    K::gone(key)
                })
                .into_iter()
                .collect(),
        };
        (events, listed)
    }
}

async fn watch<K: Watched>(
    api: Api<K>,
    cfg: watcher::Config,
    events: mpsc::Sender<SourceEvent>,
    listed: mpsc::Sender<()>,
) {
    let mut relist = Relist::default();
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    while let Some(item) = stream.next().await {
        let (sent, first_listing) = match item {
            Ok(event) => relist.step(event),
            Err(e) => {
                tracing::warn!(kind = K::KIND, error = %e, "watch failed; retrying with backoff");
                continue;
            }
        };
        for event in sent {
            if events.send(event).await.is_err() {
                return;
            }
        }
        if first_listing {
            let _ = listed.send(()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn pods_convert_with_ips_containers_and_phase() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1",
                         "labels": {"istio.io/dataplane-mode": "ambient"}},
            "spec": {"serviceAccountName": "sa", "nodeName": "n",
                     "containers": [{"name": "app"}], "initContainers": [{"name": "istio-proxy"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                       "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]},
        }))
        .unwrap();
        let info = pod_info(&pod).unwrap();
        assert_eq!((info.uid.as_str(), info.service_account.as_str()), ("u1", "sa"));
        assert_eq!(info.ips.len(), 2);
        assert_eq!(info.containers, ["app", "istio-proxy"]);
        assert!(!info.finished && !info.host_network);
        let mut no_uid = pod;
        no_uid.metadata.uid = None;
        assert!(pod_info(&no_uid).is_none());
    }

    fn ns(name: &str) -> Namespace {
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.to_owned());
        ns
    }

    #[test]
    fn a_relist_reports_what_vanished_and_the_first_listing_once() {
        let mut relist = Relist::default();
        for name in ["a", "b"] {
            let (events, _) = relist.step(Event::Apply(ns(name)));
            assert_eq!(events.len(), 1);
        }
        let (_, listed) = relist.step(Event::<Namespace>::Init);
        assert!(!listed);
        relist.step(Event::InitApply(ns("b")));
        let (gone, listed) = relist.step(Event::<Namespace>::InitDone);
        assert_eq!(gone, [SourceEvent::NamespaceGone { name: "a".into() }]);
        assert!(listed, "first listing");
        relist.step(Event::<Namespace>::Init);
        let (gone, listed) = relist.step(Event::<Namespace>::InitDone);
        assert_eq!(gone, [SourceEvent::NamespaceGone { name: "b".into() }]);
        assert!(!listed, "only the first listing counts");
        let (deleted, _) = relist.step(Event::Delete(ns("c")));
        assert_eq!(deleted, [SourceEvent::NamespaceGone { name: "c".into() }]);
    }
}
